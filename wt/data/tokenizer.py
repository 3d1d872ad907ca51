"""The joint SentencePiece vocabulary of a dataset, trained once and cached.

Ids: pad=0, EOS=1, unk=2, and no BOS (the decoder starts from id 0, as in flax examples/wmt).
`encode` appends EOS; `decode` stops at the first EOS or pad. The model lives in a cache folder
keyed by every setting that changes it (see `pipeline.py`), so both models and all seeds of a
comparison read the same file; it is published atomically (`cache.publish`), so processes that
train it at the same time cannot leave a half-written model behind.
"""

import io
import pathlib
from typing import Callable, Iterable, Sequence

import numpy as np
import sentencepiece as spm
from absl import logging

from wt.data.cache import publish
from wt.data.errors import DataError

PAD_ID = 0
EOS_ID = 1
UNK_ID = 2


class Tokenizer:
  """A SentencePiece model with EOS handling; `vocab_size` counts pad, EOS and unk."""

  pad_id = PAD_ID
  eos_id = EOS_ID

  def __init__(self, model_path: pathlib.Path):
    self.model_path = model_path
    self._processor = spm.SentencePieceProcessor(model_file=str(model_path))
    self.vocab_size = self._processor.get_piece_size()

  def encode(self, text: str) -> list[int]:
    """The ids of `text`, EOS-terminated."""
    return self._processor.encode(text) + [EOS_ID]

  def encode_batch(self, texts: Iterable[str]) -> list[list[int]]:
    """`encode` of each text (SentencePiece runs them on several threads)."""
    return [ids + [EOS_ID] for ids in self._processor.encode(list(texts))]

  def decode(self, ids: Sequence[int] | np.ndarray) -> str:
    """The detokenized text of `ids` up to (without) the first EOS or pad."""
    ids = np.asarray(ids).tolist()
    end = next((k for k, token in enumerate(ids) if token in (PAD_ID, EOS_ID)), len(ids))
    return self._processor.decode(ids[:end])


def load_or_train_tokenizer(
  model_path: pathlib.Path,
  training_sentences: Callable[[], Sequence[str]],
  *,
  vocab_size: int,
  model_type: str,
) -> Tokenizer:
  """Loads the model at `model_path`, first training it on `training_sentences()` if absent."""
  if not model_path.exists():
    sentences = training_sentences()
    logging.info(
      "Training a %s SentencePiece vocabulary of %d pieces on %d sentences -> %s",
      model_type,
      vocab_size,
      len(sentences),
      model_path,
    )
    model = io.BytesIO()
    try:
      spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=model,
        vocab_size=vocab_size,
        model_type=model_type,
        character_coverage=1.0,
        pad_id=PAD_ID,
        eos_id=EOS_ID,
        unk_id=UNK_ID,
        bos_id=-1,
        minloglevel=2,
      )
    except RuntimeError as error:
      raise DataError(
        f"SentencePiece could not train a {model_type} vocabulary of vocab_size="
        f"{vocab_size} on {len(sentences)} training sentences ({error}). Lower "
        "config.data.vocab_size (or use more training text)."
      ) from error
    publish(model_path, lambda f: f.write(model.getvalue()))
  return Tokenizer(model_path)
