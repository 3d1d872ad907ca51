"""Beam search and greedy decoding over the key/value cache, as pure functions under `jax.jit`.

The encoder runs once; `models.init_cache` allocates the decoder cache (and projects the encoder
output for cross-attention once); then a `lax.while_loop` feeds one token per step to
`Transformer.decode(..., decode=True)`.

Conventions (shared with `wt.models`): id 0 is padding and the decoder's start token, id 1 is
EOS. `inputs` are `[batch, source_len]` int32, 0-padded and EOS-terminated. Outputs are
`[batch, max_decode_len]` int32: each row ends with EOS and is 0 after it.

Scoring. A hypothesis y of `length` tokens (its EOS included) scores
    log p(y | x) / lp(length),   lp(length) = ((5 + length) / 6) ** alpha     (GNMT, Wu et al.)
with log p the sum of float32 log-softmax probabilities of its tokens; alpha = 0 is the plain
log-probability. Token 0 (pad) is never emitted: its log-probability is replaced by `NEG`, a
large negative finite number (no -inf, so nothing turns into NaN), without renormalising, so
scores stay true model log-probabilities.

Lengths. Sentence b may produce at most `limit_b = n_b + max_extra_len` tokens (n_b: its
non-pad input tokens); at position limit_b - 1 every token but EOS gets `NEG`, so each output
ends with EOS at the latest there. The static buffer is `source_len + max_extra_len`, clipped to
`model.config.max_len` (with a warning; the limits are clipped with it). An all-pad input row
(batch filler) gets limit 1: its output is a lone EOS.

Over-long sources. The encoder has `max_len` positions and each output needs room for
`n_b + max_extra_len` tokens, so a source may have at most
`max_source_len(max_len, max_extra_len) = max_len - min(max_extra_len, max_len // 2)` tokens,
EOS included (at least half of max_len stays for the source: with a larger max_extra_len the
outputs are clipped instead, as above). Longer inputs are not refused: the decode function cuts
every row to its first max_source_len - 1 tokens and EOS (as the data pipeline truncates
evaluation sentences), warns, and decodes the batch; shorter rows are unchanged.

Beam search keeps `beam_size` alive (unfinished) hypotheses per sentence and the best finished
one. Per step it takes the top 2k of the k * vocab extensions of the alive beams; EOS
extensions ranked in the top k are finished candidates (frozen; as in fairseq), the best k
non-EOS extensions stay alive. A sentence is done when no alive beam can still beat its best
finished score: an alive beam with log-probability L can at best finish with
L / max(lp(l) for the lengths l it may still reach), since log-probabilities only fall. The
loop stops when every sentence is done (as in flax/t5x, but against the best finished score,
which is all that is returned, and with each sentence's own length limit). Consequences:
early stopping never changes the result, and beam_size=1 with alpha=0 is exactly greedy
decoding; with alpha > 0, beam 1 may continue past greedy's EOS towards longer hypotheses with
a better normalised score (so its score is >= greedy's).
"""

from __future__ import annotations

import functools
import warnings
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from wt import models

Array = jax.Array

PAD = 0
EOS = 1
NEG = -1.0e9  # "impossible" log-probability: finite, far below any real score
_REAL = NEG / 2  # scores above this belong to real (possible) hypotheses
# Cache leaves that are equal for every beam of a sentence (encoder keys/values): never gathered.
_BEAM_INVARIANT = ("cross_key", "cross_value")


def length_penalty_factor(length, alpha):
  """GNMT's lp(length) = ((5 + length) / 6) ** alpha (scalar or array, float32)."""
  return ((5.0 + jnp.asarray(length, jnp.float32)) / 6.0) ** jnp.asarray(alpha, jnp.float32)


def decode_buffer_len(source_len: int, max_extra_len: int, model_max_len: int) -> int:
  """Static output length: source_len + max_extra_len, clipped to the model's max_len."""
  return min(source_len + max_extra_len, model_max_len)


def max_source_len(model_max_len: int, max_extra_len: int) -> int:
  """Most source tokens (EOS included) a sentence may have: max_len - max_extra_len, so that
  its output keeps n + max_extra_len tokens, but at least half of max_len."""
  return model_max_len - min(max_extra_len, model_max_len // 2)


def truncate_sources(inputs: Array, max_tokens: int) -> Array:
  """`inputs` cut to `max_tokens` columns; rows that had more non-pad tokens keep their first
  max_tokens - 1 and end with EOS. Works on numpy arrays and inside `jax.jit`."""
  inputs = jnp.asarray(inputs, jnp.int32)
  if inputs.shape[1] <= max_tokens:
    return inputs
  too_long = jnp.sum(inputs > 0, axis=1) > max_tokens
  cut = inputs[:, :max_tokens]
  return cut.at[:, max_tokens - 1].set(jnp.where(too_long, EOS, cut[:, max_tokens - 1]))


def sentence_limits(inputs: Array, max_extra_len: int, buffer_len: int) -> Array:
  """`[batch]` int32: most tokens (EOS included) each sentence may produce.

  n_b + max_extra_len for n_b non-pad input tokens, clipped to `buffer_len`; 1 for all-pad rows.
  """
  lengths = jnp.sum(inputs > 0, axis=1).astype(jnp.int32)
  return jnp.where(lengths > 0, jnp.minimum(lengths + max_extra_len, buffer_len), 1)


def _check_options(model: models.Transformer, beam_size: int, max_extra_len: int):
  if not isinstance(beam_size, (int, np.integer)) or isinstance(beam_size, bool) or beam_size < 1:
    raise ValueError(f"beam_size={beam_size!r} must be a positive integer")
  if (
    not isinstance(max_extra_len, (int, np.integer))
    or isinstance(max_extra_len, bool)
    or max_extra_len < 0
  ):
    raise ValueError(f"max_extra_len={max_extra_len!r} must be a non-negative integer")
  if model.config.vocab_size < 3:
    raise ValueError("decoding needs a vocabulary beyond pad (0) and EOS (1)")


def _start(model, params, inputs: Array, rows_per_sentence: int, max_extra_len: int):
  """Encodes once and allocates the cache for batch * rows_per_sentence decoder rows.

  Returns (buffer_len, limits `[batch]`, cache, step): `step(cache, tokens [rows], t)` feeds
  each row's previous token for position t and returns (cache, log_probs `[rows, vocab]`
  float32 with pad and the length limit applied as NEG). Rows b * k ... b * k + k - 1 belong to
  sentence b.
  """
  batch, source_len = inputs.shape
  buffer_len = decode_buffer_len(source_len, max_extra_len, model.config.max_len)
  limits = sentence_limits(inputs, max_extra_len, buffer_len)
  encoded = model.apply({"params": params}, inputs, method=models.Transformer.encode)
  encoded = jnp.repeat(encoded, rows_per_sentence, axis=0)  # [rows, source_len, d]
  row_inputs = jnp.repeat(inputs, rows_per_sentence, axis=0)  # [rows, source_len]
  row_limits = jnp.repeat(limits, rows_per_sentence)  # [rows]
  cache = models.init_cache(model, params, encoded, row_inputs, buffer_len)
  vocab = jnp.arange(model.config.vocab_size)

  def step(cache, tokens: Array, t: Array):
    logits, variables = model.apply(
      {"params": params, "cache": cache},
      encoded,
      row_inputs,
      tokens[:, None],
      decode=True,
      mutable=["cache"],
      method=models.Transformer.decode,
    )
    log_probs = jax.nn.log_softmax(logits[:, 0].astype(jnp.float32), axis=-1)
    at_limit = (t >= row_limits - 1)[:, None]  # [rows, 1]
    impossible = (vocab == PAD)[None] | (at_limit & (vocab != EOS)[None])
    return variables["cache"], jnp.where(impossible, NEG, log_probs)

  return buffer_len, limits, cache, step


def greedy_decode(
  model: models.Transformer, params, inputs, *, length_penalty: float = 0.6, max_extra_len: int = 50
) -> tuple[Array, Array]:
  """Argmax decoding, the independent reference for beam size 1 (jitted, see `make_decode_fn`).

  Args:
    model, params: a `Transformer` and its parameters (the 'params' collection).
    inputs: `[batch, source_len]` int token ids, 0-padded, EOS-terminated; sources longer
      than `max_source_len` are cut, with a warning (see the module docstring).
    length_penalty: alpha of the score only (greedy choices do not depend on it).
    max_extra_len: sentence b stops after n_b + max_extra_len tokens at most.
  Returns:
    tokens `[batch, max_decode_len]` int32 (EOS-terminated, 0 after EOS) and scores `[batch]`
    float32 (log-probability / lp(length)); max_decode_len = min(source_len + max_extra_len,
    model.config.max_len).
  """
  return make_decode_fn(
    model, method="greedy", length_penalty=length_penalty, max_extra_len=max_extra_len
  )(params, inputs)


def _greedy_decode(model, params, inputs, alpha, *, max_extra_len: int):
  inputs = jnp.asarray(inputs, jnp.int32)
  batch = inputs.shape[0]
  buffer_len, _, cache, step = _start(model, params, inputs, 1, max_extra_len)
  rows = jnp.arange(batch)

  def cond(state):
    t, _, _, _, _, finished = state
    return (t < buffer_len) & ~jnp.all(finished)

  def body(state):
    t, tokens, cache, previous, log_prob, finished = state
    cache, log_probs = step(cache, previous, t)
    token = jnp.where(finished, PAD, jnp.argmax(log_probs, axis=-1).astype(jnp.int32))
    log_prob = log_prob + jnp.where(finished, 0.0, log_probs[rows, token])
    tokens = tokens.at[:, t].set(token)
    return t + 1, tokens, cache, token, log_prob, finished | (token == EOS)

  state = (
    jnp.array(0, jnp.int32),
    jnp.zeros((batch, buffer_len), jnp.int32),
    cache,
    jnp.zeros((batch,), jnp.int32),
    jnp.zeros((batch,), jnp.float32),
    jnp.zeros((batch,), bool),
  )
  _, tokens, _, _, log_prob, _ = jax.lax.while_loop(cond, body, state)
  length = jnp.sum(tokens > 0, axis=1)
  return tokens, log_prob / length_penalty_factor(length, alpha)


def top_k(x: Array, n: int) -> tuple[Array, Array]:
  """`jax.lax.top_k(x, n)` over the last axis of float `x` `[rows, width]`: the same values and
  indices, ties to the lower index, for `x` without NaN or -0.0 (beam search's scores are
  sums of log-softmax values, which never give -0.0).

  XLA:CPU's TopK walks every entry through a heap at a few ns each; a max over each block of
  `block` consecutive entries is one vectorised pass. The n largest entries lie in the n blocks
  with the largest maxima (a block ranked after entry e's has no entry ahead of e, and fewer
  than n entries are ahead of e), so TopK runs over the block maxima, then over the entries of
  those n blocks, taken in index order so that ties still go to the lower index. (TopK ranks
  -0.0 below 0.0 and NaN above all, XLA's max does not always: maxima of TopK's integer keys
  would, but cost all the gain.)
  """
  rows, width = x.shape
  block = 2 ** max(0, round(np.log2(np.sqrt(width / n))))  # balances the two TopK widths
  blocks = -(-width // block)
  if blocks <= n:
    return jax.lax.top_k(x, n)
  padded = jnp.pad(x, ((0, 0), (0, blocks * block - width)), constant_values=-jnp.inf)
  _, top_blocks = jax.lax.top_k(padded.reshape(rows, blocks, block).max(axis=-1), n)
  index = jnp.sort(top_blocks, axis=-1)[:, :, None] * block + jnp.arange(block)[None, None]
  index = index.reshape(rows, n * block)
  values, position = jax.lax.top_k(jnp.take_along_axis(padded, index, axis=-1), n)
  return values, jnp.take_along_axis(index, position, axis=-1)


def _gather_beams(cache, flat_index: Array, rows: int):
  """Cache rows reordered by `flat_index` `[rows]` (parent row of each new beam).

  Leaves with a leading batch*beam axis are gathered; scalars (cache indices, the decoder
  position) and the beam-invariant encoder projections are left alone.
  """

  def gather(path, leaf):
    name = getattr(path[-1], "key", None) if path else None
    if leaf.ndim == 0 or leaf.shape[0] != rows or name in _BEAM_INVARIANT:
      return leaf
    return jnp.take(leaf, flat_index, axis=0)

  return jax.tree_util.tree_map_with_path(gather, cache)


def beam_search(
  model: models.Transformer,
  params,
  inputs,
  *,
  beam_size: int = 4,
  length_penalty: float = 0.6,
  max_extra_len: int = 50,
) -> tuple[Array, Array]:
  """Best hypothesis per sentence by beam search over the cache (see the module docstring).

  Runs the cached jitted function of `make_decode_fn` (one compilation per input shape; it may
  also be called inside another jitted function).

  Args:
    model, params: a `Transformer` (either attention) and its parameters.
    inputs: `[batch, source_len]` int token ids, 0-padded, EOS-terminated; sources longer
      than `max_source_len` are cut, with a warning (see the module docstring).
    beam_size: k, alive hypotheses per sentence.
    length_penalty: GNMT alpha (0.6 in Vaswani et al.); 0 ranks by log-probability.
    max_extra_len: sentence b produces at most n_b + max_extra_len tokens, EOS included.
  Returns:
    tokens `[batch, max_decode_len]` int32, EOS-terminated and 0 after EOS, and scores `[batch]`
    float32 (log p / lp(length)); max_decode_len = min(source_len + max_extra_len, max_len).
  """
  return make_decode_fn(
    model, beam_size=beam_size, length_penalty=length_penalty, max_extra_len=max_extra_len
  )(params, inputs)


def _beam_search(model, params, inputs, alpha, *, k: int, max_extra_len: int):
  inputs = jnp.asarray(inputs, jnp.int32)
  batch, vocab = inputs.shape[0], model.config.vocab_size
  buffer_len, limits, cache, step = _start(model, params, inputs, k, max_extra_len)
  sentence = jnp.arange(batch)[:, None]  # [batch, 1]

  def done(state):
    """`[batch]` bool: sentences whose best finished score no alive beam can beat."""
    t, _, alive_logp, _, _, best_score = state
    best_alive = alive_logp[:, 0]  # beams stay sorted
    # The next token sits at position t, giving length t + 1; lp is monotone in length.
    top_lp = jnp.maximum(length_penalty_factor(t + 1, alpha), length_penalty_factor(limits, alpha))
    return (best_alive <= _REAL) | (best_score >= best_alive / top_lp)

  def cond(state):
    return (state[0] < buffer_len) & ~jnp.all(done(state))

  def body(state):
    t, alive_seqs, alive_logp, cache, best_seqs, best_score = state
    previous = jnp.where(t == 0, PAD, alive_seqs[:, :, jnp.maximum(t - 1, 0)])  # [batch, k]
    cache, log_probs = step(cache, previous.reshape(-1), t)
    candidates = (alive_logp[:, :, None] + log_probs.reshape(batch, k, vocab)).reshape(
      batch, k * vocab
    )
    top_logp, top_index = top_k(candidates, 2 * k)  # [batch, 2k], sorted
    parent, token = top_index // vocab, top_index % vocab
    is_eos = token == EOS

    # Finished candidates: EOS extensions among the top k; keep the best one if it improves.
    finishing = is_eos & (jnp.arange(2 * k) < k)[None] & (top_logp > _REAL)
    finished_score = jnp.where(finishing, top_logp / length_penalty_factor(t + 1, alpha), NEG)
    pick = jnp.argmax(finished_score, axis=1)  # [batch]
    candidate_score = finished_score[sentence[:, 0], pick]
    candidate_seq = alive_seqs[sentence[:, 0], parent[sentence[:, 0], pick]].at[:, t].set(EOS)
    improved = candidate_score > best_score
    best_seqs = jnp.where(improved[:, None], candidate_seq, best_seqs)
    best_score = jnp.where(improved, candidate_score, best_score)

    # Alive: the k best non-EOS extensions (impossible ones sink to NEG and stay there).
    alive_logp, keep = jax.lax.top_k(jnp.where(is_eos, NEG, top_logp), k)  # [batch, k]
    alive_logp = jnp.maximum(alive_logp, NEG)
    new_parent = jnp.take_along_axis(parent, keep, axis=1)
    new_token = jnp.take_along_axis(token, keep, axis=1)
    alive_seqs = alive_seqs[sentence, new_parent].at[:, :, t].set(new_token)
    cache = _gather_beams(cache, (sentence * k + new_parent).reshape(-1), batch * k)
    return t + 1, alive_seqs, alive_logp, cache, best_seqs, best_score

  # Every beam starts as the empty hypothesis; only beam 0 is live so none is duplicated.
  alive_logp = jnp.tile(jnp.where(jnp.arange(k) == 0, 0.0, NEG), (batch, 1)).astype(jnp.float32)
  state = (
    jnp.array(0, jnp.int32),
    jnp.zeros((batch, k, buffer_len), jnp.int32),
    alive_logp,
    cache,
    jnp.zeros((batch, buffer_len), jnp.int32),
    jnp.full((batch,), NEG, jnp.float32),
  )
  _, _, _, _, best_seqs, best_score = jax.lax.while_loop(cond, body, state)
  # Every sentence has finished by its limit (EOS is forced there), so best_seqs is set.
  return best_seqs, best_score


def make_decode_fn(
  model: models.Transformer,
  *,
  beam_size: int = 4,
  length_penalty: float = 0.6,
  max_extra_len: int = 50,
  method: str = "beam",
) -> Callable:
  """`fn(params, inputs) -> (tokens, scores)`, jitted: compiles once per input shape.

  `method="beam"` runs `beam_search` with `beam_size`; `method="greedy"` runs `greedy_decode`
  (beam_size ignored). Options are checked here, before anything is traced; `fn` checks the
  inputs' rank, cuts sources longer than `max_source_len` with a warning (see the module
  docstring) and warns when source_len + max_extra_len exceeds model.config.max_len (the
  buffer and the limits are then clipped). The compiled function is cached per (model,
  beam_size, max_extra_len, method); the length penalty is a traced argument, so sweeping it
  (e.g. on a dev set) compiles nothing new. `fn` may be called inside another jitted function.
  """
  if method not in ("beam", "greedy"):
    raise ValueError(f"method={method!r} must be 'beam' or 'greedy'")
  beam_size = beam_size if method == "beam" else 1
  _check_options(model, beam_size, max_extra_len)
  compiled = _compiled(model, beam_size, max_extra_len, method)
  alpha = float(length_penalty)
  source_limit = max_source_len(model.config.max_len, max_extra_len)

  def decode_fn(params, inputs):
    shape = np.shape(inputs)
    if len(shape) != 2:
      raise ValueError(f"inputs must be [batch, source_len] token ids, got shape {shape}")
    if shape[1] > source_limit:
      message = _truncation_message(inputs, source_limit, model.config.max_len, max_extra_len)
      if message:
        warnings.warn(message, stacklevel=2)
      inputs = truncate_sources(inputs, source_limit)
      shape = inputs.shape
    if shape[1] + max_extra_len > model.config.max_len:
      warnings.warn(
        f"source_len + max_extra_len = {shape[1]} + {max_extra_len} exceeds "
        f"model.max_len={model.config.max_len}: outputs and length limits are "
        f"clipped to {model.config.max_len} tokens",
        stacklevel=2,
      )
    return compiled(params, inputs, alpha)

  return decode_fn


def _truncation_message(inputs, limit: int, max_len: int, max_extra_len: int) -> str:
  """The warning for sources cut to `limit` tokens: names the rows when `inputs` is concrete,
  and is empty when it is concrete and only padding goes."""
  rows = ""
  if not isinstance(inputs, jax.core.Tracer):
    lengths = np.sum(np.asarray(inputs) > 0, axis=1)
    long_rows = np.flatnonzero(lengths > limit)
    if not len(long_rows):
      return ""
    rows = (
      f" (rows {', '.join(f'{r} ({lengths[r]} tokens)' for r in long_rows[:10])}"
      f"{', ...' if len(long_rows) > 10 else ''})"
    )
  return (
    f"source_len={np.shape(inputs)[1]} exceeds the {limit} source tokens that "
    f"model.max_len={max_len} leaves beside max_extra_len={max_extra_len} output tokens: "
    f"sources longer than {limit} tokens{rows} are cut to their first {limit - 1} tokens "
    f"and EOS. Shorten the inputs, or lower max_extra_len, to translate them whole"
  )


@functools.lru_cache(maxsize=64)
def _compiled(model, beam_size: int, max_extra_len: int, method: str):
  """jit(fn(params, inputs, alpha)) for `make_decode_fn`."""
  if method == "greedy":
    return jax.jit(functools.partial(_greedy_decode, model, max_extra_len=max_extra_len))
  return jax.jit(functools.partial(_beam_search, model, k=beam_size, max_extra_len=max_extra_len))
