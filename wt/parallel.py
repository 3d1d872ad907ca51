"""Data parallelism: one per-device step function, wrapped by shard_map under jit or by pmap.

A per-device function `step(state, batch) -> (state, metrics)` sees its shard of the batch
and combines gradients and metrics over the mesh axis `AXIS` with explicit collectives
(`lax.pmean`, `lax.psum`). A `DataParallel` (`data_parallel(wrapper)`) decides how it is mapped
onto devices, behind one interface (wrap, init_state, abstract_state, place_state,
device_batch, unreplicate):

  "shard_map"  ShardMapParallel: jax.jit(jax.shard_map(step)); the state is replicated by its
               sharding, a batch is one global array split on its first axis over every
               device of every process (the default);
  "pmap"       PmapParallel: jax.pmap(step), the legacy wrapper of the same function; the state
               and the outputs carry a leading axis of local devices.

Multi-process runs start with wt/distributed.py's `initialize` (its settings:
`DistributedConfig`, `config.distributed`) and build global batches from each process's rows
with `jax.make_array_from_process_local_data`.

`compile_each` compiles a step for several batch shapes at once, one thread per core.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
from typing import Any, Callable, Hashable, Mapping, Optional, TypeVar

import flax.jax_utils
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from wt import config_checks as checks
from wt import distributed

AXIS = "batch"


@dataclasses.dataclass(frozen=True)
class DistributedConfig(checks.Section, section="distributed"):
  """`config.distributed`: how a multi-process run starts. The defaults are one process (or
  what the environment's WT_COORDINATOR_ADDRESS, WT_NUM_PROCESSES, WT_PROCESS_ID say)."""

  coordinator_address: str = ""  # e.g. "10.0.0.1:1234"; empty: single process
  num_processes: int = -1  # -1: from the environment
  process_id: int = -1  # -1: from the environment
  auto: bool = True  # no coordinator: join a SLURM / TPU / Kubernetes job that
  # jax.distributed.initialize() detects (wt/distributed.py)

  def __post_init__(self):
    checks.check_types(self)
    if self.num_processes == 0 or self.num_processes < -1:
      raise checks.fail(
        self, "num_processes", "must be a positive integer (or -1: from WT_NUM_PROCESSES)"
      )
    if self.process_id < -1 or 0 < self.num_processes <= self.process_id:
      raise checks.fail(
        self,
        "process_id",
        f"must be in [0, num_processes={self.num_processes}) (or -1: from WT_PROCESS_ID)",
      )


def initialize_distributed(dist=None) -> str:
  """Joins a multi-process run (explicit coordinator, or a managed cluster JAX detects):
  moved to wt/distributed.py's `initialize`, which this calls."""
  return distributed.initialize(dist)


def make_mesh(devices: Optional[list] = None) -> Mesh:
  """A one-axis mesh over the given devices (default: every device of every process)."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec(AXIS))


class DataParallel:
  """How a per-device step runs on every device; `data_parallel(wrapper)` builds one.

  The state is built once, replicated over the mesh (`init_state`, or a checkpoint restored
  onto `abstract_state`), then put in the wrapper's layout (`place_state`); a step wrapped by
  `wrap` takes that state and `device_batch(rows of this process)`, and its outputs become one
  logical copy with `unreplicate`.
  """

  def __init__(self, devices: Optional[list] = None):
    self.mesh = make_mesh(devices)

  def init_state(self, init: Callable[[], Any]):
    """`init()` computed under jit, replicated over the mesh, in the wrapper's layout."""
    return self.place_state(jax.jit(init, out_shardings=replicated(self.mesh))())

  def abstract_state(self, init: Callable[[], Any]):
    """Shapes, dtypes and the replicated sharding of `init()`: a checkpoint's restore target
    (the restored state then goes through `place_state`)."""
    sharding = replicated(self.mesh)
    return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), jax.eval_shape(init)
    )

  def wrap(self, step: Callable, *, donate: bool = True) -> Callable:
    """`step(state, batch)` mapped over the devices; `donate`: the state's buffers are reused
    for the new state."""
    raise NotImplementedError

  def place_state(self, state):
    """A state replicated over the mesh -> the layout the wrapped steps take."""
    raise NotImplementedError

  def device_batch(self, local_batch: Mapping[str, np.ndarray]) -> dict:
    """This process's rows -> the batch layout the wrapped steps take."""
    raise NotImplementedError

  def unreplicate(self, tree):
    """A placed state or a wrapped step's outputs -> one logical copy."""
    raise NotImplementedError


class ShardMapParallel(DataParallel):
  """jit(shard_map(step)): replicated state, batch sharded on axis 0 over the whole mesh."""

  def wrap(self, step: Callable, *, donate: bool = True) -> Callable:
    mapped = jax.shard_map(
      step,
      mesh=self.mesh,
      in_specs=(PartitionSpec(), PartitionSpec(AXIS)),
      out_specs=PartitionSpec(),
      check_vma=False,
    )
    return jax.jit(mapped, donate_argnums=(0,) if donate else ())

  def place_state(self, state):
    return state

  def device_batch(self, local_batch: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
    """Global arrays, sharded over the mesh's batch axis, from this process's rows."""
    sharding = batch_sharded(self.mesh)
    return {
      k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
      for k, v in local_batch.items()
    }

  def unreplicate(self, tree):
    return tree


class PmapParallel(DataParallel):
  """pmap(step) over the local devices: state and outputs carry a leading device axis."""

  def __init__(self, devices: Optional[list] = None):
    if devices is not None:
      raise ValueError(
        "the pmap wrapper maps over every local device; pass devices only to the shard_map wrapper"
      )
    super().__init__()

  def wrap(self, step: Callable, *, donate: bool = True) -> Callable:
    return jax.pmap(step, axis_name=AXIS, donate_argnums=(0,) if donate else ())

  def place_state(self, state):
    return flax.jax_utils.replicate(state)

  def device_batch(self, local_batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Rows `[n * b, ...]` -> `[n, b, ...]` for the n local devices."""
    n = jax.local_device_count()
    return {k: np.asarray(v).reshape((n, -1) + np.shape(v)[1:]) for k, v in local_batch.items()}

  def unreplicate(self, tree):
    return flax.jax_utils.unreplicate(tree)


_WRAPPERS = {"shard_map": ShardMapParallel, "pmap": PmapParallel}
WRAPPERS = tuple(_WRAPPERS)


def data_parallel(wrapper: str = "shard_map", devices: Optional[list] = None) -> DataParallel:
  """The DataParallel of a wrapper name (config.train.wrapper), over `devices` (default:
  every device of every process)."""
  if wrapper not in _WRAPPERS:
    raise ValueError(f"wrapper={wrapper!r} is not a data-parallel wrapper; use one of {WRAPPERS}")
  return _WRAPPERS[wrapper](devices)


Key = TypeVar("Key", bound=Hashable)


def compile_workers(programs: int) -> int:
  """The threads `compile_each` compiles `programs` programs on: one per CPU core, at most one
  per program."""
  return max(1, min(programs, os.cpu_count() or 1))


def compile_each(compile_one: Callable[[Key], Any], keys: list[Key]) -> dict[Key, Any]:
  """{key: compile_one(key)} for the distinct `keys`, on up to one thread per CPU core.

  XLA compiles one program on one core and releases the GIL while it does, and a run's batch
  shapes are independent programs: on a 2-core CPU two compile in the time of one, on a
  16-core GPU host eight. `compile_one` traces (JAX and flax keep their trace state per
  thread) and returns `jit(f).lower(...).compile()`.
  """
  distinct = list(dict.fromkeys(keys))
  with concurrent.futures.ThreadPoolExecutor(
    compile_workers(len(distinct)), thread_name_prefix="compile"
  ) as pool:
    return dict(zip(distinct, pool.map(compile_one, distinct)))
