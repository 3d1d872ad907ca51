"""The `train` section: training steps (`wt.train.train_step`, Adam, dropout on) of the
Transformer and the Weighted Transformer's variants, timed interleaved with the matmul probe.

Also the pieces the other step-timing sections share: the model sizes and variants, random
full-length batches, and `StepRunner` (one compiled step with its state and batch).
"""

import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments.benchmarks import timing
from experiments.benchmarks.options import Options
from experiments.configs.base import get_base_config
from wt import flops, models, optim, parallel
from wt import train as wt_train

# name -> (vocab, d_model, d_ff, heads = branches, layers, sentences, source_len, target_len)
SIZE_FIELDS = ("vocab", "d_model", "d_ff", "heads", "layers", "batch", "source_len", "target_len")
SIZES = {
  "bench-small": (8192, 256, 1024, 8, 3, 32, 64, 64),
  "base": (32768, 512, 2048, 8, 6, 0, 64, 64),
}
# name -> ModelConfig changes from the Transformer
VARIANTS = {
  "transformer": {},
  "weighted-split": dict(attention="weighted", branch_ffn="split"),
  "weighted-split-folded": dict(attention="weighted", branch_ffn="split", fold_branch_output=True),
  "weighted-shared": dict(attention="weighted", branch_ffn="shared"),
  "weighted-full": dict(attention="weighted", branch_ffn="full"),
  "weighted-ffn-residual": dict(attention="weighted", branch_residual="ffn"),
  "weighted-sublayers-residual": dict(attention="weighted", branch_residual="sublayers"),
  "weighted-branched-self": dict(attention="weighted", branched_decoder="self"),
  "weighted-branched-both": dict(attention="weighted", branched_decoder="both"),
  # Half the branches at the same width (docs/results/ablate-scale-multi30k-small256-4branches).
  "weighted-4-branches": dict(attention="weighted", num_branches=4),
  "weighted-sublayers-residual-4-branches": dict(
    attention="weighted", branch_residual="sublayers", num_branches=4
  ),
  "weighted-per-branch-bias": dict(attention="weighted", branch_output_bias="per_branch"),
  "transformer-bf16-matmuls": dict(matmul_dtype="bfloat16"),
  "weighted-split-bf16-matmuls": dict(attention="weighted", matmul_dtype="bfloat16"),
}


def model_config(size: str, variant: str, dtype: str) -> models.ModelConfig:
  vocab, d_model, d_ff, heads, layers = SIZES[size][:5]
  fields = dict(
    vocab_size=vocab,
    d_model=d_model,
    d_ff=d_ff,
    num_heads=heads,
    num_branches=heads,
    num_layers=layers,
    dtype=dtype,
  )
  return models.ModelConfig(**{**fields, **VARIANTS[variant]})


def random_batch(vocab: int, batch: int, source_len: int, target_len: int, seed: int = 0):
  """Random full-length sentences (no padding): every position is a real token."""
  rng = np.random.default_rng(seed)
  return {
    "inputs": rng.integers(2, vocab, (batch, source_len)).astype(np.int32),
    "targets": rng.integers(2, vocab, (batch, target_len)).astype(np.int32),
  }


class StepRunner:
  """One model's compiled training step on one device, with its state and a fixed batch."""

  def __init__(self, config: models.ModelConfig, batch: int, source_len: int, target_len: int):
    optimizer, _ = optim.make_optimizer(get_base_config().train, config)
    one_device = parallel.data_parallel("shard_map", jax.devices()[:1])
    self.state = wt_train.create_train_state(config, optimizer, 0, one_device)
    self.batch = one_device.device_batch(
      random_batch(config.vocab_size, batch, source_len, target_len)
    )
    start = time.perf_counter()
    self.compiled = wt_train.compile_train_step(
      models.Transformer(config), optimizer, 0.1, one_device, self.state, self.batch
    )
    self.compile_seconds = time.perf_counter() - start
    self.xla_flops = flops.compiled_flops(self.compiled)
    self.closed_form_flops = flops.train_step_flops(config, batch, source_len, target_len)
    memory = self.compiled.memory_analysis()
    self.peak_bytes = (
      memory.argument_size_in_bytes
      + memory.output_size_in_bytes
      - memory.alias_size_in_bytes
      + memory.temp_size_in_bytes
    )
    self.tokens = batch * target_len

  def __call__(self):
    self.state, metrics = self.compiled(self.state, self.batch)
    jax.block_until_ready((self.state, metrics))


def largest_batch(source_len: int, target_len: int, options: Options):
  """(batch, runner): --base_batch, or the largest power of two up to the cap whose
  Transformer step fits in 80% of the device's (or host's) memory, with its compiled runner."""
  config = model_config("base", "transformer", options.dtype)
  if options.base_batch:
    return options.base_batch, None
  stats = jax.devices()[0].memory_stats() or {}
  limit = stats.get("bytes_limit") or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  batch = options.max_base_batch or (32 if jax.default_backend() == "cpu" else 1024)
  while batch > 1:
    try:
      runner = StepRunner(config, batch, source_len, target_len)
      if runner.peak_bytes < 0.8 * limit:
        return batch, runner
    except Exception as error:  # pylint: disable=broad-except  (XLA: resource exhausted)
      print(f"  batch {batch} does not compile: {str(error)[:200]}", file=sys.stderr)
    batch //= 2
  return 1, None


def train_size(size: str, variants, options: Options) -> dict:
  """Compiles every variant at `size`, then times their steps interleaved with the probe.
  The base size's batch is found first (see `largest_batch`)."""
  batch, source_len, target_len = SIZES[size][5:]
  runners = {}
  if not batch:
    batch, runners["transformer"] = largest_batch(source_len, target_len, options)
  for variant in variants:
    if runners.get(variant) is None:
      config = model_config(size, variant, options.dtype)
      runners[variant] = StepRunner(config, batch, source_len, target_len)
    print(
      f"  {size} {variant}: compiled in {runners[variant].compile_seconds:.1f} s", file=sys.stderr
    )
  probe, probe_flops = timing.matmul(timing.PROBE, jnp.float32)
  times = timing.interleaved({"probe": probe, **runners}, options.steps, max(options.warmup, 2))
  peaks = [probe_flops / s for s in times["probe"]]
  # On an accelerator the probe is too small to reach the chip's peak: MFU is also given
  # against the data sheet's dense bf16 peak, where the chip is listed.
  nominal_peak = flops.device_peak_flops(jax.devices()[0].device_kind)
  median = timing.median
  rows = []
  for variant, runner in runners.items():
    steps = times[variant]
    rows.append(
      dict(
        variant=variant,
        batch=batch,
        source_len=source_len,
        target_len=target_len,
        compile_seconds=runner.compile_seconds,
        step_seconds=median(steps),
        tokens_per_second=runner.tokens / median(steps),
        xla_flops=runner.xla_flops,
        closed_form_flops=runner.closed_form_flops,
        peak_bytes=runner.peak_bytes,
        mfu=median([runner.closed_form_flops / s / p for s, p in zip(steps, peaks)]),
        mfu_xla=median([runner.xla_flops / s / p for s, p in zip(steps, peaks)]),
        best_mfu=runner.closed_form_flops / min(steps) / max(peaks),
        mfu_of_nominal_peak=(
          runner.closed_form_flops / median(steps) / nominal_peak if nominal_peak else None
        ),
        ratio_to_transformer=(
          median([s / t for s, t in zip(steps, times["transformer"])])
          if "transformer" in times
          else None
        ),
        step_seconds_all=steps,
      )
    )
  return {"size": size, "probe_flops_per_second": median(peaks), "variants": rows}


def train_section(options: Options) -> list:
  sizes = [("bench-small", options.variants or list(VARIANTS))]
  if not options.skip_base:
    sizes.append(("base", options.base_variants))
  return [train_size(size, variants, options) for size, variants in sizes]
