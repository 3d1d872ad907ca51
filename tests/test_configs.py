"""Every experiment definition builds a valid config: presets, paper variants, sweep points."""

import pytest

from experiments import common, sweeps
from experiments.configs import multi30k, wmt14
from wt import models, train

WMT14_VARIANTS = sorted(wmt14.VARIANTS) + sorted(wmt14.TABLE2_LAYERS)


@pytest.mark.parametrize("variant", sorted(multi30k.PRESETS))
def test_multi30k_presets_are_valid(variant):
  config = multi30k.get_config(variant)
  train.validate_config(config)
  assert config.data.dataset == "multi30k"


@pytest.mark.parametrize("variant", WMT14_VARIANTS)
def test_wmt14_variants_are_valid_and_match_the_papers(variant):
  config = wmt14.get_config(variant)
  train.validate_config(config)
  assert config.data.dataset == "wmt14" and config.model.vocab_size == 37000
  large = variant in ("transformer_big", "weighted_large", "big")
  assert config.model.d_model == (1024 if large else 512)
  assert config.model.dropout_rate == (0.3 if large else 0.1)
  expected_steps = {"transformer_base": 100_000, "transformer_big": 300_000,
                    "weighted_small": 60_000, "weighted_large": 250_000}
  if variant in expected_steps:
    assert config.train.num_steps == expected_steps[variant]
  if variant in wmt14.TABLE2_LAYERS:
    assert config.model.num_layers == wmt14.TABLE2_LAYERS[variant]
    assert config.model.attention == "weighted"


def test_unknown_variants_are_refused_with_the_choices():
  with pytest.raises(ValueError, match="choose one of.*quick"):
    multi30k.get_config("huge")
  with pytest.raises(ValueError, match="choose one of.*transformer_base"):
    wmt14.get_config("huge")


def test_model_vocabulary_follows_the_data_vocabulary():
  config = multi30k.get_config("quick")
  config.data.vocab_size = 1234
  assert config.model.vocab_size == 1234


@pytest.mark.parametrize("sweep", sorted(sweeps.SWEEPS))
def test_every_sweep_point_gives_a_valid_config(sweep):
  config = multi30k.get_config("small")
  points = sweeps.SWEEPS[sweep]
  assert len({p.label for p in points}) == len(points) > 1
  for point in points:
    overridden = common.with_overrides(config, point.train)
    train.validate_config(overridden)
    model_config = train.model_config_from(overridden, 100)
    for field, value in point.test.items():
      assert getattr(model_config.replace(**{field: value}), field) == value
    for name, value in point.train.items():
      section, field = name.split(".")
      assert overridden[section][field] == value


def test_a_sweep_value_that_cannot_work_is_caught_by_validation():
  config = common.with_overrides(multi30k.get_config("small"),
                                 {"model.attention": "weighted", "model.num_branches": 3})
  with pytest.raises(models.ConfigError, match="num_branches=3 does not divide"):
    train.validate_config(config)
