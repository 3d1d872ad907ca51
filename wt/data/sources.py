"""A prepared TFDS translation dataset, read into memory as lists of sentences."""

import dataclasses

import tensorflow_datasets as tfds

_READ_BATCH = 10_000
# TFDS's own progress bars (one per split while building) would bury the training bar.
tfds.display_progress_bar(False)


@dataclasses.dataclass(frozen=True)
class TranslationSource:
  """A prepared TFDS builder with `tfds.features.Translation` examples.

  `identity` names the exact data (dataset, version, and for Multi30k a hash of the raw
  files); cached vocabularies and token files are keyed by it.
  """

  identity: str
  builder: tfds.core.DatasetBuilder

  def read(self, split: str, source_lang: str, target_lang: str) -> tuple[list[str], list[str]]:
    """(sources, targets) of `split`, in the split's stored order."""
    dataset = self.builder.as_dataset(split=split, shuffle_files=False).batch(_READ_BATCH)
    sources, targets = [], []
    for batch in tfds.as_numpy(dataset):
      sources.extend(text.decode("utf-8") for text in batch[source_lang])
      targets.extend(text.decode("utf-8") for text in batch[target_lang])
    return sources, targets
