"""BLEU of a trained run: `python -m experiments.evaluate --workdir DIR --split test`.

Decodes the split with beam search (the run's decode config unless overridden), scores the
detokenized output with sacreBLEU against the raw references, prints BLEU with its signature,
chrF and the decoding speed, and writes into DIR/eval/:
  <split>.<tag>.txt    the translations, one per line, in the split's order
  <split>.<tag>.json   the scores, signatures and speed
Options: --average_last N (the papers' checkpoint averaging), --test_branch_weights
learned|uniform|random (kappa/alpha replaced at test time, the Weighted Transformer's Table 3)
and --eval_batch_size N (sentences per decoding batch: speed only).
The length ratio (hypothesis / reference tokens, sacreBLEU's) is printed and saved with the
scores. --baseline_translations FILE (another system's translations of the same split, e.g.
another run's eval/<split>.<tag>.txt) adds sacreBLEU's paired bootstrap and approximate
randomization tests of this run against it, with the 95% interval of the BLEU difference.
Multi30k's test sets: test (test2016), test2017_flickr, test2017_mscoco, test2018_flickr (the
one nothing is tuned on).
Only warnings are logged (stderr) unless --verbosity is given (`--verbosity=0` or `-v 1` brings
back INFO logs).
"""

import dataclasses
import json
import os

from absl import app, flags

from experiments import common, significance

# isort: split
# After experiments.common: jax's import sets TF_CPP_MIN_LOG_LEVEL=1 unless it is already set.
import jax

from wt import evaluation

_decode_config = common.define_trained_run_flags()
_SPLIT = flags.DEFINE_string("split", "test", "split to translate (e.g. validation, test)")
_BRANCH = flags.DEFINE_enum(
  "test_branch_weights",
  "learned",
  ["learned", "uniform", "random"],
  "kappa/alpha at test time (weighted models)",
)
_EVAL_BATCH = flags.DEFINE_integer(
  "eval_batch_size",
  None,
  "sentences per decoding batch (default: the run's data.eval_batch_size; 0: 16 on CPU, 64 on "
  "accelerators); the translations do not depend on it, the speed does",
)
_BASELINE = flags.DEFINE_string(
  "baseline_translations",
  None,
  "translations of the same split by another system: paired "
  "significance tests of this run against them",
)
FLAGS = flags.FLAGS


def main(argv):
  del argv
  common.start(None, quiet=True)
  workdir = FLAGS.workdir
  trained = evaluation.load_trained(
    workdir,
    average_last=FLAGS.average_last,
    eval_batch_size=_EVAL_BATCH.value,
    test_branch_weights=_BRANCH.value,
  )
  average = FLAGS.average_last or trained.config.decode.average_last
  decode_config = _decode_config(trained)
  result = evaluation.evaluate_split(
    trained.model, trained.params, trained.data, _SPLIT.value, decode_config
  )
  if jax.process_index() != 0:  # every process decoded its share; one writes and prints
    return
  tag = f"avg{average}.beam{decode_config.beam_size}.{_BRANCH.value}"
  outdir = os.path.join(workdir, "eval")
  os.makedirs(outdir, exist_ok=True)
  references = trained.data.raw_split(_SPLIT.value)[1]
  result["length_ratio"] = significance.length_ratio(result["translations"], references)
  if _BASELINE.value:
    with open(_BASELINE.value, encoding="utf-8") as f:
      baseline = f.read().split("\n")[:-1]
    paired = significance.paired_test(baseline, result["translations"], references)
    result["paired_test"] = {"baseline_translations": _BASELINE.value, **dataclasses.asdict(paired)}
  with open(os.path.join(outdir, f"{_SPLIT.value}.{tag}.txt"), "w", encoding="utf-8") as f:
    f.writelines(line + "\n" for line in result.pop("translations"))
  result.pop("sources")
  with open(os.path.join(outdir, f"{_SPLIT.value}.{tag}.json"), "w", encoding="utf-8") as f:
    json.dump(result, f, indent=2)
  print(result["bleu_text"])
  print(f"chrF {result['chrf']:.2f}  ({result['chrf_signature']})")
  print(f"length ratio {result['length_ratio']:.3f} (hypothesis / reference tokens)")
  if _BASELINE.value:
    print(
      f"against {_BASELINE.value}: BLEU {paired.system_bleu:.2f} - "
      f"{paired.baseline_bleu:.2f} = {paired.difference:+.2f}, 95% interval "
      f"[{paired.ci_low:+.2f}, {paired.ci_high:+.2f}], p {paired.p_bootstrap:.4f} (paired "
      f"bootstrap), p {paired.p_randomization:.4f} (approximate randomization): "
      f"{'' if paired.significant else 'not '}significant at {significance.LEVEL} "
      f"({paired.signature})"
    )
  print(
    f"{result['sentences']} sentences in {result['seconds']:.1f} s: "
    f"{result['sentences_per_second']:.1f} sentences/s (beam {result['beam_size']}, "
    f"batches of {result['batch_sentences']}; compile {result['compile_seconds']:.1f} s)"
  )
  print(f"written to {outdir}")


if __name__ == "__main__":
  app.run(main)
