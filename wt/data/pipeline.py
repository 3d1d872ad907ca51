"""TranslationData: a dataset tokenized into numpy arrays, and its batch iterators.

`load_translation_data(config.data, row_multiple=devices, process_index=i, process_count=n)`
opens the dataset (Multi30k or WMT14, through TFDS), loads or trains the joint SentencePiece
vocabulary, and tokenizes the training split (cached next to the vocabulary). Everything after
that is numpy, deterministic and cheap:

* `train_batches(seed, start)` is endless. Batch k of the stream is fixed by (seed, k) alone
  (epoch = k // batches_per_epoch is shuffled by (seed, epoch)), and each batch reports
  `position` = k + 1, so a run restored at position p continues with `train_batches(seed, p)`
  exactly as an uninterrupted run would.
* Every process computes the same global plan and materialises only its rows
  (`batching.process_rows`): process i of n holds rows [i * R / n, (i + 1) * R / n) of a global
  batch of R rows, and R is a multiple of row_multiple * process_count.
* `eval_batches(split)` yields every example exactly once, in the same bucketed shapes, with
  `index` (-1 for all-pad rows) to put the outputs back in order.

Training pairs with an empty side or longer than max_length are skipped (counts are logged);
evaluation pairs are never dropped: over-long ones are truncated (and counted in the log).
"""

import functools
import pathlib
from typing import Any, Iterator, Protocol

import jax
import ml_collections
import numpy as np
from absl import logging

from wt.data import batching, multi30k, wmt14
from wt.data.cache import publish, resolve_cache_dir, settings_key
from wt.data.config import (
  DATASET_SPLITS,
  LANGUAGES,
  eval_batch_size_for,
  validate_data_config,
)
from wt.data.errors import DataError
from wt.data.tokenizer import EOS_ID, Tokenizer, load_or_train_tokenizer

_ENCODE_CHUNK = 100_000  # sentences


class SplitReader(Protocol):
  """What TranslationData needs of a dataset (see `sources.TranslationSource`)."""

  @property
  def identity(self) -> str: ...

  def read(self, split: str, source_lang: str, target_lang: str) -> tuple[list[str], list[str]]: ...


def load_translation_data(
  data_config: ml_collections.ConfigDict,
  *,
  row_multiple: int = 1,
  process_index: int = 0,
  process_count: int = 1,
) -> "TranslationData":
  """Opens the configured dataset; see the module docstring."""
  validate_data_config(data_config)
  cache_dir = resolve_cache_dir(data_config.cache_dir)
  open_source = wmt14.open_wmt14 if data_config.dataset == "wmt14" else multi30k.open_multi30k
  return TranslationData(
    data_config,
    open_source(data_config, cache_dir),
    cache_dir=cache_dir,
    row_multiple=row_multiple,
    process_index=process_index,
    process_count=process_count,
  )


def _tokenize(tokenizer: Tokenizer, texts: list[str], dtype=np.int32) -> batching.RaggedTokens:
  """`tokenizer.encode_batch(texts)` as RaggedTokens, in chunks (Python int lists are large)."""
  return batching.RaggedTokens.concatenate(
    [
      batching.RaggedTokens.from_lists(tokenizer.encode_batch(texts[i : i + _ENCODE_CHUNK]), dtype)
      for i in range(0, len(texts), _ENCODE_CHUNK)
    ],
    dtype,
  )


def _vocabulary_sample(sentences: list[str], max_sentences: int) -> list[str]:
  """At most `max_sentences` of `sentences`, a fixed random sample in corpus order."""
  if len(sentences) <= max_sentences:
    return sentences
  chosen = np.random.default_rng(0).choice(len(sentences), max_sentences, replace=False)
  return [sentences[i] for i in np.sort(chosen)]


class TranslationData:
  """Tokenized splits of one dataset and their batches; see the module docstring."""

  def __init__(
    self,
    data_config: ml_collections.ConfigDict,
    source: SplitReader,
    *,
    cache_dir: pathlib.Path,
    row_multiple: int = 1,
    process_index: int = 0,
    process_count: int = 1,
  ):
    validate_data_config(data_config)
    for name, value in (("row_multiple", row_multiple), ("process_count", process_count)):
      if not isinstance(value, int) or value <= 0:
        raise DataError(f"{name}={value!r} is invalid: it must be a positive integer.")
    if not 0 <= process_index < process_count:
      raise DataError(
        f"process_index={process_index!r} is invalid: it must be in "
        f"[0, process_count={process_count})."
      )
    self._config = data_config
    self._source = source
    self._languages = (data_config.source_lang, data_config.target_lang)
    self._process_index, self._process_count = process_index, process_count
    self._eval_splits = {}

    self.tokenizer, (train_sources, train_targets) = self._load_training_tokens(cache_dir)
    self._train_sources, self._train_targets = self._drop_unusable(train_sources, train_targets)
    self.bucket_lengths = batching.choose_bucket_lengths(
      self._train_sources.lengths,
      self._train_targets.lengths,
      num_buckets=data_config.num_buckets,
      quantum=data_config.length_quantum,
    )
    rows = batching.rows_per_bucket(
      self.bucket_lengths, data_config.tokens_per_batch, row_multiple * process_count
    )
    self._plan = batching.TrainPlan(
      batching.assign_buckets(
        self._train_sources.lengths, self._train_targets.lengths, self.bucket_lengths
      ),
      self.bucket_lengths,
      rows,
    )
    if self._plan.batches_per_epoch == 0:
      raise DataError(
        f"The {data_config.train_split} split has {len(self._train_sources)} usable "
        f"pairs, too few for one batch of config.data.tokens_per_batch="
        f"{data_config.tokens_per_batch}: lower tokens_per_batch."
      )
    # (global rows, S, T) of each shape that occurs; each process gets rows // process_count.
    self.batch_shapes = [
      (rows_here, *lengths)
      for rows_here, lengths, count in zip(rows, self.bucket_lengths, self._plan.batches_per_bucket)
      if count
    ]
    self._eval_lengths = self.bucket_lengths + [
      (batching.round_up(data_config.max_length, data_config.length_quantum),) * 2
    ]
    self._eval_spill_targets = batching.spill_targets(self.bucket_lengths) + [None]
    eval_sentences = eval_batch_size_for(data_config.eval_batch_size, jax.default_backend())
    self._eval_rows = batching.round_up(eval_sentences, row_multiple * process_count)
    logging.info(
      "Training batch shapes (global rows, source length, target length): "
      "%s; %d per epoch; %d examples left out of each epoch (different ones "
      "every epoch).",
      self.batch_shapes,
      self.batches_per_epoch,
      self._plan.dropped_per_epoch,
    )

  @property
  def batches_per_epoch(self) -> int:
    return self._plan.batches_per_epoch

  def _load_training_tokens(self, cache_dir: pathlib.Path):
    """The tokenizer (loaded or trained) and the tokenized training split (cached)."""
    config = self._config
    settings = dict(
      data=self._source.identity,
      languages=sorted(LANGUAGES),
      vocab_size=config.vocab_size,
      model_type=config.spm_model_type,
      max_sentences=config.spm_max_sentences,
      split=config.train_split,
    )
    model_dir = (
      cache_dir
      / "spm"
      / settings_key(
        f"{self._source.identity}-{config.spm_model_type}{config.vocab_size}", settings
      )
    )
    read_text = functools.cache(lambda: self._source.read(config.train_split, *LANGUAGES))
    tokenizer = load_or_train_tokenizer(
      model_dir / "spm.model",
      lambda: _vocabulary_sample([*read_text()[0], *read_text()[1]], config.spm_max_sentences),
      vocab_size=config.vocab_size,
      model_type=config.spm_model_type,
    )
    tokens_path = model_dir / f"{config.train_split}.tokens.npz"
    if not tokens_path.exists():
      dtype = np.uint16 if tokenizer.vocab_size <= 2**16 else np.int32
      arrays: dict[str, Any] = {}
      for language, texts in zip(LANGUAGES, read_text()):
        tokens = _tokenize(tokenizer, texts, dtype)
        arrays[f"{language}_flat"], arrays[f"{language}_offsets"] = (tokens.flat, tokens.offsets)
      publish(tokens_path, lambda f: np.savez(f, **arrays))
    with np.load(tokens_path) as arrays:
      return tokenizer, tuple(
        batching.RaggedTokens(arrays[f"{language}_flat"], arrays[f"{language}_offsets"])
        for language in self._languages
      )

  def _drop_unusable(self, sources: batching.RaggedTokens, targets: batching.RaggedTokens):
    """The training pairs without an empty side and within max_length; logs the counts."""
    max_length = self._config.max_length
    empty = (sources.lengths <= 1) | (targets.lengths <= 1)  # Just EOS.
    too_long = ~empty & ((sources.lengths > max_length) | (targets.lengths > max_length))
    kept = np.flatnonzero(~empty & ~too_long)
    logging.info(
      "%s split: kept %d of %d pairs; skipped %d with an empty side and %d "
      "longer than max_length=%d tokens.",
      self._config.train_split,
      len(kept),
      len(sources),
      empty.sum(),
      too_long.sum(),
      max_length,
    )
    if not len(kept):
      raise DataError(
        f"The {self._config.train_split} split has no pair with both sides "
        f"non-empty and at most config.data.max_length={max_length} tokens."
      )
    return sources.select(kept), targets.select(kept)

  def _check_split(self, split: str) -> None:
    if split not in DATASET_SPLITS[self._config.dataset]:
      raise DataError(
        f"Unknown split {split!r}: {self._config.dataset} has splits "
        f"{DATASET_SPLITS[self._config.dataset]}."
      )

  def raw_split(self, split: str) -> tuple[list[str], list[str]]:
    """Untokenized (sources, references) of `split`, in index order."""
    self._check_split(split)
    if split == self._config.train_split:
      return self._source.read(split, *self._languages)
    return self._eval_split(split)["text"]

  def num_examples(self, split: str) -> int:
    """Examples of `split`: all of an evaluation split, the usable pairs of the train split."""
    self._check_split(split)
    if split == self._config.train_split:
      return len(self._train_sources)
    return len(self._eval_split(split)["text"][0])

  def _eval_split(self, split: str) -> dict:
    """Text, tokens (truncated to max_length) and bucket of each example, computed once."""
    if split not in self._eval_splits:
      text = self._source.read(split, *self._languages)
      max_length = self._config.max_length
      tokens = []
      for side, texts in zip(("source", "target"), text):
        full = _tokenize(self.tokenizer, texts)
        truncated = int((full.lengths > max_length).sum())
        if truncated:
          logging.warning(
            "%s split: truncated %d %s sentences of more than max_length=%d tokens.",
            split,
            truncated,
            side,
            max_length,
          )
        tokens.append(full.truncated(max_length, EOS_ID))
      buckets = batching.assign_buckets(tokens[0].lengths, tokens[1].lengths, self._eval_lengths)
      self._eval_splits[split] = dict(text=text, tokens=tokens, buckets=buckets)
    return self._eval_splits[split]

  def _local_rows(self, global_rows: int) -> slice:
    return batching.process_rows(global_rows, self._process_index, self._process_count)

  def _materialise(self, tokens, lengths, indices: np.ndarray) -> tuple[dict, np.ndarray]:
    """This process's rows of the global batch `indices`, and their example indices."""
    local = indices[self._local_rows(len(indices))]
    return {
      "inputs": tokens[0].padded(local, lengths[0]),
      "targets": tokens[1].padded(local, lengths[1]),
    }, local

  def train_batches(self, seed: int, start: int = 0) -> Iterator[dict]:
    """Endless training batches from stream position `start`; see the module docstring."""
    for name, value in (("seed", seed), ("start", start)):
      if not isinstance(value, (int, np.integer)) or value < 0:
        raise DataError(f"{name}={value!r} is invalid: it must be an integer >= 0.")
    return self._train_stream(int(seed), int(start))

  def _train_stream(self, seed: int, start: int) -> Iterator[dict]:
    epoch, offset = divmod(start, self.batches_per_epoch)
    position = start
    tokens = (self._train_sources, self._train_targets)
    while True:
      for bucket, indices in self._plan.epoch(seed, epoch)[offset:]:
        position += 1
        batch, _ = self._materialise(tokens, self.bucket_lengths[bucket], indices)
        yield {**batch, "position": position}
      epoch, offset = epoch + 1, 0

  def eval_shapes(self, split: str) -> list[tuple[int, int, int]]:
    """The distinct (rows, source_len, target_len) of `eval_batches(split)`, this process's rows."""
    shapes = (
      (b["inputs"].shape[0], *b["inputs"].shape[1:], b["targets"].shape[1])
      for b in self.eval_batches(split)
    )
    return sorted(set(shapes))

  def eval_batches(self, split: str) -> Iterator[dict]:
    """One pass over `split`: every example once, with 'index' (-1 = padding row)."""
    self._check_split(split)
    examples = self._eval_split(split)
    for bucket, indices in batching.eval_plan(
      examples["buckets"], self._eval_rows, self._eval_spill_targets
    ):
      lengths = self._eval_lengths[bucket]
      batch, local = self._materialise(examples["tokens"], lengths, indices)
      yield {**batch, "index": local.astype(np.int32)}
