"""Test set-up, before anything imports JAX: 8 simulated CPU devices, quiet TensorFlow, implicit
rank promotion an error, and caches (datasets, vocabularies, compiled programs) in a temporary
folder, never the user's.

Under pytest-xdist every worker imports this file, so each worker has its own cache folder and
its own session fixtures; the environment variables reach the subprocesses tests start too.
"""

import atexit
import os
import shutil
import signal
import tempfile

os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# `x[:, None] + y` is written out; an implicit broadcast of a lower-rank array is a bug here.
os.environ["JAX_NUMPY_RANK_PROMOTION"] = "raise"
_CACHE = tempfile.mkdtemp(prefix="wt-test-cache-")
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
os.environ["WT_CACHE_DIR"] = _CACHE
os.environ["JAX_COMPILATION_CACHE_DIR"] = os.path.join(_CACHE, "jax")
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.5"

import jax  # noqa: E402
import pytest  # noqa: E402

from experiments.configs import multi30k  # noqa: E402
from tests.synthetic_corpus import write_multi30k  # noqa: E402
from wt import train  # noqa: E402

# In case a plugin imported JAX before the environment variable was set.
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture(scope="session")
def tiny_data_dirs(tmp_path_factory):
  """(data_dir, cache_dir): a tiny synthetic Multi30k written once per session (per xdist
  worker), and a cache (TFDS build, SentencePiece model) shared by every test that trains on
  it."""
  data_dir = tmp_path_factory.mktemp("multi30k")
  write_multi30k(data_dir)
  return data_dir, tmp_path_factory.mktemp("cache")


@pytest.fixture
def tiny_config(tiny_data_dirs):
  """The multi30k `tiny` experiment pointed at the synthetic corpus; small enough for seconds."""
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


@pytest.fixture
def sigterm_when(monkeypatch):
  """`sigterm_when(condition)`: the process sends itself SIGTERM right after a Trainer runs a
  step for which `condition(trainer, step)` holds (step counts from 1)."""

  def arm(condition):
    run_step = train.Trainer._run_step

    def run_step_then_signal(self, device_batch):
      outputs = run_step(self, device_batch)
      if condition(self, self.step + 1):
        os.kill(os.getpid(), signal.SIGTERM)
      return outputs

    monkeypatch.setattr(train.Trainer, "_run_step", run_step_then_signal)

  return arm
