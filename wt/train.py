"""Training: the per-device step, and `train_and_evaluate(config, workdir)` around it.

Sections:
  1. TrainState and the pure steps: `train_step(state, batch) -> (state, metrics)` and
     `eval_step(params, batch) -> metrics`, written for one device's shard with explicit
     `lax.pmean`/`lax.psum` over `parallel.AXIS`; metrics are (sum, count) pairs. Every user
     (the Trainer, experiments.bench, experiments.data_stats, the tests) builds the state with
     `create_train_state` and the compiled step with `compile_train_step`, for either wrapper
     (`parallel.data_parallel`).
  2. `Trainer`: one run in a workdir (its config.json: wt/run_config.py). It builds data,
     model, optimizer and the wrapped steps (shard_map under jit, or pmap), restores the
     latest good checkpoint, compiles every batch shape ahead of time, and trains in
     `train_until(step)` calls (so that a comparison can interleave two runs and both see the
     same machine speed); a SIGTERM saves the step reached (wt/preemption.py).
  3. `train_and_evaluate(config, workdir)`: a whole run, as the command line and tests use it,
     and `restore_params` for evaluation.

Everything stateful (files, logs, checkpoints, progress) lives in the Trainer; the steps are
pure functions of their inputs.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any, Callable, Optional

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from wt import checkpoint, metrics, models, optim, parallel, preemption, progress, run_config
from wt import data as data_lib
from wt.modules import branch_weight_values
from wt.train_config import CONFIG_SECTIONS

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


def train_step(
  state: TrainState,
  batch: dict,
  *,
  model: models.Transformer,
  optimizer: optax.GradientTransformation,
  label_smoothing: float,
):
  """One optimizer step on this device's shard of the global batch.

  The loss is normalised by the mean number of real target tokens per device, so that the
  `pmean` of the gradients is the gradient of the global token-normalised loss (shards with
  more tokens weigh more, exactly as in a single-device step on the whole batch).
  """
  inputs, targets = batch["inputs"], batch["targets"]
  device_rng = jax.random.fold_in(
    jax.random.fold_in(state.rng, state.step), jax.lax.axis_index(parallel.AXIS)
  )
  tokens = jnp.sum(targets > 0).astype(jnp.float32)
  mean_tokens = jnp.maximum(jax.lax.pmean(tokens, parallel.AXIS), 1.0)

  def loss_fn(params):
    logits = model.apply(
      {"params": params}, inputs, targets, train=True, rngs={"dropout": device_rng}
    )
    step_metrics = metrics.token_metrics(logits, targets, label_smoothing, with_accuracy=False)
    return step_metrics["loss"][0] / mean_tokens, step_metrics

  grads, step_metrics = jax.grad(loss_fn, has_aux=True)(state.params)
  grads = jax.lax.pmean(grads, parallel.AXIS)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  new_state = state.replace(  # type: ignore[attr-defined]  # flax.struct adds replace
    step=state.step + 1, params=params, opt_state=opt_state
  )
  # The norms are the same on every device (computed after the pmean): one count per step.
  # A non-finite parameter norm catches an update that broke the parameters while this step's
  # loss was still finite, before that state can be checkpointed.
  norms = {"grad_norm": (optax.tree.norm(grads), 1.0), "param_norm": (optax.tree.norm(params), 1.0)}
  return new_state, {**jax.lax.psum(step_metrics, parallel.AXIS), **norms}


def eval_step(params, batch: dict, *, model: models.Transformer, label_smoothing: float):
  """Summed validation metrics of this device's shard, added over the mesh."""
  logits = model.apply({"params": params}, batch["inputs"], batch["targets"], train=False)
  return jax.lax.psum(
    metrics.token_metrics(logits, batch["targets"], label_smoothing), parallel.AXIS
  )


def init_train_state(
  model_config: models.ModelConfig, optimizer: optax.GradientTransformation, seed: int
) -> TrainState:
  """A new run's state: parameters from PRNGKey(seed), dropout from PRNGKey(seed + 1)."""
  params = models.init_params(model_config, jax.random.PRNGKey(seed))
  return TrainState(
    step=jnp.zeros([], jnp.int32),
    params=params,
    opt_state=optimizer.init(params),
    rng=jax.random.PRNGKey(seed + 1),
  )


def create_train_state(
  model_config: models.ModelConfig,
  optimizer: optax.GradientTransformation,
  seed: int,
  data_parallel: parallel.DataParallel,
) -> TrainState:
  """A new run's state, built under jit and placed as `data_parallel`'s wrapped steps take it."""
  return data_parallel.init_state(
    functools.partial(init_train_state, model_config, optimizer, seed)
  )


def compile_train_step(
  model: models.Transformer,
  optimizer: optax.GradientTransformation,
  label_smoothing: float,
  data_parallel: parallel.DataParallel,
  state,
  device_batch: dict,
):
  """`train_step` wrapped by `data_parallel` (state donated) and compiled ahead of time for
  `device_batch`'s shapes: `compiled(state, device_batch) -> (state, metrics)`, whose metrics
  become one copy with `data_parallel.unreplicate`."""
  step = functools.partial(
    train_step, model=model, optimizer=optimizer, label_smoothing=label_smoothing
  )
  wrapped = data_parallel.wrap(step)
  return wrapped.lower(state, device_batch).compile()  # type: ignore[attr-defined]


def zeros_batch(data_parallel: parallel.DataParallel, shape: tuple[int, int, int]) -> dict:
  """A placed batch of this process's (rows, source_len, target_len) `shape`, for compiling."""
  rows, source_len, target_len = shape
  return data_parallel.device_batch(
    {
      "inputs": np.zeros((rows, source_len), np.int32),
      "targets": np.zeros((rows, target_len), np.int32),
    }
  )


def compile_train_steps(
  model: models.Transformer,
  optimizer: optax.GradientTransformation,
  label_smoothing: float,
  data_parallel: parallel.DataParallel,
  state,
  shapes: list[tuple[int, int, int]],
  compile_all: Callable = parallel.compile_each,
) -> dict:
  """{(source_len, target_len): `compile_train_step` for it} for each (rows, source_len,
  target_len) of `shapes` (this process's rows), compiled by `compile_all(compile_one, shapes)`:
  side by side by default."""

  def compile_shape(shape):
    return compile_train_step(
      model, optimizer, label_smoothing, data_parallel, state, zeros_batch(data_parallel, shape)
    )

  compiled = compile_all(compile_shape, list(shapes))
  return {(s, t): program for (_, s, t), program in compiled.items()}


# ------------------------------------------------------------------------------------------
# 2. One run in a workdir.


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Refuses a config that cannot work, before any data is loaded or anything compiled: builds
  every section of `train_config.CONFIG_SECTIONS` as its dataclass, which refuses unknown
  fields and bad values with a ConfigError naming the field, the value and the fix."""
  for section, section_class in CONFIG_SECTIONS.items():
    section_class.from_mapping(config[section])  # type: ignore[attr-defined]


def model_config_from(config: ml_collections.ConfigDict, vocab_size: int) -> models.ModelConfig:
  """The ModelConfig of an experiment config, with the tokenizer's real vocabulary size."""
  values = dict(config.model.to_dict())
  values["vocab_size"] = vocab_size
  return models.ModelConfig.from_mapping(values)


class Trainer:
  """A training run in `workdir`: resumes from its checkpoints, logs, checkpoints, evaluates."""

  def __init__(
    self,
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    overwrite: bool = False,
    show_progress: Optional[bool] = None,
    progress_position: int = 0,
  ):
    self.config, self.workdir = config, workdir
    train_config = config.train
    validate_config(config)
    run_config.check_workdir(config, workdir, overwrite)
    self.is_chief = jax.process_index() == 0
    self.parallel = parallel.data_parallel(train_config.wrapper)
    self.data = data_lib.load_translation_data(
      config.data,
      row_multiple=jax.local_device_count(),
      process_index=jax.process_index(),
      process_count=jax.process_count(),
    )
    self.model_config = model_config_from(config, self.data.tokenizer.vocab_size)
    self.model = models.Transformer(self.model_config)
    self.optimizer, self.schedules = optim.make_optimizer(train_config, self.model_config)
    self.checkpointer = checkpoint.Checkpointer(
      os.path.join(workdir, "checkpoints"), keep=train_config.keep_checkpoints
    )
    self.writer = metrics.MetricWriter(workdir, enabled=self.is_chief)
    self._eval_step = self.parallel.wrap(
      functools.partial(eval_step, model=self.model, label_smoothing=train_config.label_smoothing),
      donate=False,
    )
    self._restore_or_init()
    self.batches = self.data.train_batches(train_config.seed, start=self.data_position)
    self.compile_seconds = self._compile_all_shapes()
    show = self.is_chief if show_progress is None else show_progress
    # A bar on a terminal, a plain line every $WT_PROGRESS_SECONDS (30) s in a log file.
    self.progress = progress.Progress(
      train_config.num_steps,
      initial=self.step,
      enabled=show,
      desc=os.path.basename(os.path.normpath(workdir)),
      unit="step",
      position=progress_position,
    )

  # -- construction --------------------------------------------------------------------------

  def _restore_or_init(self):
    seed = self.config.train.seed
    abstract = self.parallel.abstract_state(
      functools.partial(init_train_state, self.model_config, self.optimizer, seed)
    )
    restored = self.checkpointer.restore(abstract, move_aside=True)
    if restored is None:
      self.state = create_train_state(self.model_config, self.optimizer, seed, self.parallel)
      self.data_position, self.train_seconds, self.train_tokens = 0, 0.0, 0
      logging.info("initialised a new run in %s", self.workdir)
    else:
      state, meta, step = restored
      self.state = self.parallel.place_state(state)
      self.data_position, self.train_seconds = int(meta["data_position"]), meta["train_seconds"]
      self.train_tokens = int(meta["train_tokens"])
      logging.info("resumed %s from checkpoint %d", self.workdir, step)
    logical = self._logical_state()
    self.num_params = models.count_params(logical.params)
    self.step = int(jax.device_get(logical.step))
    self._saved_step = None if restored is None else self.step

  def _device_batch(self, batch: dict) -> dict:
    return self.parallel.device_batch({k: batch[k] for k in ("inputs", "targets")})

  def _compile_all_shapes(self) -> float:
    """Compiles, side by side before the clock starts, the train step for every training batch
    shape and the eval step for every batch shape of the validation split."""
    start = time.perf_counter()
    train_shapes = [(rows // jax.process_count(), s, t) for rows, s, t in self.data.batch_shapes]
    eval_shapes = self.data.eval_shapes(self.config.data.eval_split)

    def compile_one(key):
      kind, shape = key
      batch = zeros_batch(self.parallel, shape)
      if kind == "eval":
        return self._eval_step.lower(self.state.params, batch).compile()
      label_smoothing = self.config.train.label_smoothing
      return compile_train_step(
        self.model, self.optimizer, label_smoothing, self.parallel, self.state, batch
      )

    keys = [("train", shape) for shape in train_shapes] + [("eval", s) for s in eval_shapes]
    programs = parallel.compile_each(compile_one, keys)
    self._compiled, self._compiled_eval = (
      {shape[1:]: program for (kind, shape), program in programs.items() if kind == wanted}
      for wanted in ("train", "eval")
    )
    seconds = time.perf_counter() - start
    logging.info(
      "compiled %d training and %d validation shapes in %.1f s",
      len(train_shapes),
      len(eval_shapes),
      seconds,
    )
    return seconds

  # -- training ------------------------------------------------------------------------------

  def _run_step(self, device_batch):
    shape = (device_batch["inputs"].shape[-1], device_batch["targets"].shape[-1])
    state, step_metrics = self._compiled[shape](self.state, device_batch)
    return state, self.parallel.unreplicate(step_metrics)

  def _logical_state(self) -> TrainState:
    return self.parallel.unreplicate(self.state)

  def params(self):
    """The current parameters (one logical copy, whatever the wrapper)."""
    return self._logical_state().params

  def _check_finite(self, summed: dict):
    # `summed` is already on the host: train_until fetches it before every check.
    broken = {name: float(total) for name, (total, _) in summed.items() if not np.isfinite(total)}
    if broken:
      last = self.checkpointer.steps()
      raise TrainingDivergedError(
        f"training {', '.join(f'{k}={v}' for k, v in broken.items())} by step {self.step} "
        f"in {self.workdir}; the run "
        f"stopped and the last good checkpoint ({last[-1] if last else 'none'}) is kept. "
        f"Lower train.learning_rate_scale or raise train.warmup_steps, then resume"
      )

  def save_checkpoint(self):
    self._saved_step = self.step
    self.checkpointer.save(
      self.step,
      self._logical_state(),
      {
        "data_position": self.data_position,
        "train_seconds": self.train_seconds,
        "train_tokens": self.train_tokens,
      },
    )

  def save_checkpoint_now(self) -> None:
    """Saves the current step unless it is saved already, and waits until it is on disk."""
    if self.step != self._saved_step and self.step not in self.checkpointer.steps():
      self.save_checkpoint()
    self.checkpointer.wait()

  def train_until(self, until_step: int) -> None:
    """Trains to `until_step` (capped at train.num_steps), logging and checkpointing; on a
    SIGTERM, saves the step reached and raises `preemption.Preempted` (wt/preemption.py)."""
    with preemption.notices():
      self._train_until(until_step)

  def _train_until(self, until_step: int) -> None:
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
        pending = jax.device_get(pending)  # waits for the step: the timing includes it
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
      if preemption.requested(synchronised=log_now):
        if pending:
          self._check_finite(jax.device_get(pending))
        self.save_checkpoint_now()
        logging.warning(
          "SIGTERM: saved %s at step %d; rerun the same command to resume from it",
          self.workdir,
          self.step,
        )
        raise preemption.Preempted(self.step)

  def _log_train(self, summed: dict, tokens: int, seconds: float):
    scalars = {f"train/{k}": v for k, v in metrics.means(summed).items()}
    scalars["train/tokens_per_second"] = tokens / max(seconds, 1e-9)
    scalars["train/seconds"] = self.train_seconds
    for name, schedule in self.schedules.items():
      scalars[f"train/{name}"] = float(schedule(self.step - 1))
    for name, values in branch_weight_values(
      self.params(), self.model_config.branch_weights
    ).items():
      for i, value in enumerate(np.asarray(values)):
        scalars[f"branch/{name}/{i}"] = float(value)
    self.writer.write(self.step, scalars)
    self.progress.set_metrics(
      loss=scalars["train/loss"], tokens_per_second=scalars["train/tokens_per_second"]
    )

  def evaluate(self, split: Optional[str] = None) -> dict[str, float]:
    """Validation loss, NLL, perplexity and accuracy over a whole split; logged."""
    split = split or self.config.data.eval_split
    start = time.perf_counter()
    params = self.state.params
    summed = {}
    for batch in self.data.eval_batches(split):
      shape = (batch["inputs"].shape[1], batch["targets"].shape[1])
      eval_step = self._compiled_eval.get(shape, self._eval_step)  # other splits: jit
      summed = metrics.add(summed, eval_step(params, self._device_batch(batch)))
    summed = self.parallel.unreplicate(jax.device_get(summed))
    results = metrics.means(summed)
    scalars = {f"eval/{k}": v for k, v in results.items()}
    scalars["eval/train_seconds"] = self.train_seconds
    scalars["eval/seconds"] = time.perf_counter() - start
    self.writer.write(self.step, scalars)
    self.last_eval = results
    logging.info(
      "step %d %s: %s", self.step, split, ", ".join(f"{k}={v:.4f}" for k, v in results.items())
    )
    return results

  def close(self):
    self.checkpointer.close()
    self.writer.close()
    self.progress.close()

  def summary(self) -> dict:
    return {
      "step": self.step,
      "train_seconds": self.train_seconds,
      "train_tokens": self.train_tokens,
      "compile_seconds": self.compile_seconds,
      "num_params": self.num_params,
    }


# ------------------------------------------------------------------------------------------
# 3. A whole run, and what evaluation needs of a finished one.


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


def train_and_evaluate(
  config: ml_collections.ConfigDict, workdir: str, *, overwrite: bool = False
) -> dict:
  """Trains (or resumes) the configured model in `workdir` to train.num_steps.

  Returns the run's summary: final step, training seconds, compile seconds, parameter count
  and the final validation metrics.
  """
  trainer = Trainer(config, workdir, overwrite=overwrite)
  try:
    if trainer.step < config.train.num_steps:
      trainer.train_until(config.train.num_steps)  # evaluates at the last step
      final = trainer.last_eval
    else:
      final = trainer.evaluate()
  finally:
    trainer.close()
  return {**trainer.summary(), **{f"eval_{k}": v for k, v in final.items()}}
