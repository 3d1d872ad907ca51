"""Speed benchmarks of both models on whatever backend JAX has: `python -m experiments.bench`.

    python -m experiments.bench                                   # everything (CPU: ~30 min)
    python -m experiments.bench --sections=train --skip_base --steps=3          # quick look

Sections (--sections, comma-separated):
  peak     the machine's practical peak: jitted f32 and bf16 matmuls, in FLOP/s.
  train    training steps (`wt.train.train_step`, Adam, dropout on) of the Transformer and of
           the Weighted Transformer in every branch-FFN mode, residual placement and output
           bias, at `bench-small` and at the base
           size: compile time, median step time, target tokens/s, FLOPs per step from XLA's
           cost analysis and from `wt.flops`, MFU and peak memory, and the weighted/standard
           step-time ratio.
  profile  where the Transformer's bench-small step spends its time, by kind of operation
           (from a `jax.profiler` trace), to explain the MFU.
  kernels  attention forward and forward+backward, `jax.nn.dot_product_attention` against
           the einsum path, at lengths 32 to 512.
  decode   greedy and beam-4 decoding, sentences per second (random weights: every sentence
           runs to its length limit, the slowest case).
  peers    the bench-small training step in PyTorch (`nn.Transformer`: eager, torch.compile,
           and eager under bfloat16 autocast, the counterpart of wt's
           `model.matmul_dtype="bfloat16"`; experiments/peers/), each in a second process,
           interleaved round by round with the wt steps and a matmul probe in every process:
           same-round ratios to PyTorch eager (`x_torch_eager`) and each one's MFU against its
           own matmul. Needs the optional torch (requirements-peers.txt); skipped with a
           message without it.
  compile  compiling the main job's 8 training shapes (multi30k.py:quick, both models) one
           after another against `wt.parallel.compile_each`, which compiles them side by
           side, one thread per core, as every run does.
  checkpoint  saving a run's state (params, Adam state, step, RNG) of experiment configs
           with `wt.checkpoint.Checkpointer`: orbax's save, the sha256 seal of each step,
           and the check of it at restore, in seconds.

Timing is interleaved: every round runs each variant once (A, B, C, C, B, A, ...), and each
training round also times one 4096^2 f32 matmul, so that ratios and MFU come from the same
moments of a shared, variable-speed machine. MFU = (closed-form matmul FLOPs / step time) /
(matmul FLOP/s), taken per round; every reported figure is the median over the rounds.

This file holds the flags and `main`; the sections, the timing and the report are in
experiments/benchmarks/ (one module each).
"""

import dataclasses
import json
import sys

from absl import app, flags

from experiments.benchmarks import (
  checkpoint,
  compilation,
  decode,
  kernels,
  peers,
  profile,
  report,
  timing,
  train,
)
from experiments.benchmarks.options import Options

_SECTIONS = flags.DEFINE_list(
  "sections",
  ["peak", "train", "peers", "profile", "kernels", "decode", "compile", "checkpoint"],
  "sections to run",
)
_JSON = flags.DEFINE_string("json", "docs/benchmarks.json", "results as JSON ('' for none)")
_MARKDOWN = flags.DEFINE_string("markdown", "docs/benchmarks.md", "tables ('' for none)")
_RENDER = flags.DEFINE_string(
  "render",
  None,
  "measure nothing: write --markdown from this JSON of an earlier run (after editing the "
  "notes in experiments/benchmarks/report.py)",
)
# The sections' settings: one flag for each field of `Options`, by the same name.
flags.DEFINE_integer("steps", 5, "timed rounds per measurement")
flags.DEFINE_integer("warmup", 2, "untimed rounds first (at least 2 for training)")
flags.DEFINE_bool("skip_base", False, "train section: bench-small only")
flags.DEFINE_list("variants", None, "bench-small variants (default: all)")
flags.DEFINE_list(
  "base_variants", ["transformer", "weighted-split", "weighted-split-folded"], "base-size variants"
)
flags.DEFINE_integer(
  "base_batch",
  0,
  "base-size sentences; 0: the largest power "
  "of two up to --max_base_batch whose step fits in memory",
)
flags.DEFINE_integer(
  "max_base_batch",
  None,
  "cap of the automatic base batch (default: 32 on CPU, "
  "where time, not memory, is the limit; 1024 elsewhere)",
)
flags.DEFINE_list(
  "profile_variants",
  ["transformer", "weighted-split"],
  "profile section: bench-small variants to trace",
)
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "model compute dtype")
flags.DEFINE_list(
  "attention_lengths", ["32", "64", "128", "256", "512"], "kernels section: sequence lengths"
)
flags.DEFINE_integer("attention_tokens", 8192, "kernels section: batch * length")
flags.DEFINE_integer("decode_batch", 32, "decode section: sentences")
flags.DEFINE_integer("decode_len", 24, "decode section: source tokens")
flags.DEFINE_integer("decode_extra", 8, "decode section: max_extra_len")
flags.DEFINE_list(
  "peers",
  ["torch-eager", "torch-compile", "torch-eager-bf16"],
  "peers section: PyTorch variants (torch-eager, torch-compile, torch-eager-bf16: eager under "
  "bfloat16 autocast)",
)
flags.DEFINE_list(
  "peer_variants",
  ["transformer", "weighted-split", "transformer-bf16-matmuls"],
  "peers section: wt bench-small variants timed with them",
)
flags.DEFINE_list(
  "checkpoint_configs",
  ["multi30k.py:small", "wmt14.py:transformer_base"],
  "checkpoint section: experiment configs (FILE.py:VARIANT of experiments/configs/)",
)

flags.DEFINE_integer("compile_rounds", 2, "compile section: interleaved rounds")

SECTIONS = {
  "peak": lambda options: timing.peak_section(options.steps),
  "train": train.train_section,
  "peers": peers.peers_section,
  "profile": profile.profile_section,
  "kernels": kernels.kernels_section,
  "decode": decode.decode_section,
  "compile": compilation.compile_section,
  "checkpoint": checkpoint.checkpoint_section,
}


def _options() -> Options:
  values = {field.name: flags.FLAGS[field.name].value for field in dataclasses.fields(Options)}
  values["attention_lengths"] = [int(length) for length in values["attention_lengths"]]
  return Options(**values)


def main(argv):
  del argv
  unknown = sorted(set(_SECTIONS.value) - set(SECTIONS))
  if unknown:
    raise app.UsageError(f"unknown section(s) {unknown}; choose from {sorted(SECTIONS)}")
  options = _options()
  if _RENDER.value:
    with open(_RENDER.value, encoding="utf-8") as f:
      text = report.document(json.load(f), options)
    with open(_MARKDOWN.value, "w", encoding="utf-8") as f:
      f.write(text + "\n")
    return
  results = {
    "command": "python -m experiments.bench " + " ".join(sys.argv[1:]),
    "machine": timing.machine(),
  }
  for name in _SECTIONS.value:
    print(f"{name} ...", file=sys.stderr)
    results[name] = SECTIONS[name](options)
  text = report.document(results, options)
  print(text)
  if _MARKDOWN.value:
    with open(_MARKDOWN.value, "w", encoding="utf-8") as f:
      f.write(text + "\n")
  if _JSON.value:
    with open(_JSON.value, "w", encoding="utf-8") as f:
      json.dump(results, f, indent=1)


if __name__ == "__main__":
  app.run(main)
