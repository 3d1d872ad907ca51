"""The translate command on every input a user can give: over-long, empty and whitespace-only
lines, bytes that are not UTF-8, line ends; one output line per input line, always, and logs
quiet unless --verbosity asks; and the evaluation's batch width, which must not change a
translation. The command runs on a tiny run trained once for the module;
`translate_sentences` is checked on an untrained model with a word-level tokenizer, whose
outputs (unlike a 10-step model's) are never empty by chance."""

import io
import logging
import os
import pathlib
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

from experiments import translate
from experiments.configs import multi30k
from wt import evaluation, models, train

REPO = pathlib.Path(__file__).resolve().parent.parent
INFO_LOG = re.compile(r"^I\d{4} ", re.MULTILINE)  # absl's INFO prefix: I<month><day>


@pytest.fixture(scope="module")
def workdir(tiny_data_dirs, tmp_path_factory):
  """A tiny Transformer trained for 10 steps (tiny_config's settings, built here because
  tiny_config is per test)."""
  data_dir, cache_dir = tiny_data_dirs
  config = multi30k.get_config("tiny")
  config.data.update(
    data_dir=str(data_dir),
    cache_dir=str(cache_dir),
    vocab_size=96,
    num_buckets=2,
    tokens_per_batch=512,
    max_length=32,
    eval_batch_size=16,
  )
  config.model.dropout_rate = 0.0
  config.train.update(num_steps=10, eval_every=10, log_every=5, checkpoint_every=10)
  config.decode.update(beam_size=2, max_extra_len=5)
  path = tmp_path_factory.mktemp("translate") / "run"
  train.train_and_evaluate(config, str(path))
  return path


def translate_command(workdir, stdin: bytes, *flags):
  env = {**os.environ, "PYTHONPATH": str(REPO)}
  return subprocess.run(
    [sys.executable, "-m", "experiments.translate", "--workdir", str(workdir), *flags],
    input=stdin,
    cwd=REPO,
    env=env,
    capture_output=True,
    timeout=300,
  )


@pytest.mark.slow
def test_the_issues_example_prints_four_lines_and_warns_once_for_line_3(workdir):
  long_line = " ".join(["dog"] * 600)
  stdin = f"A man rides a bike.\n\n{long_line}\ncafé\n".encode("utf-8")
  result = translate_command(workdir, stdin)
  stderr = result.stderr.decode("utf-8")
  assert result.returncode == 0, stderr[-3000:]
  lines = result.stdout.decode("utf-8").split("\n")
  assert len(lines) == 5 and lines[4] == "" and lines[1] == ""  # four lines, the second empty
  warnings = [line for line in stderr.splitlines() if "line 3:" in line]
  assert len(warnings) == 1 and re.search(r"line 3: \d{3,} tokens", warnings[0]), stderr
  assert not re.search(r"line [124]\b", stderr) and "Traceback" not in stderr, stderr
  # Quiet by default: warnings only, no INFO screen from TFDS or the XLA backends.
  assert not INFO_LOG.search(stderr) and "Unable to initialize backend" not in stderr, stderr


@pytest.mark.slow
def test_bytes_that_are_not_utf8_are_replaced_and_the_line_named_and_verbosity_is_honoured(workdir):
  result = translate_command(workdir, b"A dog.\r\ncaf\xe9 on the grass.\n\t \n", "--verbosity=0")
  stderr = result.stderr.decode("utf-8")
  assert result.returncode == 0, stderr[-3000:]
  lines = result.stdout.decode("utf-8").split("\n")
  assert len(lines) == 4 and lines[2] == "" and lines[3] == ""  # three lines, the last empty
  assert re.search(r"line 2 is not valid UTF-8 \(byte 0xe9 at byte 4\).*U\+FFFD", stderr)
  assert "Traceback" not in stderr and "TypeError" not in stderr
  assert INFO_LOG.search(stderr), stderr  # --verbosity=0 brings the INFO logs back


class WordTokenizer:
  """One id per word (2..39, from its letters), EOS-terminated; decodes ids to "<id> <id> ..."
  (so any non-EOS output is visible text)."""

  eos_id = 1

  def encode_batch(self, texts):
    return [[2 + sum(map(ord, word)) % 38 for word in text.split()] + [1] for text in texts]

  def decode(self, ids):
    ids = np.asarray(ids).tolist()
    end = next((k for k, token in enumerate(ids) if token in (0, 1)), len(ids))
    return " ".join(map(str, ids[:end]))


@pytest.fixture(scope="module")
def random_model():
  """An untrained Transformer of max_len 64 that rarely emits EOS: it translates an empty
  source (only EOS) into a non-empty invented sentence."""
  config = models.ModelConfig(
    vocab_size=40,
    num_layers=1,
    d_model=16,
    d_ff=32,
    num_heads=2,
    max_len=64,
    dropout_rate=0.0,
    share_embeddings="none",
  )
  return models.Transformer(config), models.init_params(config, jax.random.key(0))


def translate_words(random_model, sentences):
  model, params = random_model
  return evaluation.translate_sentences(
    model,
    params,
    WordTokenizer(),
    sentences,
    batch_size=4,
    beam_size=1,
    length_penalty=0.6,
    max_extra_len=6,
  )[0]


def test_the_evaluation_batch_width_changes_no_translation(workdir):
  results = {}
  for width in (8, 24):  # multiples of the 8 test devices
    trained = evaluation.load_trained(str(workdir), average_last=1, eval_batch_size=width)
    results[width] = evaluation.evaluate_split(
      trained.model, trained.params, trained.data, "test", trained.config.decode
    )
    assert results[width]["batch_sentences"] == width
  assert results[8]["translations"] == results[24]["translations"]
  assert results[8]["bleu"] == results[24]["bleu"]


def test_empty_and_whitespace_only_lines_translate_to_empty_lines(random_model):
  translations = translate_words(random_model, ["", "a dog runs", "   ", "\t", "a man"])
  assert len(translations) == 5
  assert translations[0] == translations[2] == translations[3] == ""
  assert translations[1] and translations[4]
  assert translations[1:5:3] == translate_words(random_model, ["a dog runs", "a man"])
  assert translate_words(random_model, ["", " "]) == ["", ""]  # nothing to decode at all


def test_an_over_long_line_is_cut_with_one_warning_and_the_others_translate_as_alone(
  random_model, caplog
):
  """max_len=64 less max_extra_len=6 leaves 58 source tokens: a line of 100 words (101 tokens)
  is translated as its first 57 words."""
  words = [f"w{i}" for i in range(100)]
  with caplog.at_level(logging.WARNING):
    translations = translate_words(random_model, ["a man runs", " ".join(words), "two dogs"])
  warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
  assert len(warnings) == 1 and warnings[0].startswith("line 2: 101 tokens"), warnings
  assert "model.max_len=64" in warnings[0] and "first 57 tokens" in warnings[0]
  caplog.clear()
  assert translations == translate_words(
    random_model, ["a man runs", " ".join(words[:57]), "two dogs"]
  )
  assert not caplog.records  # the line cut by hand is within the limit: no warning


@pytest.mark.parametrize("beam_size", [pytest.param(1, marks=pytest.mark.slow), 3])
def test_rows_split_over_the_devices_decode_as_on_one_device(random_model, beam_size):
  model, params = random_model
  rng = np.random.default_rng(0)
  batches = []
  for start, width in ((0, 7), (13, 12)):  # two shapes, 3 padding rows (index -1) in each
    inputs = rng.integers(2, 40, (16, width)).astype(np.int32)
    inputs[:, -1] = 1
    index = np.full(16, -1)
    index[:13] = np.arange(start, start + 13)
    batches.append({"inputs": inputs, "index": index})
  options = dict(beam_size=beam_size, length_penalty=0.6, max_extra_len=6)
  one = evaluation.translate_batches(
    model, params, batches, WordTokenizer(), 26, devices=jax.local_devices()[:1], **options
  )
  assert jax.local_device_count() == 8  # tests/conftest.py
  split = evaluation.translate_batches(model, params, batches, WordTokenizer(), 26, **options)
  assert split[0] == one[0] and len(split[0]) == 26 and any(split[0])


def test_read_lines_replaces_bytes_that_are_not_utf8_and_names_the_line(caplog):
  stream = io.BytesIO(b"\xef\xbb\xbfA dog.\r\ncaf\xe9\n\nlast line, no newline")
  with caplog.at_level(logging.WARNING):
    lines = translate.read_lines(stream)
  assert lines == ["A dog.", "caf\ufffd", "", "last line, no newline"]
  warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
  assert len(warnings) == 1 and warnings[0].startswith("line 2 is not valid UTF-8 (byte 0xe9")
