"""Checkpoints with orbax: save every K steps (asynchronously), restore the latest good one,
average the last n (the papers' evaluation).

A checkpoint holds two items: `state` (params, optimizer state, step, RNG: a PyTree restored
onto whatever shardings the caller asks for, so a run may resume on another device count) and
`meta` (JSON: the data position, training seconds so far, ...). Orbax writes each step into a
temporary folder and renames it when complete, so a run killed mid-save leaves no half
checkpoint behind; a checkpoint that is corrupt anyway is skipped with a warning.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from absl import logging


class CheckpointError(RuntimeError):
  """No usable checkpoint where one was required."""


def abstract_like(tree: Any) -> Any:
  """ShapeDtypeStructs (with shardings) describing `tree`, the restore target orbax needs."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
      tree)


class Checkpointer:
  """Wraps `ocp.CheckpointManager` for one training run's `checkpoints/` folder."""

  def __init__(self, directory: str, *, keep: int = 5, asynchronous: bool = True):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(max_to_keep=keep,
                                           enable_async_checkpointing=asynchronous,
                                           cleanup_tmp_directories=True)
    self._manager = ocp.CheckpointManager(
        self.directory, options=options,
        item_handlers={"state": ocp.StandardCheckpointHandler(),
                       "meta": ocp.JsonCheckpointHandler()})

  def steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: Any, meta: dict) -> None:
    """Starts writing a checkpoint (returns before it is on disk when asynchronous)."""
    self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                     meta=ocp.args.JsonSave(meta)),
                       force=True)

  def wait(self) -> None:
    """Blocks until every started save is on disk."""
    self._manager.wait_until_finished()

  def restore(self, target: Any, step: Optional[int] = None) -> Optional[tuple[Any, dict, int]]:
    """(state, meta, step) of the newest readable checkpoint (or of `step`); None if none.

    `target` is a state (or `abstract_like` of one) whose shapes, dtypes and shardings the
    restored arrays take; None restores the saved tree (as nested dicts) onto one device.
    Unreadable checkpoints are skipped with a warning, newest first.
    """
    self.wait()
    candidates = [step] if step is not None else sorted(self.steps(), reverse=True)
    for candidate in candidates:
      try:
        abstract = (self._saved_tree_on_one_device(candidate) if target is None
                    else abstract_like(target))
        restored = self._manager.restore(candidate, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
      except Exception as error:  # pylint: disable=broad-except
        logging.warning("checkpoint %d in %s is unreadable (%s: %s); trying an older one",
                        candidate, self.directory, type(error).__name__, error)
        continue
      return restored["state"], dict(restored["meta"]), candidate
    return None

  def _saved_tree_on_one_device(self, step: int) -> Any:
    """Abstract arrays of checkpoint `step`'s state, placed on this process's first device."""
    sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    saved = self._manager.item_metadata(step)["state"]
    return jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding),
                        saved)

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
