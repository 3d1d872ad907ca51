"""The data config (`config.data`): defaults and early validation.

Fields:
  dataset            'multi30k' (default) or 'wmt14' (TFDS wmt14_translate/de-en; never a fallback).
  source_lang, target_lang   'en' and 'de', either direction.
  data_dir           Multi30k: the folder with the raw .gz files, or a parent holding `multi30k/`
                     (else env WT_DATA_DIR, else <repo>/../shared/data/multi30k, else download).
                     WMT14: the TFDS data_dir (else <cache_dir>/tfds).
  cache_dir          TFDS data, downloads, SentencePiece models, tokenized splits
                     (else env WT_CACHE_DIR, else ~/.cache/wt).
  vocab_size, spm_model_type   the joint SentencePiece vocabulary of both languages.
  spm_max_sentences  at most this many training sentences (sampled) train the vocabulary.
  max_length         tokens per side, EOS included; longer training pairs are skipped, longer
                     evaluation pairs truncated.
  tokens_per_batch   token slots per side in one global training batch (rows * length).
  num_buckets        the number of distinct training batch shapes (each costs one compile).
  length_quantum     bucket lengths are multiples of this (1 on CPU/GPU; 8 suits TPUs).
  eval_batch_size    sentences per global evaluation batch (rounded up to the device multiple).
  train_split, eval_split, test_split   split names (see DATASET_SPLITS).
"""

import ml_collections

from wt.data.errors import DataError

DATASET_SPLITS = {
    "multi30k": ("train", "validation", "test", "test2017_flickr", "test2017_mscoco",
                 "test2018_flickr"),
    "wmt14": ("train", "validation", "test"),
}
LANGUAGES = ("en", "de")
SPM_MODEL_TYPES = ("unigram", "bpe", "char", "word")
_POSITIVE_INTS = ("vocab_size", "spm_max_sentences", "max_length", "tokens_per_batch",
                  "num_buckets", "length_quantum", "eval_batch_size")


def default_data_config() -> ml_collections.ConfigDict:
  """The defaults of `config.data`."""
  return ml_collections.ConfigDict(dict(
      dataset="multi30k",
      source_lang="en",
      target_lang="de",
      data_dir=ml_collections.config_dict.placeholder(str),
      cache_dir=ml_collections.config_dict.placeholder(str),
      vocab_size=8000,
      spm_model_type="unigram",
      spm_max_sentences=1_000_000,
      max_length=128,
      tokens_per_batch=4096,
      num_buckets=8,
      length_quantum=1,
      eval_batch_size=64,
      train_split="train",
      eval_split="validation",
      test_split="test",
  ))


def _fail(field: str, value, valid: str) -> DataError:
  return DataError(f"config.data.{field}={value!r} is invalid: {valid}.")


def validate_data_config(data_config: ml_collections.ConfigDict) -> None:
  """Raises DataError naming the field, its value and what is valid, for the first bad field."""
  unknown = sorted(set(data_config.keys()) - set(default_data_config().keys()))
  if unknown:
    raise DataError(f"config.data has unknown fields {unknown}: the valid fields are "
                    f"{sorted(default_data_config().keys())} (see wt/data/config.py).")
  if data_config.dataset not in DATASET_SPLITS:
    raise _fail("dataset", data_config.dataset, f"use one of {sorted(DATASET_SPLITS)}")
  for field in ("source_lang", "target_lang"):
    if data_config[field] not in LANGUAGES:
      raise _fail(field, data_config[field], f"use one of {LANGUAGES}")
  if data_config.source_lang == data_config.target_lang:
    raise _fail("target_lang", data_config.target_lang, "it must differ from source_lang")
  if data_config.spm_model_type not in SPM_MODEL_TYPES:
    raise _fail("spm_model_type", data_config.spm_model_type, f"use one of {SPM_MODEL_TYPES}")
  for field in _POSITIVE_INTS:
    value = data_config[field]
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
      raise _fail(field, value, "it must be a positive integer")
  if data_config.vocab_size < 4:
    raise _fail("vocab_size", data_config.vocab_size,
                "it must be at least 4 (pad, EOS and unk take ids 0-2)")
  if data_config.max_length < 2:
    raise _fail("max_length", data_config.max_length, "it must be at least 2 (a token and EOS)")
  if data_config.tokens_per_batch < data_config.max_length:
    raise _fail("tokens_per_batch", data_config.tokens_per_batch,
                f"it must be at least max_length={data_config.max_length}, so that one "
                "sentence of the longest allowed length fits in a batch")
  splits = DATASET_SPLITS[data_config.dataset]
  for field in ("train_split", "eval_split", "test_split"):
    if data_config[field] not in splits:
      raise _fail(field, data_config[field], f"{data_config.dataset} has splits {splits}")
