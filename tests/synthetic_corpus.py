"""Shared helpers for the data tests (no tests here): a tiny synthetic EN-DE corpus.

The sentences are random word sequences with a word-by-word German "translation", 1 to
`max_words` words long, so that lengths vary as in real captions. Deterministic given the seed.
"""

import gzip
import hashlib
import pathlib

import numpy as np

EN_TO_DE = {
  "a": "ein",
  "man": "mann",
  "woman": "frau",
  "dog": "hund",
  "child": "kind",
  "runs": "läuft",
  "walks": "geht",
  "sits": "sitzt",
  "on": "auf",
  "the": "dem",
  "in": "im",
  "with": "mit",
  "red": "roten",
  "blue": "blauen",
  "green": "grünen",
  "ball": "ball",
  "street": "straße",
  "park": "park",
  "water": "wasser",
  "grass": "gras",
  "small": "kleinen",
  "big": "großen",
  "young": "junge",
  "old": "alte",
  "playing": "spielt",
  "looking": "schaut",
  "at": "an",
  "and": "und",
  "two": "zwei",
  "people": "leute",
  "near": "neben",
  "house": "haus",
  "bike": "fahrrad",
  "car": "auto",
  "black": "schwarzen",
  "white": "weißen",
  "jumps": "springt",
  "over": "über",
  "fence": "zaun",
  "beach": "strand",
}
MULTI30K_SPLIT_SIZES = {
  "train": 400,
  "val": 30,
  "test_2016_flickr": 25,
  "test_2017_flickr": 12,
  "test_2017_mscoco": 7,
  "test_2018_flickr": 11,
}


def parallel_corpus(num_pairs: int, seed: int, max_words: int = 20) -> dict[str, list[str]]:
  """{'en': [...], 'de': [...]} of `num_pairs` line-aligned sentences."""
  rng = np.random.default_rng(seed)
  corpus = {"en": [], "de": []}
  for _ in range(num_pairs):
    words = rng.choice(list(EN_TO_DE), size=rng.integers(1, max_words + 1))
    corpus["en"].append(" ".join(words).capitalize() + ".")
    corpus["de"].append(" ".join(EN_TO_DE[word] for word in words).capitalize() + ".")
  return corpus


def write_gzip_lines(path: pathlib.Path, lines: list[str]) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  with gzip.open(path, "wt", encoding="utf-8") as f:
    f.write("".join(line + "\n" for line in lines))


def write_multi30k(folder: pathlib.Path) -> dict[str, dict[str, list[str]]]:
  """Writes a tiny corpus under the real Multi30k file names; returns it by file stem."""
  corpora = {}
  for seed, (stem, size) in enumerate(MULTI30K_SPLIT_SIZES.items()):
    corpora[stem] = parallel_corpus(size, seed)
    for language, lines in corpora[stem].items():
      write_gzip_lines(folder / f"{stem}.{language}.gz", lines)
  return corpora


class InMemorySource:
  """A `pipeline.SplitReader` over {split: {'en': [...], 'de': [...]}} (no TFDS)."""

  def __init__(self, splits: dict[str, dict[str, list[str]]]):
    self.splits = splits
    digest = hashlib.sha256(repr(sorted(splits.items())).encode()).hexdigest()
    self.identity = f"memory-{digest[:12]}"

  def read(self, split, source_lang, target_lang):
    return list(self.splits[split][source_lang]), list(self.splits[split][target_lang])
