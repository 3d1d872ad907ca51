"""Tests of the WMT14 path (wt/data/wmt14.py): TFDS under `tfds.testing.mock_data`, and a local
copy in plain-text files (neither touches the network)."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from experiments import wmt14_scale
from tests.synthetic_corpus import parallel_corpus, write_gzip_lines
from wt.data import DataError, default_data_config, load_translation_data, multi30k, wmt14

REPO = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  config = default_data_config()
  config.update(
    dict(
      dataset="wmt14",
      cache_dir=str(tmp_path_factory.mktemp("cache")),
      vocab_size=60,
      max_length=64,
      tokens_per_batch=512,
      num_buckets=3,
      eval_batch_size=8,
    )
  )
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


# ------------------------------------------------------------------------------------------
# A local copy in plain-text files (no TFDS, no network).


def _write_local_copy(
  folder, sizes=(("train", 300), ("validation", 20), ("test", 25)), gzipped=False
):
  corpora = {}
  folder.mkdir(parents=True, exist_ok=True)
  for seed, (split, size) in enumerate(sizes):
    corpora[split] = parallel_corpus(size, seed)
    for language, lines in corpora[split].items():
      if gzipped:
        write_gzip_lines(folder / f"{split}.{language}.gz", lines)
      else:
        (folder / f"{split}.{language}").write_text(
          "".join(f"{line}\n" for line in lines), encoding="utf-8"
        )
  return corpora


@pytest.mark.parametrize("gzipped", [False, True])
def test_a_local_copy_is_read_without_tfds(tmp_path, monkeypatch, gzipped):
  corpora = _write_local_copy(tmp_path / "wmt14", gzipped=gzipped)
  monkeypatch.setattr(tfds, "builder", lambda *a, **k: pytest.fail("TFDS was opened"))
  config = default_data_config()
  config.update(
    dict(
      dataset="wmt14",
      data_dir=str(tmp_path / "wmt14"),
      cache_dir=str(tmp_path / "cache"),
      vocab_size=60,
      max_length=64,
      tokens_per_batch=512,
      num_buckets=2,
      eval_batch_size=8,
    )
  )
  data = load_translation_data(config, row_multiple=2)
  assert data.tokenizer.model_path.parent.name.startswith("wmt14_local-")
  for split, corpus in corpora.items():
    assert data.raw_split(split) == (corpus["en"], corpus["de"])
  batch = next(data.train_batches(seed=0))
  assert {data.tokenizer.decode(row) for row in batch["inputs"]} <= set(corpora["train"]["en"])


def test_the_files_reader_insists_on_a_local_copy(tmp_path):
  config = default_data_config()
  config.update(dict(dataset="wmt14", data_dir=str(tmp_path), reader="files"))
  with pytest.raises(DataError, match=r"has no train\.en and train\.de .*local WMT14 copy"):
    load_translation_data(config)


def test_a_local_copy_is_keyed_by_its_training_bytes(tmp_path):
  for name in ("a", "b"):
    _write_local_copy(tmp_path / name, sizes=(("train", 30),))
  identity = lambda name: wmt14.LocalSource.open(str(tmp_path / name)).identity
  assert identity("a") == identity("b")  # another host's copy of the same files
  with open(tmp_path / "b" / "train.de", "a", encoding="utf-8") as f:
    f.write("Noch ein Satz.\n")
  assert identity("a") != identity("b")
  assert not wmt14.has_local_copy(str(tmp_path)) and wmt14.has_local_copy(str(tmp_path / "a"))


def test_a_local_copy_with_a_missing_or_misaligned_file_is_refused(tmp_path):
  _write_local_copy(tmp_path, sizes=(("train", 30), ("test", 5)))
  source = wmt14.LocalSource.open(str(tmp_path))
  with pytest.raises(DataError, match=r"no validation\.en or validation\.de"):
    source.read("validation", "en", "de")
  (tmp_path / "test.de").write_text("Nur ein Satz.\n", encoding="utf-8")
  with pytest.raises(DataError, match=r"test\.en has 5 lines and .*test\.de has 1"):
    source.read("test", "en", "de")


# ------------------------------------------------------------------------------------------
# experiments/wmt14_scale.py: the synthetic corpus of WMT14's shape, and the whole input side.


def test_the_synthetic_corpus_has_wmt14s_shape_in_the_local_file_form(tmp_path):
  sizes = wmt14_scale.generate(
    tmp_path, 4000, seed=0, words=5000, eval_pairs={"validation": 30, "test": 40}
  )
  source = wmt14.LocalSource.open(str(tmp_path))
  english, german = source.read("train", "en", "de")
  assert len(english) == len(german) == sizes["train"] == 4000
  assert len(source.read("test", "en", "de")[0]) == 40
  words = np.array([len(line.split()) for line in english])
  assert 22 < words.mean() < 28 and np.percentile(words, 99.9) > 3 * words.mean()
  ratio = np.array([len(g.split()) for g in german]).sum() / words.sum()
  assert 0.9 < ratio < 1.0
  counts = np.sort(np.unique(" ".join(english).lower().split(), return_counts=True)[1])[::-1]
  assert counts[0] > 5 * counts[9] and counts[9] > 5 * counts[99]  # Zipfian ranks
  assert any(c in "".join(german[:200]) for c in "äöüß") and english[0][0].isupper()
  assert wmt14_scale.generate(tmp_path / "again", 4000, seed=0, words=5000, eval_pairs={}) == {
    "train": 4000
  }
  assert (tmp_path / "again" / "train.de").read_bytes() == (tmp_path / "train.de").read_bytes()


@pytest.mark.slow
def test_the_scale_run_measures_every_input_stage(tmp_path):
  doc = tmp_path / "scaling.md"
  doc.write_text("<!-- wmt14_scale:begin -->\n<!-- wmt14_scale:end -->\n")
  done = subprocess.run(
    [
      sys.executable,
      "-m",
      "experiments.wmt14_scale",
      "--workdir",
      str(tmp_path / "run"),
      "--num_pairs",
      "4500",
      "--vocab_size",
      "2000",
      "--json",
      str(tmp_path / "r.json"),
      "--write",
      str(doc),
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=900,
  )
  assert done.returncode == 0, done.stderr[-3000:]
  results = json.loads((tmp_path / "r.json").read_text())
  cold = {row["stage"]: row for row in results["cold"]["stages"]}
  for stage in (
    "hash the training files",
    "read a split",
    "train SentencePiece",
    "tokenise",
    "choose the buckets",
    "plan the epochs",
    "100 training batches",
  ):
    assert cold[stage]["seconds"] > 0 and cold[stage]["peak_bytes"] > 0, stage
  warm = {row["stage"] for row in results["warm"]["stages"]}
  assert "train SentencePiece" not in warm and "tokenise" in warm  # validation split only
  assert results["cold"]["vocab_size"] == 2000 and results["cold"]["train_pairs_kept"] > 4400
  assert "| cold | train SentencePiece |" in doc.read_text()
