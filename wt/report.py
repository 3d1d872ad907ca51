"""Reports of experiments: Markdown tables and PNG plots from the jobs' results.

  compare_report  Transformer vs Weighted Transformer over seeds: BLEU, validation loss, steps
                  and seconds to a common validation-loss target, throughput, parameters;
                  plots of validation loss against steps and against training seconds, and of
                  kappa/alpha over training.
  sweep_report    one row per point of an ablation grid (mean and spread over seeds).
"""

from __future__ import annotations

import datetime
import os
import platform
from typing import Optional, Sequence

import jax
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  pylint: disable=g-import-not-at-top

from wt import metrics  # noqa: E402

MODEL_NAMES = {"multihead": "Transformer", "weighted": "Weighted Transformer"}


def mean_spread(values: Sequence[float], digits: int = 2) -> str:
  """"m ± sd" over seeds (sample standard deviation), or just "m" for a single value."""
  values = [v for v in values if v is not None]
  if not values:
    return "–"
  if len(values) == 1:
    return f"{values[0]:.{digits}f}"
  return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def time_to_target(curve: list[dict], target: float) -> tuple[Optional[int], Optional[float]]:
  """(step, training seconds) of the first evaluation at or below `target`, or (None, None)."""
  for point in curve:
    if point["loss"] <= target:
      return point["step"], point["seconds"]
  return None, None


def machine_description() -> str:
  devices = jax.devices()
  return (f"{len(devices)} x {devices[0].device_kind} ({jax.default_backend()}), "
          f"{os.cpu_count()} CPU cores, {platform.platform()}, jax {jax.__version__}")


def _bleu(result: dict, split: str, evaluation: str = "default") -> Optional[float]:
  return result["evaluations"].get(evaluation, {}).get(split, {}).get("bleu")


def plot_validation_curves(groups: dict[str, list[dict]], path: str, title: str) -> str:
  """Validation loss against steps and against training seconds, one colour per group."""
  fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
  for colour, (label, results) in zip(plt.cm.tab10.colors, groups.items()):
    for i, result in enumerate(results):
      curve = result["eval_curve"]
      for ax, x in zip(axes, ("step", "seconds")):
        ax.plot([p[x] for p in curve], [p["loss"] for p in curve], color=colour, alpha=0.85,
                marker="o", markersize=3, label=label if i == 0 else None)
  axes[0].set_xlabel("training step")
  axes[1].set_xlabel("training seconds (compilation and evaluation excluded)")
  axes[0].set_ylabel("validation loss (label-smoothed)")
  for ax in axes:
    ax.grid(alpha=0.3)
  axes[0].legend()
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def plot_branch_weights(workdir: str, path: str, title: str) -> Optional[str]:
  """kappa and alpha of every branched sublayer over training (one panel per vector)."""
  records = [r for r in metrics.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
             if any(k.startswith("branch/") for k in r)]
  if not records:
    return None
  vectors = sorted({k.rsplit("/", 1)[0] for k in records[0] if k.startswith("branch/")})
  columns = 4 if len(vectors) >= 4 else len(vectors)
  rows = -(-len(vectors) // columns)
  fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.4 * rows), squeeze=False,
                           sharex=True, sharey=True)
  steps = [r["step"] for r in records]
  for ax, vector in zip(axes.flat, vectors):
    size = sum(1 for k in records[0] if k.rsplit("/", 1)[0] == vector)
    for i in range(size):
      ax.plot(steps, [r[f"{vector}/{i}"] for r in records], linewidth=1)
    ax.set_title(vector.removeprefix("branch/").replace("/weights", ""), fontsize=7)
    ax.axhline(1.0 / size, color="black", linewidth=0.5, linestyle=":")
    ax.grid(alpha=0.3)
  for ax in list(axes.flat)[len(vectors):]:
    ax.axis("off")
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def compare_report(results: list[dict], outdir: str, *, title: str, command: str,
                   split: str = "test", notes: str = "") -> str:
  """Writes report.md (and its PNGs) comparing the models over seeds; returns its path."""
  groups = {}
  for result in results:
    groups.setdefault(result["attention"], []).append(result)
  names = list(groups)
  # The lowest validation loss every run reaches: the time-to-quality target.
  target = max(r["best_eval_loss"] for r in results)
  rows = {
      f"{split} BLEU": lambda rs: mean_spread([_bleu(r, split) for r in rs]),
      f"{split} chrF": lambda rs: mean_spread(
          [r["evaluations"]["default"][split]["chrf"] for r in rs]),
      "best validation loss": lambda rs: mean_spread([r["best_eval_loss"] for r in rs], 3),
      f"steps to validation loss {target:.3f}": lambda rs: mean_spread(
          [time_to_target(r["eval_curve"], target)[0] for r in rs], 0),
      f"training seconds to validation loss {target:.3f}": lambda rs: mean_spread(
          [time_to_target(r["eval_curve"], target)[1] for r in rs], 0),
      "training steps": lambda rs: mean_spread([r["step"] for r in rs], 0),
      "training seconds": lambda rs: mean_spread([r["train_seconds"] for r in rs], 0),
      "seconds per step": lambda rs: mean_spread(
          [r["train_seconds"] / max(r["step"], 1) for r in rs], 3),
      "target tokens per second": lambda rs: mean_spread(
          [r["tokens_per_second"] for r in rs], 0),
      "compile seconds": lambda rs: mean_spread([r["compile_seconds"] for r in rs], 1),
      "decoding sentences per second": lambda rs: mean_spread(
          [r["evaluations"]["default"][split]["sentences_per_second"] for r in rs], 1),
      "parameters": lambda rs: f"{rs[0]['num_params']:,}",
  }
  def column(name):
    seeds = len(groups[name])
    return f"{MODEL_NAMES.get(name, name)} ({seeds} seed{'s' if seeds > 1 else ''})"
  header = "| | " + " | ".join(column(n) for n in names) + " |"
  lines = [header, "|---" * (len(names) + 1) + "|"]
  lines += [f"| {row} | " + " | ".join(fn(groups[n]) for n in names) + " |"
            for row, fn in rows.items()]
  if set(names) == {"multihead", "weighted"}:
    per_step = lambda n: np.mean([r["train_seconds"] / max(r["step"], 1) for r in groups[n]])
    lines.append(f"| weighted / standard seconds per step | "
                 f"{per_step('weighted') / per_step('multihead'):.3f} | |")
  os.makedirs(outdir, exist_ok=True)
  curves = plot_validation_curves({MODEL_NAMES.get(n, n): groups[n] for n in names},
                                  os.path.join(outdir, "validation_loss.png"), title)
  figures = [f"![validation loss]({os.path.basename(curves)})"]
  weighted = groups.get("weighted")
  if weighted:
    branch_plot = plot_branch_weights(weighted[0]["workdir"],
                                      os.path.join(outdir, "branch_weights.png"),
                                      f"kappa and alpha over training (seed "
                                      f"{weighted[0]['seed']})")
    if branch_plot:
      figures.append(f"![kappa and alpha]({os.path.basename(branch_plot)})")
  signature = results[0]["evaluations"]["default"][split]["bleu_signature"]
  text = "\n".join([
      f"# {title}", "",
      f"Command: `{command}`  ", f"Machine: {machine_description()}  ",
      f"Date: {datetime.date.today().isoformat()}  ",
      f"sacreBLEU: `{signature}`", "",
      *lines, "",
      "Mean ± sample standard deviation over seeds. Training seconds count the training steps "
      "only (compilation, evaluation and checkpoints excluded); the runs were interleaved in "
      "one process, so both saw the same machine.", "",
      *figures, "", notes, ""])
  path = os.path.join(outdir, "report.md")
  with open(path, "w", encoding="utf-8") as f:
    f.write(text)
  return path


def sweep_report(points: list[tuple[str, list[dict], str]], outdir: str, *, title: str,
                 command: str, split: str = "test") -> str:
  """Writes report.md for an ablation sweep: one row per (label, results, evaluation)."""
  lines = [f"| point | {split} BLEU | best validation loss | training seconds | parameters "
           f"| seeds |", "|---|---|---|---|---|---|"]
  for label, results, evaluation in points:
    lines.append(
        f"| {label} | {mean_spread([_bleu(r, split, evaluation) for r in results])} | "
        f"{mean_spread([r['best_eval_loss'] for r in results], 3)} | "
        f"{mean_spread([r['train_seconds'] for r in results], 0)} | "
        f"{results[0]['num_params']:,} | {len(results)} |")
  os.makedirs(outdir, exist_ok=True)
  curves = plot_validation_curves({label: results for label, results, _ in points},
                                  os.path.join(outdir, "validation_loss.png"), title)
  text = "\n".join([f"# {title}", "", f"Command: `{command}`  ",
                    f"Machine: {machine_description()}  ",
                    f"Date: {datetime.date.today().isoformat()}", "", *lines, "",
                    "Mean ± sample standard deviation over seeds.", "",
                    f"![validation loss]({os.path.basename(curves)})", ""])
  path = os.path.join(outdir, "report.md")
  with open(path, "w", encoding="utf-8") as f:
    f.write(text)
  return path
