"""Ablations: a named grid of overrides times the config's seeds, as resumable jobs.

    python -m experiments.ablate --config experiments/configs/multi30k.py:small \
        --sweep branch_weights

Sweeps are defined in experiments/sweeps.py. Each training run is a job in
--outdir/<point>/seed<k> (default runs/ablate-<sweep>-<config>); finished jobs are not run
again, and `report.md` tabulates every point (mean and spread over seeds).
"""

import os
import re
import sys

from absl import app, flags
from ml_collections import config_flags

from experiments import common, sweeps

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment config file[:variant]")
_SWEEP = flags.DEFINE_enum("sweep", None, sorted(sweeps.SWEEPS), "the grid to run")
_OUTDIR = flags.DEFINE_string("outdir", None, "output folder (runs and report)")
flags.mark_flags_as_required(["config", "sweep"])


def _slug(overrides) -> str:
  text = "_".join(f"{k.rsplit('.', 1)[-1]}-{v}" for k, v in sorted(overrides.items()))
  return re.sub(r"[^A-Za-z0-9_.-]+", "", text)


def ablate(config, sweep: str, outdir: str, *, name: str, command: str) -> str:
  """Runs (or resumes) every point of `sweep` for every seed; returns the report's path."""
  from wt import jobs, report  # pylint: disable=g-import-not-at-top
  points = sweeps.SWEEPS[sweep]
  by_training = {}   # points that train the same model share one job per seed
  for point in points:
    by_training.setdefault(_slug(point.train), []).append(point)
  runs, job_of = [], {}
  for slug, shared in by_training.items():
    for seed in config.compare.seeds:
      job = jobs.Job(f"{slug}/seed{seed}",
                     common.with_overrides(config, {**shared[0].train, "train.seed": seed}),
                     os.path.join(outdir, slug, f"seed{seed}"),
                     {p.label: dict(p.test) for p in shared})
      runs.append(job)
      for p in shared:
        job_of.setdefault(p.label, []).append(len(runs) - 1)
  interleave = config.compare.interleave_steps if config.compare.interleave else 0
  results = jobs.run_jobs(runs, splits=config.compare.splits, interleave_steps=interleave)
  rows = [(p.label, [results[i] for i in job_of[p.label]], p.label) for p in points]
  return report.sweep_report(rows, outdir, command=command, split=config.compare.splits[0],
                             title=f"Ablation {sweep}: {name}")


def main(argv):
  del argv
  config = _CONFIG.value
  common.start(config)
  outdir = _OUTDIR.value or os.path.join(
      "runs", f"ablate-{_SWEEP.value}-{common.config_name('-')}")
  path = ablate(config, _SWEEP.value, outdir, name=common.config_name(),
                command=common.command_line(sys.argv))
  print(f"report: {path}")


if __name__ == "__main__":
  app.run(main)
