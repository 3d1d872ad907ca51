"""Experiment jobs: train (or resume) several runs, evaluate each, record one result per run.

A `Job` is one training run (a full config and its workdir) plus the evaluations to make of
the trained model: each evaluation is a name and the model fields to change at test time (e.g.
`{"test_branch_weights": "uniform"}` for the paper's Table 3). `run_jobs` trains every job
that has no `result.json` yet, interleaved in one process or one after the other, then
decodes the requested splits and writes `result.json` and one translation file per split and
evaluation (`translations.<split>.<evaluation>.txt`, what the significance tests read).
Finished jobs are read back; one whose result lacks a requested split or evaluation (an older
study re-reported with more test sets) is re-evaluated from its last checkpoint, not retrained.

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

from experiments import common
from wt import evaluation, metrics, models, preemption, train

RESULT_FILE = "result.json"


@dataclasses.dataclass
class Job:
  """One training run and the test-time variants to evaluate it with."""

  name: str
  config: ml_collections.ConfigDict
  workdir: str
  evaluations: Mapping[str, Mapping[str, object]] = dataclasses.field(
    default_factory=lambda: {"default": {}}
  )

  @property
  def result_path(self) -> str:
    return os.path.join(self.workdir, RESULT_FILE)


def load_result(job: Job) -> Optional[dict]:
  """The job's recorded result (whatever it evaluated), or None before it has finished."""
  if not os.path.exists(job.result_path):
    return None
  with open(job.result_path, encoding="utf-8") as f:
    return json.load(f)


def missing_evaluations(job: Job, result: Optional[dict], splits) -> dict[str, list[str]]:
  """{evaluation: [split, ...]} that `result` lacks (or whose translation file is gone)."""
  recorded = (result or {}).get("evaluations", {})
  missing = {}
  for name in job.evaluations:
    for split in splits:
      scored = recorded.get(name, {}).get(split)
      if scored is None or not os.path.exists(scored.get("translations_file", "")):
        missing.setdefault(name, []).append(split)
  return missing


def _eval_curve(workdir: str) -> list[dict]:
  return [
    {
      "step": r["step"],
      "seconds": r["eval/train_seconds"],
      "loss": r["eval/loss"],
      "nll": r["eval/nll"],
    }
    for r in metrics.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    if "eval/loss" in r
  ]


def _evaluate(
  job: Job, model_config: models.ModelConfig, params, data, wanted: Mapping[str, list[str]]
) -> dict:
  """Decodes every split of `wanted` for its evaluation; writes the translations."""
  evaluations = {}
  for name, splits in wanted.items():
    model = models.Transformer(model_config.replace(**job.evaluations[name]))
    for split in splits:
      scored = evaluation.evaluate_split(model, params, data, split, job.config.decode)
      translations_path = os.path.join(job.workdir, f"translations.{split}.{name}.txt")
      if jax.process_index() == 0:
        with open(translations_path, "w", encoding="utf-8") as f:
          f.writelines(line + "\n" for line in scored.pop("translations"))
      scored.pop("translations", None)
      scored.pop("sources")
      evaluations.setdefault(name, {})[split] = {**scored, "translations_file": translations_path}
  return evaluations


def _write(job: Job, result: dict) -> dict:
  if jax.process_index() == 0:
    with open(job.result_path, "w", encoding="utf-8") as f:
      json.dump(result, f, indent=2)
  return result


def _evaluate_and_record(job: Job, trainer: train.Trainer, splits) -> dict:
  """Decodes `splits` for every evaluation of `job`; writes and returns its result."""
  evaluations = _evaluate(
    job,
    trainer.model_config,
    trainer.params(),
    trainer.data,
    {name: list(splits) for name in job.evaluations},
  )
  curve = _eval_curve(job.workdir)
  summary = trainer.summary()
  return _write(
    job,
    {
      "name": job.name,
      "workdir": job.workdir,
      "attention": job.config.model.attention,
      "seed": job.config.train.seed,
      "machine": common.machine_description(),
      **summary,
      "tokens_per_second": summary["train_tokens"] / max(summary["train_seconds"], 1e-9),
      "best_eval_loss": min(p["loss"] for p in curve),
      "final_eval_loss": curve[-1]["loss"],
      "eval_curve": curve,
      "evaluations": evaluations,
    },
  )


def _reevaluate(job: Job, result: dict, wanted: Mapping[str, list[str]]) -> dict:
  """Adds the `wanted` evaluations to a finished job's result, from its last checkpoint (the
  parameters its first evaluation used); nothing is trained."""
  logging.info(
    "re-evaluating %s from its checkpoint: %s",
    job.name,
    "; ".join(f"{name}: {', '.join(splits)}" for name, splits in wanted.items()),
  )
  trained = evaluation.load_trained(job.workdir, average_last=1)
  added = _evaluate(job, trained.model.config, trained.params, trained.data, wanted)
  for name, splits in added.items():
    result["evaluations"].setdefault(name, {}).update(splits)
  return _write(job, result)


def run_jobs(jobs: list[Job], *, splits=("test",), interleave_steps: int = 0) -> list[dict]:
  """Trains and evaluates every unfinished job, re-evaluates finished jobs that lack a split
  or evaluation; returns all results in job order."""
  pending = [job for job in jobs if load_result(job) is None]
  logging.info(
    "%d of %d jobs to run: %s",
    len(pending),
    len(jobs),
    ", ".join(job.name for job in pending) or "none",
  )
  if interleave_steps > 0 and pending:
    trainers = [
      train.Trainer(job.config, job.workdir, progress_position=i) for i, job in enumerate(pending)
    ]
    try:
      with preemption.notices():  # also between the runs' turns
        while any(t.step < t.config.train.num_steps for t in trainers):
          for trainer in trainers:
            trainer.train_until(trainer.step + interleave_steps)
    except preemption.Preempted:  # one run saved its step: so does every other
      for trainer in trainers:
        trainer.save_checkpoint_now()
        trainer.close()
      raise
    for job, trainer in zip(pending, trainers):
      _evaluate_and_record(job, trainer, splits)
      trainer.close()
  else:
    for job in pending:
      trainer = train.Trainer(job.config, job.workdir)
      trainer.train_until(job.config.train.num_steps)
      _evaluate_and_record(job, trainer, splits)
      trainer.close()
  results = []
  for job in jobs:
    result = load_result(job)
    wanted = missing_evaluations(job, result, splits)
    results.append(_reevaluate(job, result, wanted) if wanted else result)
  return results
