"""wt.flops: a hand count of a tiny Transformer, XLA's cost analysis of forward + backward on
small configs of both models, and the folded branch order (same function, fewer FLOPs)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import common, params
from wt import flops, models, modules

SMALL = dict(
  vocab_size=512, d_model=64, d_ff=256, num_heads=4, num_branches=4, num_layers=1, dropout_rate=0.0
)
# XLA also counts element-wise work (softmax, LayerNorm, ...), which the closed form ignores:
# it measured 2-3% more at this size; a wrong matmul term (a missing logits projection, a
# branch FFN counted once instead of M times, no backward) is off by 10% or more.
TOLERANCE = 0.05


def test_hand_count_of_a_tiny_transformer():
  config = models.ModelConfig(vocab_size=10, d_model=4, d_ff=8, num_heads=2, num_layers=1)
  got = flops.forward_flops(config, batch=1, source_len=2, target_len=3)
  mac = lambda *sizes: 2 * np.prod(sizes)  # 2 FLOPs per multiply-add
  projections = (
    4 * mac(2, 4, 4)  # encoder Q, K, V, W^O on 2 tokens
    + 4 * mac(3, 4, 4)  # decoder self-attention on 3 tokens
    + 2 * mac(3, 4, 4)
    + 2 * mac(2, 4, 4)
  )  # cross: Q, W^O on 3; K, V on 2
  attention = (
    2 * mac(2, 2, 4)  # encoder scores and values, 2 x 2 pairs
    + 2 * mac(3, 3, 4)
    + 2 * mac(3, 2, 4)
  )  # decoder self 3 x 3, cross 3 x 2
  ffn = 2 * mac(2, 4, 8) + 2 * mac(3, 4, 8)  # x W1 and h W2, encoder and decoder
  logits = mac(3, 4, 10)
  assert got == {"projections": projections, "attention": attention, "ffn": ffn, "logits": logits}
  assert (projections, attention, ffn, logits) == (960, 304, 640, 240)
  assert flops.train_step_flops(config, 1, 2, 3) == 3 * 2144


@functools.lru_cache(maxsize=None)
def _xla_gradient_flops(config, batch, source_len, target_len):
  """XLA's FLOPs of one forward + backward pass (a loss on the logits, grads of all params)."""
  model = models.Transformer(config)
  params = jax.eval_shape(lambda: models.init_params(config, jax.random.key(0)))
  tokens = lambda length: jax.ShapeDtypeStruct((batch, length), jnp.int32)

  def loss(params, inputs, targets):
    return jnp.mean(model.apply({"params": params}, inputs, targets) ** 2)

  compiled = jax.jit(jax.grad(loss)).lower(params, tokens(source_len), tokens(target_len)).compile()
  return flops.compiled_flops(compiled)


@pytest.mark.parametrize(
  "changes",
  [
    dict(),
    dict(attention="weighted"),
    dict(attention="weighted", branch_ffn="shared", branched_decoder="both"),
    dict(attention="weighted", branch_ffn="full", branched_decoder="self", fold_branch_output=True),
  ],
  ids=["transformer", "split", "shared-both", "full-self-folded"],
)
def test_closed_form_agrees_with_xla_cost_analysis(changes):
  config = models.ModelConfig(**SMALL, **changes)
  closed_form = flops.train_step_flops(config, 4, 12, 16)  # unequal lengths: no swap hides
  xla = _xla_gradient_flops(config, 4, 12, 16)
  assert 0.0 <= xla / closed_form - 1.0 < TOLERANCE, (xla, closed_form)


def test_shared_and_full_ffns_cost_m_times_split_and_folding_saves():
  config = models.ModelConfig(**SMALL, attention="weighted")
  step = lambda **changes: flops.train_step_flops(config.replace(**changes), 8, 32, 32)
  ffn = lambda **changes: flops.forward_flops(config.replace(**changes), 8, 32, 32)["ffn"]
  assert ffn(branch_ffn="shared") == ffn(branch_ffn="full") == 4 * ffn(branch_ffn="split")
  assert step(attention="multihead") == step()  # split: the Transformer's parameters
  # Per token and branched block: M (d/M x d + d x d_ff/M) = 5 d^2 multiply-adds become
  # M (d/M x d_ff/M) = d^2; the fold itself costs 2 d^2 d_ff/M, once per block and step.
  d, tokens = 64, 8 * 32
  saved = 3 * 2 * (2 * tokens * 4 * d * d - 2 * d * d * d)  # 2 blocks, x3 for fwd + bwd
  assert step() - step(fold_branch_output=True) == saved


@pytest.mark.parametrize("branch_ffn", ["split", "shared"])  # "full" runs split's code
def test_folded_branch_order_computes_the_same_function_and_gradients(branch_ffn):
  rng = np.random.default_rng(0)
  x, kv = (rng.normal(size=(2, n, 16)).astype(np.float32) for n in (5, 7))
  block = lambda fold: modules.BranchedAttention(
    num_branches=4, d_model=16, d_ff=32, branch_ffn=branch_ffn, fold_output=fold
  )
  params = jax.jit(lambda key: block(False).init(key, x, kv, None, deterministic=True))(
    jax.random.key(0)
  )["params"]
  outputs = {}
  for fold in (False, True):
    apply = lambda p, fold=fold: block(fold).apply({"params": p}, x, kv, None, deterministic=True)
    loss = lambda p, apply=apply: jnp.sum(jnp.sin(apply(p)))
    outputs[fold] = jax.jit(lambda p, apply=apply, loss=loss: (apply(p), jax.grad(loss)(p)))(params)
  np.testing.assert_allclose(outputs[True][0], outputs[False][0], atol=1e-5)
  for got, expected in zip(jax.tree.leaves(outputs[True][1]), jax.tree.leaves(outputs[False][1])):
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_run_seconds_divide_the_flops_over_devices_peak_and_mfu():
  assert flops.run_seconds(2e15, 100, 8, 1e12, 0.5) == pytest.approx(2e17 / 4e12)
  with pytest.raises(ValueError, match="mfu=0"):
    flops.run_seconds(1.0, 1, 1, 1.0, 0.0)
  assert flops.batch_shape(25_000, 32) == (781, 32, 32)


def test_the_cost_table_has_every_paper_run_and_its_assumptions(tmp_path):
  table = params.cost_table(37000, 0.4, 32, "docs/benchmarks.json")
  rows = [line for line in table.splitlines() if line.startswith("| ")][1:]
  assert [row.split(" | ")[0][2:] for row in rows] == [label for label, _ in params.COST_RUNS]
  assert "MFU of 0.40" in table and "H100 989 TFLOP/s" in table and "Calibration" in table
  doc = tmp_path / "doc.md"
  doc.write_text("intro\n<!-- cost:begin -->\nold\n<!-- cost:end -->\nafter\n")
  common.replace_section(str(doc), "cost", "new")
  assert doc.read_text() == "intro\n<!-- cost:begin -->\nnew\n<!-- cost:end -->\nafter\n"


def test_chips_are_found_by_jaxs_device_kind_and_cpus_are_not():
  assert flops.device_peak_flops("NVIDIA H100 80GB HBM3") == flops.PEAK_FLOPS["H100"]
  assert flops.device_peak_flops("NVIDIA H200") == flops.PEAK_FLOPS["H200"]
  assert flops.device_peak_flops("NVIDIA A100-SXM4-40GB") == flops.PEAK_FLOPS["A100"]
  assert flops.device_peak_flops("NVIDIA GeForce RTX 4090") is None
  assert flops.device_peak_flops("TPU v4") == flops.PEAK_FLOPS["TPU v4"]
  assert flops.device_peak_flops("TPU v5 lite") == flops.PEAK_FLOPS["TPU v5e"]
  assert flops.device_peak_flops("TPU v5p") is None
  assert flops.device_peak_flops("cpu") is None
