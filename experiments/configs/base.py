"""The full experiment config: every section with every field at its default.

Config files in this folder start from `get_base_config()` and change what their experiment
needs; any field can be overridden on the command line, e.g. `--config.model.num_branches=4`.
Each section's fields, defaults and checks have one home, the dataclass beside its consumer:

  model        wt/models.py ModelConfig (vocab_size follows data.vocab_size)
  data         wt/data/config.py DataConfig: dataset, vocabulary, token budget, buckets
  train        wt/train_config.py TrainConfig: optimisation, parallelism, checkpoints, logging
  decode       wt/decode_config.py DecodeConfig: beam search and checkpoint averaging for BLEU
  compare      CompareConfig below: the two models and the seeds of `experiments.compare`
  distributed  wt/parallel.py DistributedConfig: multi-process start (empty: single process,
               or set by the environment)

`validate(config)` builds every section (experiments.common.start calls it before anything
loads); an unknown name on the command line (`--config.model.num_head=4`) fails while the
flags are parsed, in one line that names the closest valid field.
"""

import dataclasses

import ml_collections
from absl import flags

from wt import config_checks as checks
from wt.data.config import DATASET_SPLITS
from wt.models import ATTENTIONS
from wt.train_config import CONFIG_SECTIONS


@dataclasses.dataclass(frozen=True)
class CompareConfig(checks.Section, section="compare"):
  """`config.compare`: what `experiments.compare` runs (and the seeds of `experiments.ablate`).

  models: ModelConfig.attention of each compared model. seeds: one run per model and seed.
  interleave: alternate the runs in one process every `interleave_steps` steps, so that a
  machine that slows down slows every model alike. splits: decoded and scored after training
  (the first is the report's headline). notes: shown under the report's table.
  """

  models: tuple[str, ...] = ATTENTIONS
  seeds: tuple[int, ...] = (0,)
  interleave: bool = True
  interleave_steps: int = 100
  splits: tuple[str, ...] = ("test",)
  notes: str = ""

  def __post_init__(self):
    checks.check_types(self)
    checks.each_one_of(self, "models", ATTENTIONS)
    checks.positive_int(self, "interleave_steps")


SECTIONS = {**CONFIG_SECTIONS, "compare": CompareConfig}


class UnknownFieldError(flags.Error, checks.ConfigError, KeyError):
  """An unknown name in an experiment config. A flags.Error, so that absl reports a mistyped
  `--config.<section>.<field>` as one line; a KeyError, as ConfigDict lookups raise."""

  __str__ = Exception.__str__  # KeyError's would quote the message


class ExperimentConfig(ml_collections.ConfigDict):
  """The ConfigDict of the experiment config and of each of its sections: looking up an
  unknown name raises UnknownFieldError with the closest valid one (the flag parser looks up
  every `--config.*` name before it sets it)."""

  @classmethod
  def of_section(cls, section_class: type[checks.Section]) -> "ExperimentConfig":
    section = cls(checks.default_values(section_class))
    object.__setattr__(section, "_section_class", section_class)
    return section

  def __getitem__(self, key):
    try:
      return super().__getitem__(key)
    except UnknownFieldError:
      raise
    except KeyError:
      raise self._unknown(key) from None

  def get_type(self, key):
    if key not in self:
      raise self._unknown(key)
    return super().get_type(key)

  def _unknown(self, key) -> UnknownFieldError:
    section_class = self.__dict__.get("_section_class")
    if section_class is None:
      return UnknownFieldError(
        checks.unknown_fields_message(
          "", [key], self.keys(), where="SECTIONS in experiments/configs/base.py"
        )
      )
    return UnknownFieldError(
      checks.unknown_fields_message(section_class.SECTION, [key], self.keys(), where=section_class)
    )


def get_base_config() -> ml_collections.ConfigDict:
  config = ExperimentConfig()
  for name, section_class in SECTIONS.items():
    config[name] = ExperimentConfig.of_section(section_class)
  config.model.vocab_size = config.data.get_ref("vocab_size")
  return config


def validate(config: ml_collections.ConfigDict) -> None:
  """Builds every section of an experiment config as its dataclass: a ConfigError names the
  first unknown section or field (with the closest valid name) or bad value, and the fix."""
  unknown = sorted(set(config.keys()) - set(SECTIONS))
  if unknown:
    raise checks.ConfigError(
      checks.unknown_fields_message(
        "", unknown, SECTIONS, where="SECTIONS in experiments/configs/base.py"
      )
    )
  sections = {
    name: section_class.from_mapping(config[name]) for name, section_class in SECTIONS.items()
  }
  compare, data = sections["compare"], sections["data"]
  checks.each_one_of(compare, "splits", DATASET_SPLITS[data.dataset])
