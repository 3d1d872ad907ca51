"""The data config (`config.data`): `DataConfig`, its fields, defaults and checks.

Fields:
  dataset            'multi30k' (default) or 'wmt14' (TFDS wmt14_translate/de-en; never a fallback).
  source_lang, target_lang   'en' and 'de', either direction.
  data_dir           Multi30k: the folder with the raw .gz files, or a parent holding `multi30k/`
                     (else env WT_DATA_DIR, else <repo>/../shared/data/multi30k, else download).
                     WMT14: a folder of plain-text files {train,validation,test}.{en,de}
                     (optionally .gz; see wt/data/wmt14.py), else the TFDS data_dir (default
                     <cache_dir>/tfds).
  reader             'tfds' (default): Multi30k goes through a TFDS dataset built from its raw
                     files, WMT14 through TFDS unless data_dir holds a local copy; 'files': the
                     plain files themselves, no TensorFlow needed (Multi30k's raw files, WMT14's
                     local copy, which must then exist). Same sentences, same caches either way.
  cache_dir          TFDS data, downloads, SentencePiece models, tokenized splits
                     (else env WT_CACHE_DIR, else ~/.cache/wt).
  vocab_size, spm_model_type   the joint SentencePiece vocabulary of both languages.
  spm_max_sentences  at most this many training sentences (sampled) train the vocabulary.
  max_length         tokens per side, EOS included; longer training pairs are skipped, longer
                     evaluation pairs truncated.
  tokens_per_batch   token slots per side in one global training batch (rows * length).
  tokens_per_device  0 (default): tokens_per_batch is the global budget whatever the device
                     count; > 0: the global budget is this times the device count, set into
                     tokens_per_batch at start (wt/distributed.py apply_backend_defaults).
  num_buckets        the number of distinct training batch shapes (each costs one compile).
  length_quantum     bucket lengths are multiples of this (1 on CPU/GPU; 8 suits TPUs).
  eval_batch_size    sentences per global evaluation batch (rounded up to the device multiple);
                     0 (default): `eval_batch_size_for(backend)`, 16 on CPU and 64 on
                     accelerators.
  train_split, eval_split, test_split   split names (see DATASET_SPLITS).
"""

import dataclasses
from typing import Optional

import ml_collections

from wt import config_checks as checks
from wt.data.errors import DataError

DATASET_SPLITS = {
  "multi30k": (
    "train",
    "validation",
    "test",
    "test2017_flickr",
    "test2017_mscoco",
    "test2018_flickr",
  ),
  "wmt14": ("train", "validation", "test"),
}
LANGUAGES = ("en", "de")
SPM_MODEL_TYPES = ("unigram", "bpe", "char", "word")
READERS = ("tfds", "files")


class DataConfigError(DataError, checks.ConfigError):
  """A config.data field that cannot work: a DataError like every data failure, and a
  ConfigError like every bad config field."""


CPU_EVAL_BATCH_SIZE, ACCELERATOR_EVAL_BATCH_SIZE = 16, 64


def eval_batch_size_for(eval_batch_size: int, backend: str) -> int:
  """`eval_batch_size`, or for 0 the backend's default. Beam search runs a batch until its last
  sentence ends, so a wide batch waits for its slowest sentence. A CPU gains little speed from
  width and decodes faster in narrow batches (the same translations); a GPU or TPU needs the
  width."""
  if eval_batch_size:
    return eval_batch_size
  return CPU_EVAL_BATCH_SIZE if backend == "cpu" else ACCELERATOR_EVAL_BATCH_SIZE


@dataclasses.dataclass(frozen=True)
class DataConfig(checks.Section, section="data", error=DataConfigError):
  """Which data a run reads and how it is batched; each field is described in the module
  docstring. Checked when built."""

  dataset: str = "multi30k"
  source_lang: str = "en"
  target_lang: str = "de"
  data_dir: Optional[str] = None
  reader: str = "tfds"
  cache_dir: Optional[str] = None
  vocab_size: int = 8000
  spm_model_type: str = "unigram"
  spm_max_sentences: int = 1_000_000
  max_length: int = 128
  tokens_per_batch: int = 4096
  tokens_per_device: int = 0
  num_buckets: int = 8
  length_quantum: int = 1
  eval_batch_size: int = 0
  train_split: str = "train"
  eval_split: str = "validation"
  test_split: str = "test"

  def __post_init__(self):
    checks.check_types(self)
    checks.one_of(self, "dataset", sorted(DATASET_SPLITS))
    checks.one_of(self, "source_lang", LANGUAGES)
    checks.one_of(self, "target_lang", LANGUAGES)
    if self.source_lang == self.target_lang:
      raise checks.fail(self, "target_lang", "must differ from source_lang")
    checks.one_of(self, "spm_model_type", SPM_MODEL_TYPES)
    checks.one_of(self, "reader", READERS)
    checks.positive_int(
      self,
      "vocab_size",
      "spm_max_sentences",
      "max_length",
      "tokens_per_batch",
      "num_buckets",
      "length_quantum",
    )
    checks.at_least(self, "vocab_size", 4, "(pad, EOS and unk take ids 0-2)")
    checks.at_least(self, "max_length", 2, "(a token and EOS)")
    checks.at_least(self, "tokens_per_device", 0, "(0: tokens_per_batch is the global budget)")
    checks.at_least(
      self,
      "eval_batch_size",
      0,
      f"(0: {CPU_EVAL_BATCH_SIZE} on CPU, {ACCELERATOR_EVAL_BATCH_SIZE} on accelerators)",
    )
    if 0 < self.tokens_per_device < self.max_length:
      raise checks.fail(
        self,
        "tokens_per_device",
        f"must be 0 or at least max_length="
        f"{self.max_length}, so that every device holds a whole sentence",
      )
    if self.tokens_per_batch < self.max_length:
      raise checks.fail(
        self,
        "tokens_per_batch",
        f"must be at least max_length="
        f"{self.max_length}, so that one sentence of the longest allowed length "
        f"fits in a batch",
      )
    splits = DATASET_SPLITS[self.dataset]
    for field in ("train_split", "eval_split", "test_split"):
      if getattr(self, field) not in splits:
        raise checks.fail(
          self, field, f"is not a split of {self.dataset}: {self.dataset} has splits {splits}"
        )


def default_data_config() -> ml_collections.ConfigDict:
  """The defaults of `config.data`."""
  return ml_collections.ConfigDict(checks.default_values(DataConfig))


def validate_data_config(data_config) -> DataConfig:
  """The DataConfig of `config.data`; DataConfigError (a DataError) naming the field, its
  value and what is valid, for the first bad or unknown field."""
  return DataConfig.from_mapping(data_config)
