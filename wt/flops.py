"""Closed-form FLOPs of a training step of either model, for MFU and tokens accounting.

What is counted: every matrix multiplication of the forward pass at 2 FLOPs per multiply-add
(the convention of XLA's cost analysis and of MFU papers), times 3 for a training step: the
backward pass multiplies each forward matmul twice, once for the gradient of its input and
once for that of its other operand (every matmul here needs both, the embedding being learned).

  projections  Q, K, V and the output projection W^O (per branch W^{O_i} in a branched block)
  attention    scores Q K^T and the weighted sum of values, over the full q_len x kv_len grid
               (masked positions are computed too, as the kernels do)
  ffn          x W1 and h W2, per branch in a branched block (M times d_ff for "shared"/"full")
  logits       the pre-softmax projection onto the vocabulary

Ignored: element-wise work (softmax, LayerNorm, ReLU, dropout, residuals, the loss, Adam),
embedding look-ups and the tiny kappa/alpha scalings. XLA's cost analysis counts element-wise
operations as well, so it reads a few percent higher (tests/test_flops.py bounds the gap).

Shapes: batch sentences, source_len and target_len tokens (padding included: the step computes
padded positions too).
"""

from __future__ import annotations

import re
from typing import Any, Optional

from wt.models import ModelConfig

COMPONENTS = ("projections", "attention", "ffn", "logits")


def _attention_sublayer(
  q_tokens: int, kv_tokens: int, pairs: int, d_model: int, out_projection: bool = True
) -> dict[str, float]:
  """Multi-head attention of `q_tokens` queries over `kv_tokens` keys; `pairs` = sum over
  sentences of q_len * kv_len. Heads split d_model, so the head count does not matter."""
  projections = (
    2 * d_model * d_model * (q_tokens + 2 * kv_tokens + (q_tokens if out_projection else 0))
  )
  return {"projections": projections, "attention": 2 * 2 * pairs * d_model}


def _branched_sublayer(
  config: ModelConfig, q_tokens: int, kv_tokens: int, pairs: int
) -> dict[str, float]:
  """Branched attention: M one-head branches, each with W^{O_i} and its own FFN.

  With `config.fold_branch_output` the product kappa_i W^{O_i} W1_i `[d/M, F]` is formed once
  per step (2 d^2 F FLOPs) and each head goes straight into the FFN's hidden layer.
  """
  d, branches = config.d_model, config.num_branches
  hidden = config.d_ff // branches if config.branch_ffn == "split" else config.d_ff
  flops = _attention_sublayer(q_tokens, kv_tokens, pairs, d, out_projection=False)
  output = 2 * q_tokens * branches * hidden * d  # h_i (alpha_i W2_i), summed
  if config.fold_branch_output:
    flops["projections"] += 2 * d * d * hidden  # kappa_i W^{O_i} W1_i
    flops["ffn"] = 2 * q_tokens * d * hidden + output  # head_i [d/M] -> hidden
  else:
    flops["projections"] += 2 * q_tokens * d * d  # head_i W^{O_i}
    flops["ffn"] = 2 * q_tokens * branches * d * hidden + output
  return flops


def _add(total: dict[str, float], part: dict[str, float]) -> None:
  for key, value in part.items():
    total[key] += value


def forward_flops(
  config: ModelConfig, batch: int, source_len: int, target_len: int
) -> dict[str, float]:
  """Matmul FLOPs of one forward pass over `[batch, source_len]` -> `[batch, target_len]`,
  by component (see the module docstring)."""
  d = config.d_model
  src, tgt = batch * source_len, batch * target_len
  ffn_per_token = 2 * 2 * d * config.d_ff
  total = dict.fromkeys(COMPONENTS, 0.0)
  for _ in range(config.num_layers):
    if config.weighted:
      _add(total, _branched_sublayer(config, src, src, batch * source_len**2))
    else:
      _add(total, _attention_sublayer(src, src, batch * source_len**2, d))
      total["ffn"] += ffn_per_token * src
    branched = config.branched_sublayers()
    for name, kv_tokens, kv_len in (("self", tgt, target_len), ("cross", src, source_len)):
      pairs = batch * target_len * kv_len
      if name in branched:
        _add(total, _branched_sublayer(config, tgt, kv_tokens, pairs))
      else:
        _add(total, _attention_sublayer(tgt, kv_tokens, pairs, d))
    if not branched:
      total["ffn"] += ffn_per_token * tgt
  total["logits"] = 2.0 * tgt * d * config.vocab_size
  return total


def train_step_flops(config: ModelConfig, batch: int, source_len: int, target_len: int) -> float:
  """Matmul FLOPs of one training step: 3 x the forward pass (forward + backward)."""
  return 3.0 * sum(forward_flops(config, batch, source_len, target_len).values())


def compiled_flops(compiled: Any) -> float:
  """The "flops" of XLA's cost analysis of a compiled function (`jit(f).lower(...).compile()`);
  older JAX versions return a one-element list of dicts."""
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0]
  return float(analysis["flops"])


# ------------------------------------------------------------------------------------------
# The cost of a run, on paper: FLOPs of its steps over (devices x peak x MFU).

# Dense bfloat16 peak FLOP/s of one accelerator (vendor data sheets, no sparsity).
PEAK_FLOPS = {
  "A100": 312e12,  # A100 SXM4: 312 TFLOP/s bf16 tensor cores
  "H100": 989e12,  # H100 SXM5: 989 TFLOP/s bf16 (1979 is with 2:4 sparsity)
  "H200": 989e12,  # the H100's compute with more and faster memory
  "TPU v4": 275e12,  # one v4 chip (two TensorCores)
  "TPU v5e": 197e12,  # one v5e chip
  "P100": 9.3e12,  # P100 SXM2 float32 (Vaswani et al.'s GPUs; they trained in float32)
}


def device_peak_flops(device_kind: str) -> Optional[float]:
  """PEAK_FLOPS of the chip JAX names `device_kind` ("NVIDIA H100 80GB HBM3", "TPU v4";
  "TPU v5 lite" is the v5e), or None for a chip not listed (CPUs included). GPUs get their SXM
  figure: a PCIe card of the same name is slower, and its MFU reads low."""
  kind = device_kind.replace("TPU v5 lite", "TPU v5e")
  for name, peak in PEAK_FLOPS.items():
    if re.search(rf"(^|\W){re.escape(name)}(\W|$)", kind):
      return peak
  return None


def batch_shape(tokens_per_batch: int, length: int) -> tuple[int, int, int]:
  """(sentences, source_len, target_len) of a batch of `tokens_per_batch` token slots per
  side (padding included) in sentences of `length` slots."""
  return max(tokens_per_batch // length, 1), length, length


def run_seconds(
  step_flops: float, steps: int, devices: int, peak_flops: float, mfu: float
) -> float:
  """Seconds of `steps` training steps of `step_flops` each, on `devices` accelerators of
  `peak_flops` at model FLOPs utilisation `mfu` (data parallelism: the step's FLOPs split
  evenly, communication hidden or counted in the MFU)."""
  if not 0.0 < mfu <= 1.0:
    raise ValueError(f"mfu={mfu} must be in (0, 1]: the fraction of the peak the step reaches")
  return step_flops * steps / (devices * peak_flops * mfu)
