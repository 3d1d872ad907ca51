"""Experiment jobs: train (or resume) several runs, evaluate each, record one result per run.

A `Job` is one training run (a full config and its workdir) plus the evaluations to make of
the trained model: each evaluation is a name and the model fields to change at test time (e.g.
`{"test_branch_weights": "uniform"}` for the paper's Table 3). `run_jobs` trains every job
that has no `result.json` yet, interleaved in one process or one after the other, then
decodes the requested splits and writes `result.json`; finished jobs are only read back.

Interleaving (`interleave_steps > 0`) advances every unfinished run by that many steps in turn,
so that runs compared on wall-clock time see the same machine (a noisy machine slows all of
them alike). Each run's clock counts only its own steps.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Mapping, Optional

import jax
import ml_collections
from absl import logging

from wt import evaluation, metrics, models, train

RESULT_FILE = "result.json"


@dataclasses.dataclass
class Job:
  """One training run and the test-time variants to evaluate it with."""
  name: str
  config: ml_collections.ConfigDict
  workdir: str
  evaluations: Mapping[str, Mapping[str, object]] = dataclasses.field(
      default_factory=lambda: {"default": {}})

  @property
  def result_path(self) -> str:
    return os.path.join(self.workdir, RESULT_FILE)


def load_result(job: Job) -> Optional[dict]:
  """The job's result if it has one for every requested evaluation, else None."""
  if not os.path.exists(job.result_path):
    return None
  with open(job.result_path, encoding="utf-8") as f:
    result = json.load(f)
  return result if set(job.evaluations) <= set(result["evaluations"]) else None


def _eval_curve(workdir: str) -> list[dict]:
  return [{"step": r["step"], "seconds": r["eval/train_seconds"], "loss": r["eval/loss"],
           "nll": r["eval/nll"]}
          for r in metrics.read_jsonl(os.path.join(workdir, "metrics.jsonl")) if "eval/loss" in r]


def _evaluate_and_record(job: Job, trainer: train.Trainer, splits) -> dict:
  """Decodes `splits` for every evaluation of `job`; writes and returns its result."""
  params = trainer.params()
  evaluations = {}
  for name, changes in job.evaluations.items():
    model = models.Transformer(trainer.model_config.replace(**changes))
    evaluations[name] = {}
    for split in splits:
      scored = evaluation.evaluate_split(model, params, trainer.data, split, job.config.decode)
      translations_path = os.path.join(job.workdir, f"translations.{split}.{name}.txt")
      with open(translations_path, "w", encoding="utf-8") as f:
        f.writelines(line + "\n" for line in scored.pop("translations"))
      scored.pop("sources")
      evaluations[name][split] = {**scored, "translations_file": translations_path}
  curve = _eval_curve(job.workdir)
  summary = trainer.summary()
  result = {
      "name": job.name, "workdir": job.workdir,
      "attention": job.config.model.attention, "seed": job.config.train.seed,
      **summary,
      "tokens_per_second": summary["train_tokens"] / max(summary["train_seconds"], 1e-9),
      "best_eval_loss": min(p["loss"] for p in curve),
      "final_eval_loss": curve[-1]["loss"],
      "eval_curve": curve,
      "evaluations": evaluations,
  }
  if jax.process_index() == 0:
    with open(job.result_path, "w", encoding="utf-8") as f:
      json.dump(result, f, indent=2)
  return result


def run_jobs(jobs: list[Job], *, splits=("test",), interleave_steps: int = 0) -> list[dict]:
  """Trains and evaluates every unfinished job; returns all results in job order."""
  pending = [job for job in jobs if load_result(job) is None]
  logging.info("%d of %d jobs to run: %s", len(pending), len(jobs),
               ", ".join(job.name for job in pending) or "none")
  if interleave_steps > 0 and pending:
    trainers = [train.Trainer(job.config, job.workdir, progress_position=i)
                for i, job in enumerate(pending)]
    while any(t.step < t.config.train.num_steps for t in trainers):
      for trainer in trainers:
        trainer.train_until(trainer.step + interleave_steps)
    for job, trainer in zip(pending, trainers):
      _evaluate_and_record(job, trainer, splits)
      trainer.close()
  else:
    for job in pending:
      trainer = train.Trainer(job.config, job.workdir)
      trainer.train_until(job.config.train.num_steps)
      _evaluate_and_record(job, trainer, splits)
      trainer.close()
  return [load_result(job) for job in jobs]
