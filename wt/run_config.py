"""A run's workdir and its `config.json`: the config a run trains with, saved before it starts;
a resume with another model, data or train section refused; and the config read back for
evaluation. Fields that code newer than a run added take their defaults in both directions
(the run was trained with them).
"""

import dataclasses
import json
import os
import shutil

import jax
import ml_collections
from absl import logging

from wt import checkpoint
from wt.train_config import CONFIG_SECTIONS

CONFIG_FILE = "config.json"


# The sections that define what a run trains; decode, compare and distributed settings may
# change between a run and its resumption.
_RUN_SECTIONS = ("model", "data", "train")


def _flatten(tree: dict, prefix: str = "") -> dict:
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(_flatten(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def fields_added_at_default(saved: dict, current: dict, defaults: dict) -> list[str]:
  """The flattened fields that `current` has and the `saved` config lacks (a newer version of
  the code added them) whose current value is their default in `defaults`: a run saved before
  the field existed trained with that default, so it may resume."""
  return sorted(
    k for k in current.keys() - saved.keys() if k in defaults and current[k] == defaults[k]
  )


def _section_defaults(sections=_RUN_SECTIONS) -> dict:
  """The field defaults of `sections` (their dataclasses in `CONFIG_SECTIONS`), flattened and
  JSON-typed as in config.json."""
  return {
    f"{name}.{field.name}": json.loads(json.dumps(field.default))
    for name in sections
    for field in dataclasses.fields(CONFIG_SECTIONS[name])
  }


def check_workdir(config: ml_collections.ConfigDict, workdir: str, overwrite: bool) -> None:
  """Saves the config (atomically); refuses a workdir that holds a run of a different model,
  data or training config (unless `overwrite`, which deletes that run), or whose config.json
  is unreadable. Fields that the saved config lacks are accepted at their default."""
  path = os.path.join(workdir, CONFIG_FILE)
  current = json.loads(config.to_json_best_effort())
  if os.path.exists(path):
    try:
      saved = checkpoint.read_json(
        path,
        fix=(
          f"restore it from a copy, delete it to resume {workdir}'s checkpoints with the "
          f"config given now, or pass --overwrite to delete that run and start again"
        ),
      )
      old = _flatten({k: saved.get(k) for k in _RUN_SECTIONS})
    except checkpoint.RunStateError:
      if not overwrite:
        raise
      old = None
    new = _flatten({k: current.get(k) for k in _RUN_SECTIONS})
    if old is not None and new.keys() - old.keys():
      added = fields_added_at_default(old, new, _section_defaults())
      if added:
        logging.info(
          "%s predates the fields %s; resuming with their defaults",
          path,
          ", ".join(f"{k}={new[k]!r}" for k in added),
        )
        old.update({k: new[k] for k in added})
    changed = (
      ["config.json"]
      if old is None
      else sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    )
    if changed and not overwrite:
      raise ValueError(
        f"workdir {workdir} holds a run of a different config (differs in "
        f"{', '.join(changed[:8])}); use another --workdir, or pass "
        f"--overwrite to delete that run and start again"
      )
    if changed:
      logging.warning("overwriting the run in %s", workdir)
      shutil.rmtree(workdir)
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    checkpoint.write_json_atomically(path, current)


def load(workdir: str) -> ml_collections.ConfigDict:
  """The config a run in `workdir` was trained with (its config.json), with the defaults of
  fields that code newer than the run added."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(
      f"{path} does not exist: {workdir} is not a training workdir "
      f"(train one with python -m experiments.run --workdir {workdir})"
    )
  saved = checkpoint.read_json(
    path,
    fix=(
      f"restore it from a copy, or delete it and rerun python -m experiments.run with the "
      f"run's config and --workdir {workdir}, which writes it again and resumes the run"
    ),
  )
  # Fields a newer version of the code added: the run was trained with their defaults.
  have = _flatten(saved)
  added = {
    key: value
    for key, value in _section_defaults([s for s in CONFIG_SECTIONS if s in saved]).items()
    if key not in have
  }
  if added:
    logging.info("%s predates the fields %s; they take their defaults", path, sorted(added))
  for key, value in added.items():
    section, field = key.split(".", 1)
    saved[section][field] = value
  return ml_collections.ConfigDict(saved)
