"""Tests of the reports (experiments/report.py, experiments/figures.py) on made-up results:
test-set tables, significance numbers checked against sacreBLEU called directly, words,
figures; and the attention maps against what a model computes."""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sacrebleu
from sacrebleu.metrics import BLEU
from sacrebleu.significance import PairedTest
from scipy import stats as scipy_stats

from experiments import common, figures, report, significance
from experiments import summary as summary_module
from tests.synthetic_corpus import parallel_corpus
from wt import models

PNG_HEADER = b"\x89PNG\r\n\x1a\n"
SPLITS = ("test", "test2018_flickr")


def _drop_words(sentences, rate, seed):
  rng = np.random.default_rng(seed)
  return [" ".join(w for w in s.split() if rng.random() >= rate) or s.split()[0] for s in sentences]


@pytest.fixture(scope="module")
def test_sets():
  return {split: tuple(parallel_corpus(60, seed=10 + i).values()) for i, split in enumerate(SPLITS)}


def make_result(
  folder: pathlib.Path,
  attention: str,
  seed: int,
  rate: float,
  test_sets,
  evaluation: str = "default",
  branches: int = 0,
) -> dict:
  """A job's result as experiments/jobs.py records it, with word-dropped translations."""
  workdir = folder / f"seed{seed}"
  workdir.mkdir(parents=True, exist_ok=True)
  evaluations = {evaluation: {}}
  for i, (split, (_, references)) in enumerate(test_sets.items()):
    hypotheses = _drop_words(references, rate, seed * 10 + i)
    path = workdir / f"translations.{split}.{evaluation}.txt"
    path.write_text("".join(h + "\n" for h in hypotheses), encoding="utf-8")
    evaluations[evaluation][split] = {
      "bleu": sacrebleu.corpus_bleu(hypotheses, [references]).score,
      "chrf": sacrebleu.corpus_chrf(hypotheses, [references]).score,
      "bleu_signature": "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0",
      "sentences_per_second": 100.0,
      "translations_file": str(path),
    }
  if branches:  # kappa/alpha logged as the Trainer does, two branched sublayers
    rng = np.random.default_rng(seed)
    with open(workdir / "metrics.jsonl", "w", encoding="utf-8") as f:
      for step in (10, 20):
        record = {"step": step}
        for vector in ("encoder_layers_0/self_attention", "decoder_layers_0/cross_attention"):
          for kind in ("kappa", "alpha"):
            for b, value in enumerate(rng.dirichlet(np.ones(branches))):
              record[f"branch/{vector}/{kind}/{b}"] = float(value)
        f.write(json.dumps(record) + "\n")
  curve = [
    {"step": 10, "seconds": 1.0, "loss": 3.0 + rate},
    {"step": 20, "seconds": 2.0, "loss": 2.0 + rate},
  ]
  return {
    "name": f"{attention}/seed{seed}",
    "workdir": str(workdir),
    "attention": attention,
    "seed": seed,
    "step": 20,
    "train_seconds": 2.0,
    "train_tokens": 2000,
    "compile_seconds": 0.5,
    "num_params": 1234,
    "tokens_per_second": 1000.0,
    "best_eval_loss": 2.0 + rate,
    "final_eval_loss": 2.0 + rate,
    "eval_curve": curve,
    "evaluations": evaluations,
  }


def table_rows(text: str) -> dict[str, list[list[str]]]:
  """{first cell: [other cells of each row starting with it]} of every Markdown table."""
  rows = {}
  for line in text.splitlines():
    if line.startswith("| ") and not line.startswith("|---"):
      cells = [c.strip() for c in line.strip().strip("|").split("|")]
      rows.setdefault(cells[0], []).append(cells[1:])
  return rows


def _direct_p(test_type, baseline, system, references):
  return PairedTest(
    [("b", baseline), ("s", system)], {"BLEU": BLEU()}, [references], test_type=test_type
  )()[1]["BLEU"][1].p_value


@pytest.mark.slow
def test_compare_report_has_every_test_set_significance_in_numbers_and_words_and_figures(
  tmp_path, test_sets, monkeypatch
):
  results = [
    make_result(tmp_path / "multihead", "multihead", seed, 0.1, test_sets) for seed in (0, 1)
  ]
  results += [
    make_result(tmp_path / "weighted", "weighted", seed, 0.4, test_sets, branches=4)
    for seed in (0, 1)
  ]
  outdir = tmp_path / "report"
  path = report.compare_report(
    results, str(outdir), title="t", command="c", test_sets=test_sets, attention_maps=False
  )
  text = pathlib.Path(path).read_text()
  rows = table_rows(text)
  # Test-set tables: BLEU, chrF, length ratio, one column per split, mean ± sd over seeds.
  assert rows[""][1] == ["test2016", "test2018 flickr"]
  refs = test_sets["test"][1]
  hyps = [significance.read_translations(r, "test") for r in results[2:]]
  bleus = [sacrebleu.corpus_bleu(h, [refs]).score for h in hyps]
  ratios = [
    sacrebleu.corpus_bleu(h, [refs]).sys_len / sacrebleu.corpus_bleu(h, [refs]).ref_len
    for h in hyps
  ]
  weighted_rows = rows["Weighted Transformer"]
  assert weighted_rows[0][0] == f"{np.mean(bleus):.2f} ± {np.std(bleus, ddof=1):.2f}"
  assert weighted_rows[2][0] == f"{np.mean(ratios):.3f} ± {np.std(ratios, ddof=1):.3f}"
  assert len(weighted_rows) == 3 and all(len(r) == 2 for r in weighted_rows)
  assert "test2018 flickr is the test set nothing is tuned on" in text
  assert "Trained on" not in text  # no result names another machine
  # Significance: one row per split, each seed's numbers are sacreBLEU's.
  tested = rows["Weighted Transformer − Transformer"]
  assert [row[0] for row in tested] == ["test2016", "test2018 flickr"]
  base_hyps = significance.read_translations(results[0], "test")
  p_bs, p_ar = (_direct_p(t, base_hyps, hyps[0], refs) for t in ("bs", "ar"))
  difference = bleus[0] - sacrebleu.corpus_bleu(base_hyps, [refs]).score
  assert tested[0][1].startswith(f"seed 0: {difference:+.2f} [")
  assert f"p {significance._p(p_bs)} / {significance._p(p_ar)}; seed 1:" in tested[0][1]
  assert tested[0][2] == "2 of 2"
  assert "In words:" in text and "- **Weighted Transformer against Transformer**" in text
  assert "test2016: Weighted Transformer is" in text and "BLEU behind Transformer" in text
  assert "significant at 0.05 on the test sentences for every seed" in text
  for image in ("validation_loss.png", "branch_weights.png", "final_branch_weights.png"):
    assert (outdir / image).read_bytes()[:8] == PNG_HEADER
    assert f"]({image})" in text
  # A rebuild reads the tests back from the cache and writes the same report.
  monkeypatch.setattr(significance, "paired_test", lambda *a, **k: pytest.fail("recomputed"))
  assert (
    pathlib.Path(
      report.compare_report(
        results, str(outdir), title="t", command="c", test_sets=test_sets, attention_maps=False
      )
    ).read_text()
    == text
  )


def test_sweep_report_tests_every_point_against_both_baselines(tmp_path, test_sets):
  one_split = {"test": test_sets["test"]}
  transformer = [make_result(tmp_path / "t", "multihead", 0, 0.1, one_split)]
  weighted = [make_result(tmp_path / "w", "weighted", 0, 0.3, one_split, branches=4)]
  ffn = [make_result(tmp_path / "f", "weighted", 0, 0.12, one_split, branches=4)]
  # The ffn run trained elsewhere (a lent GPU); the Transformer's here; the rest did not say.
  transformer[0]["machine"] = common.machine_description()
  ffn[0]["machine"] = "1 x NVIDIA H100 80GB HBM3 (gpu)"
  points = [
    ("transformer", transformer, "default"),
    ("weighted (today's)", weighted, "default"),
    ("branch_residual=block", weighted, "default"),  # the same runs as the reference
    ("branch_residual=ffn", ffn, "default"),
  ]
  path = report.sweep_report(
    points,
    str(tmp_path / "report"),
    title="t",
    command="c",
    test_sets=one_split,
    baselines=("transformer", "weighted (today's)"),
    attention_maps=False,
  )
  text = pathlib.Path(path).read_text()
  assert f"Machine: {common.machine_description()}  \n" in text
  assert "Trained on: 1 x NVIDIA H100 80GB HBM3 (gpu) (the step times are its)" in text
  rows = table_rows(text)
  tested = [name for name in rows if " − " in name and name != "system − baseline"]
  assert tested == [
    "weighted (today's) − transformer",
    "branch_residual=block − transformer",
    "branch_residual=ffn − transformer",
    "branch_residual=ffn − weighted (today's)",
  ]
  assert "branch_residual=block is weighted (today's)'s own runs" in text
  refs = one_split["test"][1]
  ffn_hyps = significance.read_translations(ffn[0], "test")
  reference_hyps = significance.read_translations(weighted[0], "test")
  p_bs = _direct_p("bs", reference_hyps, ffn_hyps, refs)
  assert f"p {significance._p(p_bs)} / " in rows["branch_residual=ffn − weighted (today's)"][0][1]
  assert "| 1 of 1 |" in text and "(1 seed)" in text
  written = json.loads((tmp_path / "report" / "summary.json").read_text())
  assert written["reference"] == "transformer" and written["split"] == "test"  # no test2018
  assert [row["system"] for row in written["systems"]] == [label for label, *_ in points[1:]]
  assert (tmp_path / "report" / "final_branch_weights.png").read_bytes()[:8] == PNG_HEADER


def test_final_branch_weights_are_the_last_logged_values(tmp_path, test_sets):
  result = make_result(tmp_path, "weighted", 3, 0.2, test_sets, branches=3)
  step, weights = figures.final_branch_weights(result["workdir"])
  last = json.loads(
    (pathlib.Path(result["workdir"]) / "metrics.jsonl").read_text().splitlines()[-1]
  )
  assert step == 20 and weights["sublayers"] == ["enc 0 self", "dec 0 cross"]
  assert weights["kappa"].shape == (3, 2)
  assert weights["alpha"][2, 0] == last["branch/encoder_layers_0/self_attention/alpha/2"]
  assert weights["kappa"][1, 1] == last["branch/decoder_layers_0/cross_attention/kappa/1"]
  assert np.allclose(weights["kappa"].sum(axis=0), 1.0)
  assert figures.final_branch_weights(str(tmp_path / "nothing")) is None


class _CharTokenizer:
  eos_id = 1

  def encode(self, text):
    return [3 + ord(c) % 40 for c in text] + [self.eos_id]

  def decode(self, ids):
    return "".join(chr(ord("a") + (i - 3) % 26) for i in ids)


@pytest.mark.parametrize("attention", ["multihead", "weighted"])
def test_attention_maps_are_the_weights_the_model_attended_with(attention, tmp_path):
  config = models.ModelConfig(
    vocab_size=48,
    d_model=16,
    d_ff=32,
    num_heads=4,
    num_branches=4,
    num_layers=2,
    max_len=32,
    attention=attention,
    dropout_rate=0.0,
  )
  model = models.Transformer(config)
  params = jax.jit(models.init_params, static_argnums=0)(config, jax.random.PRNGKey(0))
  tokenizer = _CharTokenizer()
  maps = figures.attention_maps(model, params, tokenizer, "a dog runs", "ein hund")
  assert maps["source"] == [tokenizer.decode([i]) for i in tokenizer.encode("a dog runs")[:-1]] + [
    "</s>"
  ]
  assert sorted(maps["maps"]) == [
    "dec 0 cross",
    "dec 0 self",
    "dec 1 cross",
    "dec 1 self",
    "enc 0 self",
    "enc 1 self",
  ]
  # The weights times the values must give what each AttentionHeads returned in the model.
  inputs = jnp.asarray([tokenizer.encode("a dog runs")])
  targets = jnp.asarray([tokenizer.encode("ein hund")])
  keep = lambda module, method: (
    method == "__call__" and (module.scope.path[-1:] in (("heads",), ("value",)))
  )
  _, state = model.apply(
    {"params": params}, inputs, targets, capture_intermediates=keep, mutable=["intermediates"]
  )
  for name, weights in maps["maps"].items():
    side, index, kind = name.split()
    layer = {"enc": "encoder", "dec": "decoder"}[side] + f"_layers_{index}"
    heads = state["intermediates"][layer][f"{kind}_attention"]["heads"]
    value = heads["value"]["__call__"][0][0]
    expected = heads["__call__"][0][0]  # [q, heads, depth]
    assert weights.shape == (4, expected.shape[0], value.shape[0])
    assert np.allclose(weights.sum(-1), 1.0, atol=1e-5)
    assert np.allclose(np.einsum("hqk,khd->qhd", weights, value), expected, atol=1e-5)
    if kind == "self" and side == "dec":
      assert np.all(np.triu(weights, k=1) < 1e-6)  # causal
  path = figures.plot_attention_maps(maps, str(tmp_path / "attention.png"), "t")
  assert pathlib.Path(path).read_bytes()[:8] == PNG_HEADER


def test_study_summary_against_scipy_and_sacrebleu_and_its_table(tmp_path, test_sets):
  transformer = [make_result(tmp_path / "t", "multihead", s, 0.05, test_sets) for s in (0, 1, 2)]
  weighted = [make_result(tmp_path / "w", "weighted", s, 0.25, test_sets) for s in (0, 1, 2)]
  for seed, result in enumerate(weighted):
    result["best_eval_loss"] += 0.01 * seed  # loss gaps 0.20, 0.21, 0.22
    result["train_seconds"] = 2.4  # 1.2 times the Transformer's 2.0 s for 20 steps
  systems = [("transformer", transformer, "default"), ("weighted", weighted, "default")]
  comparisons = report.paired_comparisons([tuple(systems)], test_sets, str(tmp_path))
  summary = summary_module.study_summary(systems, comparisons, "transformer", list(test_sets))
  assert summary["split"] == "test2018_flickr"  # the untuned set, not the headline one
  (row,) = summary["systems"]
  loss_gaps = [w["best_eval_loss"] - t["best_eval_loss"] for t, w in zip(transformer, weighted)]
  assert row["validation_loss_gap"]["mean"] == pytest.approx(np.mean(loss_gaps))
  assert row["validation_loss_gap"]["p"] == pytest.approx(
    scipy_stats.ttest_rel(
      [w["best_eval_loss"] for w in weighted], [t["best_eval_loss"] for t in transformer]
    ).pvalue
  )
  references = test_sets["test2018_flickr"][1]
  bleu = lambda result: (
    sacrebleu.corpus_bleu(
      significance.read_translations(result, "test2018_flickr"), [references]
    ).score
  )
  bleu_gaps = [bleu(w) - bleu(t) for t, w in zip(transformer, weighted)]
  assert row["bleu_gap"]["mean"] == pytest.approx(np.mean(bleu_gaps))
  assert row["bleu_gap"]["sd"] == pytest.approx(np.std(bleu_gaps, ddof=1))
  significant = sum(
    max(
      _direct_p(
        kind, *(significance.read_translations(r, "test2018_flickr") for r in (t, w)), references
      )
      for kind in ("bs", "ar")
    )
    < 0.05
    for t, w in zip(transformer, weighted)
  )
  assert row["seeds_significant"] == significant
  assert row["step_time_ratio"] == pytest.approx(1.2)
  (tmp_path / "study").mkdir()
  summary_module.write(str(tmp_path / "study"), summary)
  (table_row,) = [
    line
    for line in summary_module.results_table(summary_module.collect(str(tmp_path)))
    if line.startswith("| `study`")
  ]
  assert (
    table_row.startswith(
      f"| `study` | weighted | transformer | 3 | +{np.mean(loss_gaps):.3f} ± "
      f"{np.std(loss_gaps, ddof=1):.3f} (p "
    )
    and f"{significant} of 3 | 1.20x |" in table_row
  )
