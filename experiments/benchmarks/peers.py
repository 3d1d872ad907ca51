"""The `peers` section: wt's bench-small training steps against PyTorch's (`nn.Transformer`:
eager, torch.compile, and eager under bfloat16 autocast), each peer in a second process,
interleaved round by round with a matmul probe in every process (experiments/peers/compare.py).
Without the optional torch (requirements-peers.txt) the section is skipped with a message."""

import jax.numpy as jnp
from absl import app

from experiments.benchmarks import timing
from experiments.benchmarks.options import Options
from experiments.benchmarks.train import SIZE_FIELDS, SIZES, StepRunner, model_config
from experiments.peers import compare
from wt import flops

PEERS = tuple(compare.PEER_FLAGS)


def peers_section(options: Options) -> dict:
  """wt's bench-small steps against PyTorch's, interleaved (experiments/peers/compare.py)."""
  skipped = compare.skipped_without_torch()
  if skipped:
    return skipped
  unknown = sorted(set(options.peers) - set(PEERS))
  if unknown:
    raise app.UsageError(f"unknown peer(s) {unknown}; choose from {', '.join(PEERS)}")
  shapes = dict(zip(SIZE_FIELDS, SIZES["bench-small"]))
  batch, source_len, target_len = shapes["batch"], shapes["source_len"], shapes["target_len"]
  runners = {
    v: StepRunner(model_config("bench-small", v, options.dtype), batch, source_len, target_len)
    for v in options.peer_variants
  }
  probe, probe_flops = timing.matmul(timing.PROBE, jnp.float32)
  # The worker's flags (experiments/peers/torch_transformer.py): the same shapes, the probe.
  worker_args = [f"--{k}={v}" for k, v in {**shapes, "probe": timing.PROBE}.items()]
  rows = compare.time_against_peers(
    {
      f"wt {v}": (lambda r=r: timing.timed(r), r.closed_form_flops, r.compile_seconds)
      for v, r in runners.items()
    },
    lambda: timing.timed(probe),
    probe_flops,
    options.peers,
    worker_args,
    flops.train_step_flops(
      model_config("bench-small", "transformer", options.dtype), batch, source_len, target_len
    ),
    options.steps,
    max(options.warmup, 2),
  )
  description = (
    f"bench-small ({batch} x ({source_len} + {target_len}) tokens, f32, dropout 0.1, label "
    f"smoothing 0.1, Adam), {options.steps} rounds. Each process times its own "
    f"{timing.PROBE}^2 f32 matmul in every round; MFU: the model's matmul FLOPs (closed form, "
    f"wt/flops.py: the same count for every implementation of a model) per second against "
    f"that process's matmul; x torch eager: median over rounds of the step-time ratio to "
    f"PyTorch eager in the same round. startup: wt's compile, PyTorch's first step "
    f"(torch.compile's compilation). torch threads: 2. bf16: wt's "
    f"`model.matmul_dtype='bfloat16'` (bfloat16 operands, float32 results) and PyTorch's "
    f"bfloat16 autocast (bfloat16 operands and results); the others float32."
  )
  return {"description": description, "rows": rows}
