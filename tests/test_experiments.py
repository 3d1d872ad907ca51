"""End to end on the tiny synthetic corpus: compare, ablate (both resumable, re-evaluated for new
test sets without training), evaluate, translate."""

import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys

import pytest

from experiments import common, comparisons, jobs, sweeps
from experiments import report as report_module
from wt import checkpoint, preemption, train

REPO = pathlib.Path(__file__).resolve().parent.parent
PNG_HEADER = b"\x89PNG\r\n\x1a\n"
ALL_TEST_SPLITS = ("test", "test2017_flickr", "test2017_mscoco", "test2018_flickr")


@pytest.fixture
def experiment_config(tiny_config):
  tiny_config.train.update(num_steps=10, eval_every=5, log_every=5, checkpoint_every=5)
  tiny_config.decode.update(beam_size=2, max_extra_len=5)
  tiny_config.compare.interleave_steps = 5
  return tiny_config


def table_rows(report: str) -> dict[str, list[list[str]]]:
  """{first cell: [the other cells of every row that starts with it]} of all tables."""
  rows = {}
  for line in report.splitlines():
    if line.startswith("| ") and not line.startswith("|---"):
      cells = [c.strip() for c in line.strip().strip("|").split("|")]
      rows.setdefault(cells[0], []).append(cells[1:])
  return rows


def forbid_training(monkeypatch):
  def refuse(*args, **kwargs):
    raise AssertionError("a finished job was trained again")

  monkeypatch.setattr(train, "Trainer", refuse)


@pytest.mark.slow
def test_compare_reports_both_models_and_a_second_call_trains_nothing(
  experiment_config, tmp_path, monkeypatch
):
  experiment_config.compare.splits = ("test",)
  first = pathlib.Path(
    comparisons.compare(
      experiment_config, str(tmp_path), name="tiny", command="test", attention_maps=False
    )
  ).read_text()
  assert "## Significance" in first and "test2018" not in first
  # More test sets asked of the finished study: decoded from the checkpoints, nothing trained.
  forbid_training(monkeypatch)
  experiment_config.compare.splits = ALL_TEST_SPLITS
  path = comparisons.compare(experiment_config, str(tmp_path), name="tiny", command="test")
  report = pathlib.Path(path).read_text()
  rows = table_rows(report)
  assert rows[""][0] == ["Transformer (1 seed)", "Weighted Transformer (1 seed)"]
  for row in (
    "test2016 BLEU",
    "best validation loss",
    "training seconds",
    "parameters",
    "target tokens per second",
  ):
    assert len(rows[row][0]) == 2 and all(cell not in ("", "–") for cell in rows[row][0]), row
  target_rows = [r for r in rows if r.startswith("steps to validation loss")]
  assert len(target_rows) == 1 and all(int(c) in (5, 10) for c in rows[target_rows[0]][0])
  assert "nrefs:1|case:mixed" in report
  names = ["test2016", "test2017 flickr", "test2017 mscoco", "test2018 flickr"]
  assert rows[""][1] == names  # the test-set tables
  assert [len(r) for r in rows["Weighted Transformer"]] == [4, 4, 4]  # BLEU, chrF, ratio
  assert [r[0] for r in rows["Weighted Transformer − Transformer"]] == names
  assert "test2018 flickr is the test set nothing is tuned on" in report
  assert "- **Weighted Transformer against Transformer**" in report
  for image in (
    "validation_loss.png",
    "branch_weights.png",
    "final_branch_weights.png",
    "attention_Transformer.png",
    "attention_Weighted_Transformer.png",
  ):
    assert (tmp_path / image).read_bytes()[:8] == PNG_HEADER, image
    assert f"]({image})" in report
  result = json.loads((tmp_path / "weighted" / "seed0" / "result.json").read_text())
  assert result["step"] == 10 and len(result["eval_curve"]) == 2
  assert result["machine"] == common.machine_description()  # where it trained
  sizes = {"test": 25, "test2017_flickr": 12, "test2017_mscoco": 7, "test2018_flickr": 11}
  for split, size in sizes.items():  # every sentence of every test set, once
    translations = tmp_path / "weighted" / "seed0" / f"translations.{split}.default.txt"
    assert len(translations.read_text().splitlines()) == size
    assert result["evaluations"]["default"][split]["translations_file"] == str(translations)

  os.remove(path)
  assert (
    pathlib.Path(
      comparisons.compare(experiment_config, str(tmp_path), name="tiny", command="test")
    ).read_text()
    == report
  )

  # A run brought back without its checkpoints: the attention maps cannot be drawn, which is
  # said before anything runs; without them the report is written from the results alone.
  shutil.rmtree(tmp_path / "weighted" / "seed0" / "checkpoints")
  with pytest.raises(
    ValueError, match="weighted/seed0 has a result but no checkpoint.*--noattention_maps"
  ):
    comparisons.compare(experiment_config, str(tmp_path), name="tiny", command="test")
  without_maps = comparisons.compare(
    experiment_config, str(tmp_path), name="tiny", command="test", attention_maps=False
  )
  assert "attention_Weighted_Transformer.png" not in pathlib.Path(without_maps).read_text()


@pytest.mark.slow
def test_ablate_test_time_branch_weights_trains_once_and_tables_every_point(
  experiment_config, tmp_path, monkeypatch
):
  path = comparisons.ablate(
    experiment_config,
    "test_branch_weights",
    str(tmp_path),
    name="tiny",
    command="test",
    attention_maps=False,
  )
  text = pathlib.Path(path).read_text()
  rows = table_rows(text)
  labels = [f"test_branch_weights={m}" for m in ("learned", "uniform", "random")]
  assert all(label in rows for label in labels)
  # No baselines in this sweep: every point is tested against the first.
  assert [name for name in rows if name.endswith(" − test_branch_weights=learned")] == [
    f"{label} − test_branch_weights=learned" for label in labels[1:]
  ]
  assert len([d for d in tmp_path.iterdir() if d.is_dir()]) == 1  # one trained model
  result = json.loads(next(tmp_path.glob("*/seed0/result.json")).read_text())
  bleu = {label: result["evaluations"][label]["test"]["bleu"] for label in labels}
  # The main table's BLEU of each point is its own evaluation of the one model.
  main_table = {
    line.split("|")[1].strip(): line.split("|")[2].strip()
    for line in reversed(text.splitlines())
    if line.startswith("| test_branch")
  }
  assert {label: main_table[label] for label in labels} == {
    label: f"{b:.2f}" for label, b in bleu.items()
  }
  forbid_training(monkeypatch)
  comparisons.ablate(
    experiment_config,
    "test_branch_weights",
    str(tmp_path),
    name="tiny",
    command="test",
    attention_maps=False,
  )


def test_ablate_shares_jobs_between_points_of_the_same_config_and_names_both_baselines(
  experiment_config, tmp_path, monkeypatch
):
  captured = {}

  def run_jobs(runs, **kwargs):
    captured["runs"] = runs
    return [{"job": job.name} for job in runs]

  def sweep_report(rows, outdir, **kwargs):
    captured.update(rows=rows, **kwargs)
    return "report.md"

  monkeypatch.setattr(jobs, "run_jobs", run_jobs)
  monkeypatch.setattr(report_module, "sweep_report", sweep_report)
  (tmp_path / "attention-weighted_branch_residual-block").mkdir()  # an older study's runs
  comparisons.ablate(
    experiment_config, "branch_residual", str(tmp_path), name="tiny", command="test"
  )
  assert [job.name for job in captured["runs"]] == [
    "attention-multihead/seed0",
    "attention-weighted_branch_residual-block/seed0",
    "attention-weighted_branch_residual-ffn/seed0",
    "attention-weighted_branch_residual-sublayers/seed0",
  ]
  assert [job.config.model.branch_residual for job in captured["runs"]] == [
    "block",
    "block",
    "ffn",
    "sublayers",
  ]
  assert captured["runs"][0].config.model.attention == "multihead"
  rows = {label: (results, evaluation) for label, results, evaluation in captured["rows"]}
  assert list(rows)[:2] == list(sweeps.BASELINES) == ["transformer", "weighted (today's)"]
  assert (
    rows["weighted (today's)"]
    == rows["branch_residual=block"]
    == ([{"job": "attention-weighted_branch_residual-block/seed0"}], "default")
  )
  assert captured["baselines"] == sweeps.BASELINES
  assert list(captured["test_sets"]) == list(experiment_config.compare.splits)


@pytest.mark.slow
def test_sigterm_during_interleaved_runs_saves_every_run_where_it_is(
  experiment_config, tmp_path, monkeypatch, sigterm_when
):
  experiment_config.train.update(num_steps=20, checkpoint_every=20, log_every=5, eval_every=20)
  runs = [
    jobs.Job(f"run{k}", experiment_config, str(tmp_path / f"run{k}"), {"default": {}})
    for k in (0, 1)
  ]
  sigterm_when(lambda trainer, step: trainer.workdir.endswith("run1") and step == 7)
  with pytest.raises(preemption.Preempted):  # turns of 5 steps: run0 reached 10, run1 7
    jobs.run_jobs(runs, interleave_steps=5)
  steps = lambda k: checkpoint.Checkpointer(str(tmp_path / f"run{k}" / "checkpoints")).steps()
  assert (steps(0), steps(1)) == ([10], [7])
  assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
  monkeypatch.undo()
  results = jobs.run_jobs(runs, interleave_steps=5)  # resumes both to the end
  assert [r["step"] for r in results] == [20, 20]


def test_a_later_study_reads_the_baselines_of_an_earlier_one_from_a_shared_runs_dir(
  experiment_config, tmp_path, monkeypatch
):
  captured = {}
  monkeypatch.setattr(jobs, "run_jobs", lambda runs, **kwargs: captured.setdefault("runs", runs))
  monkeypatch.setattr(
    report_module, "sweep_report", lambda rows, outdir, **kwargs: os.path.join(outdir, "r.md")
  )
  for folder in ("attention-multihead", "attention-weighted"):  # the earlier study's baselines
    (tmp_path / "runs" / folder).mkdir(parents=True)
  path = comparisons.ablate(
    experiment_config,
    "branch_ffn",
    str(tmp_path / "study"),
    name="tiny",
    command="test",
    runs_dir=str(tmp_path / "runs"),
  )
  assert path == str(tmp_path / "study" / "r.md")
  assert {job.workdir: job.config.model.branch_ffn for job in captured["runs"]} == {
    str(tmp_path / "runs" / "attention-multihead" / "seed0"): "split",
    str(tmp_path / "runs" / "attention-weighted" / "seed0"): "split",  # also branch_ffn=split
    str(tmp_path / "runs" / "attention-weighted_branch_ffn-shared" / "seed0"): "shared",
    str(tmp_path / "runs" / "attention-weighted_branch_ffn-full" / "seed0"): "full",
  }


@pytest.mark.parametrize(
  "sweep",
  [
    "num_branches",
    "branch_ffn",
    "branched_decoder",
    "branch_residual",
    "branch_output_bias",
    "scale",
    "softmax_at_8_branches",
  ],
)
def test_studies_of_the_weighted_transformer_start_with_both_baselines(sweep):
  points = sweeps.SWEEPS[sweep]
  assert points[:2] == [sweeps.TRANSFORMER, sweeps.WEIGHTED_REFERENCE]
  assert sweeps.TRANSFORMER.train == {"model.attention": "multihead"}
  assert all(p.train["model.attention"] == "weighted" for p in points[1:])
  assert len({p.label for p in points}) == len(points)


def test_softmax_at_8_branches_reads_back_the_num_branches_runs_of_8():
  """The same overrides, so the same job folder under a shared --runs_dir: nothing retrains."""
  (eight,) = [p for p in sweeps.SWEEPS["num_branches"] if p.label == "num_branches=8"]
  projection, softmax = sweeps.SWEEPS["softmax_at_8_branches"][2:]
  assert projection.train == eight.train
  assert comparisons._slug(projection.train) == "attention-weighted_num_branches-8"
  assert softmax.train == {**eight.train, "model.branch_weights": "softmax"}


@pytest.mark.slow
def test_evaluate_and_translate_commands(experiment_config, tmp_path):
  workdir = tmp_path / "run"
  experiment_config.model.attention = "weighted"
  train.train_and_evaluate(experiment_config, str(workdir))
  env = {**os.environ, "PYTHONPATH": str(REPO)}
  evaluated = subprocess.run(
    [
      sys.executable,
      "-m",
      "experiments.evaluate",
      "--workdir",
      str(workdir),
      "--split",
      "test",
      "--average_last",
      "2",
      "--test_branch_weights",
      "uniform",
    ],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert evaluated.returncode == 0, evaluated.stderr[-3000:]
  assert "BLEU" in evaluated.stdout and "nrefs:1|case:mixed" in evaluated.stdout
  assert "sentences/s" in evaluated.stdout and "length ratio" in evaluated.stdout
  # Quiet by default: no INFO screen (absl's "I<month><day> ..." lines: TFDS, XLA backends).
  assert not re.search(r"^I\d{4} ", evaluated.stderr, re.MULTILINE), evaluated.stderr[-3000:]
  outputs = sorted((workdir / "eval").iterdir())
  assert [p.name for p in outputs] == [
    "test.avg2.beam2.uniform.json",
    "test.avg2.beam2.uniform.txt",
  ]
  assert len(outputs[1].read_text().splitlines()) == 25

  sentences = "A man runs.\nTwo dogs play in the park with a red ball.\n\nA child.\n"
  translated = subprocess.run(
    [sys.executable, "-m", "experiments.translate", "--workdir", str(workdir)],
    input=sentences,
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert translated.returncode == 0, translated.stderr[-3000:]
  assert len(translated.stdout.splitlines()) == 4
