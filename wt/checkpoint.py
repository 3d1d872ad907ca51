"""Checkpoints and run state: orbax checkpoints that are verified before they are trusted, and
the small JSON files of a run, written atomically and read with errors that say what to do.

A checkpoint holds two items: `state` (params, optimizer state, step, RNG: a PyTree restored
onto whatever shardings the caller asks for, so a run may resume on another device count) and
`meta` (JSON: the data position, training seconds so far, ...). Orbax writes each step into a
temporary folder and renames it to `<step>` when complete, so a run killed mid-save leaves no
half checkpoint behind; the CheckpointManager lists only folders named by a bare step number.

Integrity. Orbax checksums its index but not the array data (a flipped bit restores
silently), so a step is sealed once its save has finished (in a background thread that waits
for orbax's asynchronous save, then hashes): process 0 writes `<step>/wt_integrity.json`, the
sha256 and size of every file of the step. `restore` checks it first; a step whose files
differ from it, or whose orbax restore fails, is unreadable. A step without the file (written
by older code, or the run stopped in the moment between orbax's rename and the seal) is one
orbax considers complete: it is restored unverified, with a warning, and moved aside only if
orbax cannot read it. A verified step that does not restore into the caller's state is not
corrupt (another code version wrote it): that is an error, and the step is kept.

Unreadable steps. The Trainer restores with `move_aside=True`: an unreadable step is renamed
to `corrupt/<step>` (a folder name orbax never takes for a step), with the reason in its
`MOVED_ASIDE.txt`, and the next older step is tried; so the run continues and saves that step
number again later. Readers (evaluation) only skip such steps.

Several processes: process 0 checks the integrity and moves folders; every process follows
its verdicts, and a step counts as restored only if it restored on all of them.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import tempfile
import time
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

MANIFEST = "wt_integrity.json"  # in every sealed step folder, beside orbax's files
CORRUPT_DIR = "corrupt"  # unreadable steps go to <checkpoints>/corrupt/<step>
_FORMAT = "wt-checkpoint-integrity/1"
VERIFIED, UNVERIFIED, CORRUPT = 0, 1, 2  # check_manifest verdicts


class CheckpointError(RuntimeError):
  """No usable checkpoint where one was required, or one that cannot be moved aside."""


class RunStateError(ValueError):
  """A file of a run (config.json, ...) exists but cannot be read."""


# ------------------------------------------------------------------------------------------
# Small JSON files of a run.


def write_json_atomically(path: str, value: Any) -> None:
  """Writes `value` as JSON to `path` so that a reader sees the old file or the new one,
  never a part: a temporary file in the same folder, flushed, then renamed over `path`."""
  folder = os.path.dirname(os.path.abspath(path))
  handle, temporary = tempfile.mkstemp(
    prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder
  )
  try:
    with os.fdopen(handle, "w", encoding="utf-8") as f:
      json.dump(value, f, indent=2, sort_keys=True)
      f.flush()
      os.fsync(f.fileno())
    os.replace(temporary, path)
  except BaseException:
    if os.path.exists(temporary):
      os.remove(temporary)
    raise


def read_json(path: str, *, fix: str) -> Any:
  """The JSON in `path`; a RunStateError naming the file, what is wrong and `fix` if it is
  empty or not JSON (e.g. a write that was interrupted)."""
  try:
    with open(path, encoding="utf-8") as f:
      text = f.read()
    if not text.strip():
      raise ValueError("the file is empty")
    return json.loads(text)
  except (ValueError, UnicodeDecodeError) as error:  # JSONDecodeError is a ValueError
    raise RunStateError(
      f"{path} is unreadable ({error}), probably from an interrupted write; {fix}"
    ) from None


# ------------------------------------------------------------------------------------------
# Integrity manifests.


def _step_files(step_dir: str) -> list[str]:
  """Every file of a step folder (relative, sorted), the manifest and its temporary aside."""
  names = []
  for root, _, files in os.walk(step_dir):
    for name in files:
      relative = os.path.relpath(os.path.join(root, name), step_dir)
      if not (relative == MANIFEST or relative.startswith(f".{MANIFEST}.")):
        names.append(relative)
  return sorted(names)


def _sha256(path: str) -> str:
  with open(path, "rb") as f:
    return hashlib.file_digest(f, "sha256").hexdigest()


def write_manifest(step_dir: str) -> None:
  """Seals a finished step: the sha256 and size of each of its files, in `MANIFEST`."""
  files = {}
  for name in _step_files(step_dir):
    path = os.path.join(step_dir, name)
    files[name] = {"bytes": os.path.getsize(path), "sha256": _sha256(path)}
  write_json_atomically(
    os.path.join(step_dir, MANIFEST), {"format": _FORMAT, "algorithm": "sha256", "files": files}
  )


def check_manifest(step_dir: str) -> tuple[int, str]:
  """(VERIFIED, ""), (UNVERIFIED, why) without a manifest, or (CORRUPT, what differs)."""
  path = os.path.join(step_dir, MANIFEST)
  if not os.path.exists(path):
    return UNVERIFIED, f"no {MANIFEST}"
  try:
    with open(path, encoding="utf-8") as f:
      manifest = json.load(f)
    files = manifest["files"]
    if manifest.get("format") != _FORMAT or not isinstance(files, dict):
      raise ValueError(f"not a {_FORMAT} manifest")
  except (OSError, ValueError, KeyError, TypeError) as error:
    return CORRUPT, f"its {MANIFEST} is unreadable ({type(error).__name__}: {error})"
  for name, expected in sorted(files.items()):
    file_path = os.path.join(step_dir, name)
    if not os.path.isfile(file_path):
      return CORRUPT, f"{name} is missing"
    size = os.path.getsize(file_path)
    if size != expected["bytes"]:
      return CORRUPT, f"{name} has {size} bytes, {expected['bytes']} when saved"
    if _sha256(file_path) != expected["sha256"]:
      return CORRUPT, f"{name} differs from what was saved (sha256 mismatch)"
  return VERIFIED, ""


# ------------------------------------------------------------------------------------------
# Agreement between processes (no-ops in a single process).


def _from_chief(value: int) -> int:
  if jax.process_count() == 1:
    return value
  return int(multihost_utils.broadcast_one_to_all(np.int32(value)))


def _everywhere(ok: bool) -> bool:
  if jax.process_count() == 1:
    return ok
  return bool(np.all(multihost_utils.process_allgather(np.int32(ok))))


def _barrier(name: str) -> None:
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


# ------------------------------------------------------------------------------------------


def abstract_like(tree: Any) -> Any:
  """ShapeDtypeStructs (with shardings) describing `tree`, the restore target orbax needs."""
  return jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), tree
  )


class Checkpointer:
  """Wraps `ocp.CheckpointManager` for one training run's `checkpoints/` folder."""

  def __init__(self, directory: str, *, keep: int = 5, asynchronous: bool = True):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, enable_async_checkpointing=asynchronous, cleanup_tmp_directories=True
    )
    self._manager = ocp.CheckpointManager(
      self.directory,
      options=options,
      item_handlers={"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()},
    )
    self._is_chief = jax.process_index() == 0
    self._sealer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="wt-seal")
    self._seals: list[concurrent.futures.Future] = []
    self.seal_seconds: list[float] = []  # per sealed save: hashing + writing the manifest

  def steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def step_dir(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def save(self, step: int, state: Any, meta: dict) -> None:
    """Starts writing a checkpoint (returns before it is on disk when asynchronous); it is
    sealed with its integrity manifest in the background once orbax has finished it."""
    self._manager.save(
      step,
      args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
      force=True,
    )
    if self._is_chief:
      self._seals.append(self._sealer.submit(self._seal, step))

  def _seal(self, step: int) -> None:
    try:
      self._manager.wait_until_finished()  # orbax allows this from several threads
    except Exception:  # pylint: disable=broad-except
      return  # the save failed: the caller's wait() raises orbax's error
    step_dir = self.step_dir(step)
    if not os.path.isdir(step_dir):
      return  # already deleted by max_to_keep
    start = time.perf_counter()
    try:
      write_manifest(step_dir)
    except OSError as error:
      logging.warning(
        "could not write %s for checkpoint %d (%s); it will restore unverified",
        MANIFEST,
        step,
        error,
      )
      return
    self.seal_seconds.append(time.perf_counter() - start)

  def wait(self) -> None:
    """Blocks until every started save is on disk and sealed."""
    self._manager.wait_until_finished()
    for seal in self._seals:
      seal.result()
    self._seals.clear()

  def restore(
    self, target: Any, step: Optional[int] = None, *, move_aside: bool = False
  ) -> Optional[tuple[Any, dict, int]]:
    """(state, meta, step) of the newest readable checkpoint (or of `step`); None if none.

    `target` is a state (or `abstract_like` of one) whose shapes, dtypes and shardings the
    restored arrays take; None restores the saved tree (as nested dicts) onto one device.
    Unreadable checkpoints (integrity mismatch, or orbax cannot read them) are skipped with a
    warning, newest first, and with `move_aside` moved to `corrupt/`. A checkpoint whose
    files are verified intact but do not restore into `target` raises CheckpointError.
    """
    self.wait()
    candidates = [step] if step is not None else self._chief_steps()[::-1]
    for candidate in candidates:
      status, reason = (
        check_manifest(self.step_dir(candidate))
        if self._is_chief
        else (VERIFIED, "rejected by process 0's integrity check")
      )
      status = _from_chief(status)
      if status == CORRUPT:
        self._reject(candidate, reason, move_aside)
        continue
      error = None
      try:
        abstract = (
          self._saved_tree_on_one_device(candidate) if target is None else abstract_like(target)
        )
        restored = self._manager.restore(
          candidate,
          args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
          ),
        )
      except Exception as caught:  # pylint: disable=broad-except
        error = caught
      if not _everywhere(error is None):
        problem = f"{type(error).__name__}: {error}" if error else "failed on another process"
        if status == VERIFIED:
          raise CheckpointError(
            f"checkpoint {candidate} in {self.directory} has intact files (sha256 as "
            f"saved) but does not restore into this run's state ({problem}); it was "
            f"probably written by another version of the code: resume with that version, "
            f"or start again in another --workdir"
          ) from error
        self._reject(candidate, problem, move_aside)
        continue
      if status == UNVERIFIED:
        logging.warning(
          "checkpoint %d in %s has no %s (written by older code, or the run "
          "stopped between its save and its seal); restored it unverified",
          candidate,
          self.directory,
          MANIFEST,
        )
      return restored["state"], dict(restored["meta"]), candidate
    return None

  def _chief_steps(self) -> list[int]:
    """The steps as process 0 lists them, so that every process tries the same ones."""
    steps = self.steps()
    if jax.process_count() == 1:
      return steps
    count = _from_chief(len(steps))
    mine = np.asarray(steps if self._is_chief else [0] * count, np.int32).reshape(count)
    return [int(s) for s in multihost_utils.broadcast_one_to_all(mine)] if count else []

  def _reject(self, step: int, reason: str, move_aside: bool) -> None:
    """Logs an unreadable step and, with `move_aside`, renames it to `corrupt/<step>`."""
    if not move_aside:
      logging.warning(
        "checkpoint %d in %s is unreadable (%s); trying an older one", step, self.directory, reason
      )
      return
    destination = "the corrupt/ folder (by process 0)"
    if self._is_chief:
      destination = os.path.join(self.directory, CORRUPT_DIR, str(step))
      suffix = 1
      while os.path.exists(destination):
        suffix += 1
        destination = os.path.join(self.directory, CORRUPT_DIR, f"{step}-{suffix}")
      try:
        os.makedirs(os.path.dirname(destination), exist_ok=True)
        os.rename(self.step_dir(step), destination)
      except OSError as error:
        raise CheckpointError(
          f"checkpoint {step} in {self.directory} is unreadable ({reason}) and could not be "
          f"moved aside to {destination} ({error}); move or delete it by hand, then rerun"
        ) from error
      with open(os.path.join(destination, "MOVED_ASIDE.txt"), "w", encoding="utf-8") as f:
        f.write(
          f"checkpoint {step} was unreadable at {time.strftime('%Y-%m-%d %H:%M:%S')}: {reason}\n"
        )
    _barrier(f"wt-checkpoint-moved-aside-{step}")
    self._manager.reload()
    logging.warning(
      "checkpoint %d in %s is unreadable (%s); moved it aside to %s and trying an older one",
      step,
      self.directory,
      reason,
      destination,
    )

  def _saved_tree_on_one_device(self, step: int) -> Any:
    """Abstract arrays of checkpoint `step`'s state, placed on this process's first device."""
    sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    saved = self._manager.item_metadata(step)["state"]
    return jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding), saved)

  def average_params(self, target: Any, last_n: int) -> Any:
    """The mean parameters (`state.params` or `state["params"]`) of the newest `last_n`
    readable checkpoints; `target` is as in `restore`."""
    total, used = None, []
    for step in sorted(self.steps(), reverse=True):
      if len(used) == last_n:
        break
      restored = self.restore(target, step=step)
      if restored is None:
        continue
      state = restored[0]
      params = state.params if hasattr(state, "params") else state["params"]
      total = params if total is None else jax.tree.map(jnp.add, total, params)
      used.append(step)
    if not used:
      raise CheckpointError(f"no readable checkpoint to average in {self.directory}")
    logging.info("averaged the parameters of checkpoints %s", used)
    return jax.tree.map(lambda x: x / len(used), total)

  def close(self) -> None:
    self.wait()
    self._manager.close()
    self._sealer.shutdown()
