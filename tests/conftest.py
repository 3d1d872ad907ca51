"""Test set-up, before anything imports JAX: 8 simulated CPU devices, quiet TensorFlow, and
caches (datasets, vocabularies, compiled programs) in a temporary folder, never the user's."""

import os
import tempfile

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
_CACHE = tempfile.mkdtemp(prefix="wt-test-cache-")
os.environ["WT_CACHE_DIR"] = _CACHE
os.environ["JAX_COMPILATION_CACHE_DIR"] = os.path.join(_CACHE, "jax")
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.5"

import pathlib  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_data_dirs(tmp_path_factory):
  """(data_dir, cache_dir): a tiny synthetic Multi30k written once per session, and a cache
  (TFDS build, SentencePiece model) shared by every test that trains on it."""
  from tests.synthetic_corpus import write_multi30k  # pylint: disable=g-import-not-at-top
  data_dir = tmp_path_factory.mktemp("multi30k")
  write_multi30k(data_dir)
  return data_dir, tmp_path_factory.mktemp("cache")


@pytest.fixture
def tiny_config(tiny_data_dirs):
  """The multi30k `tiny` experiment pointed at the synthetic corpus; small enough for seconds."""
  from experiments.configs import multi30k  # pylint: disable=g-import-not-at-top
  data_dir, cache_dir = tiny_data_dirs
  config = multi30k.get_config("tiny")
  config.data.data_dir = str(data_dir)
  config.data.cache_dir = str(cache_dir)
  config.data.vocab_size = 96
  config.data.num_buckets = 2
  config.data.tokens_per_batch = 512
  config.data.max_length = 32
  config.data.eval_batch_size = 16
  config.model.dropout_rate = 0.0
  return config
