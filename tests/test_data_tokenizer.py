"""Tests of the SentencePiece tokenizer (wt/data/tokenizer.py) and cache publication."""

import pytest
import sentencepiece as spm

from tests.synthetic_corpus import parallel_corpus
from wt.data import DataError
from wt.data.cache import publish
from wt.data.tokenizer import load_or_train_tokenizer


@pytest.fixture(scope="module")
def corpus():
  return parallel_corpus(200, seed=3)


@pytest.fixture(scope="module")
def tokenizer(corpus, tmp_path_factory):
  path = tmp_path_factory.mktemp("spm") / "spm.model"
  return load_or_train_tokenizer(
    path, lambda: corpus["en"] + corpus["de"], vocab_size=150, model_type="unigram"
  )


def test_special_ids_and_vocab_size(tokenizer):
  processor = spm.SentencePieceProcessor(model_file=str(tokenizer.model_path))
  assert tokenizer.vocab_size == processor.get_piece_size() == 150
  assert [processor.id_to_piece(i) for i in range(3)] == ["<pad>", "</s>", "<unk>"]
  assert processor.bos_id() == -1
  assert (tokenizer.pad_id, tokenizer.eos_id) == (0, 1)


def test_round_trip_appends_eos_and_decode_stops_at_eos_or_pad(tokenizer, corpus):
  for text in corpus["en"][:20] + corpus["de"][:20]:
    ids = tokenizer.encode(text)
    assert ids[-1] == 1 and 0 not in ids and 1 not in ids[:-1]
    assert tokenizer.decode(ids) == text
    assert tokenizer.decode(ids + [5, 6, 7]) == text
    assert tokenizer.decode(ids[:-1] + [0, 0, 9]) == text
  texts = corpus["de"][:5]
  assert tokenizer.encode_batch(texts) == [tokenizer.encode(text) for text in texts]
  assert tokenizer.decode([]) == ""


def test_an_existing_model_is_loaded_not_retrained(tokenizer):
  def no_sentences():
    raise AssertionError("should not train again")

  again = load_or_train_tokenizer(
    tokenizer.model_path, no_sentences, vocab_size=150, model_type="unigram"
  )
  assert again.encode("A dog runs.") == tokenizer.encode("A dog runs.")


def test_a_vocabulary_too_large_for_the_text_is_explained(corpus, tmp_path):
  with pytest.raises(DataError, match=r"vocab_size=5000 .* Lower config\.data\.vocab_size"):
    load_or_train_tokenizer(
      tmp_path / "spm.model", lambda: corpus["en"][:20], vocab_size=5000, model_type="unigram"
    )
  assert not list(tmp_path.iterdir())  # Nothing half-written is left behind.


def test_publish_keeps_the_first_writer_and_leaves_no_temporary_files(tmp_path):
  path = tmp_path / "sub" / "model"
  publish(path, lambda f: f.write(b"first"))
  publish(path, lambda f: f.write(b"second"))
  assert path.read_bytes() == b"first"

  def fail_midway(f):
    f.write(b"partial")
    raise RuntimeError("disk full")

  with pytest.raises(RuntimeError, match="disk full"):
    publish(tmp_path / "other", fail_midway)
  assert sorted(p.name for p in tmp_path.rglob("*")) == ["model", "sub"]
