"""Is a BLEU difference real? Paired tests on the test sentences, and a test over seeds.

  corpus_scores   BLEU, chrF and the length ratio (sacreBLEU's sys_len / ref_len) of a system
  paired_test     one seed of two systems on the same sentences, with sacreBLEU's own
                  `PairedTest`: paired bootstrap resampling (1,000 resamples) and approximate
                  randomization (10,000 trials), each with its p-value; and the 95% confidence
                  interval of the BLEU difference (system - baseline)
  seed_test       the per-seed differences of two systems over seeds: mean, sd and a paired
                  t-test (scipy), which asks whether the difference survives a change of seed
  compare_runs    both, for the runs of two systems matched by seed, on one split

The confidence interval of the difference: sacreBLEU's paired bootstrap scores both systems
on the same resampled sentence sets but reports only each system's own interval. The interval
of the difference is read from those same resamples: the same seeded index draw as
`sacrebleu.significance._paired_bs_test`, the systems' sufficient statistics from the metric
itself, the same order statistics as `sacrebleu.significance.estimate_ci` (the 25th and 976th
of 1,000 sorted differences). tests/test_significance.py checks that the per-system means and
intervals of these resamples are sacreBLEU's, so they are its resamples.

A difference is called significant at 0.05 for a seed when both tests give p < 0.05; over
seeds, when the paired t-test does (it needs two seeds or more). A difference of exactly zero
(identical translations) is never significant: sacreBLEU then gives p = 1/(n+1), as it counts
only resampled differences strictly above the observed one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Optional, Sequence

import numpy as np
import sacrebleu
from sacrebleu.metrics import BLEU, CHRF
from sacrebleu.significance import PairedTest
from scipy.stats import ttest_rel

LEVEL = 0.05
BOOTSTRAP_SAMPLES = 1000
RANDOMIZATION_TRIALS = 10000
SPLIT_NAMES = {
  "test": "test2016",
  "test2017_flickr": "test2017 flickr",
  "test2017_mscoco": "test2017 mscoco",
  "test2018_flickr": "test2018 flickr",
}
UNTUNED_SPLIT = "test2018_flickr"


def split_name(split: str) -> str:
  """The report's name of a split: 'test' is Multi30k's test2016."""
  return SPLIT_NAMES.get(split, split)


def corpus_scores(hypotheses: Sequence[str], references: Sequence[str]) -> dict:
  """BLEU, chrF, hypothesis and reference lengths (BLEU's tokens) and their ratio."""
  if len(hypotheses) != len(references):
    raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references")
  bleu = BLEU().corpus_score(list(hypotheses), [list(references)])
  chrf = CHRF().corpus_score(list(hypotheses), [list(references)])
  return {
    "bleu": bleu.score,
    "chrf": chrf.score,
    "sys_len": bleu.sys_len,
    "ref_len": bleu.ref_len,
    "length_ratio": bleu.sys_len / max(bleu.ref_len, 1),
  }


def length_ratio(hypotheses: Sequence[str], references: Sequence[str]) -> float:
  """Hypothesis length over reference length in BLEU's tokens (sacreBLEU's sys_len / ref_len;
  below 1 is where BLEU's brevity penalty applies)."""
  bleu = BLEU().corpus_score(list(hypotheses), [list(references)])
  return bleu.sys_len / max(bleu.ref_len, 1)


def sacrebleu_seed() -> Optional[int]:
  """The seed sacreBLEU's paired tests use (env SACREBLEU_SEED, default 12345)."""
  seed = os.environ.get("SACREBLEU_SEED", "12345")
  return None if seed.lower() == "none" else int(seed)


@dataclasses.dataclass(frozen=True)
class PairedResult:
  """One seed: BLEU of both systems, their difference and its tests on the sentences."""

  baseline_bleu: float
  system_bleu: float
  difference: float  # system - baseline
  ci_low: float  # 95% interval of the difference (paired bootstrap)
  ci_high: float
  p_bootstrap: float  # sacreBLEU paired bootstrap resampling
  p_randomization: float  # sacreBLEU approximate randomization
  sentences: int
  signature: str  # sacreBLEU's BLEU signature with the tests' seed and sizes

  @property
  def significant(self) -> bool:
    return self.difference != 0 and self.p_bootstrap < LEVEL and self.p_randomization < LEVEL

  @property
  def tests_disagree(self) -> bool:
    return self.difference != 0 and (self.p_bootstrap < LEVEL) != (self.p_randomization < LEVEL)


def _bootstrap_difference_interval(
  baseline: Sequence[str], system: Sequence[str], references: Sequence[str], samples: int
):
  """(per-system resampled BLEU, 95% interval of the difference) from sacreBLEU's resamples."""
  # pylint: disable=protected-access  (sacreBLEU's own statistics and scoring of a resample)
  metric = BLEU()
  stats = [
    np.array(metric._extract_corpus_statistics(list(hyps), [list(references)]), dtype="float32")
    for hyps in (baseline, system)
  ]
  seed = sacrebleu_seed()
  # PairedTest passes its seed on only when it is truthy; the draw is then _paired_bs_test's.
  rng = np.random.default_rng(seed if seed else None)
  indices = rng.choice(len(references), size=(samples, len(references)), replace=True)
  resampled = [
    np.array([metric._compute_score_from_stats(s.sum(0)).score for s in system_stats[indices]])
    for system_stats in stats
  ]
  differences = np.sort(resampled[1] - resampled[0])
  lower = samples // 40  # sacrebleu.significance.estimate_ci's order statistics
  return resampled, (float(differences[lower]), float(differences[samples - lower - 1]))


def paired_test(
  baseline: Sequence[str],
  system: Sequence[str],
  references: Sequence[str],
  *,
  bootstrap_samples: int = BOOTSTRAP_SAMPLES,
  randomization_trials: int = RANDOMIZATION_TRIALS,
) -> PairedResult:
  """sacreBLEU's paired bootstrap and approximate randomization tests of `system` against
  `baseline` (translations of the same `references`, line by line), BLEU."""
  if not len(baseline) == len(system) == len(references):
    raise ValueError(
      f"paired tests need one line per reference: {len(baseline)} baseline and "
      f"{len(system)} system lines for {len(references)} references"
    )
  named: list[tuple[str, Sequence[str]]] = [("baseline", list(baseline)), ("system", list(system))]
  refs = [list(references)]
  signatures, bootstrap = PairedTest(
    named, {"BLEU": BLEU()}, refs, test_type="bs", n_samples=bootstrap_samples
  )()
  _, randomization = PairedTest(
    named, {"BLEU": BLEU()}, refs, test_type="ar", n_samples=randomization_trials
  )()
  base, sys_ = bootstrap["BLEU"]
  _, (low, high) = _bootstrap_difference_interval(baseline, system, references, bootstrap_samples)
  return PairedResult(
    baseline_bleu=base.score,
    system_bleu=sys_.score,
    difference=sys_.score - base.score,
    ci_low=low,
    ci_high=high,
    p_bootstrap=float(sys_.p_value),
    p_randomization=float(randomization["BLEU"][1].p_value),
    sentences=len(references),
    signature=f"{signatures['BLEU']}|ar:{randomization_trials}",
  )


@dataclasses.dataclass(frozen=True)
class SeedTest:
  """The per-seed differences over seeds: mean, sample sd, paired t-test p (None: 1 seed)."""

  differences: tuple[float, ...]
  mean: float
  sd: Optional[float]
  p_value: Optional[float]

  @property
  def significant(self) -> bool:
    return self.p_value is not None and self.p_value < LEVEL


def seed_test(baseline_scores: Sequence[float], system_scores: Sequence[float]) -> SeedTest:
  """A paired t-test over seeds (scipy.stats.ttest_rel) of scores matched by seed."""
  baseline_scores, system_scores = np.asarray(baseline_scores), np.asarray(system_scores)
  differences = system_scores - baseline_scores
  if len(differences) < 2:
    return SeedTest(tuple(differences.tolist()), float(differences.mean()), None, None)
  if np.std(differences) <= 1e-12 * max(1.0, float(np.abs(differences).max())):
    # Every seed gave the same difference: no spread to test against (scipy would warn of
    # catastrophic cancellation, or return NaN).
    p_value = 1.0 if np.all(differences == 0) else 0.0
  else:
    p_value = float(ttest_rel(system_scores, baseline_scores).pvalue)
  return SeedTest(
    tuple(differences.tolist()),
    float(differences.mean()),
    float(np.std(differences, ddof=1)),
    p_value,
  )


def loss_test(baseline_results: Sequence[dict], system_results: Sequence[dict]) -> SeedTest:
  """`seed_test` of the best validation loss, over the seeds both systems' runs have."""
  base_by_seed = {r["seed"]: r for r in baseline_results}
  paired = [r for r in system_results if r["seed"] in base_by_seed]
  return seed_test(
    [base_by_seed[r["seed"]]["best_eval_loss"] for r in paired],
    [r["best_eval_loss"] for r in paired],
  )


@dataclasses.dataclass(frozen=True)
class Comparison:
  """System against baseline on one split: one paired test per common seed, and over seeds."""

  baseline: str
  system: str
  split: str
  seeds: tuple[int, ...]
  per_seed: tuple[PairedResult, ...]
  over_seeds: SeedTest


def read_translations(result: dict, split: str, evaluation: str = "default") -> list[str]:
  """The translations a job wrote for `split` and `evaluation` (see experiments/jobs.py)."""
  path = result["evaluations"][evaluation][split]["translations_file"]
  if not os.path.isabs(path) and not os.path.exists(path):
    path = os.path.join(result["workdir"], os.path.basename(path))
  with open(path, encoding="utf-8") as f:
    return f.read().split("\n")[:-1]


def _cache_key(baseline: Sequence[str], system: Sequence[str], references: Sequence[str]) -> str:
  digest = hashlib.sha256()
  for lines in (baseline, system, references):
    digest.update("\n".join(lines).encode())
    digest.update(b"\0")
  digest.update(
    f"{BOOTSTRAP_SAMPLES}|{RANDOMIZATION_TRIALS}|{sacrebleu_seed()}|"
    f"{sacrebleu.__version__}".encode()
  )
  return digest.hexdigest()


def compare_runs(
  baseline: tuple[str, list[dict], str],
  system: tuple[str, list[dict], str],
  split: str,
  references: Sequence[str],
  *,
  cache: Optional[dict] = None,
) -> Comparison:
  """Tests `system` against `baseline`, each (label, results over seeds, evaluation name), on
  `split`: seeds present in both are paired. `cache` ({key: PairedResult fields}, e.g. read
  from JSON) keeps paired tests of the same translations across report rebuilds."""
  (base_label, base_results, base_eval), (sys_label, sys_results, sys_eval) = baseline, system
  cache = {} if cache is None else cache
  base_by_seed = {r["seed"]: r for r in base_results}
  seeds = tuple(r["seed"] for r in sys_results if r["seed"] in base_by_seed)
  per_seed = []
  for seed in seeds:
    system_result = next(r for r in sys_results if r["seed"] == seed)
    base_hyps = read_translations(base_by_seed[seed], split, base_eval)
    sys_hyps = read_translations(system_result, split, sys_eval)
    key = _cache_key(base_hyps, sys_hyps, references)
    if key not in cache:
      cache[key] = dataclasses.asdict(paired_test(base_hyps, sys_hyps, references))
    per_seed.append(PairedResult(**cache[key]))
  over_seeds = seed_test([p.baseline_bleu for p in per_seed], [p.system_bleu for p in per_seed])
  return Comparison(base_label, sys_label, split, seeds, tuple(per_seed), over_seeds)


def _p(value: float) -> str:
  return "< 0.001" if value < 0.001 else f"{value:.3f}"


def table(comparisons: Sequence[Comparison]) -> list[str]:
  """Markdown rows: one per (comparison, split), the seeds side by side."""
  lines = [
    "| system − baseline | split | Δ BLEU per seed: Δ [95% CI], p bootstrap / p AR "
    "| significant seeds | Δ BLEU over seeds (mean ± sd) | paired t-test over seeds |",
    "|---|---|---|---|---|---|",
  ]
  for c in comparisons:
    cells = "; ".join(
      f"seed {seed}: no difference (equal BLEU)"
      if p.difference == 0
      else f"seed {seed}: {p.difference:+.2f} [{p.ci_low:+.2f}, {p.ci_high:+.2f}], "
      f"p {_p(p.p_bootstrap)} / {_p(p.p_randomization)}"
      for seed, p in zip(c.seeds, c.per_seed)
    )
    significant = sum(p.significant for p in c.per_seed)
    spread = "" if c.over_seeds.sd is None else f" ± {c.over_seeds.sd:.2f}"
    t_test = (
      "– (1 seed)"
      if c.over_seeds.p_value is None
      else f"p {_p(c.over_seeds.p_value)}{' (significant)' if c.over_seeds.significant else ''}"
    )
    lines.append(
      f"| {c.system} − {c.baseline} | {split_name(c.split)} | {cells or '–'} | "
      f"{significant} of {len(c.per_seed)} | {c.over_seeds.mean:+.2f}{spread} | "
      f"{t_test} |"
    )
  return lines


def _seed_list(seeds: Sequence[int]) -> str:
  return ", ".join(str(s) for s in seeds)


def describe(c: Comparison) -> str:
  """One sentence in words: which way, by how much, significant for which seeds, over seeds."""
  n = len(c.per_seed)
  if n == 0:
    return f"{split_name(c.split)}: {c.system} and {c.baseline} share no seed; nothing was tested."
  direction = "ahead of" if c.over_seeds.mean > 0 else "behind"
  mean = f"{abs(c.over_seeds.mean):.2f} BLEU {direction} {c.baseline}"
  if c.over_seeds.mean == 0:
    mean = f"level with {c.baseline}"
  seeds_text = f"seed {c.seeds[0]}" if n == 1 else f"the mean of {n} seeds"
  significant = [s for s, p in zip(c.seeds, c.per_seed) if p.significant]
  not_significant = [s for s, p in zip(c.seeds, c.per_seed) if not p.significant]
  against = [
    s
    for s, p in zip(c.seeds, c.per_seed)
    if p.significant and np.sign(p.difference) != np.sign(c.over_seeds.mean)
  ]
  if not not_significant:
    per_seed = "significant at 0.05 on the test sentences" + (
      " (both tests)" if n == 1 else f" for every seed ({_seed_list(significant)}; both tests)"
    )
  elif not significant:
    per_seed = "not significant at 0.05 on the test sentences for " + (
      "this seed" if n == 1 else f"any seed ({_seed_list(not_significant)})"
    )
  else:
    per_seed = (
      f"significant at 0.05 on the test sentences for seed"
      f"{'s' if len(significant) > 1 else ''} {_seed_list(significant)}, not for "
      f"{_seed_list(not_significant)}"
    )
  disagree = [(s, p) for s, p in zip(c.seeds, c.per_seed) if p.tests_disagree]
  notes = []
  if against:
    notes.append(
      f"seed{'s' if len(against) > 1 else ''} {_seed_list(against)} significantly the other way"
    )
  if disagree:
    notes.append(
      "the two tests disagree for "
      + ", ".join(
        f"seed {s} (bootstrap p {_p(p.p_bootstrap)}, randomization p {_p(p.p_randomization)})"
        for s, p in disagree
      )
    )
  over = ""
  if c.over_seeds.p_value is not None:
    over = (
      "; over seeds the difference is "
      + ("significant" if c.over_seeds.significant else "not significant")
      + f" (paired t-test, p {_p(c.over_seeds.p_value)})"
    )
  extra = f" ({'; '.join(notes)})" if notes else ""
  return f"{split_name(c.split)}: {c.system} is {mean} ({seeds_text}); {per_seed}{extra}{over}."


def untuned_note(splits: Sequence[str]) -> str:
  """The sentence that says which test set nothing is tuned on (empty if it is not reported)."""
  if UNTUNED_SPLIT not in splits:
    return ""
  return (
    f"{split_name(UNTUNED_SPLIT)} is the test set nothing is tuned on: no setting of this "
    f"codebase was chosen by looking at it, so it is the one for final claims (test2016 "
    f"is the split earlier reports used)."
  )


def method_text() -> str:
  """How the tests were made, for the report."""
  return (
    f"Paired tests on the test sentences, one per seed (the runs of both systems with "
    f"the same seed saw the same batches), with sacreBLEU {sacrebleu.__version__}'s "
    f"`PairedTest`: paired bootstrap resampling ({BOOTSTRAP_SAMPLES} resamples) and "
    f"approximate randomization ({RANDOMIZATION_TRIALS} trials), seed "
    f"{sacrebleu_seed()}. Δ is system − baseline BLEU; its 95% interval comes from the "
    f"bootstrap's resamples. A seed's difference is significant at {LEVEL} when both "
    f"tests give p < {LEVEL}. Over seeds: mean ± sample sd of the per-seed differences "
    f"and a paired t-test (two seeds or more; with three seeds it has little power, so "
    f"'not significant' there is weak evidence of no difference)."
  )
