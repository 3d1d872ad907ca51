"""Tests of the WMT14 path (wt/data/wmt14.py) under `tfds.testing.mock_data` (no network)."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from wt.data import DataError, default_data_config, load_translation_data
from wt.data import multi30k, wmt14


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  config = default_data_config()
  config.update(dict(dataset="wmt14", cache_dir=str(tmp_path_factory.mktemp("cache")),
                     vocab_size=60, max_length=64, tokens_per_batch=512, num_buckets=3,
                     eval_batch_size=8))
  with tfds.testing.mock_data(num_examples=50):
    yield load_translation_data(config, row_multiple=2)


def test_wmt14_loads_from_tfds_with_its_splits(data):
  assert data.tokenizer.vocab_size == 60
  assert data.tokenizer.model_path.parent.name.startswith("wmt14_translate_de-en_1.")
  for split in ("validation", "test"):
    sources, references = data.raw_split(split)
    assert len(sources) == len(references) == data.num_examples(split) == 50
    assert all(isinstance(text, str) for text in sources + references)
    indices = np.concatenate([batch["index"] for batch in data.eval_batches(split)])
    np.testing.assert_array_equal(np.sort(indices[indices >= 0]), np.arange(50))


def test_wmt14_training_batches_decode_to_training_text(data):
  sources, _ = data.raw_split("train")
  batch = next(data.train_batches(seed=0))
  assert batch["inputs"].shape[0] % 2 == 0 and batch["position"] == 1
  decoded = {data.tokenizer.decode(row) for row in batch["inputs"]}
  assert decoded <= {" ".join(text.split()) for text in sources}


def test_wmt14_is_never_a_fallback_for_multi30k(monkeypatch, tmp_path):
  def refuse(*args, **kwargs):
    raise AssertionError("WMT14 must not be opened for dataset='multi30k'")

  monkeypatch.setattr(wmt14, "open_wmt14", refuse)
  monkeypatch.setattr(multi30k, "REPO_SHARED_COPY", tmp_path / "none")
  monkeypatch.setattr(multi30k, "UPSTREAM_URL", "http://127.0.0.1:9/raw")
  monkeypatch.delenv("WT_DATA_DIR", raising=False)
  config = default_data_config()
  config.update(dict(data_dir=str(tmp_path), cache_dir=str(tmp_path / "cache")))
  with pytest.raises(DataError, match="Multi30k raw files not found"):
    load_translation_data(config)
