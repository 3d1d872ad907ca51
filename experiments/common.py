"""Shared by the experiment commands: start-up (logs, compilation cache, multi-process),
config naming and overrides, rewriting a marked section of a document, and naming the machine."""

import logging as py_logging
import os
import pathlib
import platform
import re
import shlex
import sys

import ml_collections
from absl import flags, logging
from ml_collections import config_flags

from wt.config_checks import ConfigError
from wt.data.cache import resolve_cache_dir

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# TensorFlow only reads TFDS data here; with oneDNN on, its import prints an INFO notice that no
# log level reaches (it comes before logging starts).
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


class _DropLibraryChatter(py_logging.Filter):
  """Keeps orbax's per-save INFO lines out of the console (warnings still show)."""

  def filter(self, record):
    return record.levelno >= py_logging.WARNING or "orbax" not in record.pathname


def _stdout_for_results_only() -> None:
  """Points file descriptor 1 at stderr and `sys.stdout` at a copy of the real stdout: what
  libraries write to fd 1 themselves (gloo's connection lines in a multi-process CPU run, C++
  logs) reaches the terminal but never the command's results (a translation file)."""
  sys.stdout.flush()
  results = os.dup(1)
  os.dup2(2, 1)
  sys.stdout = open(  # open as long as the process, as stdout is
    results,
    "w",
    encoding=sys.stdout.encoding,
    errors=sys.stdout.errors,
    buffering=1 if os.isatty(results) else -1,
  )


def start(config=None, *, quiet: bool = False) -> None:
  """Sets up logging and the persistent compilation cache (under the data cache folder, off
  with WT_COMPILATION_CACHE=0), joins a multi-process run when config.distributed or the
  environment (WT_COORDINATOR_ADDRESS, a SLURM / Cloud TPU / Kubernetes job) asks, then settles
  the backend's defaults into the config (model.dtype="auto", data.tokens_per_device: see
  wt/distributed.py). Without a config (evaluation commands): the default cache folder, and
  the environment alone decides the processes.
  Logs go to stderr at INFO, or at WARNING with `quiet` (commands whose output is a result,
  whose stdout then carries only what they print: see `_stdout_for_results_only`); an explicit
  --verbosity (-v) wins over both (e.g. --verbosity=0: INFO, -1: warnings only)."""
  import jax  # After the TF_CPP_MIN_LOG_LEVEL default above: jax's import sets its own (1).

  if quiet:
    _stdout_for_results_only()
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING if quiet else logging.INFO)
  logging.get_absl_handler().addFilter(_DropLibraryChatter())
  if config is not None:
    _exit_if_invalid(config)
  if os.environ.get("WT_COMPILATION_CACHE", "1") != "0":
    cache_dir = config.data.cache_dir if config is not None else None
    cache = pathlib.Path(resolve_cache_dir(cache_dir)) / "jax"
    jax.config.update("jax_compilation_cache_dir", str(cache))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
  from wt import distributed  # After the TF_CPP_MIN_LOG_LEVEL default: imports jax.

  distributed.initialize(None if config is None else config.distributed)
  if config is not None:
    distributed.apply_backend_defaults(config)


def _exit_if_invalid(config) -> None:
  """Ends the command with one line naming the field and the fix when a section of the config
  cannot work (experiments/configs/base.py's validate), before anything loads or compiles."""
  from experiments.configs import base  # After the TF_CPP_MIN_LOG_LEVEL default: imports jax.

  try:
    base.validate(config)
  except ConfigError as error:
    raise SystemExit(f"error: {error}") from None


def config_name(separator: str = ":") -> str:
  """ "multi30k:quick" for --config experiments/configs/multi30k.py:quick (flags parsed)."""
  path, _, variant = config_flags.get_config_filename(flags.FLAGS["config"]).partition(":")
  stem = pathlib.Path(path).stem
  return f"{stem}{separator}{variant}" if variant else stem


def with_overrides(config: ml_collections.ConfigDict, overrides) -> ml_collections.ConfigDict:
  """A copy of `config` with dotted fields set, e.g. {"model.attention": "weighted"}."""
  copy = config.copy_and_resolve_references()
  copy.update_from_flattened_dict(dict(overrides))
  return copy


def command_line(argv) -> str:
  """The command as typed, for reports: python -m experiments.<name> and its flags."""
  module = pathlib.Path(argv[0]).stem
  return shlex.join(["python", "-m", f"experiments.{module}", *argv[1:]])


def define_trained_run_flags():
  """--workdir, --average_last, --beam_size, --length_penalty: how the evaluation commands
  pick a trained run and decode with it. Returns a function of the loaded
  `evaluation.TrainedModel` that gives the decode config with the flags applied."""
  flags.DEFINE_string("workdir", None, "a training run's workdir")
  flags.DEFINE_integer(
    "average_last", None, "average the last n checkpoints (default: the run's decode.average_last)"
  )
  flags.DEFINE_integer("beam_size", None, "beam size, 1 = greedy (default: the run's)")
  flags.DEFINE_float("length_penalty", None, "GNMT length penalty alpha (default: the run's)")
  flags.mark_flags_as_required(["workdir"])

  def decode_config(trained):
    config = trained.config.decode
    if flags.FLAGS.beam_size is not None:
      config.beam_size = flags.FLAGS.beam_size
    if flags.FLAGS.length_penalty is not None:
      config.length_penalty = flags.FLAGS.length_penalty
    return config

  return decode_config


def define_attention_maps_flag():
  """--[no]attention_maps of the compare and ablate commands; returns its holder."""
  return flags.DEFINE_bool(
    "attention_maps",
    True,
    "plot one test sentence's attention maps per system, from its last checkpoint "
    "(--noattention_maps for runs brought back without their checkpoints)",
  )


def replace_section(path: str, name: str, text: str) -> None:
  """Replaces what lies between `<!-- name:begin -->` and `<!-- name:end -->` in `path`."""
  document = pathlib.Path(path).read_text(encoding="utf-8")
  begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
  pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.DOTALL)
  if not pattern.search(document):
    raise SystemExit(
      f"{path} has no {begin} ... {end} section to replace; add the two "
      f"markers where the table goes, then rerun"
    )
  document = pattern.sub(lambda _: f"{begin}\n{text}\n{end}", document, count=1)
  pathlib.Path(path).write_text(document, encoding="utf-8")


def machine_description() -> str:
  """The devices, CPU cores, OS and JAX version of this process: where a run trained, or
  where a report was written."""
  import jax  # here: this module sets TensorFlow's log level before anything imports jax

  devices = jax.devices()
  return (
    f"{len(devices)} x {devices[0].device_kind} ({jax.default_backend()}), "
    f"{os.cpu_count()} CPU cores, {platform.platform()}, jax {jax.__version__}"
  )
