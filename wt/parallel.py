"""Data parallelism: one per-device step function, wrapped by shard_map under jit or by pmap.

A per-device function `step(state, batch) -> (state, metrics)` sees its shard of the batch
and combines gradients and metrics over the mesh axis `AXIS` with explicit collectives
(`lax.pmean`, `lax.psum`). The wrappers only decide how it is mapped onto devices:

  shard_map_step  jax.jit(jax.shard_map(step)): state replicated, batch split on its first
                  axis over every device of every process (the default);
  pmap_step       jax.pmap(step): the legacy wrapper of the same function; the state carries a
                  leading device axis (flax.jax_utils.replicate / unreplicate).

Multi-process runs start with `initialize_distributed` and build global batches from each
process's rows with `jax.make_array_from_process_local_data`.
"""

from __future__ import annotations

import os
from typing import Callable, Mapping, Optional

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS = "batch"
WRAPPERS = ("shard_map", "pmap")


def initialize_distributed(coordinator_address: Optional[str] = None,
                           num_processes: Optional[int] = None,
                           process_id: Optional[int] = None) -> None:
  """Joins a multi-process run when a coordinator is given (argument or environment).

  Environment fallbacks: WT_COORDINATOR_ADDRESS, WT_NUM_PROCESSES, WT_PROCESS_ID. Without a
  coordinator this is a single-process run (or a managed cluster that JAX detects itself).
  """
  coordinator_address = coordinator_address or os.environ.get("WT_COORDINATOR_ADDRESS")
  if not coordinator_address:
    return
  env_int = lambda name: int(os.environ[name]) if name in os.environ else None
  num_processes = num_processes if num_processes is not None else env_int("WT_NUM_PROCESSES")
  process_id = process_id if process_id is not None else env_int("WT_PROCESS_ID")
  if num_processes is None or process_id is None:
    raise ValueError(f"distributed run with coordinator {coordinator_address} needs "
                     f"num_processes and process_id (config.distributed or WT_NUM_PROCESSES / "
                     f"WT_PROCESS_ID)")
  if jax.config.jax_platforms in (None, "", "cpu") or os.environ.get("JAX_PLATFORMS") == "cpu":
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  logging.info("joining distributed run: coordinator %s, process %d of %d",
               coordinator_address, process_id, num_processes)
  jax.distributed.initialize(coordinator_address, num_processes, process_id)


def make_mesh(devices: Optional[list] = None) -> Mesh:
  """A one-axis mesh over the given devices (default: every device of every process)."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec(AXIS))


def shard_map_step(step: Callable, mesh: Mesh, *, donate: bool = True) -> Callable:
  """jit(shard_map(step)): (replicated state, batch sharded on axis 0) -> replicated outputs."""
  mapped = jax.shard_map(step, mesh=mesh, in_specs=(PartitionSpec(), PartitionSpec(AXIS)),
                         out_specs=PartitionSpec(), check_vma=False)
  return jax.jit(mapped, donate_argnums=(0,) if donate else ())


def pmap_step(step: Callable, *, donate: bool = True) -> Callable:
  """pmap(step) over the local devices; state and outputs carry a leading device axis."""
  return jax.pmap(step, axis_name=AXIS, donate_argnums=(0,) if donate else ())


def global_batch(local_batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Global arrays, sharded over the mesh's batch axis, from this process's rows."""
  sharding = batch_sharded(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local_batch.items()}


def device_split(local_batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Rows `[n * b, ...]` -> `[n, b, ...]` for the n local devices (the pmap layout)."""
  n = jax.local_device_count()
  return {k: np.asarray(v).reshape((n, -1) + np.shape(v)[1:]) for k, v in local_batch.items()}
