"""Training: the per-device step, and `train_and_evaluate(config, workdir)` around it.

Sections:
  1. TrainState and the pure steps: `train_step(state, batch) -> (state, metrics)` and
     `eval_step(params, batch) -> metrics`, written for one device's shard with explicit
     `lax.pmean`/`lax.psum` over `parallel.AXIS`; metrics are (sum, count) pairs.
  2. `Trainer`: one run in a workdir. It builds data, model, optimizer and the wrapped steps
     (shard_map under jit, or pmap), restores the latest good checkpoint, compiles every batch
     shape ahead of time, and trains in `train_until(step)` calls (so that a comparison can
     interleave two runs and both see the same machine speed).
  3. `train_and_evaluate(config, workdir)`: a whole run, as the command line and tests use it.

Everything stateful (files, logs, checkpoints, progress) lives in the Trainer; the steps are
pure functions of their inputs.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import time
from typing import Any, Optional

import flax
import flax.jax_utils
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm
from absl import logging

from wt import checkpoint, metrics, models, optim, parallel
from wt.modules import branch_weight_values

# ------------------------------------------------------------------------------------------
# 1. State and pure steps.


@flax.struct.dataclass
class TrainState:
  """Everything a step changes: step count, parameters, optimizer state, dropout RNG."""
  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array


class TrainingDivergedError(RuntimeError):
  """The loss, gradient or parameters became NaN or Inf; the run stopped, the last good
  checkpoint is kept."""


def train_step(state: TrainState, batch: dict, *, model: models.Transformer,
               optimizer: optax.GradientTransformation, label_smoothing: float):
  """One optimizer step on this device's shard of the global batch.

  The loss is normalised by the mean number of real target tokens per device, so that the
  `pmean` of the gradients is the gradient of the global token-normalised loss (shards with
  more tokens weigh more, exactly as in a single-device step on the whole batch).
  """
  inputs, targets = batch["inputs"], batch["targets"]
  device_rng = jax.random.fold_in(jax.random.fold_in(state.rng, state.step),
                                  jax.lax.axis_index(parallel.AXIS))
  tokens = jnp.sum(targets > 0).astype(jnp.float32)
  mean_tokens = jnp.maximum(jax.lax.pmean(tokens, parallel.AXIS), 1.0)

  def loss_fn(params):
    logits = model.apply({"params": params}, inputs, targets, train=True,
                         rngs={"dropout": device_rng})
    step_metrics = metrics.token_metrics(logits, targets, label_smoothing, with_accuracy=False)
    return step_metrics["loss"][0] / mean_tokens, step_metrics

  grads, step_metrics = jax.grad(loss_fn, has_aux=True)(state.params)
  grads = jax.lax.pmean(grads, parallel.AXIS)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
  # The norms are the same on every device (computed after the pmean): one count per step.
  # A non-finite parameter norm catches an update that broke the parameters while this step's
  # loss was still finite, before that state can be checkpointed.
  norms = {"grad_norm": (optax.tree.norm(grads), 1.0),
           "param_norm": (optax.tree.norm(params), 1.0)}
  return new_state, {**jax.lax.psum(step_metrics, parallel.AXIS), **norms}


def eval_step(params, batch: dict, *, model: models.Transformer, label_smoothing: float):
  """Summed validation metrics of this device's shard, added over the mesh."""
  logits = model.apply({"params": params}, batch["inputs"], batch["targets"], train=False)
  return jax.lax.psum(metrics.token_metrics(logits, batch["targets"], label_smoothing),
                      parallel.AXIS)


# ------------------------------------------------------------------------------------------
# 2. One run in a workdir.

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


def _check_workdir(config: ml_collections.ConfigDict, workdir: str, overwrite: bool) -> None:
  """Saves the config; refuses a workdir that holds a run of a different model, data or
  training config (unless `overwrite`, which deletes that run)."""
  path = os.path.join(workdir, CONFIG_FILE)
  current = json.loads(config.to_json_best_effort())
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      saved = json.load(f)
    old = _flatten({k: saved.get(k) for k in _RUN_SECTIONS})
    new = _flatten({k: current.get(k) for k in _RUN_SECTIONS})
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    if changed and not overwrite:
      raise ValueError(f"workdir {workdir} holds a run of a different config (differs in "
                       f"{', '.join(changed[:8])}); use another --workdir, or pass "
                       f"--overwrite to delete that run and start again")
    if changed:
      logging.warning("overwriting the run in %s", workdir)
      shutil.rmtree(workdir)
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
      json.dump(current, f, indent=2, sort_keys=True)


_POSITIVE_TRAIN_FIELDS = ("num_steps", "warmup_steps", "branch_warmup_steps", "log_every",
                          "eval_every", "checkpoint_every", "keep_checkpoints")


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Refuses a config that cannot work, naming the field, the value and the fix, before any
  data is loaded or anything compiled."""
  from wt import data as data_lib  # pylint: disable=g-import-not-at-top
  data_lib.validate_data_config(config.data)
  model_config_from(config, config.model.vocab_size)   # ModelConfig validates itself
  train_config = config.train
  for field in _POSITIVE_TRAIN_FIELDS:
    value = train_config[field]
    if not isinstance(value, int) or value <= 0:
      raise models.ConfigError(f"train.{field}={value!r} must be a positive integer")
  choices = {"wrapper": parallel.WRAPPERS, "branch_schedule": optim.BRANCH_SCHEDULES}
  for field, valid in choices.items():
    if train_config[field] not in valid:
      raise models.ConfigError(f"train.{field}={train_config[field]!r} is not a valid choice; "
                               f"use one of {', '.join(map(repr, valid))}")
  if not 0.0 <= train_config.label_smoothing < 1.0:
    raise models.ConfigError(f"train.label_smoothing={train_config.label_smoothing!r} must be "
                             f"in [0, 1)")
  if train_config.learning_rate_scale <= 0:
    raise models.ConfigError(f"train.learning_rate_scale={train_config.learning_rate_scale!r} "
                             f"must be positive")
  if optim.branch_freeze_steps(train_config) >= train_config.num_steps:
    raise models.ConfigError(f"train.branch_freeze_steps={train_config.branch_freeze_steps} "
                             f"freezes kappa/alpha for the whole run of train.num_steps="
                             f"{train_config.num_steps}; use fewer (or -1 for the paper's "
                             f"1/6, 0 for never)")


def model_config_from(config: ml_collections.ConfigDict, vocab_size: int) -> models.ModelConfig:
  """The ModelConfig of an experiment config, with the tokenizer's real vocabulary size."""
  values = dict(config.model.to_dict())
  values["vocab_size"] = vocab_size
  return models.ModelConfig.from_mapping(values)


class Trainer:
  """A training run in `workdir`: resumes from its checkpoints, logs, checkpoints, evaluates."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, *,
               overwrite: bool = False, show_progress: Optional[bool] = None,
               progress_position: int = 0):
    from wt import data as data_lib  # pylint: disable=g-import-not-at-top
    self.config, self.workdir = config, workdir
    train_config = config.train
    validate_config(config)
    _check_workdir(config, workdir, overwrite)
    self.is_chief = jax.process_index() == 0
    self.mesh = parallel.make_mesh()
    self.data = data_lib.load_translation_data(
        config.data, row_multiple=jax.local_device_count(), process_index=jax.process_index(),
        process_count=jax.process_count())
    self.model_config = model_config_from(config, self.data.tokenizer.vocab_size)
    self.model = models.Transformer(self.model_config)
    self.optimizer, self.schedules = optim.make_optimizer(train_config, self.model_config)
    self.checkpointer = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"),
                                                keep=train_config.keep_checkpoints)
    self.writer = metrics.MetricWriter(workdir, enabled=self.is_chief)
    self.pmap = train_config.wrapper == "pmap"
    self._build_steps()
    self._restore_or_init()
    self.batches = self.data.train_batches(train_config.seed, start=self.data_position)
    self.compile_seconds = self._compile_all_shapes()
    show = self.is_chief if show_progress is None else show_progress
    self.progress = tqdm.tqdm(total=train_config.num_steps, initial=self.step, disable=not show,
                              desc=os.path.basename(os.path.normpath(workdir)), unit="step",
                              dynamic_ncols=True, position=progress_position)

  # -- construction --------------------------------------------------------------------------

  def _build_steps(self):
    smoothing = self.config.train.label_smoothing
    train = functools.partial(train_step, model=self.model, optimizer=self.optimizer,
                              label_smoothing=smoothing)
    evaluate = functools.partial(eval_step, model=self.model, label_smoothing=smoothing)
    if self.pmap:
      self._train_step, self._eval_step = parallel.pmap_step(train), parallel.pmap_step(
          evaluate, donate=False)
    else:
      self._train_step = parallel.shard_map_step(train, self.mesh)
      self._eval_step = parallel.shard_map_step(evaluate, self.mesh, donate=False)

  def _init_state(self, rng) -> TrainState:
    params = models.init_params(self.model_config, rng)
    return TrainState(step=jnp.zeros([], jnp.int32), params=params,
                      opt_state=self.optimizer.init(params),
                      rng=jax.random.PRNGKey(self.config.train.seed + 1))

  def _restore_or_init(self):
    rng = jax.random.PRNGKey(self.config.train.seed)
    sharding = parallel.replicated(self.mesh)
    abstract = jax.eval_shape(self._init_state, rng)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                            abstract)
    restored = self.checkpointer.restore(abstract)
    if restored is None:
      state = jax.jit(self._init_state, out_shardings=sharding)(rng)
      self.data_position, self.train_seconds, self.train_tokens = 0, 0.0, 0
      logging.info("initialised a new run in %s", self.workdir)
    else:
      state, meta, step = restored
      self.data_position, self.train_seconds = int(meta["data_position"]), meta["train_seconds"]
      self.train_tokens = int(meta["train_tokens"])
      logging.info("resumed %s from checkpoint %d", self.workdir, step)
    self.num_params = models.count_params(state.params)
    self.state = flax.jax_utils.replicate(state) if self.pmap else state
    self.step = int(jax.device_get(state.step))

  def _device_batch(self, batch: dict) -> dict:
    arrays = {k: batch[k] for k in ("inputs", "targets")}
    return parallel.device_split(arrays) if self.pmap else parallel.global_batch(arrays,
                                                                                 self.mesh)

  def _compile_all_shapes(self) -> float:
    """Compiles the train step for every training batch shape before the clock starts."""
    if self.pmap:
      return 0.0  # pmap compiles on first use; its first steps include the compile time
    start = time.perf_counter()
    self._compiled = {}
    for rows, source_len, target_len in self.data.batch_shapes:
      local_rows = rows // jax.process_count()
      fake = {"inputs": np.zeros((local_rows, source_len), np.int32),
              "targets": np.zeros((local_rows, target_len), np.int32)}
      self._compiled[(source_len, target_len)] = self._train_step.lower(
          self.state, self._device_batch(fake)).compile()
    seconds = time.perf_counter() - start
    logging.info("compiled %d training shapes in %.1f s", len(self._compiled), seconds)
    return seconds

  # -- training ------------------------------------------------------------------------------

  def _run_step(self, device_batch):
    if self.pmap:
      state, step_metrics = self._train_step(self.state, device_batch)
      return state, flax.jax_utils.unreplicate(step_metrics)
    shape = (device_batch["inputs"].shape[1], device_batch["targets"].shape[1])
    return self._compiled[shape](self.state, device_batch)

  def _logical_state(self) -> TrainState:
    return flax.jax_utils.unreplicate(self.state) if self.pmap else self.state

  def params(self):
    """The current parameters (one logical copy, whatever the wrapper)."""
    return self._logical_state().params

  def _check_finite(self, summed: dict):
    # `summed` is already on the host: train_until fetches it before every check.
    broken = {name: float(total) for name, (total, _) in summed.items()
              if not np.isfinite(total)}
    if broken:
      last = self.checkpointer.steps()
      raise TrainingDivergedError(
          f"training {', '.join(f'{k}={v}' for k, v in broken.items())} by step {self.step} "
          f"in {self.workdir}; the run "
          f"stopped and the last good checkpoint ({last[-1] if last else 'none'}) is kept. "
          f"Lower train.learning_rate_scale or raise train.warmup_steps, then resume")

  def save_checkpoint(self):
    self.checkpointer.save(self.step, self._logical_state(),
                           {"data_position": self.data_position,
                            "train_seconds": self.train_seconds,
                            "train_tokens": self.train_tokens})

  def train_until(self, until_step: int) -> None:
    """Trains to `until_step` (capped at train.num_steps), logging and checkpointing."""
    cfg = self.config.train
    until_step = min(until_step, cfg.num_steps)
    pending, pending_tokens, pending_seconds = {}, 0, 0.0
    while self.step < until_step:
      tick = time.perf_counter()
      batch = next(self.batches)
      self.state, step_metrics = self._run_step(self._device_batch(batch))
      pending = metrics.add(pending, step_metrics)
      self.step += 1
      self.data_position = batch["position"]
      log_now = self.step % cfg.log_every == 0 or self.step == until_step
      if log_now or self.step % cfg.checkpoint_every == 0 or self.step == cfg.num_steps:
        pending = jax.device_get(pending)   # waits for the step: the timing includes it
      elapsed = time.perf_counter() - tick
      self.train_seconds += elapsed
      pending_seconds += elapsed
      tokens = int(np.sum(batch["targets"] > 0)) * jax.process_count()
      pending_tokens += tokens
      self.train_tokens += tokens
      self.progress.update(1)
      if log_now and pending:
        self._check_finite(pending)
        self._log_train(pending, pending_tokens, pending_seconds)
        pending, pending_tokens, pending_seconds = {}, 0, 0.0
      if self.step % cfg.eval_every == 0 or self.step == cfg.num_steps:
        self.evaluate()
      if self.step % cfg.checkpoint_every == 0 or self.step == cfg.num_steps:
        if pending:
          self._check_finite(pending)
        self.save_checkpoint()

  def _log_train(self, summed: dict, tokens: int, seconds: float):
    scalars = {f"train/{k}": v for k, v in metrics.means(summed).items()}
    scalars["train/tokens_per_second"] = tokens / max(seconds, 1e-9)
    scalars["train/seconds"] = self.train_seconds
    for name, schedule in self.schedules.items():
      scalars[f"train/{name}"] = float(schedule(self.step - 1))
    for name, values in branch_weight_values(self.params(),
                                             self.model_config.branch_weights).items():
      for i, value in enumerate(np.asarray(values)):
        scalars[f"branch/{name}/{i}"] = float(value)
    self.writer.write(self.step, scalars)
    self.progress.set_postfix(loss=f"{scalars['train/loss']:.3f}",
                              tok_s=f"{scalars['train/tokens_per_second']:.0f}", refresh=False)

  def evaluate(self, split: Optional[str] = None) -> dict[str, float]:
    """Validation loss, NLL, perplexity and accuracy over a whole split; logged."""
    split = split or self.config.data.eval_split
    start = time.perf_counter()
    params = self.state.params
    summed = {}
    for batch in self.data.eval_batches(split):
      summed = metrics.add(summed, self._eval_step(params, self._device_batch(batch)))
    summed = jax.device_get(summed)
    if self.pmap:
      summed = flax.jax_utils.unreplicate(summed)
    results = metrics.means(summed)
    scalars = {f"eval/{k}": v for k, v in results.items()}
    scalars["eval/train_seconds"] = self.train_seconds
    scalars["eval/seconds"] = time.perf_counter() - start
    self.writer.write(self.step, scalars)
    self.last_eval = results
    logging.info("step %d %s: %s", self.step, split,
                 ", ".join(f"{k}={v:.4f}" for k, v in results.items()))
    return results

  def close(self):
    self.checkpointer.close()
    self.writer.close()
    self.progress.close()

  def summary(self) -> dict:
    return {"step": self.step, "train_seconds": self.train_seconds,
            "train_tokens": self.train_tokens, "compile_seconds": self.compile_seconds,
            "num_params": self.num_params}


# ------------------------------------------------------------------------------------------
# 3. A whole run, and what evaluation needs of a finished one.


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run in `workdir` was trained with (its config.json)."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} does not exist: {workdir} is not a training workdir "
                            f"(train one with python -m experiments.run --workdir {workdir})")
  with open(path, encoding="utf-8") as f:
    return ml_collections.ConfigDict(json.load(f))


def restore_params(workdir: str, average_last: int = 1):
  """Parameters of the latest good checkpoint, or the mean of the last `average_last`."""
  checkpointer = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"))
  try:
    if average_last > 1:
      return checkpointer.average_params(None, average_last)
    restored = checkpointer.restore(None)
    if restored is None:
      raise checkpoint.CheckpointError(f"no readable checkpoint in {checkpointer.directory}")
    return restored[0]["params"]
  finally:
    checkpointer.close()


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       overwrite: bool = False) -> dict:
  """Trains (or resumes) the configured model in `workdir` to train.num_steps.

  Returns the run's summary: final step, training seconds, compile seconds, parameter count
  and the final validation metrics.
  """
  trainer = Trainer(config, workdir, overwrite=overwrite)
  try:
    if trainer.step < config.train.num_steps:
      trainer.train_until(config.train.num_steps)   # evaluates at the last step
      final = trainer.last_eval
    else:
      final = trainer.evaluate()
  finally:
    trainer.close()
  return {**trainer.summary(), **{f"eval_{k}": v for k, v in final.items()}}
