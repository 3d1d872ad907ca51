"""Checkpoints and run state: integrity manifests, unreadable steps moved aside so that the run
still finishes, and a config.json that is written atomically and read with a clear error."""

import json
import logging
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wt import checkpoint, models, run_config, train
from wt.data.config import DataConfig
from wt.decode_config import DecodeConfig


def _params(checkpoints: pathlib.Path, step=None):
  restored = checkpoint.Checkpointer(str(checkpoints)).restore(None, step=step)
  assert restored is not None, f"no readable checkpoint in {checkpoints}"
  return jax.tree.map(np.asarray, restored[0]["params"])


def _files(folder: pathlib.Path) -> list[pathlib.Path]:
  return sorted(p for p in folder.rglob("*") if p.is_file())


def _truncate_state(step_dir: pathlib.Path):
  for path in _files(step_dir / "state"):
    os.truncate(path, path.stat().st_size // 2)


def _trained(tiny_config, workdir, num_steps=10):
  tiny_config.train.update(num_steps=num_steps, checkpoint_every=5, log_every=5, eval_every=5)
  summary = train.train_and_evaluate(tiny_config, str(workdir))
  assert summary["step"] == num_steps
  assert checkpoint.Checkpointer(str(workdir / "checkpoints")).steps() == [5, 10]
  return workdir / "checkpoints"


# ------------------------------------------------------------------------------------------
# Runs with unreadable steps finish.


@pytest.mark.slow
def test_an_emptied_newest_step_is_moved_aside_and_the_rerun_finishes(
  tiny_config, tmp_path, caplog
):
  caplog.set_level(logging.INFO)
  checkpoints = _trained(tiny_config, tmp_path)
  for path in _files(checkpoints / "10"):  # every file, its integrity manifest included
    path.write_bytes(b"")
  summary = train.train_and_evaluate(tiny_config, str(tmp_path))
  assert summary["step"] == 10
  assert "resumed" in caplog.text and "from checkpoint 5" in caplog.text
  assert "checkpoint 10" in caplog.text and "moved it aside" in caplog.text
  aside = checkpoints / checkpoint.CORRUPT_DIR / "10"
  assert aside.is_dir() and "unreadable" in (aside / "MOVED_ASIDE.txt").read_text()
  assert checkpoint.Checkpointer(str(checkpoints)).steps() == [5, 10]
  assert checkpoint.check_manifest(str(checkpoints / "10"))[0] == checkpoint.VERIFIED


@pytest.mark.slow
def test_when_every_step_is_unreadable_the_run_starts_again_and_finishes(
  tiny_config, tmp_path, caplog
):
  caplog.set_level(logging.INFO)
  checkpoints = _trained(tiny_config, tmp_path)
  first = _params(checkpoints)
  for step in ("5", "10"):
    _truncate_state(checkpoints / step)
  summary = train.train_and_evaluate(tiny_config, str(tmp_path))
  assert summary["step"] == 10
  assert "initialised a new run" in caplog.text
  assert sorted(p.name for p in (checkpoints / checkpoint.CORRUPT_DIR).iterdir()) == ["10", "5"]
  for x, y in zip(jax.tree.leaves(_params(checkpoints)), jax.tree.leaves(first), strict=True):
    np.testing.assert_allclose(x, y, atol=1e-6, rtol=0)  # the same run, trained again


def _flip_a_byte_of_an_array(checkpoints: pathlib.Path, step: int) -> pathlib.Path:
  """Flips one bit inside the stored values of an array of checkpoint `step` (one stored
  uncompressed, found by its bytes), which orbax alone restores without any error."""
  state = checkpoint.Checkpointer(str(checkpoints)).restore(None, step=step)[0]
  files = {p: p.read_bytes() for p in _files(checkpoints / str(step) / "state")}
  for leaf in jax.tree.leaves(state):
    raw = np.asarray(leaf).tobytes()
    probe = raw[len(raw) // 2 : len(raw) // 2 + 32]
    for path, content in files.items():
      at = content.find(probe) if len(probe) == 32 else -1
      if at >= 0:
        flipped = bytearray(content)
        flipped[at + 16] ^= 0x01
        path.write_bytes(bytes(flipped))
        return path
  raise AssertionError(f"no array of checkpoint {step} is stored uncompressed")


@pytest.mark.slow
def test_one_flipped_byte_in_array_data_is_detected_and_the_previous_step_used(
  tiny_config, tmp_path, caplog
):
  checkpoints = _trained(tiny_config, tmp_path)
  data = _flip_a_byte_of_an_array(checkpoints, 10)
  trainer = train.Trainer(tiny_config, str(tmp_path), show_progress=False)
  assert trainer.step == 5
  assert "sha256 mismatch" in caplog.text and data.name in caplog.text
  assert (checkpoints / checkpoint.CORRUPT_DIR / "10").is_dir()
  trainer.train_until(10)
  trainer.close()
  assert checkpoint.Checkpointer(str(checkpoints)).steps() == [5, 10]


# ------------------------------------------------------------------------------------------
# The Checkpointer alone.


def _save_steps(directory, steps=(1, 2), asynchronous=True):
  checkpointer = checkpoint.Checkpointer(str(directory), keep=5, asynchronous=asynchronous)
  rng = np.random.default_rng(0)
  for step in steps:
    state = {
      "params": {"w": jnp.asarray(rng.normal(size=(64, 32)), jnp.float32)},
      "step": jnp.int32(step),
    }
    checkpointer.save(step, state, {"data_position": step})
  return checkpointer


@pytest.mark.parametrize("asynchronous", [True, False])
def test_every_saved_step_is_sealed_with_the_digest_of_each_of_its_files(tmp_path, asynchronous):
  _save_steps(tmp_path, asynchronous=asynchronous).close()
  for step in ("1", "2"):
    manifest = json.loads((tmp_path / step / checkpoint.MANIFEST).read_text())
    on_disk = {str(p.relative_to(tmp_path / step)) for p in _files(tmp_path / step)}
    assert set(manifest["files"]) == on_disk - {checkpoint.MANIFEST}
    assert any(name.startswith("state/") for name in manifest["files"])
    assert checkpoint.check_manifest(str(tmp_path / step)) == (checkpoint.VERIFIED, "")


def test_a_step_without_manifest_restores_with_a_warning_unless_orbax_cannot_read_it(
  tmp_path, caplog
):
  _save_steps(tmp_path).close()
  for step in ("1", "2"):
    (tmp_path / step / checkpoint.MANIFEST).unlink()  # as written by older code
  checkpointer = checkpoint.Checkpointer(str(tmp_path))
  assert checkpointer.restore(None)[2] == 2
  assert "checkpoint 2" in caplog.text and "restored it unverified" in caplog.text
  _truncate_state(tmp_path / "2")
  assert checkpointer.restore(None, move_aside=True)[2] == 1
  assert (tmp_path / checkpoint.CORRUPT_DIR / "2").is_dir() and checkpointer.steps() == [1]
  checkpointer.close()


def test_a_verified_step_that_does_not_fit_the_target_is_an_error_and_kept(tmp_path):
  _save_steps(tmp_path).close()
  checkpointer = checkpoint.Checkpointer(str(tmp_path))
  other = {
    "params": {
      "w": jax.ShapeDtypeStruct((64, 32), jnp.float32),
      "b": jax.ShapeDtypeStruct((32,), jnp.float32),
    },
    "step": jax.ShapeDtypeStruct((), jnp.int32),
  }
  with pytest.raises(
    checkpoint.CheckpointError,
    match=r"checkpoint 2 .* intact files .*"
    r"another version of the code",
  ):
    checkpointer.restore(other, move_aside=True)
  assert checkpointer.steps() == [1, 2]
  checkpointer.close()


# ------------------------------------------------------------------------------------------
# config.json


def test_config_json_is_replaced_atomically(tiny_config, tmp_path, monkeypatch):
  run_config.check_workdir(tiny_config, str(tmp_path), overwrite=False)
  path = tmp_path / run_config.CONFIG_FILE
  before = path.read_text()

  def interrupted(value, f, **kwargs):
    f.write(json.dumps(value, **kwargs)[:50])
    raise KeyboardInterrupt

  monkeypatch.setattr(json, "dump", interrupted)
  with pytest.raises(KeyboardInterrupt):
    run_config.check_workdir(tiny_config, str(tmp_path), overwrite=False)
  monkeypatch.undo()
  assert path.read_text() == before
  assert [p.name for p in tmp_path.iterdir()] == [run_config.CONFIG_FILE]  # no temporary left


def test_an_empty_config_json_is_an_error_naming_the_file_and_the_fix(tiny_config, tmp_path):
  run_config.check_workdir(tiny_config, str(tmp_path), overwrite=False)
  path = tmp_path / run_config.CONFIG_FILE
  path.write_text("")
  with pytest.raises(
    checkpoint.RunStateError,
    match=rf"{path} is unreadable \(the file is "
    rf"empty\).*--overwrite",
  ):
    train.Trainer(tiny_config, str(tmp_path))
  with pytest.raises(checkpoint.RunStateError, match=rf"{path} is unreadable.*delete it"):
    run_config.load(str(tmp_path))
  path.write_text('{"model": {"d_mod')
  with pytest.raises(checkpoint.RunStateError, match=rf"{path} is unreadable \(Unterminated"):
    run_config.load(str(tmp_path))
  run_config.check_workdir(tiny_config, str(tmp_path), overwrite=True)  # starts the run again
  assert run_config.load(str(tmp_path)).model.d_model == tiny_config.model.d_model


def test_a_saved_config_that_predates_a_field_resumes_only_at_its_default(
  tiny_config, tmp_path, caplog
):
  caplog.set_level(logging.INFO)
  run_config.check_workdir(tiny_config, str(tmp_path), overwrite=False)
  path = tmp_path / run_config.CONFIG_FILE
  saved = json.loads(path.read_text())
  assert saved["model"]["scale_attention"] is True  # the base default
  del saved["model"]["scale_attention"]
  del saved["train"]["branch_schedule"]
  path.write_text(json.dumps(saved))
  run_config.check_workdir(tiny_config, str(tmp_path), overwrite=False)
  assert "model.scale_attention=True" in caplog.text and "predates" in caplog.text
  assert "scale_attention" in json.loads(path.read_text())["model"]  # written in full again

  path.write_text(json.dumps(saved))
  tiny_config.model.scale_attention = False
  with pytest.raises(ValueError, match=r"differs in model.scale_attention\)"):
    run_config.check_workdir(tiny_config, str(tmp_path), overwrite=False)


def test_evaluating_a_run_that_predates_fields_reads_them_at_their_defaults(tiny_config, tmp_path):
  run_config.check_workdir(tiny_config, str(tmp_path), overwrite=False)
  path = tmp_path / run_config.CONFIG_FILE
  saved = json.loads(path.read_text())
  del saved["data"]["reader"], saved["decode"]["beam_size"], saved["model"]["branch_output_bias"]
  saved["model"]["d_model"] = 48  # a saved value is kept, whatever today's default
  path.write_text(json.dumps(saved))
  loaded = run_config.load(str(tmp_path))
  assert loaded.data.reader == DataConfig.reader
  assert loaded.decode.beam_size == DecodeConfig.beam_size
  assert loaded.model.branch_output_bias == models.ModelConfig.branch_output_bias
  assert loaded.model.d_model == 48
