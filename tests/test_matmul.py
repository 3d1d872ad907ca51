"""bfloat16-operand matmuls (wt/matmul.py, `model.matmul_dtype`): the product and both gradients
against NumPy on bfloat16-rounded operands, the dense-layer hook against lax.dot_general, and
the model: the option reaches every dense matmul, and the loss stays close to float32's."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wt import kernels, matmul, models

SPECS = {  # spec: (a shape, b shape), the matmuls the models run through `matmul.einsum`
  "nd,dm->nm": ((24, 16), (16, 8)),
  "hnd,hdm->hnm": ((3, 24, 4), (3, 4, 16)),
  "hnf,hfm->nm": ((3, 24, 8), (3, 8, 16)),
}


def bf16_rounded(x) -> np.ndarray:
  return np.asarray(jnp.asarray(x).astype(jnp.bfloat16).astype(jnp.float32), np.float64)


def _operands(spec, seed=0):
  rng = np.random.default_rng(seed)
  a_shape, b_shape = SPECS[spec]
  a = rng.normal(size=a_shape).astype(np.float32)
  b = rng.normal(size=b_shape).astype(np.float32)
  out = np.einsum(spec, a, b)
  grad = rng.normal(size=out.shape).astype(np.float32)
  return a, b, grad


@pytest.mark.parametrize("spec", sorted(SPECS))
def test_product_and_gradients_are_numpy_on_bfloat16_operands(spec):
  a, b, grad = _operands(spec)
  out, vjp = jax.vjp(lambda x, y: matmul.einsum(spec, x, y, jnp.bfloat16), a, b)
  d_a, d_b = vjp(grad)
  inputs, output = spec.split("->")
  a_idx, b_idx = inputs.split(",")
  want = {
    "out": np.einsum(spec, bf16_rounded(a), bf16_rounded(b)),
    "d_a": np.einsum(f"{output},{b_idx}->{a_idx}", bf16_rounded(grad), bf16_rounded(b)),
    "d_b": np.einsum(f"{a_idx},{output}->{b_idx}", bf16_rounded(a), bf16_rounded(grad)),
  }
  for name, got in {"out": out, "d_a": d_a, "d_b": d_b}.items():
    assert got.dtype == jnp.float32, name
    # float32 accumulation of exact bfloat16 products: float32 rounding only
    np.testing.assert_allclose(np.asarray(got), want[name], rtol=1e-5, atol=1e-5, err_msg=name)
  # and not the float32 product: the operands were rounded (about 3 significant digits)
  assert np.abs(np.asarray(out) - np.einsum(spec, a, b)).max() > 1e-4


def test_without_an_operand_dtype_it_is_the_float32_einsum():
  a, b, grad = _operands("hnd,hdm->hnm")
  out, vjp = jax.vjp(lambda x, y: matmul.einsum("hnd,hdm->hnm", x, y), a, b)
  np.testing.assert_allclose(np.asarray(out), np.einsum("hnd,hdm->hnm", a, b), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(
    np.asarray(vjp(grad)[1]), np.einsum("hnd,hnm->hdm", a, grad), rtol=1e-5, atol=1e-5
  )


@pytest.mark.parametrize(
  "lhs_shape, rhs_shape, contracting",
  [
    ((5, 7, 16), (16, 4, 3), ((2,), (0,))),  # DenseGeneral to (heads, depth)
    ((5, 7, 4, 3), (4, 3, 16), ((2, 3), (0, 1))),  # DenseGeneral from (heads, depth)
    ((6, 16), (16, 9), ((1,), (0,))),  # Dense
  ],
)
def test_dense_dot_general_is_lax_dot_general_on_rounded_operands(
  lhs_shape, rhs_shape, contracting
):
  rng = np.random.default_rng(1)
  lhs = rng.normal(size=lhs_shape).astype(np.float32)
  rhs = rng.normal(size=rhs_shape).astype(np.float32)
  dims = (contracting, ((), ()))
  got = matmul.dense_dot_general(jnp.bfloat16)(lhs, rhs, dims)
  want = jax.lax.dot_general(
    jnp.asarray(bf16_rounded(lhs), jnp.float32), jnp.asarray(bf16_rounded(rhs), jnp.float32), dims
  )
  assert got.dtype == jnp.float32 and got.shape == want.shape
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
  assert matmul.dense_dot_general(None) is None  # flax's own lax.dot_general
  with pytest.raises(NotImplementedError, match="batch dimensions"):
    matmul.dense_dot_general(jnp.bfloat16)(lhs, lhs, (((0,), (0,)), ((1,), (1,))))


def test_flax_dense_layers_take_the_hook():
  x = np.random.default_rng(2).normal(size=(4, 16)).astype(np.float32)
  dense = nn.Dense(8, dot_general=matmul.dense_dot_general(jnp.bfloat16))
  params = dense.init(jax.random.key(0), x)
  kernel, bias = params["params"]["kernel"], params["params"]["bias"]
  want = bf16_rounded(x) @ bf16_rounded(kernel) + np.asarray(bias)
  np.testing.assert_allclose(np.asarray(dense.apply(params, x)), want, rtol=1e-5, atol=1e-5)


def test_tied_logits_round_operands_in_all_three_products():
  rng = np.random.default_rng(3)
  x = rng.normal(size=(2, 3, 8)).astype(np.float32)
  embedding = rng.normal(size=(13, 8)).astype(np.float32)
  grad = rng.normal(size=(2, 3, 13)).astype(np.float32)
  out, vjp = jax.vjp(lambda u, e: kernels.tied_logits(u, e, jnp.bfloat16), x, embedding)
  d_x, d_embedding = vjp(grad)
  rx, re, rg = bf16_rounded(x), bf16_rounded(embedding), bf16_rounded(grad)
  np.testing.assert_allclose(np.asarray(out), np.einsum("bld,vd->blv", rx, re), rtol=1e-5)
  np.testing.assert_allclose(
    np.asarray(d_x), np.einsum("blv,vd->bld", rg, re), rtol=1e-5, atol=1e-5
  )
  np.testing.assert_allclose(
    np.asarray(d_embedding), np.einsum("blv,bld->vd", rg, rx), rtol=1e-5, atol=1e-5
  )


TINY = dict(vocab_size=40, num_layers=2, d_model=16, d_ff=32, num_heads=4, num_branches=4)
INPUTS = np.array([[5, 6, 7, 8, 9, 1, 0, 0], [10, 11, 1, 0, 0, 0, 0, 0]], np.int32)
TARGETS = np.array([[12, 13, 14, 15, 1, 0], [16, 17, 18, 1, 0, 0]], np.int32)


@pytest.mark.parametrize(
  "changes",
  [
    dict(attention="multihead"),
    dict(attention="weighted", branched_decoder="both"),
    dict(attention="weighted", branch_residual="sublayers", share_embeddings="none"),
  ],
)
def test_the_model_option_rounds_every_dense_matmul_and_stays_close(changes):
  config = models.ModelConfig(**TINY, **changes, dropout_rate=0.0)
  low = config.replace(matmul_dtype="bfloat16")
  assert low.matmul_operand_dtype == jnp.bfloat16 and config.matmul_operand_dtype is None
  params = models.init_params(config, jax.random.key(0))

  def loss_and_grads(cfg):
    def loss(p):
      logits = models.Transformer(cfg).apply({"params": p}, INPUTS, TARGETS)
      gold = jax.nn.one_hot(TARGETS, cfg.vocab_size)
      return -jnp.sum(gold * jax.nn.log_softmax(logits)) / jnp.sum(TARGETS > 0)

    return jax.jit(jax.value_and_grad(loss))(params)

  (loss32, grads32), (loss16, grads16) = loss_and_grads(config), loss_and_grads(low)
  assert loss16 != loss32  # the option took effect
  assert abs(float(loss16 - loss32)) < 2e-2 * abs(float(loss32))
  flat32, flat16 = jax.tree.leaves(grads32), jax.tree.leaves(grads16)
  assert all(g.dtype == jnp.float32 for g in flat16)
  vector32 = np.concatenate([np.ravel(g) for g in flat32])
  vector16 = np.concatenate([np.ravel(g) for g in flat16])
  # bfloat16 keeps 8 significant bits: a few percent over the whole gradient, each parameter's
  # gradient pointing the same way; a wrong gradient formula would be far off both.
  assert np.linalg.norm(vector16 - vector32) < 0.06 * np.linalg.norm(vector32)
  for g32, g16 in zip(flat32, flat16):
    cosine = np.vdot(g32, g16) / (np.linalg.norm(g32) * np.linalg.norm(g16) + 1e-30)
    assert cosine > 0.95

  # Every dense matmul of the step reads bfloat16. The float32 dots left are attention's
  # scores and weighted values (batched over heads) and the alpha-weighted sum over branches
  # (a vector operand).
  def logits_sum(p):
    return jnp.sum(models.Transformer(low).apply({"params": p}, INPUTS, TARGETS))

  lowered = jax.jit(jax.grad(logits_sum)).lower(params).as_text()
  dots = [line for line in lowered.splitlines() if "stablehlo.dot_general" in line]
  float32_matmuls = [
    line
    for line in dots
    if "batching_dims" not in line
    and "xbf16>" not in line
    and not re.search(r"tensor<\d+xf32>", line)  # a rank-1 operand: the weighted sum
  ]
  assert len(dots) > 20 and not float32_matmuls, float32_matmuls[:3]


def test_matmul_dtype_is_validated_and_moot_in_bfloat16():
  with pytest.raises(models.ConfigError, match="model.matmul_dtype"):
    models.ModelConfig(matmul_dtype="float16")
  assert models.ModelConfig(dtype="bfloat16", matmul_dtype="bfloat16").matmul_operand_dtype is None
