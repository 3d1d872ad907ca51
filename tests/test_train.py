"""Training: the data-parallel wrappers, multi-process, crash/resume, NaN, checkpoints, logs."""

import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import multi30k
from wt import checkpoint, metrics, models, optim, parallel, preemption, train

REPO = pathlib.Path(__file__).resolve().parent.parent


def command_line(config, workdir) -> list[str]:
  """`python -m experiments.run` for `config`, as flags over the multi30k.py:tiny defaults."""
  base = multi30k.get_config("tiny")
  flags = [
    f"--config.{section}.{key}={value}"
    for section in ("data", "model", "train")
    for key, value in config[section].items()
    if base[section].get(key) != value
  ]
  return [
    sys.executable,
    "-m",
    "experiments.run",
    "--config",
    "experiments/configs/multi30k.py:tiny",
    "--workdir",
    str(workdir),
    *flags,
  ]


def final_params(workdir):
  restored = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints")).restore(None)
  assert restored is not None, f"no checkpoint in {workdir}"
  return jax.tree.map(np.asarray, restored[0]["params"])


def assert_trees_close(a, b, atol):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(x, y, atol=atol, rtol=0)


# ------------------------------------------------------------------------------------------


def _batch(rows=16, source_len=9, target_len=7, seed=0):
  """Random token rows with different amounts of padding, so devices see unequal tokens."""
  rng = np.random.default_rng(seed)
  inputs = rng.integers(2, 50, size=(rows, source_len)).astype(np.int32)
  targets = rng.integers(2, 50, size=(rows, target_len)).astype(np.int32)
  for row in range(rows):
    inputs[row, rng.integers(2, source_len) :] = 0
    targets[row, 1 + row % (target_len - 1) :] = 0
  return {"inputs": inputs, "targets": targets}


@pytest.mark.slow
def test_shard_map_and_pmap_equal_a_single_device_step_on_the_global_batch(tiny_config):
  assert jax.device_count() == 8
  model_config = models.ModelConfig(
    vocab_size=50,
    attention="weighted",
    num_layers=1,
    d_model=16,
    d_ff=32,
    num_heads=4,
    num_branches=4,
    dropout_rate=0.0,
  )
  model = models.Transformer(model_config)
  optimizer, _ = optim.make_optimizer(tiny_config.train, model_config)
  batches = [_batch(seed=s) for s in range(2)]

  def run(data_parallel):
    """Parameters and per-step losses of two steps, built as the Trainer builds them."""
    state = train.create_train_state(model_config, optimizer, 0, data_parallel)
    step = train.compile_train_step(
      model, optimizer, 0.1, data_parallel, state, data_parallel.device_batch(batches[0])
    )
    losses = []
    for batch in batches:
      state, step_metrics = step(state, data_parallel.device_batch(batch))
      loss_sum, tokens = data_parallel.unreplicate(step_metrics)["loss"]
      losses.append(float(loss_sum) / float(tokens))
    return data_parallel.unreplicate(state).params, losses

  reference_params, reference_losses = run(parallel.data_parallel("shard_map", jax.devices()[:1]))
  for wrapper in parallel.WRAPPERS:
    params, losses = run(parallel.data_parallel(wrapper))
    np.testing.assert_allclose(losses, reference_losses, rtol=1e-5, err_msg=wrapper)
    assert_trees_close(params, reference_params, atol=1e-5)


def test_compile_each_compiles_distinct_shapes_on_several_threads(monkeypatch):
  monkeypatch.setattr(parallel.os, "cpu_count", lambda: 2)
  # Both threads must be inside compile_one at once: one after the other, the barrier breaks.
  together = threading.Barrier(2, timeout=30)

  def compile_one(shape):
    together.wait()
    return jax.jit(lambda x: jnp.cumsum(x * 2.0)).lower(jnp.zeros(shape)).compile()

  compiled = parallel.compile_each(compile_one, [(3,), (5,), (3,), (5,)])
  assert list(compiled) == [(3,), (5,)]  # each distinct shape once, in order
  for shape, program in compiled.items():
    x = np.arange(shape[0], dtype=np.float32)
    np.testing.assert_allclose(program(x), np.cumsum(2 * x))


@pytest.mark.slow
def test_the_trainer_trains_alike_with_either_wrapper(tiny_config, tmp_path):
  tiny_config.train.update(num_steps=2, log_every=2, eval_every=2, checkpoint_every=2)
  tiny_config.data.num_buckets = 1  # one training shape to compile per wrapper
  summaries = {}
  for wrapper in parallel.WRAPPERS:
    tiny_config.train.wrapper = wrapper
    summaries[wrapper] = train.train_and_evaluate(tiny_config, str(tmp_path / wrapper))
  assert summaries["pmap"]["compile_seconds"] > 0  # compiled ahead of time, as shard_map
  assert summaries["pmap"]["eval_loss"] == pytest.approx(
    summaries["shard_map"]["eval_loss"], rel=1e-5
  )
  assert_trees_close(
    final_params(tmp_path / "pmap"), final_params(tmp_path / "shard_map"), atol=1e-5
  )


@pytest.mark.slow
def test_two_processes_give_the_result_of_one(tiny_config, tmp_path):
  tiny_config.train.num_steps = 6
  single = tmp_path / "single"
  train.train_and_evaluate(tiny_config, str(single))
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  workdir = tmp_path / "two_processes"
  processes = []
  for process_id in range(2):
    env = {
      **os.environ,
      "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
      "WT_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
      "WT_NUM_PROCESSES": "2",
      "WT_PROCESS_ID": str(process_id),
    }
    processes.append(
      subprocess.Popen(
        command_line(tiny_config, workdir),
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
      )
    )
  outputs = [p.communicate(timeout=300)[0].decode() for p in processes]
  for p, out in zip(processes, outputs):
    assert p.returncode == 0, out[-3000:]
  assert "process 1 of 2" in outputs[1]
  # Same global batches; only the order of the cross-process sums differs (gloo vs in-process).
  assert_trees_close(final_params(workdir), final_params(single), atol=1e-4)


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_parameters_of_an_uninterrupted_one(tiny_config, tmp_path):
  tiny_config.train.update(num_steps=60, checkpoint_every=10, log_every=10, eval_every=30)
  killed = tmp_path / "killed"
  process = subprocess.Popen(
    command_line(tiny_config, killed),
    cwd=REPO,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
  )
  first_checkpoint = killed / "checkpoints" / "10"
  deadline = time.time() + 240
  while not first_checkpoint.exists() and process.poll() is None and time.time() < deadline:
    time.sleep(0.02)
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert process.returncode == -signal.SIGKILL
  steps = checkpoint.Checkpointer(str(killed / "checkpoints")).steps()
  assert steps and max(steps) < 60, f"the run was not interrupted: checkpoints {steps}"

  resumed = subprocess.run(
    command_line(tiny_config, killed), cwd=REPO, capture_output=True, text=True, timeout=300
  )
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "resumed" in resumed.stderr
  train.train_and_evaluate(tiny_config, str(tmp_path / "uninterrupted"))
  assert_trees_close(final_params(killed), final_params(tmp_path / "uninterrupted"), atol=1e-6)


@pytest.mark.slow
def test_sigterm_saves_the_step_reached_and_stops_with_143(
  tiny_config, tmp_path, monkeypatch, sigterm_when
):
  tiny_config.train.update(num_steps=20, checkpoint_every=10, log_every=5, eval_every=20)
  trainer = train.Trainer(tiny_config, str(tmp_path), show_progress=False)
  sigterm_when(lambda trainer, step: step == 7)
  with pytest.raises(preemption.Preempted) as stopped:
    trainer.train_until(20)
  assert stopped.value.code == 143 and stopped.value.step == 7 and trainer.step == 7
  assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the usual effect outside training
  trainer.close()
  monkeypatch.undo()
  assert checkpoint.Checkpointer(str(tmp_path / "checkpoints")).steps() == [7]
  resumed = train.Trainer(tiny_config, str(tmp_path), show_progress=False)
  assert resumed.step == 7 and resumed.data_position == trainer.data_position
  resumed.close()


@pytest.mark.slow
def test_validation_runs_on_programs_compiled_before_training(tiny_config, tmp_path):
  """Every validation batch shape is compiled with the training shapes, side by side, so the
  first evaluation compiles nothing; its metrics equal the jitted eval step's."""
  trainer = train.Trainer(tiny_config, str(tmp_path), show_progress=False)
  batches = trainer.data.eval_batches(tiny_config.data.eval_split)
  shapes = {(b["inputs"].shape[1], b["targets"].shape[1]) for b in batches}
  assert set(trainer._compiled_eval) == shapes
  ahead_of_time = trainer.evaluate()
  assert trainer._eval_step._cache_size() == 0  # the jitted step was never traced
  trainer._compiled_eval = {}
  assert trainer.evaluate() == pytest.approx(ahead_of_time, rel=1e-6)
  assert trainer._eval_step._cache_size() == len(shapes)
  trainer.close()


@pytest.mark.slow
def test_nan_stops_the_run_and_the_last_good_checkpoint_restores(tiny_config, tmp_path):
  tiny_config.train.update(num_steps=20, checkpoint_every=5, log_every=5)
  trainer = train.Trainer(tiny_config, str(tmp_path), show_progress=False)
  trainer.train_until(5)
  trainer.checkpointer.wait()
  trainer.state = trainer.state.replace(
    params=jax.tree.map(lambda p: p * jnp.nan, trainer.state.params)
  )
  with pytest.raises(train.TrainingDivergedError, match=r"last good checkpoint \(5\) is kept"):
    trainer.train_until(20)
  trainer.close()
  assert checkpoint.Checkpointer(str(tmp_path / "checkpoints")).steps() == [5]
  restored = train.Trainer(tiny_config, str(tmp_path), show_progress=False)
  assert restored.step == 5
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(restored.state.params))
  restored.close()


@pytest.mark.slow
def test_an_update_that_breaks_the_parameters_is_never_checkpointed(tiny_config, tmp_path):
  # A NaN in Adam's moments makes step 10's update NaN while step 10's loss (computed from
  # the parameters before it) is still finite; step 10 is a checkpoint step.
  tiny_config.train.update(num_steps=20, checkpoint_every=5, log_every=5)
  trainer = train.Trainer(tiny_config, str(tmp_path), show_progress=False)
  trainer.train_until(9)
  poison = lambda x: x * jnp.nan if jnp.issubdtype(x.dtype, jnp.floating) else x
  trainer.state = trainer.state.replace(opt_state=jax.tree.map(poison, trainer.state.opt_state))
  with pytest.raises(train.TrainingDivergedError, match=r"param_norm=nan.*checkpoint \(5\)"):
    trainer.train_until(20)
  trainer.close()
  assert checkpoint.Checkpointer(str(tmp_path / "checkpoints")).steps() == [5]


@pytest.mark.slow
def test_a_corrupt_latest_checkpoint_is_skipped_for_the_previous_one(tiny_config, tmp_path, caplog):
  tiny_config.train.update(num_steps=10, checkpoint_every=5)
  train.train_and_evaluate(tiny_config, str(tmp_path))
  for path in (tmp_path / "checkpoints" / "10" / "state").rglob("*"):
    if path.is_file():
      path.write_bytes(b"not a checkpoint")
  trainer = train.Trainer(tiny_config, str(tmp_path), show_progress=False)
  assert trainer.step == 5
  assert "checkpoint 10" in caplog.text and "unreadable" in caplog.text
  trainer.close()


@pytest.mark.slow
def test_a_workdir_of_another_config_is_refused_unless_overwritten(tiny_config, tmp_path):
  tiny_config.train.num_steps = 2
  train.train_and_evaluate(tiny_config, str(tmp_path))
  tiny_config.decode.beam_size = 8  # evaluation settings do not define a run
  assert train.train_and_evaluate(tiny_config, str(tmp_path))["step"] == 2
  tiny_config.model.d_model = 48
  with pytest.raises(
    ValueError,
    match=r"different config \(differs in model.d_model\).*"
    r"--overwrite",
  ):
    train.Trainer(tiny_config, str(tmp_path))
  assert train.train_and_evaluate(tiny_config, str(tmp_path), overwrite=True)["step"] == 2


def test_checkpoints_restore_onto_another_device_count_and_average(tmp_path):
  checkpointer = checkpoint.Checkpointer(str(tmp_path), keep=5)
  eight = parallel.replicated(parallel.make_mesh())
  for step in (1, 2, 3):
    state = jax.device_put({"params": {"w": np.full((4, 3), float(step), np.float32)}}, eight)
    checkpointer.save(step, state, {"data_position": step})
  two = parallel.replicated(parallel.make_mesh(jax.devices()[:2]))
  target = {"params": {"w": jax.ShapeDtypeStruct((4, 3), jnp.float32, sharding=two)}}
  restored, meta, step = checkpointer.restore(target)
  assert step == 3 and meta["data_position"] == 3
  assert restored["params"]["w"].sharding == two
  np.testing.assert_array_equal(np.asarray(restored["params"]["w"]), 3.0)
  averaged = checkpointer.average_params(target, last_n=2)
  np.testing.assert_allclose(np.asarray(averaged["w"]), 2.5)
  checkpointer.close()


@pytest.mark.slow
def test_logs_hold_losses_rates_throughput_branch_weights_and_validation(tiny_config, tmp_path):
  tiny_config.model.attention = "weighted"
  tiny_config.train.update(num_steps=10, log_every=5, eval_every=5, branch_freeze_steps=5)
  summary = train.train_and_evaluate(tiny_config, str(tmp_path))
  records = metrics.read_jsonl(str(tmp_path / "metrics.jsonl"))
  train_records = [r for r in records if "train/loss" in r]
  eval_records = [r for r in records if "eval/loss" in r]
  assert [r["step"] for r in train_records] == [5, 10]
  assert [r["step"] for r in eval_records] == [5, 10]
  for key in (
    "train/learning_rate",
    "train/branch_learning_rate",
    "train/tokens_per_second",
    "train/seconds",
    "train/nll",
  ):
    assert train_records[-1][key] > 0, key
  kappa = {k: v for k, v in train_records[0].items() if "/kappa/" in k}
  assert len(kappa) == 4 * 2  # M = 4 values for each of the 2 branched sublayers
  assert 0 <= eval_records[-1]["eval/accuracy"] <= 1
  assert eval_records[-1]["eval/perplexity"] == pytest.approx(np.exp(eval_records[-1]["eval/nll"]))
  # Frozen for the last 5 steps: the logged kappa/alpha at step 5 and 10 are the same.
  for key in (k for k in train_records[0] if k.startswith("branch/")):
    assert train_records[0][key] == train_records[1][key], key
  assert summary["eval_loss"] == eval_records[-1]["eval/loss"]
  assert any((tmp_path / "tensorboard").iterdir())


@pytest.mark.parametrize(
  "section, field, value, message",
  [
    (
      "train",
      "wrapper",
      "xmap",
      "config.train.wrapper='xmap' is not a valid choice; use one of ('shard_map', 'pmap')",
    ),
    ("train", "num_steps", 0, "config.train.num_steps=0 must be a positive integer"),
    ("train", "branch_freeze_steps", 50, "freezes kappa/alpha for the whole run"),
    ("model", "num_heads", 5, "config.model.num_heads=5 does not divide model.d_model=32"),
    ("data", "tokens_per_batch", -1, "config.data.tokens_per_batch=-1 must be a positive integer"),
    ("decode", "beam_size", 0, "config.decode.beam_size=0 must be a positive integer"),
  ],
)
def test_bad_config_values_are_refused_before_anything_is_loaded(
  tiny_config, tmp_path, section, field, value, message
):
  tiny_config[section][field] = value
  with pytest.raises(ValueError, match=re.escape(message)):
    train.Trainer(tiny_config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_bfloat16_compute_trains_with_float32_parameters_and_optimizer_state(tiny_config, tmp_path):
  tiny_config.model.dtype = "bfloat16"
  tiny_config.train.update(num_steps=4, log_every=2, eval_every=4)
  trainer = train.Trainer(tiny_config, str(tmp_path), show_progress=False)
  before = jax.tree.map(np.asarray, trainer.params())
  trainer.train_until(4)
  assert np.isfinite(trainer.last_eval["loss"])
  for tree in (trainer.state.params, trainer.state.opt_state):
    floats = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)]
    assert floats and all(x.dtype == jnp.float32 for x in floats)
  assert any(
    np.abs(a - np.asarray(b)).max() > 0
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(trainer.params()))
  )
  trainer.close()
