"""End to end on the tiny synthetic corpus: compare, ablate (both resumable), evaluate, translate."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from experiments import comparisons
from wt import train

REPO = pathlib.Path(__file__).resolve().parent.parent
PNG_HEADER = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def experiment_config(tiny_config):
  tiny_config.train.update(num_steps=10, eval_every=5, log_every=5, checkpoint_every=5)
  tiny_config.decode.update(beam_size=2, max_extra_len=5)
  tiny_config.compare.interleave_steps = 5
  return tiny_config


def table_rows(report: str) -> dict[str, list[str]]:
  rows = {}
  for line in report.splitlines():
    if line.startswith("| ") and not line.startswith("|---"):
      cells = [c.strip() for c in line.strip("|").split("|")]
      rows[cells[0]] = cells[1:]
  return rows


def forbid_training(monkeypatch):
  def refuse(*args, **kwargs):
    raise AssertionError("a finished job was trained again")
  monkeypatch.setattr(train, "Trainer", refuse)


def test_compare_reports_both_models_and_a_second_call_trains_nothing(experiment_config,
                                                                      tmp_path, monkeypatch):
  path = comparisons.compare(experiment_config, str(tmp_path), name="tiny", command="test")
  report = pathlib.Path(path).read_text()
  rows = table_rows(report)
  assert rows[""] == ["Transformer (1 seed)", "Weighted Transformer (1 seed)"]
  for row in ("test BLEU", "best validation loss", "training seconds", "parameters",
              "target tokens per second"):
    assert len(rows[row]) == 2 and all(cell not in ("", "–") for cell in rows[row]), row
  target_rows = [r for r in rows if r.startswith("steps to validation loss")]
  assert len(target_rows) == 1 and all(int(c) in (5, 10) for c in rows[target_rows[0]])
  assert "nrefs:1|case:mixed" in report
  for image in ("validation_loss.png", "branch_weights.png"):
    assert (tmp_path / image).read_bytes()[:8] == PNG_HEADER
    assert f"]({image})" in report
  result = json.loads((tmp_path / "weighted" / "seed0" / "result.json").read_text())
  assert result["step"] == 10 and len(result["eval_curve"]) == 2
  translations = (tmp_path / "weighted" / "seed0" / "translations.test.default.txt")
  assert len(translations.read_text().splitlines()) == 25   # every test sentence, once

  forbid_training(monkeypatch)
  os.remove(path)
  assert pathlib.Path(comparisons.compare(experiment_config, str(tmp_path), name="tiny",
                                      command="test")).read_text() == report


def test_ablate_test_time_branch_weights_trains_once_and_tables_every_point(
    experiment_config, tmp_path, monkeypatch):
  path = comparisons.ablate(experiment_config, "test_branch_weights", str(tmp_path), name="tiny",
                       command="test")
  rows = table_rows(pathlib.Path(path).read_text())
  labels = [f"test_branch_weights={m}" for m in ("learned", "uniform", "random")]
  assert all(label in rows for label in labels)
  assert len([d for d in tmp_path.iterdir() if d.is_dir()]) == 1   # one trained model
  result = json.loads(next(tmp_path.glob("*/seed0/result.json")).read_text())
  bleu = {label: result["evaluations"][label]["test"]["bleu"] for label in labels}
  assert all(0.0 <= b <= 100.0 for b in bleu.values())
  forbid_training(monkeypatch)
  comparisons.ablate(experiment_config, "test_branch_weights", str(tmp_path), name="tiny",
                command="test")


def test_evaluate_and_translate_commands(experiment_config, tmp_path):
  workdir = tmp_path / "run"
  experiment_config.model.attention = "weighted"
  train.train_and_evaluate(experiment_config, str(workdir))
  env = {**os.environ, "PYTHONPATH": str(REPO)}
  evaluated = subprocess.run(
      [sys.executable, "-m", "experiments.evaluate", "--workdir", str(workdir), "--split",
       "test", "--average_last", "2", "--test_branch_weights", "uniform"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert evaluated.returncode == 0, evaluated.stderr[-3000:]
  assert "BLEU" in evaluated.stdout and "nrefs:1|case:mixed" in evaluated.stdout
  assert "sentences/s" in evaluated.stdout
  outputs = sorted((workdir / "eval").iterdir())
  assert [p.name for p in outputs] == ["test.avg2.beam2.uniform.json",
                                       "test.avg2.beam2.uniform.txt"]
  assert len(outputs[1].read_text().splitlines()) == 25

  sentences = "A man runs.\nTwo dogs play in the park with a red ball.\n\nA child.\n"
  translated = subprocess.run(
      [sys.executable, "-m", "experiments.translate", "--workdir", str(workdir)],
      input=sentences, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert translated.returncode == 0, translated.stderr[-3000:]
  assert len(translated.stdout.splitlines()) == 4
