"""The `checkpoint` section: what saving a run's state costs, and what its integrity seal adds.

Every saved step is sealed once orbax has finished writing it: a background thread hashes each
file of the step (sha256) into its manifest, and a restore checks the manifest before orbax
reads the step (wt/checkpoint.py). For each experiment config this builds the state a run saves
(params, Adam state, step, RNG), saves it several times with `wt.checkpoint.Checkpointer`
into a temporary folder, checks each save's manifest as a restore does, and reports medians
over the saves after the first (which also sets orbax up).
"""

import contextlib
import importlib
import tempfile
import time

import jax
import jax.numpy as jnp
import ml_collections
from absl import logging

from experiments.benchmarks import timing
from experiments.benchmarks.options import Options
from wt import checkpoint, models, optim
from wt import train as wt_train

SAVES = 5


def load_config(name: str) -> ml_collections.ConfigDict:
  """The experiment config FILE.py:VARIANT of experiments/configs/, e.g. multi30k.py:small."""
  file, _, variant = name.partition(":")
  module = importlib.import_module(f"experiments.configs.{file.removesuffix('.py')}")
  return module.get_config(variant) if variant else module.get_config()


def run_state(config: ml_collections.ConfigDict) -> dict:
  """The state a run of `config` saves: step, params, Adam state and RNG (random weights)."""
  model_config = wt_train.model_config_from(config, config.data.vocab_size)
  params = models.init_params(model_config, jax.random.key(0))
  optimizer, _ = optim.make_optimizer(config.train, model_config)
  return {
    "step": jnp.int32(0),
    "params": params,
    "opt_state": optimizer.init(params),
    "rng": jax.random.PRNGKey(1),
  }


def measure(name: str, config: ml_collections.ConfigDict, saves: int = SAVES) -> dict:
  """One row: `saves` saves of `config`'s run state, each waited for (orbax and the seal) and
  its manifest verified; medians over saves 2 to `saves`. "orbax save" is save + wait without
  the seal."""
  if saves < 2:
    raise ValueError(f"saves={saves}: the first save is not counted; take at least 2")
  state = run_state(config)
  totals, verifies = [], []
  with tempfile.TemporaryDirectory() as folder:
    ckpt = checkpoint.Checkpointer(folder, keep=2)
    try:
      for step in range(1, saves + 1):
        totals.append(timing.timed(lambda step=step: (ckpt.save(step, state, {}), ckpt.wait())))
        start = time.perf_counter()
        status, why = checkpoint.check_manifest(ckpt.step_dir(step))
        verifies.append(time.perf_counter() - start)
        if status != checkpoint.VERIFIED:
          raise RuntimeError(f"{name}: checkpoint {step} does not verify: {why}")
    finally:
      ckpt.close()
  seals = ckpt.seal_seconds
  if len(seals) != saves:
    raise RuntimeError(f"{name}: {len(seals)} of {saves} saves were sealed")
  orbax = [total - seal for total, seal in zip(totals, seals)]
  return dict(
    config=name,
    params=models.count_params(state["params"]),
    state_mib=sum(x.nbytes for x in jax.tree.leaves(state)) / 2**20,
    saves=saves,
    orbax_save_seconds=timing.median(orbax[1:]),
    seal_seconds=timing.median(seals[1:]),
    verify_seconds=timing.median(verifies[1:]),
    orbax_save_seconds_all=orbax,
    seal_seconds_all=list(seals),
    verify_seconds_all=verifies,
  )


@contextlib.contextmanager
def _without_info_logs():
  """Keeps orbax's INFO lines (some 90 a config) off stderr; warnings still show."""
  verbosity = logging.get_verbosity()
  logging.set_verbosity(min(verbosity, logging.WARNING))
  try:
    yield
  finally:
    logging.set_verbosity(verbosity)


def checkpoint_section(options: Options) -> list:
  with _without_info_logs():
    return [measure(name, load_config(name)) for name in options.checkpoint_configs]
