"""wt/distributed.py: cluster detection (against JAX's own), the start modes, the backend
defaults (faked backends), and, slow, two local processes started as SLURM tasks that train,
validate, evaluate and translate as one process does."""

import logging
import os
import pathlib
import random
import re
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax._src import clusters

from experiments.configs import multi30k, wmt14
from tests.synthetic_corpus import parallel_corpus
from wt import checkpoint, distributed, kernels, models, train

REPO = pathlib.Path(__file__).resolve().parent.parent
SLURM_TASK = {
  "SLURM_JOB_ID": "4242",
  "SLURM_STEP_NODELIST": "node[001-002]",
  "SLURM_NTASKS": "2",
  "SLURM_PROCID": "1",
  "SLURM_LOCALID": "0",
}


# ------------------------------------------------------------------------------------------
# Cluster detection.


@pytest.mark.parametrize(
  "environ, expected",
  [
    (SLURM_TASK, ("slurm", 2, 1)),
    (
      {
        "OMPI_MCA_orte_hnp_uri": "1531576320.0;tcp://10.0.0.1:34911",
        "OMPI_COMM_WORLD_SIZE": "4",
        "OMPI_COMM_WORLD_RANK": "3",
        **SLURM_TASK,
      },
      ("ompi", 4, 3),
    ),  # JAX's order: ompi first
    ({"KUBERNETES_SERVICE_HOST": "10.0.0.1", "JOB_COMPLETION_INDEX": "3"}, ("k8s", None, 3)),
    ({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, None),  # a plain pod: one process
    ({k: v for k, v in SLURM_TASK.items() if k != "SLURM_STEP_NODELIST"}, None),  # salloc
    ({}, None),
  ],
)
def test_detect_cluster_reads_the_environment_as_jax_does(environ, expected):
  cluster = distributed.detect_cluster(environ, on_cloud_tpu_vm=False)
  got = cluster and (cluster.name, cluster.num_processes, cluster.process_id)
  assert got == expected


def test_tpu_vms_are_detected_only_on_a_tpu_vm():
  gke = {
    "TPU_WORKER_HOSTNAMES": "a,b,c,d",
    "TPU_WORKER_ID": "2",
    "MEGASCALE_NUM_SLICES": "2",
    "MEGASCALE_SLICE_ID": "1",
  }
  cluster = distributed.detect_cluster(gke, on_cloud_tpu_vm=True)
  assert (cluster.name, cluster.num_processes, cluster.process_id) == ("gketpu", 8, 6)
  assert distributed.detect_cluster(gke, on_cloud_tpu_vm=False) is None
  cluster = distributed.detect_cluster({}, on_cloud_tpu_vm=True)
  assert (cluster.name, cluster.num_processes) == ("gcetpu", None)  # from the metadata server
  assert distributed.detect_cluster({"TPU_SKIP_MDS_QUERY": "1"}, on_cloud_tpu_vm=True) is None


def test_the_slurm_detection_agrees_with_jax(monkeypatch):
  for name in list(os.environ):
    if name.startswith(
      ("SLURM_", "OMPI_", "TPU_", "KUBERNETES_", "JAX_COORDINATOR", "JAX_LOCAL_DEVICE")
    ):
      monkeypatch.delenv(name)
  for name, value in SLURM_TASK.items():
    monkeypatch.setenv(name, value)
  ours = distributed.detect_cluster()
  detect = clusters.ClusterEnv.auto_detect_unset_distributed_params
  address, count, process_id, local_ids = detect(None, None, None, None, None, 300)
  assert (count, process_id) == (ours.num_processes, ours.process_id)
  assert address == f"node001:{61440 + 4242 % 4096}" and local_ids == [0]


# ------------------------------------------------------------------------------------------
# Start modes (jax.distributed.initialize recorded, not run).


@pytest.fixture
def started(monkeypatch):
  """The calls `distributed.initialize` makes to jax.distributed.initialize, in a clean
  environment."""
  for name in list(os.environ):
    if name.startswith(("SLURM_", "OMPI_", "WT_", "JOB_COMPLETION", "KUBERNETES_")):
      monkeypatch.delenv(name)
  calls = []
  monkeypatch.setattr(jax.distributed, "initialize", lambda *a, **k: calls.append((a, k)))
  monkeypatch.setattr(distributed, "_use_gloo_on_cpu", lambda: None)
  monkeypatch.setattr(distributed, "_on_cloud_tpu_vm", lambda: False)
  return calls


def _dist(**changes):
  config = multi30k.get_config("tiny").distributed
  config.update(changes)
  return config


def test_explicit_flags_and_the_wt_variables_win_over_detection(started, monkeypatch):
  for name, value in SLURM_TASK.items():
    monkeypatch.setenv(name, value)
  assert (
    distributed.initialize(
      _dist(coordinator_address="10.0.0.1:1234", num_processes=4, process_id=2)
    )
    == "explicit"
  )
  monkeypatch.setenv("WT_COORDINATOR_ADDRESS", "10.0.0.2:99")
  monkeypatch.setenv("WT_NUM_PROCESSES", "3")
  monkeypatch.setenv("WT_PROCESS_ID", "1")
  assert distributed.initialize(None) == "explicit"
  assert started == [(("10.0.0.1:1234", 4, 2), {}), (("10.0.0.2:99", 3, 1), {})]


def test_a_coordinator_without_a_process_count_names_the_fix(started):
  with pytest.raises(ValueError, match="num_processes and process_id.*WT_NUM_PROCESSES"):
    distributed.initialize(_dist(coordinator_address="10.0.0.1:1234"))
  assert not started


def test_a_detected_cluster_starts_through_jax_detection(started, monkeypatch, caplog):
  for name, value in SLURM_TASK.items():
    monkeypatch.setenv(name, value)
  with caplog.at_level(logging.INFO):
    assert distributed.initialize(_dist()) == "slurm"
  assert started == [((), {"cluster_detection_method": "slurm"})]
  assert "detected a slurm cluster (SLURM_JOB_ID=4242" in caplog.text
  assert distributed.initialize(_dist(auto=False)) == "single"  # the switch
  monkeypatch.setenv("SLURM_NTASKS", "1")
  assert distributed.initialize(_dist()) == "single"  # one task
  assert len(started) == 1


def test_idle_gpus_under_slurm_are_warned_about(started, monkeypatch, caplog):
  for name, value in {
    **SLURM_TASK,
    "SLURM_GPUS_ON_NODE": "8",
    "SLURM_TASKS_PER_NODE": "1(x2)",
  }.items():
    monkeypatch.setenv(name, value)
  distributed.initialize(_dist())
  assert "7 GPU(s) stay idle" in caplog.text and "JAX_LOCAL_DEVICE_IDS=0,1,2,3" in caplog.text


def test_a_kubernetes_job_without_its_client_package_names_the_fixes(started, monkeypatch):
  monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
  monkeypatch.setenv("JOB_COMPLETION_INDEX", "0")
  monkeypatch.setitem(sys.modules, "kubernetes", None)  # not importable
  with pytest.raises(RuntimeError, match="pip install kubernetes.*WT_COORDINATOR_ADDRESS"):
    distributed.initialize(None)
  assert distributed.initialize(_dist(auto=False)) == "single"


def test_no_cluster_is_a_single_process(started):
  assert distributed.initialize(None) == "single" and not started


# ------------------------------------------------------------------------------------------
# Backend defaults.


def test_wmt14_on_cpu_is_float32_with_xla_attention_and_bfloat16_with_cudnn_on_gpu(monkeypatch):
  assert jax.device_count() == 8 and jax.default_backend() == "cpu"
  config = wmt14.get_config("transformer_base")
  chosen = distributed.backend_defaults(config)
  assert (chosen["dtype"], chosen["attention"]) == ("float32", "xla")
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  chosen = distributed.apply_backend_defaults(config)
  assert (chosen["dtype"], chosen["attention"]) == ("bfloat16", "cudnn")
  assert config.model.dtype == "bfloat16"  # resolved into the saved config
  assert config.model.attention_implementation == "auto"  # any machine may resume it
  assert distributed.backend_defaults(wmt14.get_config("weighted_large"))["attention"] == "cudnn"
  monkeypatch.setattr(jax, "default_backend", lambda: "tpu")
  assert distributed.backend_defaults(wmt14.get_config("base"))["dtype"] == "bfloat16"
  assert models.ModelConfig(dtype="auto").compute_dtype == jnp.bfloat16


def test_tokens_per_device_sets_the_global_budget_from_the_device_count():
  config = wmt14.get_config("base")
  config.data.tokens_per_device = 4096
  distributed.apply_backend_defaults(config)
  assert config.data.tokens_per_batch == 4096 * 8
  train.validate_config(config)


@pytest.mark.parametrize(
  "changes, head_dim, call, expected",
  [
    (dict(dtype="bfloat16"), 64, {}, "cudnn"),
    (dict(dtype="float32"), 64, {}, "xla"),
    (dict(dtype="bfloat16"), 160, {}, "xla"),  # head dim > 128
    (dict(dtype="bfloat16"), 36, {}, "xla"),  # not a multiple of 8
    (dict(dtype="bfloat16"), 64, dict(decode=True), "xla"),
    (dict(dtype="bfloat16"), 64, dict(training=True, q_len=9, kv_len=16), "xla"),
    (dict(dtype="bfloat16"), 64, dict(training=True, q_len=8, kv_len=16), "cudnn"),
    (dict(dtype="bfloat16", attention_implementation="xla"), 64, {}, "xla"),
    (dict(dtype="float32", attention_implementation="cudnn"), 64, {}, "cudnn"),
  ],
)
def test_the_attention_path_follows_cudnn_constraints(changes, head_dim, call, expected):
  config = models.ModelConfig(**{"attention_implementation": "auto", **changes})
  assert distributed.attention_path(config, head_dim, backend="gpu", **call)[0] == expected


@pytest.mark.slow
def test_the_model_passes_the_chosen_path_to_the_kernel_per_call(monkeypatch):
  """A faked GPU: training calls of even lengths get cuDNN, odd lengths and incremental decoding
  get XLA (run here through XLA: this machine has no cuDNN)."""
  seen = []
  real = kernels.dot_product_attention

  def record(*args, implementation=None, **kwargs):
    seen.append(implementation)
    return real(*args, implementation="xla", **kwargs)

  monkeypatch.setattr(kernels, "dot_product_attention", record)
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  config = models.ModelConfig(
    vocab_size=40,
    num_layers=1,
    d_model=32,
    d_ff=64,
    num_heads=4,
    dtype="bfloat16",
    attention_implementation="auto",
  )
  params = models.init_params(config, jax.random.key(0))
  model = models.Transformer(config)
  inputs = jnp.ones((2, 8), jnp.int32)
  for target_len, expected in ((8, "cudnn"), (7, "xla")):
    seen.clear()
    model.apply(
      {"params": params},
      inputs,
      jnp.ones((2, target_len), jnp.int32),
      train=True,
      rngs={"dropout": jax.random.key(1)},
    )
    assert seen[0] == "cudnn" and set(seen[1:]) == {expected}  # encoder; decoder self, cross
  seen.clear()
  models.init_cache(model, params, jnp.zeros((2, 8, 32), jnp.bfloat16), inputs, 8)
  assert set(seen) == {"xla"}


@pytest.mark.skipif(
  jax.default_backend() != "gpu",
  reason="needs a CUDA GPU (the suite defaults to CPU; on a GPU machine run it with "
  "JAX_PLATFORMS=cuda pytest tests/test_distributed.py -k cudnn_attention_on_a_gpu)",
)
def test_cudnn_attention_on_a_gpu_matches_xla():
  config = models.ModelConfig(
    vocab_size=64,
    num_layers=2,
    d_model=128,
    d_ff=256,
    num_heads=2,
    dtype="auto",
    attention_implementation="auto",
    dropout_rate=0.0,
  )
  params = models.init_params(config, jax.random.key(0))
  inputs = jax.random.randint(jax.random.key(1), (4, 32), 1, 64)
  targets = jax.random.randint(jax.random.key(2), (4, 24), 1, 64)

  def loss(params, implementation):
    model = models.Transformer(config.replace(attention_implementation=implementation))
    return jnp.mean(model.apply({"params": params}, inputs, targets, train=True) ** 2)

  fused = jax.jit(jax.value_and_grad(loss), static_argnums=1)
  assert "cudnn" in fused.lower(params, "auto").compile().as_text().lower()
  (value, grads), (ref_value, ref_grads) = fused(params, "auto"), fused(params, "xla")
  np.testing.assert_allclose(value, ref_value, rtol=2e-2)
  for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
    np.testing.assert_allclose(got, want, atol=5e-2 * float(np.abs(want).max()) + 1e-6)


# ------------------------------------------------------------------------------------------
# Two local processes as SLURM tasks (slow).


def _slurm_env(process_id: int, job_id: int) -> dict:
  env = {
    k: v
    for k, v in os.environ.items()
    if not k.startswith(
      ("SLURM_", "OMPI_", "WT_COORDINATOR", "WT_NUM_", "WT_PROCESS_", "JAX_COORDINATOR")
    )
  }
  return {
    **env,
    "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
    "PYTHONPATH": str(REPO),
    "SLURM_JOB_ID": str(job_id),
    "SLURM_NTASKS": "2",
    "SLURM_PROCID": str(process_id),
    "SLURM_LOCALID": str(process_id),
    "SLURM_STEP_NODELIST": "localhost",
    "SLURM_STEP_NUM_NODES": "1",
  }


def _free_slurm_job_id() -> int:
  """A job id whose JAX coordinator port (61440 + id % 4096) is free here."""
  for _ in range(200):
    port = random.randrange(61440, 65536)
    with socket.socket() as s:
      try:
        s.bind(("", port))
      except OSError:
        continue
    return 4096 * random.randrange(1, 1000) + port - 61440
  raise RuntimeError("no free port in 61440-65535 for a SLURM-style coordinator")


def _run_as_slurm_tasks(arguments: list[str], stdin_file=None) -> list[str]:
  """`python -m <arguments>` as two SLURM tasks of one job; their stdouts, which must hold
  nothing but the command's results (gloo, the CPU collectives, prints its connections to
  file descriptor 1), and stderr must show that JAX's SLURM detection started them."""
  job_id = _free_slurm_job_id()
  processes = [
    subprocess.Popen(
      [sys.executable, "-m", *arguments, "--verbosity=0"],
      cwd=REPO,
      env=_slurm_env(i, job_id),
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for i in range(2)
  ]
  outputs = [p.communicate(timeout=420) for p in processes]
  for i, (p, (_, err)) in enumerate(zip(processes, outputs)):
    assert p.returncode == 0, err[-3000:]
    assert f"joined the slurm run: process {i} of 2" in err, err[-3000:]
  return [out for out, _ in outputs]


def _single(arguments: list[str]) -> str:
  env = {**_slurm_env(0, 0), "XLA_FLAGS": os.environ.get("XLA_FLAGS", "")}
  env = {k: v for k, v in env.items() if not k.startswith("SLURM_")}
  done = subprocess.run(
    [sys.executable, "-m", *arguments],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=420,
  )
  assert done.returncode == 0, done.stderr[-3000:]
  return done.stdout


@pytest.mark.slow
def test_slurm_tasks_train_and_validate_as_one_process(tiny_config, tmp_path):
  tiny_config.train.update(num_steps=6, eval_every=3)
  single = train.train_and_evaluate(tiny_config, str(tmp_path / "single"))
  flags = [
    f"--config.{section}.{key}={value}"
    for section in ("data", "model", "train")
    for key, value in tiny_config[section].items()
    if multi30k.get_config("tiny")[section].get(key) != value
  ]
  outputs = _run_as_slurm_tasks(
    [
      "experiments.run",
      "--config",
      "experiments/configs/multi30k.py:tiny",
      "--workdir",
      str(tmp_path / "slurm"),
      *flags,
    ]
  )
  for out in outputs:  # every process reports the validation loss summed over the mesh
    loss = float(re.search(r'"eval_loss": ([-+.\deE]+)', out).group(1))
    assert loss == pytest.approx(single["eval_loss"], rel=1e-5)
  restore = lambda d: checkpoint.Checkpointer(str(tmp_path / d / "checkpoints")).restore(None)
  for got, want in zip(
    jax.tree.leaves(restore("slurm")[0]["params"]),
    jax.tree.leaves(restore("single")[0]["params"]),
    strict=True,
  ):
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


@pytest.mark.slow
def test_slurm_tasks_evaluate_and_translate_as_one_process(tiny_config, tiny_data_dirs, tmp_path):
  tiny_config.train.update(num_steps=30, eval_every=30, checkpoint_every=30)
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(tiny_config, workdir)
  evaluate = ["experiments.evaluate", "--workdir", workdir, "--split", "test", "--beam_size", "2"]
  bleu = lambda out: re.search(r"^BLEU.*$", out, re.MULTILINE).group(0)
  expected = bleu(_single(evaluate))
  first, second = _run_as_slurm_tasks(evaluate)
  assert bleu(first) == expected and second == ""  # process 0 alone prints and writes

  lines = parallel_corpus(90, seed=7)["en"] + ["", "   "]  # two batches of 64, empty lines
  source = tmp_path / "source.txt"
  source.write_text("\n".join(lines) + "\n", encoding="utf-8")
  translate = ["experiments.translate", "--workdir", workdir, "--input", str(source)]
  expected = _single(translate)
  assert len(expected.splitlines()) == len(lines) and len(set(expected.splitlines())) > 10
  assert _run_as_slurm_tasks(translate) == [expected, ""]
