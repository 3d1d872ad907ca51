"""Translating a whole split with a trained model, and scoring it with sacreBLEU.

  load_trained       a finished run's config, data, model and (optionally averaged) params
  evaluate_split     decodes every example of a split exactly once (the data layer's
                     evaluation batches carry each example's index), detokenizes with the
                     run's SentencePiece model and scores against the raw references
  translate_sentences  the same for arbitrary text (the translate command)

Every distinct batch shape is compiled before the clock starts, so the reported speed is
decoding only.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Optional, Sequence

import jax
import numpy as np
from absl import logging

from wt import decode, metrics, models, train


@dataclasses.dataclass
class TrainedModel:
  config: Any        # the run's ml_collections config
  data: Any          # wt.data.TranslationData (tokenizer, splits)
  model: models.Transformer
  params: Any


def load_trained(workdir: str, *, average_last: Optional[int] = None,
                 **model_changes) -> TrainedModel:
  """Loads a run for evaluation: parameters averaged over the last `average_last` checkpoints
  (default: the run's decode.average_last); `model_changes` set ModelConfig fields at test
  time (e.g. test_branch_weights="uniform")."""
  from wt import data as data_lib  # pylint: disable=g-import-not-at-top
  config = train.load_run_config(workdir)
  if average_last is None:
    average_last = config.decode.average_last
  data = data_lib.load_translation_data(config.data)
  model_config = train.model_config_from(config, data.tokenizer.vocab_size)
  params = train.restore_params(workdir, average_last)
  return TrainedModel(config, data, models.Transformer(model_config.replace(**model_changes)),
                      params)


def translate_batches(model: models.Transformer, params: Any, batches: list[dict], tokenizer,
                      num_sentences: int, *, beam_size: int, length_penalty: float,
                      max_extra_len: int) -> tuple[list[str], dict]:
  """Translations in index order, and timing: (sentences, compile_seconds, seconds, speed)."""
  method = "greedy" if beam_size == 1 else "beam"
  decode_fn = jax.jit(decode.make_decode_fn(model, beam_size=beam_size,
                                            length_penalty=length_penalty,
                                            max_extra_len=max_extra_len, method=method))
  start = time.perf_counter()
  compiled = {}
  for batch in batches:
    shape = batch["inputs"].shape
    if shape not in compiled:
      compiled[shape] = decode_fn.lower(params, batch["inputs"]).compile()
  compile_seconds = time.perf_counter() - start

  start = time.perf_counter()
  outputs = [(batch["index"], compiled[batch["inputs"].shape](params, batch["inputs"])[0])
             for batch in batches]
  translations: list[Any] = [None] * num_sentences
  for index, tokens in outputs:
    tokens = np.asarray(jax.device_get(tokens))
    for row, example in enumerate(index):
      if example >= 0:
        translations[example] = tokenizer.decode(tokens[row])
  seconds = time.perf_counter() - start
  missing = [i for i, t in enumerate(translations) if t is None]
  if missing:
    raise RuntimeError(f"{len(missing)} examples were not decoded (first: {missing[:5]}); the "
                       f"evaluation batches must cover every example once")
  timing = {"sentences": num_sentences, "compile_seconds": compile_seconds,
            "seconds": seconds, "sentences_per_second": num_sentences / max(seconds, 1e-9),
            "beam_size": beam_size, "batch_sentences": int(batches[0]["inputs"].shape[0])}
  return translations, timing


def evaluate_split(model: models.Transformer, params: Any, data, split: str,
                   decode_config) -> dict:
  """BLEU, chrF (with sacreBLEU signatures), decoding speed and the translations of a split.

  `data` is a `wt.data.TranslationData`; `decode_config` has beam_size, length_penalty and
  max_extra_len.
  """
  sources, references = data.raw_split(split)
  translations, timing = translate_batches(
      model, params, list(data.eval_batches(split)), data.tokenizer, len(references),
      beam_size=decode_config.beam_size, length_penalty=decode_config.length_penalty,
      max_extra_len=decode_config.max_extra_len)
  scores = metrics.bleu(translations, references)
  logging.info("%s: BLEU %.2f (%s), chrF %.2f; %.1f sentences/s (beam %d)", split,
               scores["bleu"], scores["bleu_signature"], scores["chrf"],
               timing["sentences_per_second"], decode_config.beam_size)
  return {**scores, **timing, "split": split, "translations": translations,
          "sources": sources}


def translate_sentences(model: models.Transformer, params: Any, tokenizer,
                        sentences: Sequence[str], *, batch_size: int = 64,
                        length_quantum: int = 8, **decode_options) -> tuple[list[str], dict]:
  """Translations of raw sentences (any order of lengths), and the decoding timing.

  Sentences are sorted by length and padded to a multiple of `length_quantum` tokens, so a
  file compiles a few shapes; `decode_options` are beam_size, length_penalty, max_extra_len.
  """
  encoded = tokenizer.encode_batch(sentences)
  order = np.argsort([len(ids) for ids in encoded], kind="stable")
  batches = []
  for start in range(0, len(order), batch_size):
    chosen = order[start:start + batch_size]
    width = -(-max(len(encoded[i]) for i in chosen) // length_quantum) * length_quantum
    inputs = np.zeros((batch_size, width), np.int32)
    index = np.full((batch_size,), -1, np.int64)
    for row, example in enumerate(chosen):
      inputs[row, :len(encoded[example])] = encoded[example]
      index[row] = example
    batches.append({"inputs": inputs, "index": index})
  return translate_batches(model, params, batches, tokenizer, len(sentences), **decode_options)
