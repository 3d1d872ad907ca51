"""Every experiment definition builds a valid config (presets, paper variants, sweep points),
and every section refuses unknown fields, non-finite numbers and bools given as integers."""

import math
import pathlib
import re
import subprocess
import sys

import pytest
from absl import flags
from ml_collections import config_flags

from experiments import common, sweeps
from experiments.configs import base, multi30k, wmt14
from wt import config_checks, models, train

REPO = pathlib.Path(__file__).resolve().parent.parent

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
  expected_steps = {
    "transformer_base": 100_000,
    "transformer_big": 300_000,
    "weighted_small": 60_000,
    "weighted_large": 250_000,
  }
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
  config = common.with_overrides(
    multi30k.get_config("small"), {"model.attention": "weighted", "model.num_branches": 3}
  )
  with pytest.raises(models.ConfigError, match="num_branches=3 does not divide"):
    train.validate_config(config)


def _validate(config, section):
  """The start-of-run check: the library's for its sections, the experiments' for compare."""
  (base.validate if section == "compare" else train.validate_config)(config)


# A typo of a field in each section, and the field it should name.
TYPOS = [
  ("model", "num_head", "num_heads"),
  ("data", "vocab_sise", "vocab_size"),
  ("train", "learnig_rate_scale", "learning_rate_scale"),
  ("decode", "beam_sise", "beam_size"),
  ("compare", "seed", "seeds"),
  ("distributed", "process_idd", "process_id"),
]


@pytest.mark.parametrize("section, typo, field", TYPOS)
def test_an_unknown_field_in_a_config_file_is_refused_with_the_closest_name(section, typo, field):
  config = multi30k.get_config("tiny")
  config[section][typo] = config[section][field]
  with pytest.raises(
    config_checks.ConfigError,
    match=re.escape(
      f"config.{section}.{typo} is not a field (did you mean config.{section}.{field}?)"
    ),
  ):
    _validate(config, section)


# ml_collections' config_flags loads config files with the deprecated `load_module`.
parses_config_files = pytest.mark.filterwarnings(
  "ignore:the load_module\\(\\) method is deprecated:DeprecationWarning"
)


def _parse_command_line(*overrides):
  """Parses `--config multi30k.py:tiny` and `overrides` as the experiment commands do."""
  flag_values = flags.FlagValues()
  argv = ["command", "--config", "experiments/configs/multi30k.py:tiny", *overrides]
  config_flags.DEFINE_config_file("config", flag_values=flag_values, sys_argv=argv)
  flag_values(argv)
  return flag_values.config


@parses_config_files
@pytest.mark.parametrize(
  "override, message",
  [
    *[
      (
        f"--config.{section}.{typo}=1",
        f"config.{section}.{typo} is not a field (did you mean config.{section}.{field}?)",
      )
      for section, typo, field in TYPOS
    ],
    ("--config.modle.num_heads=1", "config.modle is not a field (did you mean config.model?)"),
  ],
)
def test_an_unknown_field_on_the_command_line_is_a_flag_error_with_the_closest_name(
  override, message
):
  with pytest.raises(flags.Error, match=re.escape(message)):
    _parse_command_line(override)


@parses_config_files
def test_known_fields_still_parse_on_the_command_line():
  config = _parse_command_line(
    "--config.model.num_branches=2", "--config.data.data_dir=/x", "--config.compare.seeds=(0, 1)"
  )
  assert (config.model.num_branches, config.data.data_dir) == (2, "/x")
  assert config.compare.seeds == (0, 1)
  base.validate(config)


@pytest.mark.slow
def test_the_command_reports_a_mistyped_field_in_one_line_before_anything_loads(tmp_path):
  typo_config = tmp_path / "typo.py"
  typo_config.write_text(
    "from experiments.configs import multi30k\n\n\n"
    "def get_config():\n"
    "  config = multi30k.get_config('tiny')\n"
    f"  config.data.data_dir = {str(tmp_path / 'no-data')!r}\n"
    "  config.train.learnig_rate_scale = 2.0\n"
    "  return config\n"
  )
  commands = {
    "command line": [
      "--config",
      "experiments/configs/multi30k.py:tiny",
      "--config.model.num_head=2",
    ],
    "config file": ["--config", str(typo_config)],
  }
  for where, arguments in commands.items():
    workdir = tmp_path / where.replace(" ", "_")
    result = subprocess.run(
      [sys.executable, "-m", "experiments.run", *arguments, "--workdir", str(workdir)],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=300,
    )
    assert result.returncode != 0, where
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "did you mean config." in result.stderr.strip().splitlines()[0], result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2, result.stderr
    assert not workdir.exists(), where


# A numeric field of each section.
NUMERIC_FIELDS = [
  ("model", "layer_norm_epsilon"),
  ("data", "max_length"),
  ("train", "learning_rate_scale"),
  ("decode", "length_penalty"),
  ("compare", "interleave_steps"),
  ("distributed", "num_processes"),
]


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("section, field", NUMERIC_FIELDS)
def test_every_section_refuses_nan_and_infinity(section, field, value):
  config = multi30k.get_config("tiny")
  with config.ignore_type():
    config[section][field] = value
  with pytest.raises(
    config_checks.ConfigError, match=re.escape(f"config.{section}.{field}={value!r} must be")
  ):
    _validate(config, section)


# An integer field of each section.
INTEGER_FIELDS = [
  ("model", "num_layers"),
  ("data", "num_buckets"),
  ("train", "num_steps"),
  ("decode", "beam_size"),
  ("compare", "interleave_steps"),
  ("distributed", "process_id"),
]


@pytest.mark.parametrize("section, field", INTEGER_FIELDS)
def test_every_section_refuses_a_bool_as_an_integer(section, field):
  config = multi30k.get_config("tiny")
  config[section][field] = True
  with pytest.raises(
    config_checks.ConfigError,
    match=rf"config\.{section}\.{field}=True must be (an|a positive) integer",
  ):
    _validate(config, section)


def test_a_bool_field_refuses_an_integer_and_a_tuple_field_its_bad_items():
  with pytest.raises(models.ConfigError, match="scale_attention=1 must be true or false"):
    models.ModelConfig(scale_attention=1)
  config = multi30k.get_config("tiny")
  config.compare.seeds = (0, True)
  with pytest.raises(config_checks.ConfigError, match="each item an integer"):
    base.validate(config)
