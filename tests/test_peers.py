"""The benchmark's PyTorch peers (experiments/peers/): the skip without torch, the line
protocol, the same-round arithmetic, and (where torch is installed) a smoke test of the
PyTorch step and of a worker process."""

import importlib.util
import io
import math

import jax
import pytest

from experiments.peers import compare, process
from wt import models

HAS_TORCH = importlib.util.find_spec("torch") is not None
needs_torch = pytest.mark.skipif(
  not HAS_TORCH, reason="torch is not installed (optional: requirements-peers.txt)"
)
TINY = dict(vocab=96, d_model=32, heads=4, d_ff=64, layers=2, batch=4, source_len=7, target_len=5)


def test_without_torch_the_section_is_skipped_with_a_message(monkeypatch, capsys):
  real_find_spec = importlib.util.find_spec
  monkeypatch.setattr(
    importlib.util,
    "find_spec",
    lambda name, *args: None if name == "torch" else real_find_spec(name, *args),
  )
  result = compare.skipped_without_torch()
  assert set(result) == {"skipped"}
  assert "torch is not installed" in result["skipped"]
  assert "requirements-peers.txt" in result["skipped"]
  assert result["skipped"] in capsys.readouterr().err
  assert result["skipped"] in "\n".join(compare.markdown(result))


def test_the_worker_loop_answers_each_command_with_seconds_until_quit():
  calls, replies = [], []
  commands = {"step": lambda: calls.append("step"), "probe": lambda: calls.append("probe")}
  process.serve(commands, io.StringIO("step\nprobe\nstep\nquit\nstep\n"), replies.append)
  assert calls == ["step", "probe", "step"]  # nothing after quit
  assert len(replies) == 3 and all(float(r) >= 0.0 for r in replies)
  with pytest.raises(ValueError, match="unknown command 'jump'"):
    process.serve(commands, io.StringIO("jump\n"), replies.append)


def test_same_round_ratios_and_mfu_are_medians_of_per_round_values():
  # Round speeds vary (a shared machine); within a round wt takes 0.8x eager's time.
  wt_steps, eager_steps = iter([0.8, 1.6, 0.4, 8.0]), iter([1.0, 2.0, 0.5, 10.0])
  jax_probes, torch_probes = iter([1.0, 2.0, 0.5, 10.0]), iter([2.0, 4.0, 1.0, 20.0])
  contenders = [
    compare.Contender(
      "jax", lambda: next(jax_probes), {"wt": (lambda: next(wt_steps), 100.0)}, {"wt": 3.0}
    ),
    compare.Contender(
      "torch", lambda: next(torch_probes), {compare.EAGER: (lambda: next(eager_steps), 100.0)}, {}
    ),
  ]
  times = compare.run_rounds(contenders, rounds=3, warmup=1)
  assert times[("jax", "wt")] == [1.6, 0.4, 8.0]  # the warm-up round is dropped
  rows = {r["implementation"]: r for r in compare.summarise(contenders, times, 400.0, "jax")}
  assert rows["wt"]["x_torch_eager"] == pytest.approx(0.8)
  assert rows[compare.EAGER]["x_torch_eager"] == pytest.approx(1.0)
  # MFU: (100 FLOPs / step s) / (400 FLOPs / own probe s) = 0.25 * probe / step.
  assert rows["wt"]["mfu"] == pytest.approx(0.25 * 1.0 / 0.8)
  assert rows[compare.EAGER]["mfu"] == pytest.approx(0.25 * 2.0 / 1.0)
  assert rows[compare.EAGER]["x_jax_probe"] == pytest.approx(2.0)
  assert rows["wt"]["startup_seconds"] == 3.0


@needs_torch
def test_the_pytorch_model_is_the_wt_transformer_plus_attention_biases():
  from experiments.peers import torch_transformer  # Optional: torch may be missing.

  config = models.ModelConfig(
    vocab_size=TINY["vocab"],
    d_model=TINY["d_model"],
    d_ff=TINY["d_ff"],
    num_heads=TINY["heads"],
    num_branches=TINY["heads"],
    num_layers=TINY["layers"],
  )
  wt_count = models.count_params(models.init_params(config, jax.random.PRNGKey(0)))
  model = torch_transformer.TorchTransformer(
    TINY["vocab"], TINY["d_model"], TINY["heads"], TINY["d_ff"], TINY["layers"]
  )
  torch_count = sum(p.numel() for p in model.parameters())
  attention_blocks = 3 * TINY["layers"]  # encoder self, decoder self and cross
  assert torch_count == wt_count + attention_blocks * 4 * TINY["d_model"]


@needs_torch
def test_one_pytorch_step_gives_a_loss_near_log_vocab():
  from experiments.peers import torch_transformer  # Optional: torch may be missing.

  step = torch_transformer.TrainStep(**TINY)
  loss = step()
  assert math.isfinite(loss)
  assert abs(loss - math.log(TINY["vocab"])) < 2.0  # near-uniform predictions at init
  # Under bfloat16 autocast: the same initial weights (same seed), a loss a little off.
  low = torch_transformer.TrainStep(**TINY, autocast_bf16=True)
  low_loss = low()
  assert low_loss != loss and abs(low_loss - loss) < 0.05 * loss


@needs_torch
@pytest.mark.slow
def test_a_worker_process_steps_and_probes():
  args = [f"--{k}={v}" for k, v in TINY.items()] + ["--probe=64"]
  with process.PeerProcess("tiny", args) as peer:
    assert peer.startup_seconds > 0.0
    assert peer.request("step") > 0.0
    assert peer.request("probe") > 0.0


@needs_torch
def test_with_torch_the_section_runs():
  assert compare.skipped_without_torch() is None
