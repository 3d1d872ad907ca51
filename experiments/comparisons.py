"""What the compare and ablate commands run: their jobs, built from a config, then reported.

  compare  every (model, seed) of config.compare on the same data, budget and seeds
  ablate   every point of a named sweep (experiments/sweeps.py) times the seeds

Both resume: jobs that have a result are not run again (see wt/jobs.py).
"""

import os
import re

from experiments import common, sweeps


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
