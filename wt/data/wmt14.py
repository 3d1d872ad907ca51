"""WMT14 English-German: a local copy in plain-text files, or TFDS `wmt14_translate/de-en`.

Splits: train (~4.5M pairs), validation = newstest2013, test = newstest2014. Chosen only by
config `data.dataset='wmt14'` (never a fallback).

Local files (clusters without internet, prepared copies, `experiments/wmt14_scale.py`'s
synthetic corpus): when `data.data_dir` holds `train.en` and `train.de` (or `train.en.gz`,
`train.de.gz`), the corpus is read from there, one sentence per line, line i of `<split>.en`
aligned with line i of `<split>.de`, UTF-8; `validation.{en,de}` and `test.{en,de}` are read
when those splits are used. Cached vocabularies and token files are keyed by a sha256 of the
training files, so every host of a run that reads the same bytes shares them.

With config `data.reader='files'` the local copy is required (an error says what is missing)
and TensorFlow is never imported.

TFDS (otherwise): the TFDS data directory is `data.data_dir` if set, else `<cache_dir>/tfds`;
the first use downloads and prepares the dataset there (TFDS needs the network for that, once).
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import pathlib
from typing import Optional

import ml_collections

from wt.data.errors import DataError

TFDS_NAME = "wmt14_translate/de-en"
LOCAL_SPLITS = ("train", "validation", "test")
LANGUAGES = ("en", "de")
_HASH_CHUNK = 1 << 20


def local_file(data_dir: pathlib.Path, split: str, language: str) -> Optional[pathlib.Path]:
  """`<split>.<language>` or `<split>.<language>.gz` in `data_dir`, whichever exists."""
  for name in (f"{split}.{language}", f"{split}.{language}.gz"):
    if (data_dir / name).is_file():
      return data_dir / name
  return None


def has_local_copy(data_dir: Optional[str]) -> bool:
  """Whether `data_dir` holds a local copy (its training files), not a TFDS data_dir."""
  if not data_dir:
    return False
  folder = pathlib.Path(data_dir).expanduser()
  return all(local_file(folder, "train", lang) for lang in LANGUAGES)


def read_lines(path: pathlib.Path) -> list[str]:
  """The lines of a UTF-8 text file (gzipped if it ends in .gz), without their line ends."""
  opener = gzip.open if path.suffix == ".gz" else open
  try:
    with opener(path, "rt", encoding="utf-8", newline="\n") as f:
      return [line.rstrip("\r\n") for line in f]
  except UnicodeDecodeError as error:
    raise DataError(
      f"{path} is not UTF-8 text ({error}); convert it (e.g. iconv -t utf-8) and rerun"
    ) from error


def _sha256(paths: list[pathlib.Path]) -> str:
  digest = hashlib.sha256()
  for path in paths:
    with open(path, "rb") as f:
      while chunk := f.read(_HASH_CHUNK):
        digest.update(chunk)
  return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class LocalSource:
  """A `pipeline.SplitReader` over a local copy of WMT14 (see the module docstring)."""

  data_dir: pathlib.Path
  identity: str

  @classmethod
  def open(cls, data_dir: str) -> "LocalSource":
    folder = pathlib.Path(data_dir).expanduser()
    found = [local_file(folder, "train", lang) for lang in LANGUAGES]
    train = [path for path in found if path is not None]
    if len(train) != len(found):
      raise DataError(
        f"{folder} has no train.en and train.de (or .gz): a local WMT14 copy "
        f"needs them; see wt/data/wmt14.py"
      )
    return cls(folder, f"wmt14_local-{_sha256(train)[:12]}")

  def read(self, split: str, source_lang: str, target_lang: str) -> tuple[list[str], list[str]]:
    """(sources, targets) of `split`, in file order."""
    paths = [local_file(self.data_dir, split, lang) for lang in (source_lang, target_lang)]
    missing = [
      f"{split}.{lang}" for lang, path in zip((source_lang, target_lang), paths) if path is None
    ]
    if missing:
      raise DataError(
        f"{self.data_dir} has no {' or '.join(missing)} (or .gz), which the "
        f"{split} split needs; add it (validation = newstest2013, test = "
        f"newstest2014)"
      )
    sources, targets = (read_lines(path) for path in paths if path is not None)
    if len(sources) != len(targets):
      raise DataError(
        f"{paths[0]} has {len(sources)} lines and {paths[1]} has "
        f"{len(targets)}: the files of a split must be line-aligned (one "
        f"sentence pair per line number)"
      )
    return sources, targets


def open_wmt14(data_config: ml_collections.ConfigDict, cache_dir: pathlib.Path):
  """The local copy in `data.data_dir` if it holds one; else TFDS, prepared once (unless
  `data.reader='files'`, which insists on the local copy)."""
  if has_local_copy(data_config.data_dir) or data_config.reader == "files":
    return LocalSource.open(data_config.data_dir or ".")
  # Imported here: a local copy needs no TensorFlow.
  import tensorflow_datasets as tfds

  from wt.data.sources import TranslationSource

  data_dir = data_config.data_dir or str(cache_dir / "tfds")
  builder = tfds.builder(TFDS_NAME, data_dir=data_dir)
  builder.download_and_prepare()
  return TranslationSource(identity=builder.info.full_name.replace("/", "_"), builder=builder)
