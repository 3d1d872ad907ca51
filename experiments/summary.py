"""What each study found, as one table: the answer in docs/results/README.md.

Every compare and ablate report also writes `summary.json` beside report.md. It holds each
system against the study's reference, the Transformer (the sweep's first baseline, the
compare's first model). It gives:
  - the gap in best validation loss, over seeds: mean, sample sd and a paired t-test;
  - the BLEU gap on the test set nothing is tuned on (test2018 flickr when reported, else the
    headline split), over seeds in the same way;
  - how many seeds' paired tests (bootstrap and randomization, experiments/significance.py)
    found that BLEU difference significant;
  - the seconds per training step relative to the reference's (the runs were interleaved).

    python -m experiments.summary --results docs/results --write docs/results/README.md

collects the summary.json of every study folder under --results into the table between
`<!-- results:begin -->` and `<!-- results:end -->` of --write (or prints it).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Optional, Sequence

import numpy as np
from absl import app, flags

from experiments import common, significance

SUMMARY_FILE = "summary.json"
System = tuple[str, list[dict], str]  # label, results over seeds, evaluation name


def _seconds_per_step(results: Sequence[dict]) -> float:
  return float(np.mean([r["train_seconds"] / max(r["step"], 1) for r in results]))


def _seed_fields(test: significance.SeedTest) -> dict:
  return {"mean": test.mean, "sd": test.sd, "p": test.p_value, "significant": test.significant}


def study_summary(
  systems: Sequence[System],
  comparisons: Sequence[significance.Comparison],
  reference: str,
  splits: Sequence[str],
) -> dict:
  """Every system of `systems` but `reference` against it (see the module docstring)."""
  by_label = {label: (results, evaluation) for label, results, evaluation in systems}
  base_results, base_evaluation = by_label[reference]
  split = significance.UNTUNED_SPLIT if significance.UNTUNED_SPLIT in splits else splits[0]
  base_by_seed = {r["seed"]: r for r in base_results}
  rows = []
  for label, results, evaluation in systems:
    if label == reference:
      continue
    paired = [r for r in results if r["seed"] in base_by_seed]
    loss = significance.loss_test(base_results, results)
    same_runs = [(r["workdir"], evaluation) for r in results] == [
      (r["workdir"], base_evaluation) for r in base_results
    ]
    comparison = next(
      (
        c
        for c in comparisons
        if (c.baseline, c.system, c.split) == (reference, label, split) and not same_runs
      ),
      None,
    )
    rows.append(
      {
        "system": label,
        "seeds": [r["seed"] for r in paired],
        "validation_loss_gap": _seed_fields(loss),
        "bleu_gap": None if comparison is None else _seed_fields(comparison.over_seeds),
        "seeds_significant": (
          None if comparison is None else sum(p.significant for p in comparison.per_seed)
        ),
        "step_time_ratio": _seconds_per_step(results) / _seconds_per_step(base_results),
      }
    )
  return {"reference": reference, "split": split, "systems": rows}


def write(outdir: str, summary: dict) -> None:
  with open(os.path.join(outdir, SUMMARY_FILE), "w", encoding="utf-8") as f:
    json.dump(summary, f, indent=1)


def _gap(fields: Optional[dict], digits: int) -> str:
  if fields is None:
    return "—"
  text = f"{fields['mean']:+.{digits}f}"
  if fields["sd"] is not None:
    text += f" ± {fields['sd']:.{digits}f}"
  if fields["p"] is not None:
    text += f" (p {fields['p']:.3f}{', significant' if fields['significant'] else ''})"
  return text


def results_table(studies: Sequence[tuple[str, dict]]) -> list[str]:
  """The Markdown table of every (study folder, summary) pair."""
  lines = [
    "| study | system | against | seeds | validation-loss gap | BLEU gap (untuned test set) "
    "| seeds with a significant BLEU difference | step time |",
    "|---|---|---|---|---|---|---|---|",
  ]
  for folder, summary in studies:
    split = significance.split_name(summary["split"])
    for row in summary["systems"]:
      seeds, significant = len(row["seeds"]), row["seeds_significant"]
      lines.append(
        f"| `{folder}` | {row['system']} | {summary['reference']} | {seeds} "
        f"| {_gap(row['validation_loss_gap'], 3)} | {split}: {_gap(row['bleu_gap'], 2)} "
        f"| {'—' if significant is None else f'{significant} of {seeds}'} "
        f"| {row['step_time_ratio']:.2f}x |"
      )
  lines += [
    "",
    "Gaps are system − reference, mean ± sample sd over seeds, with the paired t-test over "
    "seeds (two seeds or more; with three it has little power). A seed's BLEU difference is "
    "significant when both paired tests give p < 0.05 (each study's report.md has them per "
    "test set). Step time: seconds per training step relative to the reference's, from "
    "interleaved runs. Written by `python -m experiments.summary`.",
  ]
  return lines


def collect(results_dir: str) -> list[tuple[str, dict]]:
  """(folder, summary) of every study folder under `results_dir`, in name order."""
  studies = []
  for folder in sorted(os.listdir(results_dir)):
    path = os.path.join(results_dir, folder, SUMMARY_FILE)
    if os.path.isfile(path):
      with open(path, encoding="utf-8") as f:
        studies.append((folder, json.load(f)))
  return studies


def main(argv):
  del argv
  results, write = flags.FLAGS.results, flags.FLAGS.write
  studies = collect(results)
  if not studies:
    raise SystemExit(f"no study folder under {results} has a {SUMMARY_FILE}")
  text = "\n".join(results_table(studies))
  if write:
    common.replace_section(write, "results", text)
  else:
    sys.stdout.write(text + "\n")


if __name__ == "__main__":
  # Defined here, not on import: the reports import this module beside commands whose flags
  # have the same names.
  flags.DEFINE_string("results", "docs/results", "folder of study folders")
  flags.DEFINE_string("write", None, "replace the results section of this Markdown file")
  app.run(main)
