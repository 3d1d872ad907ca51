"""WMT14 English-German through TFDS `wmt14_translate/de-en`.

Splits: train (~4.5M pairs), validation = newstest2013, test = newstest2014. Chosen only by
config `data.dataset='wmt14'` (never a fallback). The TFDS data directory is config
`data.data_dir` if set, else `<cache_dir>/tfds`; the first use downloads and prepares the
dataset there (TFDS needs the network for that, once).
"""

import pathlib

import ml_collections
import tensorflow_datasets as tfds

from wt.data.sources import TranslationSource

TFDS_NAME = "wmt14_translate/de-en"


def open_wmt14(data_config: ml_collections.ConfigDict,
               cache_dir: pathlib.Path) -> TranslationSource:
  """Prepares (once) and returns WMT14 EN-DE."""
  data_dir = data_config.data_dir or str(cache_dir / "tfds")
  builder = tfds.builder(TFDS_NAME, data_dir=data_dir)
  builder.download_and_prepare()
  return TranslationSource(identity=builder.info.full_name.replace("/", "_"), builder=builder)
