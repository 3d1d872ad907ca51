"""Metrics: token-level (sum, count) pairs, corpus BLEU/chrF with sacreBLEU, metric writers.

Steps return metrics as `{name: (sum, count)}` so that batches, devices and hosts combine by
adding; a mean is taken only when a value is reported (`means`).
"""

from __future__ import annotations

import json
import os
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import sacrebleu
from tensorboardX import SummaryWriter

from wt.losses import label_smoothed_cross_entropy

SumCount = tuple  # (sum, count), both scalars


def token_metrics(
  logits, targets, label_smoothing: float, *, with_accuracy: bool = True
) -> dict[str, SumCount]:
  """Loss, NLL (wt/losses.py's fused label-smoothed cross entropy) and (optionally: an argmax
  over the vocabulary, ~3% of a small CPU training step) accuracy over non-pad target tokens,
  as (sum, count) pairs."""
  weights = (targets > 0).astype(jnp.float32)
  count = jnp.sum(weights)
  loss, nll = label_smoothed_cross_entropy(logits, targets, weights, label_smoothing)
  results = {"loss": (loss, count), "nll": (nll, count)}
  if with_accuracy:
    correct = jnp.sum((jnp.argmax(logits, axis=-1) == targets) * weights)
    results["accuracy"] = (correct, count)
  return results


def add(a: Mapping[str, SumCount], b: Mapping[str, SumCount]) -> dict[str, SumCount]:
  """Element-wise sum of two metric dicts (either may be empty)."""
  if not a:
    return dict(b)
  return {k: (a[k][0] + b[k][0], a[k][1] + b[k][1]) for k in a}


def means(metrics: Mapping[str, SumCount]) -> dict[str, float]:
  """{name: sum / count} as Python floats; perplexity from the NLL when present."""
  out = {k: float(s) / max(float(c), 1.0) for k, (s, c) in jax.device_get(dict(metrics)).items()}
  if "nll" in out:
    out["perplexity"] = float(np.exp(min(out["nll"], 50.0)))
  return out


def bleu(hypotheses: Sequence[str], references: Sequence[str]) -> dict:
  """Corpus BLEU and chrF of detokenized hypotheses against raw references, with signatures."""
  if len(hypotheses) != len(references):
    raise ValueError(
      f"{len(hypotheses)} hypotheses for {len(references)} references: every "
      f"reference needs exactly one hypothesis"
    )
  bleu_metric, chrf_metric = sacrebleu.metrics.BLEU(), sacrebleu.metrics.CHRF()
  bleu_score = bleu_metric.corpus_score(list(hypotheses), [list(references)])
  chrf_score = chrf_metric.corpus_score(list(hypotheses), [list(references)])
  return {
    "bleu": bleu_score.score,
    "bleu_signature": str(bleu_metric.get_signature()),
    "bleu_text": str(bleu_score),
    "chrf": chrf_score.score,
    "chrf_signature": str(chrf_metric.get_signature()),
  }


class MetricWriter:
  """Writes scalars to `metrics.jsonl` (one JSON object per line) and TensorBoard.

  Only process 0 writes; the others accept calls and do nothing.
  """

  def __init__(self, logdir: str, *, enabled: bool = True):
    self.enabled = enabled
    self._jsonl = self._tensorboard = None
    if enabled:
      os.makedirs(logdir, exist_ok=True)
      self._jsonl = open(os.path.join(logdir, "metrics.jsonl"), "a", encoding="utf-8")
      self._tensorboard = SummaryWriter(os.path.join(logdir, "tensorboard"))

  def write(self, step: int, scalars: Mapping[str, float]):
    if self._jsonl is None or self._tensorboard is None:
      return
    record = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
    self._jsonl.write(json.dumps(record) + "\n")
    self._jsonl.flush()
    for name, value in scalars.items():
      self._tensorboard.add_scalar(name, float(value), int(step))

  def close(self):
    if self._jsonl is not None and self._tensorboard is not None:
      self._jsonl.close()
      self._tensorboard.close()


def read_jsonl(path: str) -> list[dict]:
  """All records of a metrics.jsonl file (an empty list when it does not exist)."""
  if not os.path.exists(path):
    return []
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]
