"""The main job: Transformer vs Weighted Transformer on the same data, budget and seeds.

    python -m experiments.compare --config experiments/configs/multi30k.py:quick

Trains every (model, seed) of `config.compare` (interleaved in one process by default, so
wall-clock times are comparable), decodes the test split with beam search, and writes
`report.md` with its PNG plots into --outdir (default runs/compare-<config>-<variant>).
Finished runs are not trained again: rerunning only rebuilds the report.
"""

import os
import sys

from absl import app, flags
from ml_collections import config_flags

from experiments import common

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment config file[:variant]")
_OUTDIR = flags.DEFINE_string("outdir", None, "output folder (runs and report)")
flags.mark_flags_as_required(["config"])


def compare(config, outdir: str, *, name: str, command: str) -> str:
  """Runs (or resumes) the comparison in `outdir`; returns the report's path."""
  from wt import jobs, report  # pylint: disable=g-import-not-at-top
  runs = [jobs.Job(f"{attention}/seed{seed}",
                   common.with_overrides(config, {"model.attention": attention,
                                                  "train.seed": seed}),
                   os.path.join(outdir, attention, f"seed{seed}"))
          for attention in config.compare.models for seed in config.compare.seeds]
  interleave = config.compare.interleave_steps if config.compare.interleave else 0
  results = jobs.run_jobs(runs, splits=config.compare.splits, interleave_steps=interleave)
  return report.compare_report(results, outdir, command=command,
                               title=f"Transformer vs Weighted Transformer: {name}",
                               split=config.compare.splits[0], notes=config.compare.notes)


def main(argv):
  del argv
  config = _CONFIG.value
  common.start(config)
  outdir = _OUTDIR.value or os.path.join("runs", f"compare-{common.config_name('-')}")
  path = compare(config, outdir, name=common.config_name(),
                 command=common.command_line(sys.argv))
  print(f"report: {path}")


if __name__ == "__main__":
  app.run(main)
