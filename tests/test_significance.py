"""Tests of experiments/significance.py against sacreBLEU called directly on the same
hypotheses and references, and of the seed test against a t-test worked by hand."""

import json

import numpy as np
import pytest
import sacrebleu
from sacrebleu.metrics import BLEU
from sacrebleu.significance import PairedTest

from experiments import significance
from tests.synthetic_corpus import parallel_corpus

SENTENCES = 150


def _drop_words(sentences, rate, seed):
  """Each word kept with probability 1 - rate: a system that is worse as `rate` grows."""
  rng = np.random.default_rng(seed)
  return [" ".join(w for w in s.split() if rng.random() >= rate) or s.split()[0] for s in sentences]


@pytest.fixture(scope="module")
def systems():
  references = parallel_corpus(SENTENCES, seed=7)["de"]
  return {
    "references": references,
    "good": _drop_words(references, 0.10, 1),
    "bad": _drop_words(references, 0.35, 2),
    "good_again": _drop_words(references, 0.10, 3),
  }


@pytest.fixture(scope="module")
def good_vs_bad(systems):
  return significance.paired_test(systems["good"], systems["bad"], systems["references"])


def _sacrebleu(test_type, baseline, system, references):
  return PairedTest(
    [("baseline", baseline), ("system", system)],
    {"BLEU": BLEU()},
    [references],
    test_type=test_type,
    n_samples=significance.BOOTSTRAP_SAMPLES
    if test_type == "bs"
    else significance.RANDOMIZATION_TRIALS,
  )()[1]["BLEU"]


def test_scores_and_p_values_are_sacrebleus(systems, good_vs_bad):
  refs = systems["references"]
  assert good_vs_bad.baseline_bleu == pytest.approx(
    sacrebleu.corpus_bleu(systems["good"], [refs]).score, abs=1e-9
  )
  assert good_vs_bad.system_bleu == pytest.approx(
    sacrebleu.corpus_bleu(systems["bad"], [refs]).score, abs=1e-9
  )
  assert good_vs_bad.difference == pytest.approx(
    good_vs_bad.system_bleu - good_vs_bad.baseline_bleu
  )
  assert good_vs_bad.difference < -5
  bootstrap = _sacrebleu("bs", systems["good"], systems["bad"], refs)
  randomization = _sacrebleu("ar", systems["good"], systems["bad"], refs)
  assert good_vs_bad.p_bootstrap == bootstrap[1].p_value
  assert good_vs_bad.p_randomization == randomization[1].p_value
  assert good_vs_bad.p_bootstrap < 0.01 and good_vs_bad.p_randomization < 0.01
  assert good_vs_bad.significant and not good_vs_bad.tests_disagree
  assert "bs:1000" in good_vs_bad.signature and "ar:10000" in good_vs_bad.signature
  assert good_vs_bad.sentences == SENTENCES


def test_the_difference_interval_comes_from_sacrebleus_own_resamples(systems, good_vs_bad):
  refs = systems["references"]
  resampled, (low, high) = significance._bootstrap_difference_interval(
    systems["good"], systems["bad"], refs, significance.BOOTSTRAP_SAMPLES
  )
  baseline, system = _sacrebleu("bs", systems["good"], systems["bad"], refs)
  # sacreBLEU reports each system's resampled mean and 95% half-width: ours must be the same.
  for ours, theirs in zip(resampled, (baseline, system)):
    mean, half_width = sacrebleu.significance.estimate_ci(ours)
    assert mean == pytest.approx(theirs.mean, abs=1e-6)
    assert half_width == pytest.approx(theirs.ci, abs=1e-6)
  differences = np.sort(resampled[1] - resampled[0])
  assert (low, high) == (good_vs_bad.ci_low, good_vs_bad.ci_high)
  assert low == differences[25] and high == differences[974]
  assert low <= good_vs_bad.difference <= high < 0


def test_similar_systems_are_not_significant_and_identical_ones_differ_by_nothing(systems):
  refs = systems["references"]
  similar = significance.paired_test(systems["good"], systems["good_again"], refs)
  direct = _sacrebleu("bs", systems["good"], systems["good_again"], refs)[1]
  assert similar.p_bootstrap == direct.p_value
  assert not similar.significant and similar.p_randomization > 0.05
  assert similar.ci_low < 0 < similar.ci_high
  same = significance.paired_test(systems["good"], systems["good"], refs)
  assert same.difference == 0 and same.ci_low == same.ci_high == 0
  # sacreBLEU counts resampled differences strictly above the observed 0: none, p = 1/1001.
  assert same.p_bootstrap == _sacrebleu("bs", systems["good"], systems["good"], refs)[1].p_value
  assert not same.significant and not same.tests_disagree


def test_paired_tests_need_one_hypothesis_per_reference(systems):
  with pytest.raises(ValueError, match="one line per reference"):
    significance.paired_test(systems["good"][:-1], systems["bad"], systems["references"])


def test_seed_test_is_a_paired_t_test():
  # Differences 1, 2, 3: t = mean / (sd / sqrt(n)) = 2 / (1 / sqrt 3) = 3.4641 with 2 degrees
  # of freedom; two-sided p = 1 - x / sqrt(x^2 + 2) at x = t (Student's t CDF for 2 df).
  t = 2 * np.sqrt(3)
  tested = significance.seed_test([30.0, 31.0, 32.0], [31.0, 33.0, 35.0])
  assert tested.mean == pytest.approx(2.0) and tested.sd == pytest.approx(1.0)
  assert tested.p_value == pytest.approx(1 - t / np.sqrt(t * t + 2), rel=1e-9)
  assert tested.p_value > 0.05 and not tested.significant
  assert significance.seed_test([30.0, 31.0, 32.0, 30.5], [33.0, 34.1, 35.0, 33.4]).significant
  single = significance.seed_test([30.0], [31.5])
  assert single.mean == 1.5 and single.sd is None and single.p_value is None
  assert not single.significant
  # The same difference for every seed (no spread): no t-test, and no warning from scipy.
  constant = significance.seed_test([2.1, 2.1], [2.4, 2.4])
  assert constant.p_value == 0.0 and constant.sd == pytest.approx(0.0)
  assert significance.seed_test([30.0, 31.0], [30.0, 31.0]).p_value == 1.0


def test_corpus_scores_and_length_ratio_are_sacrebleus(systems):
  refs, hyps = systems["references"], systems["bad"]
  scores = significance.corpus_scores(hyps, refs)
  bleu = sacrebleu.corpus_bleu(hyps, [refs])
  assert scores["bleu"] == pytest.approx(bleu.score)
  assert scores["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score)
  assert scores["length_ratio"] == pytest.approx(bleu.sys_len / bleu.ref_len)
  assert significance.length_ratio(hyps, refs) == scores["length_ratio"]
  assert 0.55 < scores["length_ratio"] < 0.75  # about a third of the words dropped
  assert significance.length_ratio(refs, refs) == 1.0


def _result(tmp_path, name, seed, translations, split="test"):
  workdir = tmp_path / name / f"seed{seed}"
  workdir.mkdir(parents=True)
  path = workdir / f"translations.{split}.default.txt"
  path.write_text("".join(line + "\n" for line in translations), encoding="utf-8")
  return {
    "seed": seed,
    "workdir": str(workdir),
    "evaluations": {"default": {split: {"translations_file": str(path)}}},
  }


def test_compare_runs_pairs_seeds_reads_translations_and_reuses_its_cache(
  systems, tmp_path, monkeypatch
):
  refs = systems["references"]
  baseline = [_result(tmp_path, "base", seed, systems["good"]) for seed in (0, 1)]
  system = [
    _result(tmp_path, "sys", seed, hyps)
    for seed, hyps in ((1, systems["good_again"]), (0, systems["bad"]), (2, refs))
  ]
  cache = {}
  compared = significance.compare_runs(
    ("base", baseline, "default"), ("sys", system, "default"), "test", refs, cache=cache
  )
  assert compared.seeds == (1, 0)  # seed 2 has no baseline run
  direct = significance.paired_test(systems["good"], systems["bad"], refs)
  assert compared.per_seed[1] == direct
  assert compared.over_seeds.differences == pytest.approx(
    (compared.per_seed[0].difference, direct.difference)
  )
  assert len(cache) == 2
  cache = json.loads(json.dumps(cache))  # as the report keeps it between rebuilds

  def refuse(*args, **kwargs):
    raise AssertionError("a cached paired test was recomputed")

  monkeypatch.setattr(significance, "paired_test", refuse)
  again = significance.compare_runs(
    ("base", baseline, "default"), ("sys", system, "default"), "test", refs, cache=cache
  )
  assert again == compared
  words = significance.describe(compared)
  assert words.startswith("test2016: sys is") and "behind base" in words
  assert "significant at 0.05 on the test sentences for seed 0, not for 1" in words
  assert "over seeds the difference is not significant (paired t-test" in words


def test_words_and_table_say_which_differences_are_significant(systems, tmp_path):
  refs = systems["references"]
  baseline = [_result(tmp_path, "base", 0, systems["good"])]
  system = [_result(tmp_path, "sys", 0, systems["bad"])]
  compared = significance.compare_runs(
    ("Transformer", baseline, "default"), ("Weighted", system, "default"), "test", refs
  )
  words = significance.describe(compared)
  assert words == (
    f"test2016: Weighted is {abs(compared.over_seeds.mean):.2f} BLEU behind "
    f"Transformer (seed 0); significant at 0.05 on the test sentences "
    f"(both tests)."
  )
  header, rule, row = significance.table([compared])
  assert header.count("|") == rule.count("|") == row.count("|") == 7
  assert "Weighted − Transformer | test2016 | seed 0: " in row
  assert "| 1 of 1 |" in row and "– (1 seed)" in row
  assert "test2018 flickr is the test set nothing is tuned on" in significance.untuned_note(
    ["test", "test2018_flickr"]
  )
  assert significance.untuned_note(["test"]) == ""
