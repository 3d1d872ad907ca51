"""Tests of the Multi30k builder (wt/data/multi30k.py) on a tiny corpus written with the real
file names: splits, file lookup order, bad files, and failing fast without network or copy."""

import functools
import gzip
import http.server
import pathlib
import socket
import subprocess
import sys
import threading
import time

import pytest

from tests.synthetic_corpus import write_gzip_lines, write_multi30k
from wt.data import DataError, default_data_config, load_translation_data, multi30k, multi30k_tfds

SHARED_COPY = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data" / "multi30k"


def _config(tmp_path, data_dir, **overrides):
  config = default_data_config()
  config.update(
    {
      **dict(
        data_dir=str(data_dir),
        cache_dir=str(tmp_path / "cache"),
        vocab_size=100,
        max_length=64,
        tokens_per_batch=512,
        num_buckets=4,
        eval_batch_size=8,
      ),
      **overrides,
    }
  )
  return config


@pytest.fixture
def isolated(monkeypatch, tmp_path):
  """No env data directory, no copy next to the checkout, and an upstream that refuses."""
  monkeypatch.delenv("WT_DATA_DIR", raising=False)
  monkeypatch.setattr(multi30k, "REPO_SHARED_COPY", tmp_path / "no-shared-copy")
  with socket.socket() as probe:  # A port nobody listens on: connections are refused.
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
  monkeypatch.setattr(multi30k, "UPSTREAM_URL", f"http://127.0.0.1:{port}/raw")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  tmp_path = tmp_path_factory.mktemp("multi30k")
  corpora = write_multi30k(tmp_path / "raw")
  return corpora, tmp_path, load_translation_data(_config(tmp_path, tmp_path / "raw"))


def test_all_splits_are_built_in_file_order(built):
  corpora, _, data = built
  for split, stem in multi30k.SPLIT_FILE_STEMS.items():
    assert data.raw_split(split) == (corpora[stem]["en"], corpora[stem]["de"])
  assert data.num_examples("test2017_mscoco") == 7
  assert 0 < data.num_examples("train") <= 400
  indices = [index for batch in data.eval_batches("test") for index in batch["index"]]
  assert sorted(i for i in indices if i >= 0) == list(range(25))


def test_the_other_direction_shares_the_vocabulary_and_the_built_data(built):
  corpora, tmp_path, data = built
  reverse = load_translation_data(
    _config(tmp_path, tmp_path / "raw", source_lang="de", target_lang="en")
  )
  assert reverse.raw_split("validation") == (corpora["val"]["de"], corpora["val"]["en"])
  assert reverse.tokenizer.model_path == data.tokenizer.model_path


def test_the_files_reader_gives_the_tfds_data(built, monkeypatch):
  corpora, tmp_path, data = built
  monkeypatch.setattr(multi30k_tfds, "open_built", lambda *a: pytest.fail("TFDS was opened"))
  files = load_translation_data(_config(tmp_path, tmp_path / "raw", reader="files"))
  for split in multi30k.SPLIT_FILE_STEMS:
    assert files.raw_split(split) == data.raw_split(split)
  assert files.tokenizer.model_path == data.tokenizer.model_path  # the same identity and cache
  assert files.num_examples("train") == data.num_examples("train")
  assert next(files.train_batches(seed=3))["inputs"].tolist() == (
    next(data.train_batches(seed=3))["inputs"].tolist()
  )


def test_the_files_reader_runs_where_tensorflow_cannot_be_imported(tmp_path):
  write_multi30k(tmp_path / "raw")
  config = _config(tmp_path, tmp_path / "raw", reader="files")
  script = f"""
import sys
sys.modules["tensorflow"] = sys.modules["tensorflow_datasets"] = None  # imports now fail
from wt.data import default_data_config, load_translation_data
config = default_data_config()
config.update({config.to_dict()!r})
print(load_translation_data(config).num_examples("test2018_flickr"))
"""
  result = subprocess.run(
    [sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=300
  )
  assert result.returncode == 0, result.stderr
  assert result.stdout.split()[-1] == str(
    len(
      multi30k.read_parallel_files(
        tmp_path / "raw" / "test_2018_flickr.en.gz", tmp_path / "raw" / "test_2018_flickr.de.gz"
      )[0]
    )
  )


def test_explicit_folder_or_its_parent_or_env_is_used_before_the_shared_copy(
  isolated, monkeypatch, tmp_path
):
  write_multi30k(tmp_path / "parent" / "multi30k")
  write_multi30k(tmp_path / "shared")
  monkeypatch.setattr(multi30k, "REPO_SHARED_COPY", tmp_path / "shared")
  downloads = tmp_path / "downloads"
  expected = tmp_path / "parent" / "multi30k"
  assert multi30k.find_raw_dir(str(expected), downloads) == expected
  assert multi30k.find_raw_dir(str(tmp_path / "parent"), downloads) == expected
  monkeypatch.setenv("WT_DATA_DIR", str(tmp_path / "parent"))
  assert multi30k.find_raw_dir(None, downloads) == expected
  monkeypatch.delenv("WT_DATA_DIR")
  assert multi30k.find_raw_dir(None, downloads) == tmp_path / "shared"


def test_the_shared_copy_is_looked_for_next_to_the_checkout():
  assert multi30k.REPO_SHARED_COPY == SHARED_COPY


def test_offline_without_a_copy_fails_fast_saying_where_to_put_which_files(isolated, tmp_path):
  started = time.monotonic()
  with pytest.raises(DataError) as error:
    load_translation_data(_config(tmp_path, tmp_path / "empty"))
  assert time.monotonic() - started < 30
  message = str(error.value)
  assert "download failed" in message and "Connection refused" in message
  assert str(tmp_path / "no-shared-copy") in message and "WT_DATA_DIR" in message
  assert all(name in message for name in multi30k.raw_file_names())
  assert str(tmp_path / "empty") in message  # Where it looked.


def test_a_server_that_never_answers_times_out(isolated, monkeypatch, tmp_path):
  monkeypatch.setattr(multi30k, "DOWNLOAD_TIMEOUT_S", 0.5)
  with socket.socket() as silent:  # Accepts connections (backlog) but never answers.
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    monkeypatch.setattr(multi30k, "UPSTREAM_URL", f"http://127.0.0.1:{silent.getsockname()[1]}/raw")
    started = time.monotonic()
    with pytest.raises(DataError, match="timed out|no answer"):
      multi30k.find_raw_dir(None, tmp_path / "downloads")
    assert time.monotonic() - started < 5


def _serve(folder: pathlib.Path):
  handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
  handler.log_message = lambda *args: None
  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
  threading.Thread(target=server.serve_forever, daemon=True).start()
  return server


def test_downloaded_files_must_match_the_pinned_sha256(isolated, monkeypatch, tmp_path):
  write_multi30k(tmp_path / "upstream")
  server = _serve(tmp_path / "upstream")
  monkeypatch.setattr(multi30k, "UPSTREAM_URL", f"http://127.0.0.1:{server.server_port}")
  try:
    with pytest.raises(DataError, match=r"download of train\.en\.gz has sha256 .* not the"):
      multi30k.find_raw_dir(None, tmp_path / "downloads")
  finally:
    server.shutdown()
    server.server_close()
  assert not (tmp_path / "downloads" / "train.en.gz").exists()


@pytest.mark.skipif(not SHARED_COPY.is_dir(), reason="no Multi30k copy next to the checkout")
def test_the_upstream_files_download_and_pass_the_sha256_check(isolated, monkeypatch, tmp_path):
  server = _serve(SHARED_COPY)
  monkeypatch.setattr(multi30k, "UPSTREAM_URL", f"http://127.0.0.1:{server.server_port}")
  try:
    assert multi30k.find_raw_dir(None, tmp_path / "downloads") == tmp_path / "downloads"
  finally:
    server.shutdown()
    server.server_close()
  for name in multi30k.raw_file_names():
    assert (tmp_path / "downloads" / name).read_bytes() == (SHARED_COPY / name).read_bytes()


def test_line_count_mismatch_names_both_files_and_counts(isolated, tmp_path):
  corpora = write_multi30k(tmp_path / "raw")
  write_gzip_lines(tmp_path / "raw" / "val.de.gz", corpora["val"]["de"][:-1])
  with pytest.raises(DataError) as error:
    load_translation_data(_config(tmp_path, tmp_path / "raw"))
  assert (
    f"{tmp_path / 'raw' / 'val.en.gz'} has 30 lines but {tmp_path / 'raw' / 'val.de.gz'} has 29"
  ) in str(error.value)


def test_invalid_utf8_names_the_file_and_line(isolated, tmp_path):
  corpora = write_multi30k(tmp_path / "raw")
  lines = [line.encode() for line in corpora["test_2017_mscoco"]["de"]]
  lines[4] = b"Ein Hund \xff l\xe4uft."  # Latin-1 bytes, not UTF-8.
  with gzip.open(tmp_path / "raw" / "test_2017_mscoco.de.gz", "wb") as f:
    f.write(b"\n".join(lines) + b"\n")
  with pytest.raises(DataError, match=r"test_2017_mscoco\.de\.gz line 5 is not valid UTF-8"):
    load_translation_data(_config(tmp_path, tmp_path / "raw"))
