"""Translates text with a trained run: `python -m experiments.translate --workdir DIR`.

Reads sentences (one per line) from --input or stdin and writes the translations, in the same
order, to --output or stdout. Beam size and length penalty default to the run's decode config.
"""

import sys

from absl import app, flags

from experiments import common

_decode_config = common.define_trained_run_flags()
_INPUT = flags.DEFINE_string("input", None, "file of source sentences (default: stdin)")
_OUTPUT = flags.DEFINE_string("output", None, "file for the translations (default: stdout)")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  common.start(None)
  from wt import evaluation  # pylint: disable=g-import-not-at-top
  trained = evaluation.load_trained(FLAGS.workdir, average_last=FLAGS.average_last)
  decode = _decode_config(trained)
  if _INPUT.value:
    with open(_INPUT.value, encoding="utf-8") as f:
      sentences = [line.rstrip("\n") for line in f]
  else:
    sentences = [line.rstrip("\n") for line in sys.stdin]
  translations, timing = evaluation.translate_sentences(
      trained.model, trained.params, trained.data.tokenizer, sentences,
      beam_size=decode.beam_size, length_penalty=decode.length_penalty,
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
