"""Multi30k as a TFDS dataset, built once from the raw files (config `data.reader='tfds'`).

Example i of a split is line i of its raw files (`multi30k.read_parallel_files`), so reading the
built data gives exactly what `multi30k.RawFilesSource` reads from the files.
"""

import pathlib

import tensorflow_datasets as tfds

from wt.data.multi30k import (
  LANGUAGES,
  SPLIT_FILE_STEMS,
  UPSTREAM_URL,
  raw_file_names,
  read_parallel_files,
)
from wt.data.sources import TranslationSource


class Multi30kTranslate(tfds.core.GeneratorBasedBuilder):
  """Multi30k EN-DE; the raw files come in through `DownloadConfig(manual_dir=...)`."""

  VERSION = tfds.core.Version("1.0.0")
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    f"Put the files {raw_file_names()} from {UPSTREAM_URL} into the manual directory."
  )

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description="Multi30k English-German image captions (WMT16-18 multimodal task 1).",
      features=tfds.features.Translation(languages=LANGUAGES),
      supervised_keys=LANGUAGES,
      disable_shuffling=True,  # Example i is line i of the raw files.
      homepage="https://github.com/multi30k/dataset",
      citation="Elliott et al., Multi30K: Multilingual English-German Image "
      "Descriptions, Workshop on Vision and Language, 2016.",
    )

  def _split_generators(self, dl_manager):
    raw_dir = pathlib.Path(dl_manager.manual_dir)
    generators = {}
    for split, stem in SPLIT_FILE_STEMS.items():  # Reads and checks all files up front.
      english, german = read_parallel_files(raw_dir / f"{stem}.en.gz", raw_dir / f"{stem}.de.gz")
      generators[split] = self._generate_examples(english, german)
    return generators

  def _generate_examples(self, english: list[str], german: list[str]):
    for index, (en, de) in enumerate(zip(english, german)):
      yield index, {"en": en, "de": de}


def open_built(raw_dir: pathlib.Path, identity: str, cache_dir: pathlib.Path) -> TranslationSource:
  """The TFDS data of the raw files in `raw_dir`, built under `cache_dir` on first use."""
  builder = Multi30kTranslate(data_dir=str(cache_dir / "tfds" / identity))
  builder.download_and_prepare(
    download_config=tfds.download.DownloadConfig(manual_dir=str(raw_dir))
  )
  return TranslationSource(identity=identity, builder=builder)
