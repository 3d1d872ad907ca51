"""What the compare and ablate commands run: their jobs, built from a config, then reported.

  compare  every (model, seed) of config.compare on the same data, budget and seeds
  ablate   every point of a named sweep (experiments/sweeps.py) times the seeds; points that
           train the same config share one job per seed, and every point is tested against
           the sweep's baselines (the Transformer and the weighted reference)

Both resume: jobs that have a result are not run again, and finished jobs that lack one of
`config.compare.splits` are only decoded (see experiments/jobs.py). Both report on every split
of `config.compare.splits` (the first is the headline), with paired significance tests.
"""

import json
import os
import re
from typing import Optional

from experiments import common, jobs, report, sweeps
from wt import data as data_lib


def _test_sets(config) -> dict:
  """{split: (sources, references)} of config.compare.splits, from the raw data; read before
  anything trains, so that a split the dataset lacks fails at once."""
  data = data_lib.load_translation_data(config.data)
  return {split: tuple(data.raw_split(split)) for split in config.compare.splits}


def _interleave(config) -> int:
  return config.compare.interleave_steps if config.compare.interleave else 0


def _check_checkpoints_for_attention_maps(runs: list[jobs.Job]) -> None:
  """The attention maps are drawn from each finished run's last checkpoint: a run brought back
  without its checkpoints (trained on another machine) fails here, before anything trains."""
  for job in runs:
    folder = os.path.join(job.workdir, "checkpoints")
    saved = os.path.isdir(folder) and any(name.isdigit() for name in os.listdir(folder))
    if jobs.load_result(job) is not None and not saved:
      raise ValueError(
        f"{job.workdir} has a result but no checkpoint in {folder}, and the report's attention "
        "maps are drawn from it: pass --noattention_maps, or put the run's checkpoints back"
      )


def compare(config, outdir: str, *, name: str, command: str, attention_maps: bool = True) -> str:
  """Runs (or resumes) the comparison in `outdir`; returns the report's path."""
  test_sets = _test_sets(config)
  runs = [
    jobs.Job(
      f"{attention}/seed{seed}",
      common.with_overrides(config, {"model.attention": attention, "train.seed": seed}),
      os.path.join(outdir, attention, f"seed{seed}"),
    )
    for attention in config.compare.models
    for seed in config.compare.seeds
  ]
  if attention_maps:
    _check_checkpoints_for_attention_maps(runs)
  results = jobs.run_jobs(runs, splits=config.compare.splits, interleave_steps=_interleave(config))
  return report.compare_report(
    results,
    outdir,
    command=command,
    title=f"Transformer vs Weighted Transformer: {name}",
    test_sets=test_sets,
    notes=config.compare.notes,
    attention_maps=attention_maps,
  )


def _slug(overrides) -> str:
  text = "_".join(f"{k.rsplit('.', 1)[-1]}-{v}" for k, v in sorted(overrides.items()))
  return re.sub(r"[^A-Za-z0-9_.-]+", "", text)


def _training_key(config) -> str:
  """Two points train the same model exactly when their resolved configs are equal."""
  return json.dumps(config.to_dict(), sort_keys=True, default=str)


def _job_folder(outdir: str, slugs: list[str]) -> str:
  """The first of the points' folders that already holds runs (an older study), else the
  first point's."""
  return next((slug for slug in slugs if os.path.isdir(os.path.join(outdir, slug))), slugs[0])


def evaluation_name(point: sweeps.Point) -> str:
  """ "default" for a point evaluated as trained, else its label (test-time changes)."""
  return point.label if point.test else "default"


def ablate(
  config,
  sweep: str,
  outdir: str,
  *,
  name: str,
  command: str,
  attention_maps: bool = True,
  runs_dir: Optional[str] = None,
) -> str:
  """Runs (or resumes) every point of `sweep` for every seed; returns the report's path.

  The runs live in `runs_dir` (default `outdir`, where the report goes): studies given the
  same one share the runs they have in common, such as the baselines, which a later study
  only reads back. Give one runs_dir to one ablation at a time."""
  runs_dir = runs_dir or outdir
  points = sweeps.SWEEPS[sweep]
  test_sets = _test_sets(config)
  by_training = {}  # points that train the same model share one job per seed
  for point in points:
    key = _training_key(common.with_overrides(config, point.train))
    by_training.setdefault(key, []).append(point)
  runs, job_of = [], {}
  for shared in by_training.values():
    folder = _job_folder(runs_dir, [_slug(p.train) for p in shared])
    for seed in config.compare.seeds:
      job = jobs.Job(
        f"{folder}/seed{seed}",
        common.with_overrides(config, {**shared[0].train, "train.seed": seed}),
        os.path.join(runs_dir, folder, f"seed{seed}"),
        {evaluation_name(p): dict(p.test) for p in shared},
      )
      runs.append(job)
      for p in shared:
        job_of.setdefault(p.label, []).append(len(runs) - 1)
  if attention_maps:
    _check_checkpoints_for_attention_maps(runs)
  results = jobs.run_jobs(runs, splits=config.compare.splits, interleave_steps=_interleave(config))
  rows = [(p.label, [results[i] for i in job_of[p.label]], evaluation_name(p)) for p in points]
  return report.sweep_report(
    rows,
    outdir,
    command=command,
    title=f"Ablation {sweep}: {name}",
    test_sets=test_sets,
    baselines=sweeps.BASELINES,
    attention_maps=attention_maps,
  )
