"""Reports of experiments: Markdown tables and PNG figures from the jobs' results.

  compare_report  Transformer vs Weighted Transformer over seeds: validation loss, steps and
                  seconds to a common validation-loss target, throughput, parameters; BLEU,
                  chrF and length ratio on every test set; paired significance tests; plots of
                  validation loss, of kappa/alpha over training and at the end (heatmaps), and
                  the attention maps of one test sentence for each model.
  sweep_report    one row per point of an ablation grid (mean and spread over seeds), the same
                  test-set tables, every point tested against the sweep's baselines (the
                  Transformer and the weighted reference), the same figures.

A system is `(label, results over seeds, evaluation name)`; `test_sets` maps each reported
split to its (sources, references). Figures are in experiments/figures.py, tests in
experiments/significance.py.
"""

from __future__ import annotations

import datetime
import json
import os
import re
from typing import Optional, Sequence

import numpy as np

from experiments import common, figures, significance, summary

MODEL_NAMES = {"multihead": "Transformer", "weighted": "Weighted Transformer"}
SIGNIFICANCE_CACHE = "significance_cache.json"

System = tuple[str, list[dict], str]  # label, results over seeds, evaluation name
TestSets = dict[str, tuple[list[str], list[str]]]  # split: (sources, references)


def mean_spread(values: Sequence[Optional[float]], digits: int = 2) -> str:
  """ "m ± sd" over seeds (sample standard deviation), or just "m" for a single value."""
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


def _scores(result: dict, split: str, evaluation: str = "default") -> dict:
  return result["evaluations"].get(evaluation, {}).get(split, {})


def _slug(label: str) -> str:
  return re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_") or "run"


# -- tables -----------------------------------------------------------------------------------


def test_set_tables(systems: Sequence[System], test_sets: TestSets) -> list[str]:
  """BLEU, chrF and length-ratio tables: one row per system, one column per test set."""
  splits = list(test_sets)
  header = "| | " + " | ".join(significance.split_name(s) for s in splits) + " |"
  rule = "|---" * (len(splits) + 1) + "|"

  def ratio(result, split, evaluation):
    if not _scores(result, split, evaluation):
      return None
    hypotheses = significance.read_translations(result, split, evaluation)
    return significance.length_ratio(hypotheses, test_sets[split][1])

  metrics = [
    ("BLEU (sacreBLEU 13a)", lambda r, s, e: _scores(r, s, e).get("bleu"), 2),
    ("chrF", lambda r, s, e: _scores(r, s, e).get("chrf"), 2),
    (
      "length ratio (hypothesis / reference tokens; below 1 BLEU's brevity penalty applies)",
      ratio,
      3,
    ),
  ]
  lines = []
  for title, value, digits in metrics:
    lines += [f"{title}:", "", header, rule]
    for label, results, evaluation in systems:
      cells = [
        mean_spread([value(r, split, evaluation) for r in results], digits) for split in splits
      ]
      lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
  note = significance.untuned_note(splits)
  return lines + ([note, ""] if note else [])


def paired_comparisons(
  pairs: Sequence[tuple[System, System]], test_sets: TestSets, outdir: str
) -> list[significance.Comparison]:
  """The paired tests of every (baseline, system) on every test set. Tests already made on the
  same translations are read from `outdir`'s cache file."""
  cache_path = os.path.join(outdir, SIGNIFICANCE_CACHE)
  cache = {}
  if os.path.exists(cache_path):
    with open(cache_path, encoding="utf-8") as f:
      cache = json.load(f)
  comparisons = [
    significance.compare_runs(baseline, system, split, references, cache=cache)
    for baseline, system in pairs
    for split, (_, references) in test_sets.items()
  ]
  with open(cache_path, "w", encoding="utf-8") as f:
    json.dump(cache, f)
  return comparisons


def significance_section(comparisons: Sequence[significance.Comparison]) -> list[str]:
  """The paired tests: method, table, words."""
  if not comparisons:
    return []
  signature = next((p.signature for c in comparisons for p in c.per_seed), "")
  return [
    "## Significance",
    "",
    significance.method_text(),
    "",
    *([f"Signature: `{signature}`", ""] if signature else []),
    *significance.table(comparisons),
    "",
    "In words:",
    "",
    *_grouped_words(comparisons),
    "",
  ]


def _grouped_words(comparisons) -> list[str]:
  """One bullet per (system, baseline), one sentence per test set."""
  lines, current = [], None
  for c in comparisons:
    if (c.system, c.baseline) != current:
      current = (c.system, c.baseline)
      lines.append(f"- **{c.system} against {c.baseline}**")
    lines.append(f"  - {significance.describe(c)}")
  return lines


# -- figures ----------------------------------------------------------------------------------


def figure_section(
  systems: Sequence[System], outdir: str, title: str, test_sets: Optional[TestSets], attention: bool
) -> list[str]:
  """Validation curves, kappa/alpha over training (first weighted run) and at the end
  (heatmaps), and one test sentence's attention maps for each system's first seed."""
  lines = []
  curves = figures.plot_validation_curves(
    {label: results for label, results, _ in systems},
    os.path.join(outdir, "validation_loss.png"),
    title,
  )
  lines += [f"![validation loss]({os.path.basename(curves)})", ""]
  weighted = [
    (label, results)
    for label, results, _ in systems
    if results and results[0]["attention"] == "weighted"
  ]
  if weighted:
    label, results = weighted[0]
    path = figures.plot_branch_weights(
      results[0]["workdir"],
      os.path.join(outdir, "branch_weights.png"),
      f"{label}: kappa and alpha over training (seed {results[0]['seed']})",
    )
    if path:
      lines += [f"![kappa and alpha over training]({os.path.basename(path)})", ""]
    runs = (
      [(f"seed {r['seed']}", r["workdir"]) for r in results]
      if len(weighted) == 1
      else [(f"{label} (seed {rs[0]['seed']})", rs[0]["workdir"]) for label, rs in weighted]
    )
    path = figures.plot_final_branch_weights(
      _distinct(runs),
      os.path.join(outdir, "final_branch_weights.png"),
      "final kappa and alpha (branch x branched sublayer)",
    )
    if path:
      lines += [f"![final kappa and alpha]({os.path.basename(path)})", ""]
  if attention and test_sets:
    lines += _attention_figures(systems, outdir, test_sets)
  return lines


def _distinct(runs: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
  """Runs with distinct workdirs (points that share a trained model appear once)."""
  seen, distinct = set(), []
  for label, workdir in runs:
    if workdir not in seen:
      seen.add(workdir)
      distinct.append((label, workdir))
  return distinct


def _attention_figures(systems: Sequence[System], outdir: str, test_sets: TestSets):
  split = next(iter(test_sets))
  sources = test_sets[split][0]
  index = figures.choose_sentence(sources)
  lines = [
    "",
    f"Attention maps of {significance.split_name(split)} sentence {index} "
    f'("{sources[index]}"), each model reading its own translation (teacher-forced); '
    f"rows are queries, columns keys, one panel per head or branch:",
    "",
  ]
  runs = _distinct([(label, results[0]["workdir"]) for label, results, _ in systems if results])
  by_workdir = {}
  for _, results, evaluation in systems:
    if results:
      by_workdir.setdefault(results[0]["workdir"], (results[0], evaluation))
  for label, workdir in runs:
    result, evaluation = by_workdir[workdir]
    translation = significance.read_translations(result, split, evaluation)[index]
    path = figures.attention_figure(
      workdir,
      sources[index],
      translation,
      os.path.join(outdir, f"attention_{_slug(label)}.png"),
      f"{label} (seed {result['seed']}): {significance.split_name(split)} sentence {index}\n"
      f"{sources[index]}\n→ {translation}",
    )
    lines += [f"![attention maps, {label}]({os.path.basename(path)})", ""]
  return lines


# -- the reports ------------------------------------------------------------------------------


def _header(
  title: str, command: str, signature: Optional[str], results: Sequence[dict]
) -> list[str]:
  """Title, command, machine, date, sacreBLEU signature. Runs trained on another machine (a
  lent GPU, brought back) are named, as the step times are theirs."""
  machine = common.machine_description()
  elsewhere = sorted({r["machine"] for r in results if r.get("machine", machine) != machine})
  return [
    f"# {title}",
    "",
    f"Command: `{command}`  ",
    f"Machine: {machine}  ",
    *([f"Trained on: {'; '.join(elsewhere)} (the step times are its)  "] if elsewhere else []),
    f"Date: {datetime.date.today().isoformat()}  "
    if signature
    else f"Date: {datetime.date.today().isoformat()}",
    *([f"sacreBLEU: `{signature}`"] if signature else []),
    "",
  ]


def _write(outdir: str, lines: list[str]) -> str:
  path = os.path.join(outdir, "report.md")
  with open(path, "w", encoding="utf-8") as f:
    f.write("\n".join(lines))
  return path


def compare_report(
  results: list[dict],
  outdir: str,
  *,
  title: str,
  command: str,
  test_sets: TestSets,
  notes: str = "",
  attention_maps: bool = True,
) -> str:
  """Writes report.md (and its PNGs) comparing the models over seeds; returns its path.
  `test_sets` maps each evaluated split, the first being the headline, to (sources,
  references); every pair of models is tested (the first model is the baseline)."""
  os.makedirs(outdir, exist_ok=True)
  groups = {}
  for result in results:
    groups.setdefault(result["attention"], []).append(result)
  names = list(groups)
  split = next(iter(test_sets))
  shown = significance.split_name(split)
  # The lowest validation loss every run reaches: the time-to-quality target.
  target = max(r["best_eval_loss"] for r in results)
  rows = {
    f"{shown} BLEU": lambda rs: mean_spread([_scores(r, split).get("bleu") for r in rs]),
    f"{shown} chrF": lambda rs: mean_spread([_scores(r, split).get("chrf") for r in rs]),
    "best validation loss": lambda rs: mean_spread([r["best_eval_loss"] for r in rs], 3),
    f"steps to validation loss {target:.3f}": lambda rs: mean_spread(
      [time_to_target(r["eval_curve"], target)[0] for r in rs], 0
    ),
    f"training seconds to validation loss {target:.3f}": lambda rs: mean_spread(
      [time_to_target(r["eval_curve"], target)[1] for r in rs], 0
    ),
    "training steps": lambda rs: mean_spread([r["step"] for r in rs], 0),
    "training seconds": lambda rs: mean_spread([r["train_seconds"] for r in rs], 0),
    "seconds per step": lambda rs: mean_spread(
      [r["train_seconds"] / max(r["step"], 1) for r in rs], 3
    ),
    "target tokens per second": lambda rs: mean_spread([r["tokens_per_second"] for r in rs], 0),
    "compile seconds": lambda rs: mean_spread([r["compile_seconds"] for r in rs], 1),
    "decoding sentences per second": lambda rs: mean_spread(
      [_scores(r, split).get("sentences_per_second") for r in rs], 1
    ),
    "parameters": lambda rs: f"{rs[0]['num_params']:,}",
  }

  def column(name):
    seeds = len(groups[name])
    return f"{MODEL_NAMES.get(name, name)} ({seeds} seed{'s' if seeds > 1 else ''})"

  table = ["| | " + " | ".join(column(n) for n in names) + " |", "|---" * (len(names) + 1) + "|"]
  table += [
    f"| {row} | " + " | ".join(fn(groups[n]) for n in names) + " |" for row, fn in rows.items()
  ]
  if set(names) == {"multihead", "weighted"}:
    per_step = lambda n: np.mean([r["train_seconds"] / max(r["step"], 1) for r in groups[n]])
    table.append(
      f"| weighted / standard seconds per step | "
      f"{per_step('weighted') / per_step('multihead'):.3f} | |"
    )
  systems = [(MODEL_NAMES.get(n, n), groups[n], "default") for n in names]
  pairs = [
    (systems[i], systems[j]) for i in range(len(systems)) for j in range(i + 1, len(systems))
  ]
  comparisons = paired_comparisons(pairs, test_sets, outdir)
  summary.write(outdir, summary.study_summary(systems, comparisons, systems[0][0], list(test_sets)))
  lines = [
    *_header(title, command, _scores(results[0], split).get("bleu_signature"), results),
    *table,
    "",
    "Mean ± sample standard deviation over seeds. Training seconds count the training steps "
    "only (compilation, evaluation and checkpoints excluded); the runs were interleaved in "
    "one process, so both saw the same machine.",
    "",
    "## Test sets",
    "",
    *test_set_tables(systems, test_sets),
    *significance_section(comparisons),
    "## Figures",
    "",
    *figure_section(systems, outdir, title, test_sets, attention_maps),
    "",
    notes,
    "",
  ]
  return _write(outdir, lines)


def sweep_report(
  points: Sequence[System],
  outdir: str,
  *,
  title: str,
  command: str,
  test_sets: TestSets,
  baselines: Sequence[str] = (),
  attention_maps: bool = True,
) -> str:
  """Writes report.md for an ablation sweep: one row per (label, results, evaluation).

  Every point is tested against each of `baselines` (labels of points, e.g. the Transformer
  and the weighted reference) that precedes it in `baselines` or is not one; without
  baselines, against the first point."""
  os.makedirs(outdir, exist_ok=True)
  split = next(iter(test_sets))
  lines = [
    f"| point | {significance.split_name(split)} BLEU | best validation loss "
    f"| seconds per step | training seconds | parameters | seeds |",
    "|---|---|---|---|---|---|---|",
  ]
  for label, results, evaluation in points:
    lines.append(
      f"| {label} | {mean_spread([_scores(r, split, evaluation).get('bleu') for r in results])}"
      f" | {mean_spread([r['best_eval_loss'] for r in results], 3)} | "
      f"{mean_spread([r['train_seconds'] / max(r['step'], 1) for r in results], 3)} | "
      f"{mean_spread([r['train_seconds'] for r in results], 0)} | "
      f"{results[0]['num_params']:,} | {len(results)} |"
    )
  by_label = {point[0]: point for point in points}
  references = [label for label in baselines if label in by_label] or [points[0][0]]
  pairs, same = [], []
  for k, reference in enumerate(references):
    for point in points:
      if point[0] in references[: k + 1]:
        continue
      runs = lambda system: [(r["workdir"], system[2]) for r in system[1]]
      if runs(point) == runs(by_label[reference]):  # the same trained model and evaluation
        same.append(f"{point[0]} is {reference}'s own runs")
      else:
        pairs.append((by_label[reference], point))
  comparisons = paired_comparisons(pairs, test_sets, outdir)
  summary.write(outdir, summary.study_summary(points, comparisons, references[0], list(test_sets)))
  baseline_words = " ".join(
    ([f"Every point is tested against {' and against '.join(references)}."] if pairs else [])
    + [f"{'; '.join(same)} (not tested against it)."] * bool(same)
  )
  text = [
    *_header(
      title,
      command,
      _scores(points[0][1][0], split, points[0][2]).get("bleu_signature") if points[0][1] else None,
      [r for _, results, _ in points for r in results],
    ),
    *lines,
    "",
    "Mean ± sample standard deviation over seeds.",
    "",
    "## Test sets",
    "",
    *test_set_tables(points, test_sets),
    baseline_words,
    "",
    *significance_section(comparisons),
    "## Figures",
    "",
    *figure_section(points, outdir, title, test_sets, attention_maps),
    "",
  ]
  return _write(outdir, text)
