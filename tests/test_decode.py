"""Decoding: beam search and greedy over the cache against references that recompute the full
forward pass, length limits, padding independence and the beam-size ordering of scores.

The tiny random models do not tie the output projection to the embedding: tied, an untrained
decoder feeds its argmax back and repeats one token forever. They rarely emit EOS, so
`eos_biased` shifts the last decoder LayerNorm's bias along the EOS column of the output
projection: the EOS logit rises by `bias`, giving a mix of early EOS and sentences that reach
their length limit. Each decode function compiles once per (model, method, beam size, shape)
and is shared across tests (the length penalty is a traced argument).
"""

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wt import decode, models

TINY = dict(
  vocab_size=40,
  num_layers=2,
  d_model=16,
  d_ff=32,
  num_heads=4,
  num_branches=4,
  max_len=64,
  dropout_rate=0.0,
  share_embeddings="none",
)
VARIANTS = {
  "transformer": dict(attention="multihead"),
  "weighted-encdec": dict(attention="weighted", branched_decoder="encdec"),
  "weighted-both": dict(attention="weighted", branched_decoder="both"),
  "weighted-sublayers-both": dict(
    attention="weighted", branched_decoder="both", branch_residual="sublayers"
  ),
}
EXTRA = 6  # max_extra_len in most tests: short loops, and sentences that reach their limit
# Mixed lengths (non-pad counts 3, 10, 6, 5, 8, 2), EOS-terminated, 0-padded to 10, and an
# all-pad filler row (as at the end of an evaluation set), which decodes to a lone EOS.
INPUTS = np.array(
  [
    [5, 6, 1, 0, 0, 0, 0, 0, 0, 0],
    [7, 8, 9, 10, 11, 12, 13, 14, 15, 1],
    [16, 17, 18, 19, 20, 1, 0, 0, 0, 0],
    [21, 22, 23, 24, 1, 0, 0, 0, 0, 0],
    [25, 26, 27, 28, 29, 30, 31, 1, 0, 0],
    [32, 1, 0, 0, 0, 0, 0, 0, 0, 0],
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
  ],
  np.int32,
)


@functools.lru_cache(maxsize=None)
def build(variant, seed=0):
  config = models.ModelConfig(**{**TINY, **VARIANTS[variant]})
  return models.Transformer(config), models.init_params(config, jax.random.key(seed))


@functools.lru_cache(maxsize=None)
def eos_biased(variant, bias, seed=0):
  """Parameters whose EOS logit is raised by `bias` (the last LayerNorm's bias, moved along the
  EOS column of the output projection; with branch_residual="sublayers" the last LayerNorms
  are the branches' own, whose alpha-weighted sum moves by the same vector)."""
  _, params = build(variant, seed)
  params = jax.tree_util.tree_map(lambda x: x, params)  # a copy of the nested dicts
  eos = params["logits_projection"]["kernel"][:, decode.EOS]
  layer = params[f"decoder_layers_{TINY['num_layers'] - 1}"]
  if "ffn_norm" in layer or "cross_attention_norm" in layer:
    parent, norm = layer, "ffn_norm" if "ffn_norm" in layer else "cross_attention_norm"
  else:
    parent = layer["cross_attention"] = dict(layer["cross_attention"])
    norm = "ffn_norm"
  shift = bias * eos / (eos @ eos)
  old_bias = parent[norm]["bias"]
  parent[norm] = dict(parent[norm], bias=old_bias + jnp.broadcast_to(shift, old_bias.shape))
  return params


def limits_of(inputs, extra):
  lengths = (np.asarray(inputs) > 0).sum(1)
  return np.where(lengths > 0, lengths + extra, 1)


def penalty(length, alpha):
  return ((5.0 + length) / 6.0) ** alpha


@functools.lru_cache(maxsize=None)
def forward_fn(model):
  return jax.jit(lambda p, i, t: model.apply({"params": p}, i, t))


def full_pass_scores(model, params, inputs, tokens, alpha):
  """log p(tokens | inputs) / lp(length) from one full (uncached) forward pass."""
  tokens = np.asarray(tokens)
  logits = forward_fn(model)(params, inputs, tokens)
  log_probs = np.asarray(jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1))
  token_log_probs = np.take_along_axis(log_probs, tokens[..., None], axis=-1)[..., 0]
  valid = tokens > 0
  return (token_log_probs * valid).sum(1) / penalty(valid.sum(1), alpha)


def recompute_greedy(model, params, inputs, extra):
  """Greedy decoding that reruns the whole decoder at every step, without any cache.

  The targets buffer holds the prefix, a dummy non-pad token at the position being predicted
  (the full pass masks query rows whose target is pad; causality hides the dummy itself), and
  zeros after it.
  """
  batch, length = inputs.shape[0], inputs.shape[1] + extra
  limits = limits_of(inputs, extra)
  tokens = np.zeros((batch, length), np.int32)
  finished = np.zeros(batch, bool)
  for t in range(length):
    if finished.all():
      break
    buffer = tokens.copy()
    buffer[:, t] = 2
    log_probs = np.array(jax.nn.log_softmax(forward_fn(model)(params, inputs, buffer)[:, t]))
    log_probs[:, decode.PAD] = -np.inf
    log_probs[t >= limits - 1, decode.EOS + 1 :] = -np.inf
    token = np.where(finished, 0, log_probs.argmax(-1))
    tokens[:, t] = token
    finished |= token == decode.EOS
  return tokens


def recompute_beam_search(model, params, inputs, k, alpha, extra):
  """Textbook beam search in Python, rerunning the whole decoder at every step (no cache).

  Per step and sentence: the top 2k extensions of the alive hypotheses by log-probability;
  EOS extensions ranked in the top k are finished (scored log p / lp(length)); the best k
  others stay alive. Runs until no sentence has an alive hypothesis (no early stopping).
  Returns tokens `[batch, source_len + extra]` and scores `[batch]`.
  """
  batch, length = inputs.shape[0], inputs.shape[1] + extra
  limits = limits_of(inputs, extra)
  alive = [[((), 0.0)] for _ in range(batch)]  # (tokens, log-probability)
  best = [((), -np.inf) for _ in range(batch)]  # (tokens, score)
  row_inputs = np.repeat(inputs, k, axis=0)
  for t in range(length):
    if not any(alive):
      break
    buffer = np.zeros((batch * k, length), np.int32)
    buffer[:, t] = 2  # dummy non-pad target at the predicted position (see recompute_greedy)
    for b, hypotheses in enumerate(alive):
      for j, (tokens, _) in enumerate(hypotheses):
        buffer[b * k + j, :t] = tokens
    log_probs = np.asarray(
      jax.nn.log_softmax(forward_fn(model)(params, row_inputs, buffer)[:, t]), np.float64
    )
    for b, hypotheses in enumerate(alive):
      allowed = [decode.EOS] if t == limits[b] - 1 else range(1, log_probs.shape[1])
      candidates = sorted(
        (
          (log_prob + log_probs[b * k + j, v], tokens + (v,))
          for j, (tokens, log_prob) in enumerate(hypotheses)
          for v in allowed
        ),
        key=lambda c: -c[0],
      )[: 2 * k]
      for rank, (log_prob, tokens) in enumerate(candidates):
        score = log_prob / penalty(t + 1, alpha)
        if tokens[-1] == decode.EOS and rank < k and score > best[b][1]:
          best[b] = (tokens, score)
      alive[b] = [
        (tokens, log_prob) for log_prob, tokens in candidates if tokens[-1] != decode.EOS
      ][:k]
  tokens = np.zeros((batch, length), np.int32)
  for b, (hypothesis, _) in enumerate(best):
    tokens[b, : len(hypothesis)] = hypothesis
  return tokens, np.array([score for _, score in best])


def run(model, params, inputs, **options):
  tokens, scores = decode.make_decode_fn(model, **options)(params, inputs)
  return np.asarray(tokens), np.asarray(scores)


GREEDY = dict(method="greedy", length_penalty=0.6, max_extra_len=EXTRA)
BEAM1_PLAIN = dict(beam_size=1, length_penalty=0.0, max_extra_len=EXTRA)
BEAM1 = dict(beam_size=1, length_penalty=0.6, max_extra_len=EXTRA)
BEAM4 = dict(beam_size=4, length_penalty=0.6, max_extra_len=EXTRA)
BIASES = (0.0, 1.0)  # EOS logit shifts: late and early EOS, limits reached and not
MIXED_BIAS = 0.5  # beam 4 then ends sentences early, at the limit and at once


def check_well_formed(tokens, limits):
  """Each row: non-pad tokens, one EOS at or before the row's limit, then zeros. Returns the
  lengths (EOS included)."""
  lengths = []
  for row, limit in zip(tokens, limits):
    eos = np.flatnonzero(row == decode.EOS)
    assert len(eos) == 1, row
    length = eos[0] + 1
    assert length <= limit, (row, limit)
    assert (row[:length] > 0).all() and (row[length:] == 0).all(), row
    lengths.append(length)
  return np.array(lengths)


@pytest.mark.slow
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_cached_greedy_and_beam_one_equal_greedy_that_recomputes_everything(variant):
  model, _ = build(variant)
  for bias in BIASES:
    params = eos_biased(variant, bias)
    reference = recompute_greedy(model, params, INPUTS, EXTRA)
    greedy, greedy_scores = run(model, params, INPUTS, **GREEDY)
    np.testing.assert_array_equal(greedy, reference)
    beam1, beam1_scores = run(model, params, INPUTS, **BEAM1_PLAIN)
    np.testing.assert_array_equal(beam1, greedy)
    # Scores are log-probabilities of the tokens under the full pass, length-penalised.
    np.testing.assert_allclose(
      greedy_scores, full_pass_scores(model, params, INPUTS, greedy, 0.6), rtol=1e-5
    )
    np.testing.assert_allclose(
      beam1_scores, full_pass_scores(model, params, INPUTS, beam1, 0.0), rtol=1e-5
    )


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["transformer", "weighted-both"])
def test_beam_search_equals_a_beam_search_that_recomputes_everything(variant):
  model, _ = build(variant)
  for bias, alpha in ((0.0, 0.6), (1.0, 0.6), (1.0, 2.5)):
    params = eos_biased(variant, bias)
    tokens, scores = run(model, params, INPUTS, **{**BEAM4, "length_penalty": alpha})
    reference, reference_scores = recompute_beam_search(model, params, INPUTS, 4, alpha, EXTRA)
    np.testing.assert_array_equal(tokens, reference)
    np.testing.assert_allclose(scores, reference_scores, rtol=1e-5)
    np.testing.assert_allclose(
      scores, full_pass_scores(model, params, INPUTS, tokens, alpha), rtol=1e-5
    )


@pytest.mark.parametrize("width, n", [(32000, 8), (131072, 8), (1003, 5), (40, 8), (8, 8)])
def test_blocked_top_k_equals_lax_top_k_ties_and_infinities_included(width, n):
  """Integer-valued floats from a narrow range tie often, also across blocks; -inf and NEG
  stand for impossible tokens; odd widths leave a partly padded last block."""
  rng = np.random.default_rng(width)
  x = rng.integers(-60, 0, (6, width)).astype(np.float32)
  x[0] = -np.inf
  x[0, rng.integers(0, width, 3)] = 0.0
  x[1, : width // 2] = decode.NEG
  x[2] = rng.standard_normal(width)
  x[3, -n:] = 1.0  # the winners in the last (padded) block
  x[4] = 0.0  # all tied: the n lowest indices
  x[5] = np.where(rng.random(width) < 0.5, -1e-30, 0.0)  # 0.0 ties, a hair above the rest
  values, index = jax.jit(decode.top_k, static_argnums=1)(x, n)
  expected_values, expected_index = jax.lax.top_k(x, n)
  np.testing.assert_array_equal(values, expected_values)
  np.testing.assert_array_equal(index, expected_index)


def test_early_stopping_changes_no_result():
  """The loop stops when no sentence of the batch can improve, so a bound that is too tight
  shows on sentences decoded alone; the reference never stops early. A strong length penalty
  (alpha 2.5) makes long hypotheses overtake an early EOS only after first falling behind it."""
  variant = "transformer"
  model, _ = build(variant)
  for bias in BIASES:
    params = eos_biased(variant, bias)
    for sentence in INPUTS[:-1]:
      for alpha in (0.6, 2.5):
        tokens, scores = run(model, params, sentence[None], **{**BEAM4, "length_penalty": alpha})
        reference, reference_scores = recompute_beam_search(
          model, params, sentence[None], 4, alpha, EXTRA
        )
        np.testing.assert_array_equal(tokens, reference)
        np.testing.assert_allclose(scores, reference_scores, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["transformer", "weighted-both"])
def test_wider_beams_find_better_length_penalised_scores(variant):
  model, _ = build(variant)
  greedy, beam1, beam4 = [], [], []
  for bias in BIASES + (MIXED_BIAS,):
    params = eos_biased(variant, bias)
    greedy.append(run(model, params, INPUTS, **GREEDY)[1])
    tokens, scores = run(model, params, INPUTS, **BEAM1)
    np.testing.assert_allclose(
      scores, full_pass_scores(model, params, INPUTS, tokens, 0.6), rtol=1e-5
    )
    beam1.append(scores)
    beam4.append(run(model, params, INPUTS, **BEAM4)[1])
  greedy, beam1, beam4 = map(np.concatenate, (greedy, beam1, beam4))
  # Beam 1 follows greedy's choices up to greedy's EOS and keeps that hypothesis: never worse.
  assert (beam1 >= greedy - 1e-5).all()
  # A wider beam is not better for every sentence (it may prune the greedy path: beam search
  # is not monotone in the beam size), but it is better overall and for most sentences.
  assert beam4.sum() > beam1.sum() + 1.0
  assert (beam4 >= beam1 - 1e-5).mean() >= 0.75, (beam4, beam1)


def test_outputs_end_with_eos_by_each_sentences_limit_and_are_zero_after():
  model, _ = build("transformer")
  limits = limits_of(INPUTS, EXTRA)
  ended_early = reached_limit = 0
  for bias in BIASES:
    params = eos_biased("transformer", bias)
    for options in (GREEDY, BEAM4):
      tokens, scores = run(model, params, INPUTS, **options)
      assert tokens.shape == (INPUTS.shape[0], INPUTS.shape[1] + EXTRA)
      assert np.isfinite(scores).all() and (scores < 0).all()
      lengths = check_well_formed(tokens, limits)
      ended_early += (lengths < limits).sum()
      reached_limit += (lengths[:-1] == limits[:-1]).sum()  # not the filler row (limit 1)
  assert ended_early and reached_limit  # both endings occur


def test_each_sentence_decodes_as_it_would_alone_whatever_the_padding():
  variant = "transformer"
  model, _ = build(variant)
  params = eos_biased(variant, MIXED_BIAS)
  tokens, scores = run(model, params, INPUTS, **BEAM4)
  np.testing.assert_array_equal(tokens[-1], [decode.EOS] + [0] * (tokens.shape[1] - 1))
  short = 6  # the sentences of at most 6 tokens again, padded to 6 only
  for row, (sentence, expected, score) in enumerate(zip(INPUTS[:-1], tokens, scores)):
    alone, alone_score = run(model, params, sentence[None], **BEAM4)
    np.testing.assert_array_equal(alone[0], expected, err_msg=f"sentence {row}")
    np.testing.assert_allclose(alone_score[0], score, rtol=1e-5)
    if (sentence > 0).sum() <= short:
      alone, alone_score = run(model, params, sentence[None, :short], **BEAM4)
      np.testing.assert_array_equal(alone[0], expected[: short + EXTRA])
      assert (expected[short + EXTRA :] == 0).all()
      np.testing.assert_allclose(alone_score[0], score, rtol=1e-5)


def test_the_buffer_is_clipped_to_the_models_max_len_with_a_warning():
  model, params = build("transformer")
  with pytest.warns(UserWarning, match="exceeds model.max_len=64"):
    tokens, _ = decode.greedy_decode(model, params, INPUTS, max_extra_len=60)
  tokens = np.asarray(tokens)
  assert tokens.shape == (INPUTS.shape[0], 64)
  limits = np.minimum(limits_of(INPUTS, 60), 64)
  assert (check_well_formed(tokens, limits) == 64).any()  # EOS forced at the clipped limit


@pytest.mark.parametrize(
  "options, message",
  [
    (dict(beam_size=0), "beam_size=0 must be a positive integer"),
    (dict(max_extra_len=-1), "max_extra_len=-1 must be a non-negative integer"),
    (dict(method="sample"), "method='sample' must be 'beam' or 'greedy'"),
  ],
)
def test_invalid_options_are_refused_before_tracing(options, message):
  model, _ = build("transformer")
  with pytest.raises(ValueError, match=message):
    decode.make_decode_fn(model, **options)


def test_sources_longer_than_the_model_takes_are_cut_with_a_warning_and_the_rest_decode():
  """max_len=64 and max_extra_len=6 leave 58 source tokens: a source of 80 keeps its first 57
  and EOS (so its output keeps room for 57 + 1 + 6 tokens); the other rows are untouched."""
  model, _ = build("transformer")
  params = eos_biased("transformer", MIXED_BIAS)
  limit = 58
  long_source = np.append(np.arange(79) % 37 + 2, decode.EOS).astype(np.int32)  # 80 tokens
  inputs = np.zeros((3, 80), np.int32)
  inputs[0] = long_source
  inputs[1, :10] = INPUTS[1]
  cut = np.zeros((3, limit), np.int32)
  cut[0] = np.append(long_source[: limit - 1], decode.EOS)
  cut[1, :10] = INPUTS[1]
  for options in (GREEDY, BEAM4):
    with pytest.warns(
      UserWarning,
      match=r"source_len=80 exceeds the 58 source tokens .*rows 0 "
      r"\(80 tokens\)",
    ):
      tokens, scores = run(model, params, inputs, **options)
    expected, expected_scores = run(model, params, cut, **options)
    np.testing.assert_array_equal(tokens, expected)
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-6)
    assert tokens.shape == (3, model.config.max_len)
    check_well_formed(tokens, limits_of(cut, EXTRA))
  # Under jit (as evaluation traces it) the rows are unknown; the warning and result are not.
  jitted = jax.jit(decode.make_decode_fn(model, **BEAM4))
  with pytest.warns(UserWarning, match="sources longer than 58 tokens are cut"):
    tokens, _ = jitted(params, inputs)
  np.testing.assert_array_equal(np.asarray(tokens), run(model, params, cut, **BEAM4)[0])
  assert decode.max_source_len(model.config.max_len, EXTRA) == limit
  assert decode.max_source_len(64, 60) == 32  # half of max_len stays for the source


def test_padding_past_the_source_limit_is_dropped_silently():
  model, _ = build("transformer")
  params = eos_biased("transformer", MIXED_BIAS)
  wide = np.zeros((INPUTS.shape[0], 70), np.int32)  # no sentence is long: only padding goes
  wide[:, : INPUTS.shape[1]] = INPUTS
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    tokens, _ = run(model, params, wide, **GREEDY)
  expected, _ = run(model, params, INPUTS, **GREEDY)
  np.testing.assert_array_equal(tokens[:, : expected.shape[1]], expected)
  assert (tokens[:, expected.shape[1] :] == 0).all()
