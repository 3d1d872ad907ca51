"""The cache directory and safe publication of the files in it.

The cache (config `data.cache_dir`, else env `WT_CACHE_DIR`, else `~/.cache/wt`) holds the
TFDS data, downloaded raw files, SentencePiece models and tokenized splits. Several processes
(both models of a comparison, all seeds, all hosts of a run) may create the same file at the
same time, so files are written to a temporary file in the same folder and published with an
atomic link: the first writer wins, later writers drop their copy, and every reader reads the
one published file.
"""

import hashlib
import json
import os
import pathlib
import tempfile
from typing import IO, Callable


def resolve_cache_dir(configured: str | None) -> pathlib.Path:
  """Returns the cache directory: `configured`, else $WT_CACHE_DIR, else ~/.cache/wt."""
  chosen = configured or os.environ.get("WT_CACHE_DIR") or "~/.cache/wt"
  return pathlib.Path(chosen).expanduser()


def settings_key(prefix: str, settings: dict) -> str:
  """A readable, stable folder name for `settings`: '<prefix>-<12 hex digits of their hash>'."""
  encoded = json.dumps(settings, sort_keys=True).encode()
  return f"{prefix}-{hashlib.sha256(encoded).hexdigest()[:12]}"


def publish(path: pathlib.Path, write: Callable[[IO[bytes]], object]) -> None:
  """Creates `path` with the bytes `write(file)` writes, unless another writer was first."""
  path.parent.mkdir(parents=True, exist_ok=True)
  temp_file = tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False)
  temp_path = pathlib.Path(temp_file.name)
  try:
    with temp_file:
      write(temp_file)
    try:
      os.link(temp_path, path)  # Atomic, and fails if `path` exists: the first writer wins.
    except FileExistsError:
      pass
    except OSError:  # A file system without hard links: atomic rename, the last writer wins.
      os.replace(temp_path, path)
  finally:
    temp_path.unlink(missing_ok=True)
