"""experiments/paired.py: two systems' runs, found where they are now, paired by seed and
tested with sacreBLEU's own paired tests."""

import json

import pytest
import sacrebleu
from sacrebleu.metrics import BLEU
from sacrebleu.significance import PairedTest

# params beside paired: two commands with a --write flag, neither defined on import.
from experiments import paired, params, significance  # noqa: F401
from tests.synthetic_corpus import parallel_corpus

REFERENCES = parallel_corpus(120, seed=11)["de"]


def _worse(sentences, every):
  """Every `every`-th sentence loses its last word: a system that is worse as `every` falls."""
  return [" ".join(s.split()[:-1]) or s if i % every == 0 else s for i, s in enumerate(sentences)]


def _write_run(folder, seed, translations, loss=2.0):
  """A finished run as experiments/jobs.py leaves it, but moved: its result.json names the
  workdir and translation file where it was trained, not where it is."""
  workdir = folder / f"seed{seed}"
  workdir.mkdir(parents=True)
  (workdir / "translations.test.default.txt").write_text(
    "".join(line + "\n" for line in translations), encoding="utf-8"
  )
  trained_at = f"runs/elsewhere/seed{seed}"
  result = {
    "seed": seed,
    "best_eval_loss": loss,
    "workdir": trained_at,
    "evaluations": {
      "default": {"test": {"translations_file": f"{trained_at}/translations.test.default.txt"}}
    },
  }
  (workdir / "result.json").write_text(json.dumps(result), encoding="utf-8")


def test_runs_are_paired_by_seed_and_tested_as_sacrebleu_does(tmp_path):
  base, system = tmp_path / "base", tmp_path / "system"
  for seed in (0, 1):
    _write_run(base, seed, _worse(REFERENCES, 2 + seed), loss=2.0 + seed)
  for seed in (1, 2):  # seed 2 has no baseline run
    _write_run(system, seed, _worse(REFERENCES, 7), loss=1.75 + seed)
  text = paired.paired_markdown(
    ("two", paired.load_runs(str(base)), "default"),
    ("seven", paired.load_runs(str(system)), "default"),
    {"test": (REFERENCES, REFERENCES)},
  )
  row = next(line for line in text.splitlines() if line.startswith("| seven − two | test2016"))
  assert "seed 1:" in row and "seed 0" not in row and "seed 2" not in row
  baseline_hyps, system_hyps = _worse(REFERENCES, 3), _worse(REFERENCES, 7)
  bootstrap, randomization = (
    PairedTest(
      [("baseline", baseline_hyps), ("system", system_hyps)],
      {"BLEU": BLEU()},
      [REFERENCES],
      test_type=test_type,
      n_samples=samples,
    )()[1]["BLEU"]
    for test_type, samples in (
      ("bs", significance.BOOTSTRAP_SAMPLES),
      ("ar", significance.RANDOMIZATION_TRIALS),
    )
  )
  difference = (
    sacrebleu.corpus_bleu(system_hyps, [REFERENCES]).score
    - sacrebleu.corpus_bleu(baseline_hyps, [REFERENCES]).score
  )
  assert bootstrap[1].score - bootstrap[0].score == pytest.approx(difference)
  p_values = float(bootstrap[1].p_value), float(randomization[1].p_value)
  assert f"seed 1: {difference:+.2f} [" in row
  assert f"p {significance._p(p_values[0])} / {significance._p(p_values[1])} |" in row
  assert f"| {int(max(p_values) < significance.LEVEL)} of 1 |" in row
  assert "Best validation loss, seven − two: -0.250 (seeds 1)." in text
  assert "- test2016: seven is" in text and "ahead of two (seed 1)" in text


def test_folders_without_runs_or_common_seeds_are_refused(tmp_path):
  with pytest.raises(ValueError, match="holds no seed<k>/result.json"):
    paired.load_runs(str(tmp_path))
  _write_run(tmp_path / "a", 0, REFERENCES)
  _write_run(tmp_path / "b", 1, REFERENCES)
  with pytest.raises(ValueError, match="b and a share no seed"):
    paired.paired_markdown(
      ("a", paired.load_runs(str(tmp_path / "a")), "default"),
      ("b", paired.load_runs(str(tmp_path / "b")), "default"),
      {"test": (REFERENCES, REFERENCES)},
    )
