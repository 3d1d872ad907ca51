"""Translating a whole split with a trained model, and scoring it with sacreBLEU.

  load_trained       a finished run's config, data, model and (optionally averaged) params
  evaluate_split     decodes every example of a split exactly once (the data layer's
                     evaluation batches carry each example's index), detokenizes with the
                     run's SentencePiece model and scores against the raw references
  translate_sentences  the same for arbitrary text (the translate command): an empty or
                     whitespace-only sentence gives an empty translation (nothing is decoded),
                     a sentence longer than the model takes is cut with a warning naming it

Every distinct batch shape is compiled before the clock starts, so the reported speed is
decoding only. A process with several devices splits each batch's rows over them (the
decoder under shard_map, no communication: every row is decoded on its own); in a
multi-process run each process decodes its rows of every batch and the rows are gathered in
order (`gather_rows`), so every process gets every translation.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Optional, Sequence

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from wt import data as data_lib
from wt import decode, metrics, models, parallel, run_config, train
from wt.data import batching


@dataclasses.dataclass
class TrainedModel:
  config: Any  # the run's ml_collections config
  data: Any  # wt.data.TranslationData (tokenizer, splits)
  model: models.Transformer
  params: Any


def load_trained(
  workdir: str,
  *,
  average_last: Optional[int] = None,
  eval_batch_size: Optional[int] = None,
  **model_changes,
) -> TrainedModel:
  """Loads a run for evaluation: parameters averaged over the last `average_last` checkpoints
  (default: the run's decode.average_last), evaluation batches of `eval_batch_size` sentences
  (default: the run's data.eval_batch_size; 0: the backend's); `model_changes` set ModelConfig
  fields at test time (e.g. test_branch_weights="uniform")."""
  config = run_config.load(workdir)
  if average_last is None:
    average_last = config.decode.average_last
  if eval_batch_size is not None:
    config.data.eval_batch_size = eval_batch_size
  # Each process of a multi-process run holds its rows of every evaluation batch, in a
  # multiple of its device count (translate_batches splits them over its devices).
  data = data_lib.load_translation_data(
    config.data,
    row_multiple=jax.local_device_count(),
    process_index=jax.process_index(),
    process_count=jax.process_count(),
  )
  model_config = train.model_config_from(config, data.tokenizer.vocab_size)
  params = train.restore_params(workdir, average_last)
  return TrainedModel(
    config, data, models.Transformer(model_config.replace(**model_changes)), params
  )


def translate_batches(
  model: models.Transformer,
  params: Any,
  batches: list[dict],
  tokenizer,
  num_sentences: int,
  *,
  beam_size: int,
  length_penalty: float,
  max_extra_len: int,
  devices: Optional[Sequence[jax.Device]] = None,
) -> tuple[list[str], dict]:
  """Translations in index order, and timing: (sentences, compile_seconds, seconds, speed).

  Each batch's rows are split over `devices` (default: this process's) when every batch has
  a multiple of their count, else decoded on the first one."""
  method = "greedy" if beam_size == 1 else "beam"
  decode_fn = decode.make_decode_fn(
    model,
    beam_size=beam_size,
    length_penalty=length_penalty,
    max_extra_len=max_extra_len,
    method=method,
  )
  devices = list(devices or jax.local_devices())
  if any(batch["inputs"].shape[0] % len(devices) for batch in batches):
    devices = devices[:1]
  mesh = Mesh(np.array(devices), ("rows",))
  rows = NamedSharding(mesh, PartitionSpec("rows"))
  params = jax.device_put(params, NamedSharding(mesh, PartitionSpec()))
  decode_rows = jax.jit(
    jax.shard_map(
      decode_fn,
      mesh=mesh,
      in_specs=(PartitionSpec(), PartitionSpec("rows")),
      out_specs=PartitionSpec("rows"),
      check_vma=False,
    )
  )
  start = time.perf_counter()
  dtype = batches[0]["inputs"].dtype
  compiled = parallel.compile_each(
    lambda shape: decode_rows.lower(
      params, jax.ShapeDtypeStruct(shape, dtype, sharding=rows)
    ).compile(),
    [batch["inputs"].shape for batch in batches],
  )
  compile_seconds = time.perf_counter() - start

  start = time.perf_counter()
  outputs = [
    (
      batch["index"],
      compiled[batch["inputs"].shape](params, jax.device_put(batch["inputs"], rows))[0],
    )
    for batch in batches
  ]
  index, tokens = gather_rows([(np.asarray(i), np.asarray(jax.device_get(t))) for i, t in outputs])
  translations: list[Any] = [None] * num_sentences
  for example, row in zip(index, tokens):
    if example >= 0:
      translations[example] = tokenizer.decode(row)
  seconds = time.perf_counter() - start
  missing = [i for i, t in enumerate(translations) if t is None]
  if missing:
    raise RuntimeError(
      f"{len(missing)} examples were not decoded (first: {missing[:5]}); the "
      f"evaluation batches must cover every example once"
    )
  timing = {
    "sentences": num_sentences,
    "compile_seconds": compile_seconds,
    "seconds": seconds,
    "sentences_per_second": num_sentences / max(seconds, 1e-9),
    "beam_size": beam_size,
    "batch_sentences": int(batches[0]["inputs"].shape[0]) * jax.process_count(),
  }
  return translations, timing


def gather_rows(outputs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
  """The decoded rows of every process: (example index [n], tokens [n, width], zero-padded)
  from each process's (index, tokens) batches; rows of index -1 are padding. In a single
  process these are its own rows; in several, each process's are padded to the longest and
  gathered with process_allgather, so every process gets all of them."""
  width = max((tokens.shape[1] for _, tokens in outputs), default=1)
  index = np.concatenate([i for i, _ in outputs] or [np.zeros([0])]).astype(np.int32)
  tokens = np.zeros((len(index), width), np.int32)
  row = 0
  for rows, batch_tokens in outputs:
    tokens[row : row + len(rows), : batch_tokens.shape[1]] = batch_tokens
    row += len(rows)
  if jax.process_count() == 1:
    return index, tokens
  rows, width = np.max(
    multihost_utils.process_allgather(np.array([len(index), width], np.int32)), axis=0
  )
  index = np.pad(index, (0, rows - len(index)), constant_values=-1)
  tokens = np.pad(tokens, ((0, rows - tokens.shape[0]), (0, width - tokens.shape[1])))
  return (
    np.asarray(multihost_utils.process_allgather(index)).reshape(-1),
    np.asarray(multihost_utils.process_allgather(tokens)).reshape(-1, width),
  )


def evaluate_split(model: models.Transformer, params: Any, data, split: str, decode_config) -> dict:
  """BLEU, chrF (with sacreBLEU signatures), decoding speed and the translations of a split.

  `data` is a `wt.data.TranslationData`; `decode_config` has beam_size, length_penalty and
  max_extra_len.
  """
  sources, references = data.raw_split(split)
  translations, timing = translate_batches(
    model,
    params,
    list(data.eval_batches(split)),
    data.tokenizer,
    len(references),
    beam_size=decode_config.beam_size,
    length_penalty=decode_config.length_penalty,
    max_extra_len=decode_config.max_extra_len,
  )
  scores = metrics.bleu(translations, references)
  logging.info(
    "%s: BLEU %.2f (%s), chrF %.2f; %.1f sentences/s (beam %d)",
    split,
    scores["bleu"],
    scores["bleu_signature"],
    scores["chrf"],
    timing["sentences_per_second"],
    decode_config.beam_size,
  )
  return {**scores, **timing, "split": split, "translations": translations, "sources": sources}


def translate_sentences(
  model: models.Transformer,
  params: Any,
  tokenizer,
  sentences: Sequence[str],
  *,
  batch_size: int = 64,
  length_quantum: int = 8,
  **decode_options,
) -> tuple[list[str], dict]:
  """Translations of raw sentences (any order of lengths), and the decoding timing.

  Sentences are sorted by length and padded to a multiple of `length_quantum` tokens, so a
  file compiles a few shapes; `decode_options` are beam_size, length_penalty, max_extra_len.
  One translation per sentence, always: an empty or whitespace-only sentence translates to ""
  without decoding (the model would invent one); a sentence of more tokens than
  `decode.max_source_len` allows (model.max_len less max_extra_len for the translation) keeps
  its first tokens and EOS, with one warning naming its line (sentence i is line i + 1) and
  its length. The timing counts the decoded sentences only.
  """
  indices = [i for i, sentence in enumerate(sentences) if sentence.strip()]
  translations = [""] * len(sentences)
  if not indices:
    return translations, {
      "sentences": 0,
      "compile_seconds": 0.0,
      "seconds": 0.0,
      "sentences_per_second": 0.0,
      "beam_size": decode_options["beam_size"],
      "batch_sentences": batch_size,
    }
  encoded = tokenizer.encode_batch([sentences[i] for i in indices])
  limit = decode.max_source_len(model.config.max_len, decode_options["max_extra_len"])
  for j, ids in enumerate(encoded):
    if len(ids) > limit:
      logging.warning(
        "line %d: %d tokens (%d characters), more than the %d source tokens that "
        "model.max_len=%d leaves beside max_extra_len=%d for the translation; only its first "
        "%d tokens are translated. Split the line to translate all of it",
        indices[j] + 1,
        len(ids),
        len(sentences[indices[j]]),
        limit,
        model.config.max_len,
        decode_options["max_extra_len"],
        limit - 1,
      )
      encoded[j] = ids[: limit - 1] + [tokenizer.eos_id]
  order = np.argsort([len(ids) for ids in encoded], kind="stable")
  # Several processes: each decodes its rows of every batch (translate_batches gathers them),
  # split over its devices.
  row_multiple = jax.process_count() * jax.local_device_count()
  batch_size = -(-batch_size // row_multiple) * row_multiple
  local = batching.process_rows(batch_size, jax.process_index(), jax.process_count())
  batches = []
  for start in range(0, len(order), batch_size):
    chosen = order[start : start + batch_size]
    width = -(-max(len(encoded[i]) for i in chosen) // length_quantum) * length_quantum
    width = min(width, limit)  # padding past the limit would only be cut off again
    inputs = np.zeros((batch_size, width), np.int32)
    index = np.full((batch_size,), -1, np.int64)
    for row, example in enumerate(chosen):
      inputs[row, : len(encoded[example])] = encoded[example]
      index[row] = example
    batches.append({"inputs": inputs[local], "index": index[local]})
  decoded, timing = translate_batches(
    model, params, batches, tokenizer, len(encoded), **decode_options
  )
  for i, translation in zip(indices, decoded):
    translations[i] = translation
  return translations, timing
