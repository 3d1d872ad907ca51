"""Translates text with a trained run: `python -m experiments.translate --workdir DIR`.

Reads sentences (one per line) from --input or stdin and writes the translations, in the same
order, to --output or stdout: exactly one output line per input line, whatever the input.
Beam size and length penalty default to the run's decode config.

  empty lines        an empty or whitespace-only line gives an empty line (nothing is decoded)
  long lines         a line of more tokens than the model takes (model.max_len less
                     decode.max_extra_len, the room kept for its translation) is cut to its
                     first tokens and translated; one warning on stderr names the line and its
                     length
  not UTF-8          the input is read as UTF-8; bytes that are not (e.g. Latin-1 `caf\\xe9`)
                     become U+FFFD, the replacement character, and the line is translated so;
                     one warning on stderr names the line and the first bad byte. Convert such
                     input first (`iconv -f latin1 -t utf-8`) for exact translations
  line ends          "\\n" or "\\r\\n"; output is UTF-8 with "\\n"

Only warnings are logged (stderr) unless --verbosity is given (`--verbosity=0` or `-v 1` brings
back INFO logs); the last stderr line gives the count of lines and the decoding speed.
"""

import sys
from typing import BinaryIO

from absl import app, flags, logging

from experiments import common

# isort: split
# After experiments.common: jax's import sets TF_CPP_MIN_LOG_LEVEL=1 unless it is already set.
import jax

from wt import evaluation

_decode_config = common.define_trained_run_flags()
_INPUT = flags.DEFINE_string("input", None, "file of source sentences (default: stdin)")
_OUTPUT = flags.DEFINE_string("output", None, "file for the translations (default: stdout)")
FLAGS = flags.FLAGS


def read_lines(stream: BinaryIO) -> list[str]:
  """The lines of a binary stream as text, without their "\\n" or "\\r\\n".

  Bytes that are not UTF-8 are replaced by U+FFFD, with one warning per such line naming the
  line (from 1) and its first bad byte. A UTF-8 byte-order mark before the first line is
  dropped.
  """
  lines = []
  for number, raw in enumerate(stream, 1):
    raw = raw[:-1] if raw.endswith(b"\n") else raw
    raw = raw[:-1] if raw.endswith(b"\r") else raw
    try:
      line = raw.decode("utf-8")
    except UnicodeDecodeError as error:
      line = raw.decode("utf-8", errors="replace")
      logging.warning(
        "line %d is not valid UTF-8 (byte 0x%02x at byte %d): its undecodable "
        "bytes are replaced by U+FFFD and it is translated so. Convert the input "
        "to UTF-8 (e.g. iconv -f latin1 -t utf-8) to translate it exactly",
        number,
        raw[error.start],
        error.start + 1,
      )
    lines.append(line.removeprefix("\ufeff") if number == 1 else line)
  return lines


def _read_input(path) -> list[str]:
  if not path:
    return read_lines(sys.stdin.buffer)
  try:
    with open(path, "rb") as f:
      return read_lines(f)
  except OSError as error:
    raise SystemExit(
      f"translate: --input={path} cannot be read ({error.strerror}); give a "
      f"readable text file, or leave --input out to read stdin"
    ) from None


def main(argv):
  del argv
  common.start(None, quiet=True)
  sentences = _read_input(_INPUT.value)
  trained = evaluation.load_trained(FLAGS.workdir, average_last=FLAGS.average_last)
  decode = _decode_config(trained)
  translations, timing = evaluation.translate_sentences(
    trained.model,
    trained.params,
    trained.data.tokenizer,
    sentences,
    beam_size=decode.beam_size,
    length_penalty=decode.length_penalty,
    max_extra_len=decode.max_extra_len,
  )
  if jax.process_index() != 0:  # every process decoded its share; one writes
    return
  # A line break inside a translation would shift every later line.
  text = "".join(" ".join(t.splitlines()) + "\n" for t in translations).encode("utf-8")
  if _OUTPUT.value:
    with open(_OUTPUT.value, "wb") as f:
      f.write(text)
  else:
    sys.stdout.flush()
    sys.stdout.buffer.write(text)
    sys.stdout.buffer.flush()
  empty = len(sentences) - timing["sentences"]
  print(
    f"{len(sentences)} lines ({empty} empty): {timing['sentences']} sentences translated, "
    f"{timing['sentences_per_second']:.1f} sentences/s",
    file=sys.stderr,
  )


if __name__ == "__main__":
  app.run(main)
