"""Tests of TranslationData (wt/data/pipeline.py) over an in-memory corpus: budgets, shapes,
determinism, resumption, multi-process slices, evaluation coverage, skipping and validation."""

import itertools
import logging

import numpy as np
import pytest

from tests.synthetic_corpus import InMemorySource, parallel_corpus
from wt.data import DataError, default_data_config
from wt.data.config import eval_batch_size_for
from wt.data.pipeline import TranslationData

EOS = 1


def _config(**overrides):
  config = default_data_config()
  config.update(
    {
      **dict(vocab_size=100, max_length=64, tokens_per_batch=512, num_buckets=4, eval_batch_size=8),
      **overrides,
    }
  )
  return config


@pytest.fixture(scope="module")
def source():
  train = parallel_corpus(300, seed=0)
  train["en"][7] = ""  # Empty sides: skipped in training.
  train["de"][9] = "  "
  train["de"][11] = " ".join(["hund"] * 80)  # Far over max_length=64: skipped in training.
  validation = parallel_corpus(37, seed=1, max_words=40)  # Some longer than max_length.
  return InMemorySource(
    {"train": train, "validation": validation, "test": parallel_corpus(20, seed=2)}
  )


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("cache")


def _data(source, cache_dir, **kwargs):
  return TranslationData(_config(), source, cache_dir=cache_dir, **kwargs)


@pytest.fixture(scope="module")
def data(source, cache_dir):
  return _data(source, cache_dir)


def _take(data, seed, count, start=0):
  return list(itertools.islice(data.train_batches(seed, start=start), count))


def _assert_eos_terminated(rows):
  for row in rows:
    tokens = row[row != 0]
    if len(tokens):  # All-pad rows are allowed only in evaluation.
      assert tokens[-1] == EOS and (tokens[:-1] != EOS).all()
      assert (row[len(tokens) :] == 0).all()


def test_training_batches_respect_the_budget_and_only_the_listed_shapes(data):
  assert 1 <= len(data.batch_shapes) <= 4
  seen = set()
  for batch in _take(data, seed=0, count=2 * data.batches_per_epoch):
    (rows, source_length), (rows_t, target_length) = batch["inputs"].shape, batch["targets"].shape
    assert rows == rows_t and batch["inputs"].dtype == batch["targets"].dtype == np.int32
    assert rows * source_length <= 512 and rows * target_length <= 512
    assert (rows, source_length, target_length) in data.batch_shapes
    seen.add((rows, source_length, target_length))
    _assert_eos_terminated(batch["inputs"])
    _assert_eos_terminated(batch["targets"])
    assert (batch["inputs"][:, 0] != 0).all()  # No all-pad rows in training.
  assert seen == set(data.batch_shapes)


def test_bad_training_pairs_are_skipped_and_counted(source, cache_dir, caplog):
  with caplog.at_level(logging.INFO):
    data = _data(source, cache_dir)
  assert data.num_examples("train") < 300 - 2  # The empty pairs and some long ones.
  assert "skipped 2 with an empty side" in caplog.text
  examples_seen = sum(len(b["inputs"]) for b in _take(data, 0, data.batches_per_epoch))
  assert data.num_examples("train") - examples_seen < data.batch_shapes[-1][0]


def test_same_seed_gives_the_same_batches_and_another_seed_others(data):
  first, again, other = (_take(data, seed, 6) for seed in (4, 4, 5))
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a["inputs"], b["inputs"])
    np.testing.assert_array_equal(a["targets"], b["targets"])
  assert any(
    a["inputs"].shape != c["inputs"].shape or (a["inputs"] != c["inputs"]).any()
    for a, c in zip(first, other)
  )


def test_a_restored_position_continues_the_same_stream(data):
  per_epoch = data.batches_per_epoch
  stream = _take(data, seed=2, count=2 * per_epoch + 3)
  assert [batch["position"] for batch in stream] == list(range(1, 2 * per_epoch + 4))
  for start in (1, per_epoch - 1, per_epoch, 2 * per_epoch):
    resumed = _take(data, seed=2, count=3, start=start)
    for expected, batch in zip(stream[start:], resumed):
      assert batch["position"] == expected["position"]
      np.testing.assert_array_equal(batch["inputs"], expected["inputs"])
      np.testing.assert_array_equal(batch["targets"], expected["targets"])


def test_epochs_differ_but_have_the_same_number_of_batches(data):
  per_epoch = data.batches_per_epoch
  stream = _take(data, seed=0, count=2 * per_epoch)
  first, second = stream[:per_epoch], stream[per_epoch:]
  assert sorted(b["inputs"].shape for b in first) == sorted(b["inputs"].shape for b in second)
  assert any(
    a["inputs"].shape != b["inputs"].shape or (a["inputs"] != b["inputs"]).any()
    for a, b in zip(first, second)
  )


def test_process_slices_concatenate_to_the_global_batch(source, cache_dir):
  whole = _data(source, cache_dir, row_multiple=4)
  parts = [
    _data(source, cache_dir, row_multiple=2, process_index=i, process_count=2) for i in range(2)
  ]
  assert parts[0].batch_shapes == parts[1].batch_shapes == whole.batch_shapes
  assert {b["inputs"].shape[0] for b in _take(parts[0], 1, 5)} <= {
    rows // 2 for rows, _, _ in whole.batch_shapes
  }
  streams = [_take(data, seed=1, count=whole.batches_per_epoch + 2) for data in parts]
  for expected, first, second in zip(_take(whole, 1, whole.batches_per_epoch + 2), *streams):
    for key in ("inputs", "targets"):
      np.testing.assert_array_equal(np.concatenate([first[key], second[key]]), expected[key])
  for expected, first, second in zip(
    whole.eval_batches("validation"), *(data.eval_batches("validation") for data in parts)
  ):
    for key in ("inputs", "targets", "index"):
      np.testing.assert_array_equal(np.concatenate([first[key], second[key]]), expected[key])


@pytest.mark.parametrize("split", ["validation", "test"])
def test_evaluation_sees_every_example_once_in_few_shapes(data, split):
  sources, references = data.raw_split(split)
  batches = list(data.eval_batches(split))
  indices = np.concatenate([batch["index"] for batch in batches])
  real = indices[indices >= 0]
  np.testing.assert_array_equal(np.sort(real), np.arange(len(sources)))
  assert data.num_examples(split) == len(sources)
  assert len({(b["inputs"].shape, b["targets"].shape) for b in batches}) <= 4 + 1
  for batch in batches:
    assert len(batch["index"]) == 8
    assert (batch["inputs"][batch["index"] < 0] == 0).all()
    _assert_eos_terminated(batch["inputs"])
    for row, index in zip(batch["targets"], batch["index"]):
      if index >= 0:
        expected = data.tokenizer.encode(references[index])
        if len(expected) > 64:  # Truncated to max_length, EOS kept.
          expected = expected[:63] + [EOS]
        assert row[row != 0].tolist() == expected


def test_evaluation_batches_default_to_the_backends_width(source, cache_dir):
  assert [eval_batch_size_for(0, backend) for backend in ("cpu", "gpu", "tpu")] == [16, 64, 64]
  assert eval_batch_size_for(8, "cpu") == eval_batch_size_for(8, "gpu") == 8
  data = TranslationData(_config(eval_batch_size=0), source, cache_dir=cache_dir, row_multiple=3)
  widths = {len(batch["index"]) for batch in data.eval_batches("validation")}
  assert widths == {18}  # the CPU's 16 sentences, rounded up to the multiple of 3 devices


def test_overlong_evaluation_sentences_are_truncated_not_dropped(source, cache_dir, caplog):
  data = _data(source, cache_dir)
  sources, _ = data.raw_split("validation")
  too_long = sum(len(data.tokenizer.encode(text)) > 64 for text in sources)
  assert too_long > 0  # Else this test checks nothing.
  batches = list(data.eval_batches("validation"))
  assert f"validation split: truncated {too_long} source sentences" in caplog.text
  assert max(batch["inputs"].shape[1] for batch in batches) == 64
  assert sum((batch["index"] >= 0).sum() for batch in batches) == len(sources)


def test_tokenizer_and_tokens_are_cached_and_reused(source, cache_dir, monkeypatch):
  data = _data(source, cache_dir)
  model_path = data.tokenizer.model_path
  assert model_path.parent.parent == cache_dir / "spm"
  assert (model_path.parent / "train.tokens.npz").exists()

  def refuse(*args, **kwargs):
    raise AssertionError("the cached tokenizer and tokens should have been reused")

  monkeypatch.setattr(source, "read", refuse)
  assert _data(source, cache_dir).tokenizer.model_path == model_path
  monkeypatch.undo()
  other = TranslationData(_config(vocab_size=90), source, cache_dir=cache_dir)
  assert other.tokenizer.model_path != model_path and other.tokenizer.vocab_size == 90


@pytest.mark.parametrize(
  "field, value, fragment",
  [
    ("dataset", "wmt19", "use one of ['multi30k', 'wmt14']"),
    ("source_lang", "fr", "use one of ('en', 'de')"),
    ("target_lang", "en", "must differ from source_lang"),
    ("vocab_size", 0, "positive integer"),
    ("tokens_per_batch", 32, "at least max_length=64"),
    ("spm_model_type", "wordpiece", "use one of"),
    ("eval_split", "test2019", "has splits"),
    ("eval_batch_size", -1, "(0: 16 on CPU, 64 on accelerators)"),
  ],
)
def test_bad_config_fields_are_named(source, cache_dir, field, value, fragment):
  with pytest.raises(DataError, match=rf"config\.data\.{field}={value!r}") as error:
    TranslationData(_config(**{field: value}), source, cache_dir=cache_dir)
  assert fragment in str(error.value)


def test_budget_too_small_for_the_devices_is_explained(source, cache_dir):
  with pytest.raises(DataError, match=r"tokens_per_batch=512 .* fewer than the 16 rows"):
    _data(source, cache_dir, row_multiple=8, process_count=2)


def test_bad_process_arguments_and_positions_are_rejected(source, cache_dir, data):
  with pytest.raises(DataError, match="process_index=2"):
    _data(source, cache_dir, process_index=2, process_count=2)
  with pytest.raises(DataError, match="start=-1"):
    data.train_batches(0, start=-1)
  with pytest.raises(DataError, match="Unknown split 'dev'"):
    data.raw_split("dev")
