"""Timing on a shared, variable-speed machine: interleaved rounds and medians over them, the
jitted matmul that probes the machine's speed in the same rounds, the `peak` section, and the
machine's description for the report."""

import collections
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp

PROBE = 4096  # the matmul timed in every training round (as long as a small step)


def median(values) -> float:
  return float(statistics.median(values))


def timed(fn) -> float:
  """Seconds of one call of `fn`, which must block until its work is done."""
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def interleaved(fns, rounds: int, warmup: int) -> dict:
  """{name: [seconds per round]}: `rounds` timed rounds of every fn in turn, after `warmup`.

  Odd rounds run in reverse order (A B C, C B A, ...) so that a steady drift of the machine's
  speed does not favour whichever runs first.
  """
  times = collections.defaultdict(list)
  for round_index in range(warmup + rounds):
    order = list(fns.items())
    for name, fn in order[::-1] if round_index % 2 else order:
      seconds = timed(fn)
      if round_index >= warmup:
        times[name].append(seconds)
  return {name: times[name] for name in fns}


def matmul(n: int, dtype):
  """A blocking call of a jitted n x n x n matmul, and its FLOPs."""
  a = jax.random.normal(jax.random.key(0), (n, n), dtype)
  b = jax.random.normal(jax.random.key(1), (n, n), dtype)
  jitted = jax.jit(jnp.matmul)
  return (lambda: jitted(a, b).block_until_ready()), 2.0 * n**3


def peak_section(rounds: int) -> dict:
  """Practical matmul peak; bf16 too (CPUs without bf16 units emulate it, and it shows)."""
  calls, rows = {}, []
  for dtype in ("float32", "bfloat16"):
    for n in (2048, 4096):
      calls[(dtype, n)] = matmul(n, getattr(jnp, dtype))
  times = interleaved({key: fn for key, (fn, _) in calls.items()}, rounds, 1)
  for (dtype, n), seconds in times.items():
    rows.append(
      dict(
        dtype=dtype,
        n=n,
        seconds=median(seconds),
        flops_per_second=calls[(dtype, n)][1] / median(seconds),
      )
    )
  return {
    "matmuls": rows,
    "float32": max(r["flops_per_second"] for r in rows if r["dtype"] == "float32"),
    "bfloat16": max(r["flops_per_second"] for r in rows if r["dtype"] == "bfloat16"),
  }


def machine() -> dict:
  device = jax.devices()[0]
  return {
    "backend": jax.default_backend(),
    "device": device.device_kind,
    "devices": jax.device_count(),
    "cpus": os.cpu_count(),
    "processor": platform.processor() or platform.machine(),
    "jax": jax.__version__,
    "python": platform.python_version(),
  }
