"""How a process starts: joining a multi-process run, and the backend's defaults.

Multi-process start, `initialize(config.distributed)` (experiments.common.start calls it before
anything touches a device):

  explicit  a coordinator address (config.distributed.coordinator_address, else
            WT_COORDINATOR_ADDRESS) with the process count and id (config.distributed, else
            WT_NUM_PROCESSES / WT_PROCESS_ID): jax.distributed.initialize(address, count, id).
  managed   no coordinator given and config.distributed.auto (the default): when the environment
            is a cluster that `jax.distributed.initialize()` recognises by itself, it is called
            with that cluster's detection method and JAX reads the coordinator, the process
            count and this process's id from the environment. `detect_cluster` mirrors JAX's
            detection (jax/_src/clusters/), in JAX's order:
              ompi    mpirun: OMPI_MCA_orte_hnp_uri, OMPI_COMM_WORLD_SIZE, OMPI_COMM_WORLD_RANK
              slurm   srun tasks: SLURM_JOB_ID, SLURM_STEP_NODELIST, SLURM_NTASKS, SLURM_PROCID,
                      SLURM_LOCALID; the coordinator is the step's first node, port 61440 +
                      SLURM_JOB_ID % 4096 (JAX_COORDINATOR_PORT overrides it); each task sees
                      the GPU of its SLURM_LOCALID (JAX_LOCAL_DEVICE_IDS overrides it)
              gketpu  TPU VMs under GKE: TPU_WORKER_HOSTNAMES (or TPU_PROCESS_ADDRESSES),
                      TPU_WORKER_ID, and MEGASCALE_NUM_SLICES / MEGASCALE_SLICE_ID for slices
              gcetpu  Cloud TPU VMs (`gcloud compute tpus tpu-vm ssh --worker=all`): the count
                      and id come from the VM's metadata server
              k8s     a Kubernetes indexed Job or JobSet pod (KUBERNETES_SERVICE_HOST and
                      JOB_COMPLETION_INDEX): the count and the coordinator come from the
                      Kubernetes API, which needs the `kubernetes` package (jax[k8s]) and a
                      service account that may read pods and jobs
            A detected job of one process runs as a single process (nothing to join).
  single    otherwise, or with --config.distributed.auto=false.

One INFO line says which of these ran and what it was recognised by.

Backend defaults, `apply_backend_defaults(config)` (after the start, when the backend is known):
  model.dtype="auto"         bfloat16 compute on GPU and TPU, float32 elsewhere (CPU); the
                             parameters and the optimizer state stay float32. Resolved into
                             the config, so a run's config.json records what it computed in.
  model.attention_implementation="auto"
                             cuDNN's fused attention on a GPU where its constraints hold, XLA
                             otherwise (`models.attention_path`); kept "auto" in the config, as
                             it does not change the function, so a run resumes on any machine.
  data.tokens_per_device>0   the global batch is tokens_per_device x the device count, resolved
                             into data.tokens_per_batch.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from typing import Any, Mapping, Optional

import jax
from absl import logging

ENV_ADDRESS, ENV_COUNT, ENV_ID = "WT_COORDINATOR_ADDRESS", "WT_NUM_PROCESSES", "WT_PROCESS_ID"
_SLURM = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")


@dataclasses.dataclass(frozen=True)
class Cluster:
  """A managed cluster as `jax.distributed.initialize()` will see it.

  name: JAX's `cluster_detection_method` for it. num_processes, process_id: as the environment
  says, or None where JAX asks the cluster (a metadata server, the Kubernetes API).
  evidence: the environment variables it was recognised by, for the log line.
  """

  name: str
  num_processes: Optional[int]
  process_id: Optional[int]
  evidence: str


def _on_cloud_tpu_vm() -> bool:
  """Whether JAX found TPU chips on this VM when it was imported (what its TPU clusters check)."""
  try:
    from jax._src import cloud_tpu_init  # Optional: a private JAX module, may move.
  except ImportError:
    return False
  return bool(getattr(cloud_tpu_init, "running_in_cloud_tpu_vm", False))


def _evidence(environ: Mapping[str, str], names) -> str:
  return ", ".join(f"{name}={environ[name]}" for name in names if name in environ)


def detect_cluster(
  environ: Optional[Mapping[str, str]] = None, *, on_cloud_tpu_vm: Optional[bool] = None
) -> Optional[Cluster]:
  """The managed cluster `environ` (default os.environ) describes, or None: see the module
  docstring. `on_cloud_tpu_vm` defaults to what JAX found when it was imported."""
  env = os.environ if environ is None else environ
  on_tpu = _on_cloud_tpu_vm() if on_cloud_tpu_vm is None else on_cloud_tpu_vm
  if "OMPI_MCA_orte_hnp_uri" in env:
    names = ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK")
    return Cluster("ompi", int(env[names[0]]), int(env[names[1]]), _evidence(env, names))
  if all(name in env for name in _SLURM):
    return Cluster(
      "slurm", int(env["SLURM_NTASKS"]), int(env["SLURM_PROCID"]), _evidence(env, _SLURM)
    )
  hosts = env.get("TPU_PROCESS_ADDRESSES", env.get("TPU_WORKER_HOSTNAMES"))
  if on_tpu and hosts is not None:
    per_slice = len(hosts.split(","))
    slices, slice_id = (
      int(env.get("MEGASCALE_NUM_SLICES") or 1),
      int(env.get("MEGASCALE_SLICE_ID") or 0),
    )
    return Cluster(
      "gketpu",
      per_slice * slices,
      int(env.get("TPU_WORKER_ID", 0)) + slice_id * per_slice,
      _evidence(
        env,
        ("TPU_WORKER_HOSTNAMES", "TPU_PROCESS_ADDRESSES", "TPU_WORKER_ID", "MEGASCALE_NUM_SLICES"),
      ),
    )
  if on_tpu and "TPU_SKIP_MDS_QUERY" not in env:
    return Cluster("gcetpu", None, None, "a Cloud TPU VM (count and id from its metadata)")
  if "KUBERNETES_SERVICE_HOST" in env and "JOB_COMPLETION_INDEX" in env:
    return Cluster(
      "k8s",
      None,
      int(env["JOB_COMPLETION_INDEX"]),
      _evidence(env, ("JOB_COMPLETION_INDEX", "HOSTNAME"))
      + " (count and coordinator from the Kubernetes API)",
    )
  return None


def _use_gloo_on_cpu() -> None:
  """CPU collectives across processes need gloo (set before the backend starts; harmless on
  accelerators, where it only concerns CPU arrays)."""
  platforms = jax.config.jax_platforms  # type: ignore[attr-defined]
  if platforms in (None, "", "cpu") or os.environ.get("JAX_PLATFORMS") == "cpu":
    jax.config.update("jax_cpu_collectives_implementation", "gloo")


def _warn_idle_gpus(environ: Mapping[str, str]) -> None:
  """Under SLURM, JAX gives each task the one GPU of its SLURM_LOCALID: with fewer tasks than
  GPUs on a node the others stay idle."""
  gpus = environ.get("SLURM_GPUS_ON_NODE", "")
  tasks = re.match(
    r"\d+", environ.get("SLURM_STEP_TASKS_PER_NODE", environ.get("SLURM_TASKS_PER_NODE", ""))
  )
  if (
    "JAX_LOCAL_DEVICE_IDS" not in environ
    and gpus.isdigit()
    and tasks
    and int(tasks.group()) < int(gpus)
  ):
    logging.warning(
      "SLURM gives this node %s GPUs and %s task(s); JAX gives each task only the GPU of its "
      "SLURM_LOCALID, so %d GPU(s) stay idle. Start one task per GPU (srun "
      "--ntasks-per-node=%s), or set JAX_LOCAL_DEVICE_IDS=%s for one task per node",
      gpus,
      tasks.group(),
      int(gpus) - int(tasks.group()),
      gpus,
      ",".join(map(str, range(int(gpus)))),
    )


def _setting(value, unset, env_name: str, cast=str):
  """A config value, else the environment's `env_name`, else None."""
  if value is not None and value != unset:
    return value
  return cast(os.environ[env_name]) if env_name in os.environ else None


def initialize(dist: Optional[Mapping[str, Any]] = None) -> str:
  """Joins a multi-process run as the module docstring says; returns the mode that ran:
  "explicit", a cluster name ("slurm", "gcetpu", ...), or "single".

  `dist` is config.distributed (coordinator_address, num_processes, process_id, auto); None
  (the evaluation commands, which have no config of their own) is its defaults, so the
  WT_* variables and a managed cluster still count.
  """
  dist = dict(dist or {})
  address = _setting(dist.get("coordinator_address"), "", ENV_ADDRESS)
  if address:
    count = _setting(dist.get("num_processes"), -1, ENV_COUNT, int)
    process_id = _setting(dist.get("process_id"), -1, ENV_ID, int)
    if count is None or process_id is None:
      raise ValueError(
        f"a distributed run with coordinator {address} needs the process count "
        f"and this process's id: set config.distributed.num_processes and "
        f"process_id (or {ENV_COUNT} and {ENV_ID}), or leave the coordinator "
        f"out on a cluster that JAX detects (SLURM, Cloud TPU, Kubernetes)"
      )
    _use_gloo_on_cpu()
    logging.info(
      "joining distributed run: coordinator %s, process %d of %d (explicit)",
      address,
      process_id,
      count,
    )
    jax.distributed.initialize(address, count, process_id)
    return "explicit"
  cluster = detect_cluster() if dist.get("auto", True) else None
  if cluster is None:
    logging.info(
      "single process (no coordinator given%s)",
      "" if dist.get("auto", True) else ", distributed.auto=False",
    )
    return "single"
  if cluster.num_processes == 1:
    logging.info(
      "detected a %s job of one process (%s): single process", cluster.name, cluster.evidence
    )
    return "single"
  if cluster.name == "k8s":
    _require_kubernetes_client(cluster)
  if cluster.name == "slurm":
    _warn_idle_gpus(os.environ)
  _use_gloo_on_cpu()
  logging.info(
    "detected a %s cluster (%s): jax.distributed.initialize() takes the "
    "coordinator, process count and id from it",
    cluster.name,
    cluster.evidence,
  )
  jax.distributed.initialize(cluster_detection_method=cluster.name)
  logging.info(
    "joined the %s run: process %d of %d, %d local devices of %d",
    cluster.name,
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
  )
  return cluster.name


def _require_kubernetes_client(cluster: Cluster) -> None:
  try:
    import kubernetes  # noqa: F401  (optional: only a check that it is installed)
  except ImportError:
    raise RuntimeError(
      f"a Kubernetes indexed Job was detected ({cluster.evidence}) but the `kubernetes` "
      f"package, which JAX needs to find the other pods, is not installed: pip install "
      f"kubernetes (or jax[k8s]); or give the coordinator explicitly ({ENV_ADDRESS}="
      f"<job>-0.<service>:1234, {ENV_COUNT}, {ENV_ID}=$JOB_COMPLETION_INDEX); or "
      f"--config.distributed.auto=false for a single process"
    ) from None


# ------------------------------------------------------------------------------------------
# Backend defaults.

ACCELERATORS = ("gpu", "tpu")


def resolve_dtype(dtype: str, backend: Optional[str] = None) -> str:
  """model.dtype "auto": bfloat16 on GPU/TPU, float32 elsewhere (default: JAX's backend)."""
  if dtype != "auto":
    return dtype
  return "bfloat16" if (backend or jax.default_backend()) in ACCELERATORS else "float32"


def head_dims(config) -> tuple[int, ...]:
  """The per-head sizes of the model's attention sublayers (a branch has one head of d/M)."""
  dims = {config.d_model // config.num_branches} if config.weighted else set()
  if not config.weighted or config.branched_decoder != "both":
    dims.add(config.d_model // config.num_heads)
  return tuple(sorted(dims))


def _is_rocm() -> bool:
  try:
    return "rocm" in jax.devices()[0].client.platform_version.lower()
  except (AttributeError, RuntimeError):
    return False


def attention_path(
  config,
  head_dim: int,
  *,
  backend: Optional[str] = None,
  q_len: int = 0,
  kv_len: int = 0,
  training: bool = False,
  decode: bool = False,
) -> tuple[Optional[str], str]:
  """(the implementation a sublayer passes to kernels.dot_product_attention, why).

  An explicit model.attention_implementation is kept. "auto" takes cuDNN's fused attention on
  a CUDA GPU where jax.nn.dot_product_attention's cuDNN constraints hold: a bfloat16/float16
  compute dtype, a head dim that is a multiple of 8 and at most 128, a GPU of compute
  capability 8.0 or more, and (its masks become a bias) even query and key lengths in training;
  incremental decoding (one query over a cache) takes XLA. Anything else takes XLA.
  """
  if config.attention_implementation != "auto":
    return config.attention_implementation, "model.attention_implementation"
  backend = backend or jax.default_backend()
  dtype = resolve_dtype(config.dtype, backend)
  if backend != "gpu":
    return "xla", f"{backend} backend"
  if dtype not in ("bfloat16", "float16"):
    return "xla", f"cuDNN fused attention needs bfloat16/float16, compute is {dtype}"
  if head_dim % 8 or head_dim > 128:
    return "xla", (
      f"cuDNN fused attention needs a head dim <= 128 and a multiple of 8, not {head_dim}"
    )
  if _is_rocm():
    return "xla", "a ROCm GPU (no cuDNN)"
  capability = getattr(jax.devices()[0], "compute_capability", None)
  if capability and float(capability) < 8.0:
    return "xla", f"cuDNN fused attention needs compute capability >= 8.0, not {capability}"
  if decode:
    return "xla", "incremental decoding"
  if training and (q_len % 2 or kv_len % 2):
    return "xla", f"odd lengths {q_len} x {kv_len} in training (set data.length_quantum=8)"
  return "cudnn", f"gpu, {dtype}, head dim {head_dim}"


@functools.lru_cache(maxsize=None)
def _log_fallback(reason: str) -> None:
  logging.info("model.attention_implementation='auto' takes XLA attention here: %s", reason)


def sublayer_implementation(
  config, head_dim: int, *, q_len: int, kv_len: int, training: bool, decode: bool
) -> Optional[str]:
  """`attention_path`'s implementation for one attention call of the model (traced once per
  shape); where "auto" falls back from cuDNN on a GPU, one log line per reason says why."""
  implementation, reason = attention_path(
    config, head_dim, q_len=q_len, kv_len=kv_len, training=training, decode=decode
  )
  if (
    config.attention_implementation == "auto"
    and implementation == "xla"
    and ("backend" not in reason)
  ):
    _log_fallback(reason)
  return implementation


def backend_defaults(config, backend: Optional[str] = None) -> dict[str, Any]:
  """What `apply_backend_defaults` settles for `config` on `backend` (default: JAX's):
  {"backend", "dtype", "attention", "attention_reason", "tokens_per_batch"}. The attention
  entry is the path of training and full-sequence evaluation (incremental decoding always
  takes XLA)."""
  from wt import models  # Cycle: wt.models imports this module.

  backend = backend or jax.default_backend()
  model = config.model
  dtype = resolve_dtype(model.dtype, backend)
  model_config = models.ModelConfig.from_mapping(dict(model.to_dict(), dtype=dtype))
  paths = {
    head_dim: attention_path(model_config, head_dim, backend=backend)
    for head_dim in head_dims(model_config)
  }
  if len({path for path, _ in paths.values()}) == 1:
    attention, reason = next(iter(paths.values()))
  else:  # a weighted model whose branches and heads differ in size
    attention = "mixed"
    reason = "; ".join(f"head dim {d}: {path} ({why})" for d, (path, why) in paths.items())
  tokens = config.data.tokens_per_batch
  per_device = config.data.get("tokens_per_device", 0)
  if per_device:
    tokens = per_device * jax.device_count()
  return {
    "backend": backend,
    "dtype": dtype,
    "attention": attention,
    "attention_reason": reason,
    "tokens_per_batch": tokens,
  }


def apply_backend_defaults(config) -> dict[str, Any]:
  """Resolves model.dtype="auto" and data.tokens_per_device into `config` (see the module
  docstring) and logs the choices in one line; returns `backend_defaults(config)`."""
  chosen = backend_defaults(config)
  config.model.dtype = chosen["dtype"]
  config.data.tokens_per_batch = chosen["tokens_per_batch"]
  logging.info(
    "backend %s, %d device(s): compute %s (parameters and optimizer state "
    "float32); attention %s (%s); %d token slots per side in a global batch",
    chosen["backend"],
    jax.device_count(),
    chosen["dtype"],
    chosen["attention"] or "xla",
    chosen["attention_reason"],
    chosen["tokens_per_batch"],
  )
  return chosen
