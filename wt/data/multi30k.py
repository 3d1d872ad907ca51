"""Multi30k EN-DE (WMT16-18 multimodal task 1): its raw `.gz` files, found, checked and read.

Splits: train (29,000 pairs), validation (1,014), test = test2016 flickr (1,000), and the extra
test sets test2017_flickr (1,000), test2017_mscoco (461), test2018_flickr (1,071).

The 12 raw files (`<stem>.<lang>.gz`, see `raw_file_names`) are looked for, in order, in
  1. the explicit data directory: config `data.data_dir`, else env WT_DATA_DIR; either the
     folder holding the files or a parent with a `multi30k/` subfolder;
  2. the copy next to the checkout, `<repo root>/../shared/data/multi30k` (CI, offline machines);
  3. `<cache_dir>/downloads/multi30k` (an earlier download);
and else downloaded there from github.com/multi30k/dataset at a pinned commit and checked
against the sha256 below. Offline, the download gives up within `DOWNLOAD_DEADLINE_S` with a
DataError that says where to put which files.

Config `data.reader` says how the files are read: 'tfds' (default) builds a TFDS dataset from
them once (wt/data/multi30k_tfds.py, in `<cache_dir>/tfds/multi30k-<hash of the raw files>`)
and reads that; 'files' reads the files themselves and needs no TensorFlow (accelerator images
often lack it). Both give the same sentences in the same order under the same identity, so
they share cached vocabularies and token files.
"""

import dataclasses
import gzip
import hashlib
import http.client
import os
import pathlib
import threading
import time
import urllib.request

import ml_collections
from absl import logging

from wt.data.cache import publish
from wt.data.config import DATASET_SPLITS, LANGUAGES
from wt.data.errors import DataError

UPSTREAM_COMMIT = "a3d2e0d26b56f3846f66a952536ffed4e401d05a"
UPSTREAM_URL = (
  f"https://raw.githubusercontent.com/multi30k/dataset/{UPSTREAM_COMMIT}/data/task1/raw"
)
_REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
REPO_SHARED_COPY = _REPO_ROOT.parent / "shared" / "data" / "multi30k"
DOWNLOAD_TIMEOUT_S = 10  # per file
DOWNLOAD_DEADLINE_S = 25  # for all files together
SPLIT_FILE_STEMS = dict(
  zip(
    DATASET_SPLITS["multi30k"],
    (
      "train",
      "val",
      "test_2016_flickr",
      "test_2017_flickr",
      "test_2017_mscoco",
      "test_2018_flickr",
    ),
  )
)
FILE_SHA256 = {  # From /work/shared/data/multi30k/PROVENANCE.md (upstream files, unmodified).
  "train.en.gz": "d79cfa999dd4c51d2cb42499b6796d5a882c3a8a961923c25a898c90f8bbd56f",
  "train.de.gz": "726e39b2fa9eb9ffb6dc763fb35a179f80fae06ffc5d28b6ace5faa883de28a6",
  "val.en.gz": "14f7d25ddd868909a9213e361768460edcacdd6ab9d1e77b92560dc10c10dc28",
  "val.de.gz": "f0cba2f995189cf5770f29a8a9a537a3ad3f51657ad873405082ff6863a5e75a",
  "test_2016_flickr.en.gz": "611d361c6334bc7246101d48097c13cf5c4413c5befc793cc629934359d532d9",
  "test_2016_flickr.de.gz": "9204244e408ccb38d2a55cfcd344df15005fc42a07a6e55ca6c52b6ababb8cc8",
  "test_2017_flickr.en.gz": "76a444ee25172e72695cddb13ae4a3bda59430617be88e0bb46b60504f054074",
  "test_2017_flickr.de.gz": "a2c89666db00c495cd8513b9d708d5a3acc205d7de312ef2bf5fb7ebc1540aee",
  "test_2017_mscoco.en.gz": "aab300bfb4427697987e02cd0aacd44bfe8aa50456231b6474c08038bbed2b58",
  "test_2017_mscoco.de.gz": "799e4854c25d601cb6cb6be29eabe5667734c61ace2f495e03e429031a0bc338",
  "test_2018_flickr.en.gz": "ef4f4844037d4c5dea75c9a8ed5fd78905967a26f67c255e230cc9780032654d",
  "test_2018_flickr.de.gz": "ddd0130c7d97482dc5197a02141dae8dd79f20f03586c480d675c09a32daf608",
}


def raw_file_names() -> list[str]:
  return [f"{stem}.{lang}.gz" for stem in SPLIT_FILE_STEMS.values() for lang in LANGUAGES]


def _missing_files(folder: pathlib.Path) -> list[str]:
  return [name for name in raw_file_names() if not (folder / name).is_file()]


def find_raw_dir(data_dir: str | None, download_dir: pathlib.Path) -> pathlib.Path:
  """The folder holding all raw files (see the module docstring for the search order)."""
  explicit = data_dir or os.environ.get("WT_DATA_DIR")
  explicit_dirs = []
  if explicit:
    explicit_dirs = [
      pathlib.Path(explicit).expanduser(),
      pathlib.Path(explicit).expanduser() / "multi30k",
    ]
    if all(_missing_files(folder) for folder in explicit_dirs):
      logging.warning(
        "The data directory %s (and %s) lacks Multi30k files %s; looking further.",
        *explicit_dirs,
        _missing_files(explicit_dirs[0]),
      )
  candidates = explicit_dirs + [REPO_SHARED_COPY, download_dir]
  for folder in candidates:
    if not _missing_files(folder):
      return folder
  try:
    download_raw_files(download_dir)
  except (OSError, http.client.HTTPException, DataError) as error:
    raise DataError(
      f"Multi30k raw files not found and the download failed ({error}). Looked in: "
      f"{', '.join(map(str, candidates))}. Fix: put the 12 files {raw_file_names()} from "
      f"{UPSTREAM_URL} (the GitHub repository multi30k/dataset, commit {UPSTREAM_COMMIT}, "
      f"folder data/task1/raw) into {REPO_SHARED_COPY}, or into a folder named by config "
      "data.data_dir or env WT_DATA_DIR."
    ) from error
  return download_dir


def _fetch(url: str, timeout_s: float) -> bytes:
  """The body at `url` within `timeout_s` (in a thread, as urlopen cannot bound DNS lookups)."""
  outcome = {}

  def fetch():
    try:
      with urllib.request.urlopen(url, timeout=timeout_s) as response:
        outcome["body"] = response.read()
    except Exception as error:  # pylint: disable=broad-except  # Re-raised below.
      outcome["error"] = error

  thread = threading.Thread(target=fetch, daemon=True)
  thread.start()
  thread.join(timeout_s)
  if "body" in outcome:
    return outcome["body"]
  raise outcome.get("error") or TimeoutError(f"no answer from {url} in {timeout_s:.0f} s")


def download_raw_files(download_dir: pathlib.Path) -> None:
  """Downloads the missing raw files from UPSTREAM_URL, checking each one's sha256."""
  deadline = time.monotonic() + DOWNLOAD_DEADLINE_S
  for name in _missing_files(download_dir):
    remaining_s = deadline - time.monotonic()
    if remaining_s <= 0:
      raise TimeoutError(f"the download took more than {DOWNLOAD_DEADLINE_S} s")
    logging.info("Downloading %s/%s", UPSTREAM_URL, name)
    body = _fetch(f"{UPSTREAM_URL}/{name}", min(DOWNLOAD_TIMEOUT_S, remaining_s))
    digest = hashlib.sha256(body).hexdigest()
    if digest != FILE_SHA256[name]:
      raise DataError(
        f"the download of {name} has sha256 {digest}, not the pinned {FILE_SHA256[name]}"
      )
    publish(download_dir / name, lambda f, body=body: f.write(body))  # type: ignore[misc]


def _read_lines(path: pathlib.Path) -> list[str]:
  """The stripped lines of a gzipped UTF-8 text file."""
  try:
    with gzip.open(path, "rb") as f:
      data = f.read()
  except (OSError, EOFError) as error:
    raise DataError(
      f"{path} is not a readable gzip file ({error}): replace it with the "
      f"upstream file from {UPSTREAM_URL}."
    ) from error
  try:
    text = data.decode("utf-8")
  except UnicodeDecodeError as error:
    line = data.count(b"\n", 0, error.start) + 1
    raise DataError(
      f"{path} line {line} is not valid UTF-8 ({error.reason}): fix or remove "
      f"that line in both language files, or use the upstream file from "
      f"{UPSTREAM_URL}."
    ) from error
  lines = text.split("\n")  # Not splitlines(): it also splits at U+2028 and the like.
  if lines[-1] == "":
    lines.pop()
  return [line.strip() for line in lines]


def read_parallel_files(
  source_path: pathlib.Path, target_path: pathlib.Path
) -> tuple[list[str], list[str]]:
  """The line-aligned sentences of two files; DataError if their line counts differ."""
  sources, targets = _read_lines(source_path), _read_lines(target_path)
  if len(sources) != len(targets):
    raise DataError(
      f"{source_path} has {len(sources)} lines but {target_path} has "
      f"{len(targets)}: the two files of a split must be line-aligned "
      f"translations. Use matching files (upstream: {UPSTREAM_URL})."
    )
  return sources, targets


def raw_files_fingerprint(raw_dir: pathlib.Path) -> str:
  """A hash of all raw files; logs which ones differ from the pinned upstream files."""
  digests = {
    name: hashlib.sha256((raw_dir / name).read_bytes()).hexdigest() for name in raw_file_names()
  }
  differing = [name for name, digest in digests.items() if digest != FILE_SHA256[name]]
  if differing:
    logging.info("Multi30k files in %s that differ from upstream: %s", raw_dir, differing)
  return hashlib.sha256("".join(digests.values()).encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class RawFilesSource:
  """A `pipeline.SplitReader` over the raw files themselves (config `data.reader='files'`)."""

  raw_dir: pathlib.Path
  identity: str

  def read(self, split: str, source_lang: str, target_lang: str) -> tuple[list[str], list[str]]:
    """(sources, targets) of `split`, line i of each file as example i."""
    stem = SPLIT_FILE_STEMS[split]
    return read_parallel_files(
      self.raw_dir / f"{stem}.{source_lang}.gz", self.raw_dir / f"{stem}.{target_lang}.gz"
    )


def open_multi30k(data_config: ml_collections.ConfigDict, cache_dir: pathlib.Path):
  """Finds (or downloads) the raw files and opens them the configured way (`data.reader`)."""
  raw_dir = find_raw_dir(data_config.data_dir, cache_dir / "downloads" / "multi30k")
  identity = f"multi30k-{raw_files_fingerprint(raw_dir)[:12]}"
  if data_config.reader == "files":
    return RawFilesSource(raw_dir, identity)
  # Imported here: the TFDS path imports TensorFlow, which the files path must not need.
  from wt.data import multi30k_tfds

  return multi30k_tfds.open_built(raw_dir, identity, cache_dir)
