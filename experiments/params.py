"""Parameter counts of the papers' configurations, both models side by side; and, with
--cost, the expected time of their WMT14 runs on 8 GPUs, a TPU slice and this CPU.

    python -m experiments.params [--vocab_size 37000] [--markdown docs/params.md]
    python -m experiments.params --cost [--mfu 0.4] [--write docs/scaling.md]

Counts come from the parameter shapes (jax.eval_shape: nothing is allocated), next to the
numbers the papers report. The Weighted Transformer is counted in split-FFN mode (M FFNs of
d_ff/M), which is how its parameter count can equal the Transformer's.

The cost model: wt/flops.py's closed-form FLOPs of a training step on the papers' batch
(25,000 token slots per side, in sentences of --length slots), times the run's steps, over
devices x peak (wt/flops.py PEAK_FLOPS, dense bf16) x an assumed MFU; the CPU column uses the
MFU and matmul peak measured by experiments.bench (docs/benchmarks.json). --write replaces
the text between `<!-- cost:begin -->` and `<!-- cost:end -->` in the given file.
"""

import json
import pathlib

import jax
from absl import app, flags

from experiments import common
from experiments.configs import wmt14
from wt import flops, models

_VOCAB = flags.DEFINE_integer("vocab_size", 37000, "shared vocabulary size (Vaswani: 37000)")
_MARKDOWN = flags.DEFINE_string("markdown", None, "also write the table to this file")
_COST = flags.DEFINE_bool("cost", False, "print the expected run times instead of the counts")
_MFU = flags.DEFINE_float("mfu", 0.4, "assumed model FLOPs utilisation of GPUs and TPUs")
_LENGTH = flags.DEFINE_integer("length", 32, "token slots per sentence (padded) of a batch")
_BENCHMARKS = flags.DEFINE_string(
  "benchmarks", "docs/benchmarks.json", "experiments.bench results: the CPU's measured MFU"
)
_WRITE = flags.DEFINE_string("write", None, "replace the cost section of this markdown file")

# (row label, layers N, size, paper's count for both models)
ROWS = [
  ("Table 2, N=2", 2, "small", "36M"),
  ("Table 2, N=4", 4, "small", "50M"),
  ("base / small (N=6)", 6, "small", "65M"),
  ("Table 2, N=8", 8, "small", "80M"),
  ("big / large (N=6)", 6, "large", "213M"),
]


def count(model_config: models.ModelConfig) -> int:
  shapes = jax.eval_shape(lambda: models.init_params(model_config, jax.random.key(0)))
  return models.count_params(shapes)


def table(vocab_size: int) -> str:
  lines = [
    "| configuration | N | d_model | d_ff | h = M | Transformer | Weighted Transformer "
    "| difference | paper (both) |",
    "|---|---|---|---|---|---|---|---|---|",
  ]
  for label, layers, size, paper in ROWS:
    sizes = dict(wmt14.SIZES[size], num_layers=layers)
    sizes.pop("dropout_rate")
    transformer = models.ModelConfig(vocab_size=vocab_size, attention="multihead", **sizes)
    standard, weighted = count(transformer), count(transformer.replace(attention="weighted"))
    lines.append(
      f"| {label} | {layers} | {sizes['d_model']} | {sizes['d_ff']} | "
      f"{sizes['num_heads']} | {standard:,} | {weighted:,} | "
      f"{weighted - standard:+,} | {paper} |"
    )
  return "\n".join(lines)


# (row label, wmt14.py variant); steps are the variant's.
COST_RUNS = [
  ("Transformer base", "transformer_base"),
  ("Transformer big", "transformer_big"),
  ("Weighted small", "weighted_small"),
  ("Weighted large", "weighted_large"),
]
# (column label, devices, PEAK_FLOPS key)
SYSTEMS = [
  ("8 x A100", 8, "A100"),
  ("8 x H100", 8, "H100"),
  ("TPU v4-16 (8 chips)", 8, "TPU v4"),
  ("TPU v5e-8 (8 chips)", 8, "TPU v5e"),
]
PAPER_TIMES = {"transformer_base": 12 * 3600, "transformer_big": 3.5 * 86400}  # 8 x P100


def _duration(seconds: float) -> str:
  hours = seconds / 3600
  if hours < 1:
    return f"{seconds / 60:.0f} min"
  if hours < 48:
    return f"{hours:.1f} h"
  return f"{hours / 24:.1f} d" if hours < 24 * 365 else f"{hours / 24 / 365:.1f} y"


def measured_cpu(path: str) -> tuple[float, float, str]:
  """(MFU, matmul peak FLOP/s, size) of experiments.bench's Transformer row (the "base" size
  if it was benchmarked, else the first)."""
  results = json.loads(pathlib.Path(path).read_text(encoding="utf-8"))
  sizes = {row["size"]: row for row in results["train"]}
  row = sizes.get("base", results["train"][0])
  transformer = next(v for v in row["variants"] if v["variant"] == "transformer")
  return transformer["mfu"], row["probe_flops_per_second"], row["size"]


def cost_table(vocab_size: int, mfu: float, length: int, benchmarks: str) -> str:
  """The markdown cost table with its assumptions (see the module docstring)."""
  cpu_mfu, cpu_peak, cpu_size = measured_cpu(benchmarks)
  rows_per_batch, _, _ = flops.batch_shape(25_000, length)
  header = [
    "run",
    "steps",
    "TFLOP / step",
    "PFLOP",
    *(label for label, _, _ in SYSTEMS),
    "this CPU (2 cores)",
  ]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  calibration, base_step = [], 0.0
  for label, variant in COST_RUNS:
    config = wmt14.get_config(variant)
    model_config = models.ModelConfig.from_mapping(
      dict(config.model.to_dict(), vocab_size=vocab_size)
    )
    step = flops.train_step_flops(
      model_config, *flops.batch_shape(config.data.tokens_per_batch, length)
    )
    steps = config.train.num_steps
    base_step = step if variant == "transformer_base" else base_step
    times = [
      _duration(flops.run_seconds(step, steps, devices, flops.PEAK_FLOPS[kind], mfu))
      for _, devices, kind in SYSTEMS
    ]
    cpu = _duration(flops.run_seconds(step, steps, 1, cpu_peak, cpu_mfu))
    lines.append(
      f"| {label} | {steps:,} | {step / 1e12:.2f} | {step * steps / 1e15:,.0f} | "
      f"{' | '.join(times)} | {cpu} |"
    )
    if variant in PAPER_TIMES:
      implied = step * steps / (8 * flops.PEAK_FLOPS["P100"] * PAPER_TIMES[variant])
      calibration.append(
        f"{label} {_duration(PAPER_TIMES[variant])} (MFU {implied:.2f} by this count)"
      )
  peaks = ", ".join(f"{kind} {flops.PEAK_FLOPS[kind] / 1e12:.0f} TFLOP/s" for _, _, kind in SYSTEMS)
  notes = [
    "",
    f"Assumptions: a step is wt/flops.py's closed-form count (matmuls, x3 for forward and "
    f"backward) of the papers' batch, 25,000 token slots per side in {rows_per_batch} "
    f"sentences of {length} slots (WMT14 averages about 27 subword tokens a sentence; the "
    f"slots include bucket padding); vocabulary {vocab_size:,}. GPUs and TPUs at an assumed "
    f"MFU of {mfu:.2f} of their dense bf16 peak ({peaks}); data parallel over 8 devices. "
    f"This CPU: the MFU measured by experiments.bench ({cpu_mfu:.2f} for the Transformer at "
    f"its `{cpu_size}` size) of its float32 matmul peak ({cpu_peak / 1e9:.0f} GFLOP/s), "
    f"from {benchmarks}. Time scales with steps (100k steps of a row take 100k / its steps "
    f"of its time) and inversely with MFU (--mfu 0.2 doubles every accelerator column). "
    f"Small models on fast chips reach less than 0.4: a base step on 8 x H100 is "
    f"{1e3 * base_step / (8 * flops.PEAK_FLOPS['H100'] * mfu):.0f} ms at this MFU, where "
    f"the Python loop and the input pipeline start to set the pace; measure with "
    f"experiments.bench on the machine.",
    "",
    f"Calibration: Vaswani et al. report, on 8 P100s in float32 "
    f"({flops.PEAK_FLOPS['P100'] / 1e12:.1f} TFLOP/s each): " + "; ".join(calibration) + ".",
  ]
  return "\n".join(lines + notes)


def main(argv):
  del argv
  if _COST.value:
    text = (
      "    python -m experiments.params --cost"
      + (f" --mfu {_MFU.value}" if _MFU.value != 0.4 else "")
      + "\n\n"
      + cost_table(_VOCAB.value, _MFU.value, _LENGTH.value, _BENCHMARKS.value)
    )
    print(text)
    if _WRITE.value:
      common.replace_section(_WRITE.value, "cost", text)
    return
  text = table(_VOCAB.value)
  print(text)
  print(
    "\nThe difference per branched sublayer is +2M (kappa, alpha) - 2 d_model (the "
    "LayerNorm of the FFN sublayer that the branched block replaces)."
  )
  if _MARKDOWN.value:
    with open(_MARKDOWN.value, "w", encoding="utf-8") as f:
      f.write(text + "\n")


if __name__ == "__main__":
  app.run(main)
