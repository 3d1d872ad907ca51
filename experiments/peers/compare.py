"""Interleaved rounds of wt's JAX steps and peer processes' steps, and same-round ratios.

Every timed round runs, per process (the benchmark's own, then each peer's; the order reverses
on odd rounds), that process's matmul probe and then each of its training steps. A figure is
the median over rounds of a per-round value, so a machine that speeds up or slows down between
rounds moves every implementation alike:

  x_torch_eager  step seconds / the PyTorch eager step's seconds in the same round
  mfu            step FLOPs / step seconds / (probe FLOPs / probe seconds of the same process
                 in the same round): each library against its own matmul
  x_jax_probe    a process's probe seconds / the JAX probe's (how the libraries' matmuls
                 compare: MFU divides by each one's own)

Every implementation of one model counts the same FLOPs per step: XLA's cost analysis of the
wt step of that model (wt's step and PyTorch's do the same matmuls; see
experiments/peers/torch_transformer.py for the one difference, attention biases).
"""

from __future__ import annotations

import collections
import statistics
import sys
from typing import Callable, Mapping

from experiments.peers import process

EAGER = "torch eager"
# peer name -> the worker's flags (experiments/peers/torch_transformer.py)
PEER_FLAGS = {
  "torch-eager": [],
  "torch-compile": ["--compile"],
  "torch-eager-bf16": ["--autocast_bf16"],
}

Timer = Callable[[], float]  # runs once, returns its own seconds


class Contender:
  """A process's probe and its named steps, each with the FLOPs its step counts."""

  def __init__(
    self,
    process: str,
    probe: Timer,
    steps: Mapping[str, tuple[Timer, float]],
    startup_seconds: Mapping[str, float],
  ):
    self.process, self.probe = process, probe
    self.steps, self.startup_seconds = dict(steps), dict(startup_seconds)


def _median(values) -> float:
  return float(statistics.median(values))


def run_rounds(contenders: list[Contender], rounds: int, warmup: int) -> dict:
  """{(process, "probe") or (process, step name): [seconds per timed round]}."""
  times = collections.defaultdict(list)
  for round_index in range(warmup + rounds):
    order = contenders[::-1] if round_index % 2 else contenders
    for contender in order:
      measured = [((contender.process, "probe"), contender.probe())]
      measured += [
        ((contender.process, name), timer()) for name, (timer, _) in contender.steps.items()
      ]
      if round_index >= warmup:
        for key, seconds in measured:
          times[key].append(seconds)
  return dict(times)


def summarise(
  contenders: list[Contender], times: dict, probe_flops: float, jax_process: str
) -> list[dict]:
  """One row per step: medians of the same-round ratios (module docstring)."""
  eager = next(((c.process, name) for c in contenders for name in c.steps if name == EAGER), None)
  jax_probe = times[(jax_process, "probe")]
  rows = []
  for contender in contenders:
    probe = times[(contender.process, "probe")]
    for name, (_, flops) in contender.steps.items():
      steps = times[(contender.process, name)]
      rows.append(
        dict(
          implementation=name,
          process=contender.process,
          step_seconds=_median(steps),
          x_torch_eager=(_median([s / e for s, e in zip(steps, times[eager])]) if eager else None),
          mfu=_median([flops / s / (probe_flops / p) for s, p in zip(steps, probe)]),
          flops=flops,
          probe_flops_per_second=_median([probe_flops / p for p in probe]),
          x_jax_probe=_median([p / j for p, j in zip(probe, jax_probe)]),
          startup_seconds=contender.startup_seconds.get(name),
          step_seconds_all=steps,
        )
      )
  return rows


def skipped_without_torch() -> dict | None:
  """The peers section's result when torch is missing ({"skipped": why, with the install
  command}, also printed to stderr); None when it can run."""
  message = process.missing_torch_message()
  if message is None:
    return None
  print(f"  {message}", file=sys.stderr)
  return {"skipped": message}


def time_against_peers(
  jax_steps: Mapping[str, tuple[Timer, float, float]],
  jax_probe: Timer,
  probe_flops: float,
  peers: list[str],
  worker_args: list[str],
  peer_flops: float,
  rounds: int,
  warmup: int,
) -> list[dict]:
  """Starts a worker per peer (a name of PEER_FLAGS), runs the rounds and returns
  the rows of `summarise`. `jax_steps`: {name: (timer, FLOPs, compile seconds)}; the workers
  get `worker_args` (sizes and probe) and count `peer_flops` per step."""
  contenders = [
    Contender(
      "jax",
      jax_probe,
      {name: (timer, flops) for name, (timer, flops, _) in jax_steps.items()},
      {name: seconds for name, (_, _, seconds) in jax_steps.items()},
    )
  ]
  workers = []
  try:
    for peer in peers:
      name = peer.replace("-", " ")
      print(f"  starting {name} ...", file=sys.stderr)
      worker = process.PeerProcess(name, list(worker_args) + PEER_FLAGS[peer])
      workers.append(worker)
      contenders.append(
        Contender(
          f"torch ({peer})",
          lambda w=worker: w.request("probe"),
          {name: (lambda w=worker: w.request("step"), peer_flops)},
          {name: worker.startup_seconds},
        )
      )
    times = run_rounds(contenders, rounds, warmup)
  finally:
    for worker in workers:
      worker.close()
  return summarise(contenders, times, probe_flops, "jax")


def markdown(result: dict) -> list[str]:
  """The peers section of docs/benchmarks.md."""
  out = ["## Peers: the bench-small step in PyTorch, same rounds", ""]
  if "skipped" in result:
    return out + [result["skipped"], ""]
  out += [result["description"], ""]
  header = [
    "implementation",
    "process",
    "step s",
    "x torch eager",
    "MFU",
    "probe GFLOP/s (own process)",
    "startup s",
  ]
  out += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for r in result["rows"]:
    ratio = "" if r["x_torch_eager"] is None else f"{r['x_torch_eager']:.3f}"
    startup = "" if r["startup_seconds"] is None else f"{r['startup_seconds']:.1f}"
    out.append(
      f"| {r['implementation']} | {r['process']} | {r['step_seconds']:.3f} | {ratio} "
      f"| {r['mfu']:.2f} | {r['probe_flops_per_second'] / 1e9:.1f} | {startup} |"
    )
  return out + [""]
