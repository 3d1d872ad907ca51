"""Token metrics against NumPy, BLEU/chrF through sacreBLEU, and the metric writer."""

import json

import numpy as np
import pytest
import sacrebleu

from tests.references import numpy_smoothed_cross_entropy
from wt import metrics


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_label_smoothed_cross_entropy_matches_numpy(smoothing):
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 5, 11)).astype(np.float32) * 3
  targets = rng.integers(1, 11, size=(3, 5))
  targets[0, 3:] = 0
  got = metrics.token_metrics(logits, targets, smoothing)
  weights = (targets > 0).astype(np.float64)
  loss, nll = numpy_smoothed_cross_entropy(logits.astype(np.float64), targets, weights, smoothing)
  np.testing.assert_allclose(float(got["loss"][0]), loss, rtol=1e-5)
  np.testing.assert_allclose(float(got["nll"][0]), nll, rtol=1e-5)
  assert float(got["loss"][1]) == weights.sum() == 13
  correct = np.sum((logits.argmax(-1) == targets) * weights)
  assert float(got["accuracy"][0]) == correct


def test_a_perfect_prediction_has_zero_smoothed_loss():
  vocab, smoothing = 7, 0.1
  probs = np.full((1, 1, vocab), smoothing / (vocab - 1))
  probs[0, 0, 3] = 1 - smoothing
  got = metrics.token_metrics(np.log(probs).astype(np.float32), np.array([[3]]), smoothing)
  assert abs(float(got["loss"][0])) < 1e-5


def test_sums_and_counts_add_and_average():
  a = {"loss": (2.0, 4.0), "nll": (np.log(3.0) * 4, 4.0)}
  total = metrics.add(metrics.add({}, a), a)
  assert total["loss"] == (4.0, 8.0)
  summary = metrics.means(total)
  assert summary["loss"] == 0.5
  np.testing.assert_allclose(summary["perplexity"], 3.0)


def test_bleu_of_the_references_against_themselves_is_100_with_a_signature():
  references = [
    "Ein Mann fährt Fahrrad.",
    "Zwei Hunde spielen im Schnee.",
    "Eine Frau liest ein Buch im Park.",
  ]
  scores = metrics.bleu(references, references)
  assert scores["bleu"] == pytest.approx(100.0)
  assert scores["chrf"] == pytest.approx(100.0)
  assert "tok:13a" in scores["bleu_signature"] and "version:" in scores["bleu_signature"]
  hypotheses = ["Ein Mann fährt.", "Hunde spielen.", "Eine Frau liest."]
  worse = metrics.bleu(hypotheses, references)
  # One reference stream of three sentences, not three streams of one (sacreBLEU's nesting).
  assert worse["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hypotheses, [references]).score)
  assert 0 < worse["bleu"] < 100
  with pytest.raises(ValueError, match="2 hypotheses for 3 references"):
    metrics.bleu(references[:2], references)


def test_metric_writer_appends_jsonl_and_tensorboard_events(tmp_path):
  writer = metrics.MetricWriter(str(tmp_path))
  writer.write(1, {"train/loss": 2.5})
  writer.write(2, {"train/loss": 2.0, "eval/loss": 2.2})
  writer.close()
  records = metrics.read_jsonl(str(tmp_path / "metrics.jsonl"))
  assert records == [
    {"step": 1, "train/loss": 2.5},
    {"step": 2, "train/loss": 2.0, "eval/loss": 2.2},
  ]
  assert json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])["step"] == 1
  assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
  silent = metrics.MetricWriter(str(tmp_path / "other"), enabled=False)
  silent.write(1, {"x": 1.0})
  assert not (tmp_path / "other").exists()
