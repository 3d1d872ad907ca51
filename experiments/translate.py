"""Translates text with a trained run: `python -m experiments.translate --workdir DIR`.

Reads sentences (one per line) from --input or stdin and writes the translations, in the same
order, to --output or stdout. Beam size and length penalty default to the run's decode config.
"""

import sys

from absl import app, flags

from experiments import common

_WORKDIR = flags.DEFINE_string("workdir", None, "a training run's workdir")
_INPUT = flags.DEFINE_string("input", None, "file of source sentences (default: stdin)")
_OUTPUT = flags.DEFINE_string("output", None, "file for the translations (default: stdout)")
_AVERAGE = flags.DEFINE_integer("average_last", None, "average the last n checkpoints "
                                "(default: the run's decode.average_last)")
_BEAM = flags.DEFINE_integer("beam_size", None, "beam size (1 = greedy)")
_PENALTY = flags.DEFINE_float("length_penalty", None, "GNMT length penalty alpha")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  del argv
  common.start(None)
  from wt import evaluation  # pylint: disable=g-import-not-at-top
  trained = evaluation.load_trained(_WORKDIR.value, average_last=_AVERAGE.value)
  decode = trained.config.decode
  if _INPUT.value:
    with open(_INPUT.value, encoding="utf-8") as f:
      sentences = [line.rstrip("\n") for line in f]
  else:
    sentences = [line.rstrip("\n") for line in sys.stdin]
  translations, timing = evaluation.translate_sentences(
      trained.model, trained.params, trained.data.tokenizer, sentences,
      beam_size=_BEAM.value or decode.beam_size,
      length_penalty=decode.length_penalty if _PENALTY.value is None else _PENALTY.value,
      max_extra_len=decode.max_extra_len)
  text = "".join(t + "\n" for t in translations)
  if _OUTPUT.value:
    with open(_OUTPUT.value, "w", encoding="utf-8") as f:
      f.write(text)
  else:
    sys.stdout.write(text)
  print(f"{timing['sentences']} sentences, {timing['sentences_per_second']:.1f} sentences/s",
        file=sys.stderr)


if __name__ == "__main__":
  app.run(main)
