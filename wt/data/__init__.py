"""The data layer: Multi30k (default) or WMT14 EN-DE, a joint SentencePiece vocabulary, and
token-budget batches in a few fixed shapes.

    data = load_translation_data(config.data, row_multiple=jax.local_device_count(),
                                 process_index=jax.process_index(),
                                 process_count=jax.process_count())
    for batch in data.train_batches(seed, start=position): ...   # 'inputs', 'targets', 'position'
    for batch in data.eval_batches("validation"): ...             # 'inputs', 'targets', 'index'

Modules: config (defaults, validation), multi30k / wmt14 (the datasets' files), multi30k_tfds /
sources (the TFDS path), tokenizer (SentencePiece), batching (numpy bucketing and plans),
pipeline (TranslationData), cache. Importing this package does not import TensorFlow; loading
a dataset through TFDS (config data.reader='tfds', the default) does, 'files' never does.
"""

from wt.data.config import default_data_config, validate_data_config
from wt.data.errors import DataError
from wt.data.pipeline import TranslationData, load_translation_data
from wt.data.tokenizer import Tokenizer

__all__ = [
  "DataError",
  "TranslationData",
  "Tokenizer",
  "default_data_config",
  "load_translation_data",
  "validate_data_config",
]
