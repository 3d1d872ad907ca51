"""Linen blocks against NumPy references: multi-head, FFN, branched attention, branch weights."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.references import numpy_branched_attention, numpy_heads
from wt import kernels, modules


def _inputs(seed, batch=2, length=6, d_model=16):
  return np.random.default_rng(seed).normal(size=(batch, length, d_model)).astype(np.float32)


def test_multihead_equals_concat_heads_times_w_o_and_the_per_branch_sum():
  x = _inputs(0)
  mask = np.asarray(kernels.causal_mask(6))
  block = modules.MultiHeadAttention(num_heads=4, d_model=16)
  params = block.init(jax.random.key(0), x, x, mask, deterministic=True)["params"]
  got = np.asarray(block.apply({"params": params}, x, x, mask, deterministic=True))
  heads = numpy_heads(jax.tree.map(np.asarray, params["heads"]), x, x, mask)  # [b, q, h, d]
  w_o = np.asarray(params["out"]["kernel"])  # [h, d, model]
  concat = heads.reshape(2, 6, 16) @ w_o.reshape(16, 16)
  per_branch_sum = sum(heads[:, :, i, :] @ w_o[i] for i in range(4))
  np.testing.assert_allclose(got, concat, atol=1e-5)
  np.testing.assert_allclose(per_branch_sum, concat, atol=1e-5)


def test_feed_forward_matches_numpy():
  x = _inputs(1)
  block = modules.FeedForward(d_model=16, d_ff=32)
  params = jax.tree.map(np.asarray, block.init(jax.random.key(1), x, deterministic=True)["params"])
  got = block.apply({"params": params}, x, deterministic=True)
  hidden = np.maximum(x @ params["hidden"]["kernel"] + params["hidden"]["bias"], 0)
  expected = hidden @ params["output"]["kernel"] + params["output"]["bias"]
  np.testing.assert_allclose(np.asarray(got), expected, atol=1e-5)


def _perturbed(params, seed):
  """Parameters with every zero-initialised bias and unit LayerNorm scale moved, so that a
  reference that dropped one of them would disagree; kappa and alpha stay on the simplex."""
  rng = np.random.default_rng(seed)
  move = lambda path, p: (
    np.asarray(p) + (0.0 if modules.is_branch_weight(path) else 0.1 * rng.normal(size=np.shape(p)))
  )
  return jax.tree_util.tree_map_with_path(move, params)


@pytest.mark.parametrize("branch_ffn, hidden_size", [("split", 8), ("shared", 32), ("full", 32)])
def test_branched_attention_matches_numpy_eqs_5_to_7(branch_ffn, hidden_size):
  x, kv = _inputs(2), _inputs(3, length=9)
  mask = np.asarray(kernels.key_padding_mask(jnp.array([[1] * 9, [1] * 5 + [0] * 4], bool)))
  block = modules.BranchedAttention(num_branches=4, d_model=16, d_ff=32, branch_ffn=branch_ffn)
  params = block.init(jax.random.key(2), x, kv, mask, deterministic=True)["params"]
  params = _perturbed(params, 0)
  assert params["hidden_bias"].shape[-1] == hidden_size
  got = np.asarray(block.apply({"params": params}, x, kv, mask, deterministic=True))
  np.testing.assert_allclose(
    got, numpy_branched_attention(params, x, kv, mask, branch_ffn=branch_ffn), atol=1e-5
  )


@pytest.mark.parametrize("residual", modules.BRANCH_RESIDUALS)
@pytest.mark.parametrize("output_bias", modules.BRANCH_OUTPUT_BIASES)
@pytest.mark.parametrize("norm", ["post", "pre"])
def test_every_residual_placement_and_output_bias_matches_numpy(residual, output_bias, norm):
  x, kv = _inputs(5), _inputs(6, length=9)
  mask = np.asarray(kernels.key_padding_mask(jnp.array([[1] * 9, [1] * 5 + [0] * 4], bool)))
  block = modules.BranchedAttention(
    num_branches=4,
    d_model=16,
    d_ff=32,
    branch_residual=residual,
    branch_output_bias=output_bias,
    norm=norm,
  )
  apply_kwargs = dict(residual=x) if residual == "sublayers" else {}
  params = block.init(jax.random.key(4), x, kv, mask, deterministic=True, **apply_kwargs)["params"]
  params = _perturbed(params, 1)
  assert params["output_bias"].shape == ((4, 16) if output_bias == "per_branch" else (16,))
  got = np.asarray(block.apply({"params": params}, x, kv, mask, deterministic=True, **apply_kwargs))
  expected = numpy_branched_attention(
    params, x, kv, mask, residual=residual, output_bias=output_bias, norm=norm, layer_input=x
  )
  np.testing.assert_allclose(got, expected, atol=1e-4)


def test_output_bias_modes_are_one_function_but_not_one_gradient_for_alpha():
  """Per-branch biases all equal to the shared one give the same output on the simplex, yet
  the gradient reaching alpha differs (by b2 . dL/doutput in every coordinate)."""
  x = _inputs(7)
  blocks = {
    mode: modules.BranchedAttention(num_branches=4, d_model=16, d_ff=32, branch_output_bias=mode)
    for mode in modules.BRANCH_OUTPUT_BIASES
  }
  shared = _perturbed(
    blocks["shared"].init(jax.random.key(5), x, x, None, deterministic=True)["params"], 2
  )
  per_branch = dict(shared, output_bias=np.tile(shared["output_bias"], (4, 1)))
  loss = lambda mode: (
    lambda p: jnp.sum(jnp.sin(blocks[mode].apply({"params": p}, x, x, None, deterministic=True)))
  )
  np.testing.assert_allclose(loss("shared")(shared), loss("per_branch")(per_branch), rtol=1e-5)
  grad_shared = jax.grad(loss("shared"))(shared)["alpha"]["weights"]
  grad_per_branch = jax.grad(loss("per_branch"))(per_branch)["alpha"]["weights"]
  difference = np.asarray(grad_per_branch) - np.asarray(grad_shared)
  assert np.abs(difference).max() > 1e-3
  np.testing.assert_allclose(difference, difference[0], rtol=1e-4)  # the same constant


def test_sublayers_placement_needs_the_layer_input_and_fold_needs_block():
  x = _inputs(8)
  block = modules.BranchedAttention(
    num_branches=4, d_model=16, d_ff=32, branch_residual="sublayers"
  )
  with pytest.raises(ValueError, match="residual"):
    block.init(jax.random.key(0), x, x, None, deterministic=True)
  folded = modules.BranchedAttention(
    num_branches=4, d_model=16, d_ff=32, branch_residual="ffn", fold_output=True
  )
  with pytest.raises(ValueError, match="fold_output"):
    folded.init(jax.random.key(0), x, x, None, deterministic=True)


def test_branched_attention_uses_kappa_and_alpha():
  x = _inputs(4)
  block = modules.BranchedAttention(num_branches=4, d_model=16, d_ff=32)
  params = block.init(jax.random.key(3), x, x, None, deterministic=True)["params"]
  base = block.apply({"params": params}, x, x, None, deterministic=True)
  for name in ("kappa", "alpha"):
    moved = jax.tree.map(lambda p: p, params)
    moved[name] = {"weights": jnp.array([0.7, 0.1, 0.1, 0.1])}
    out = block.apply({"params": moved}, x, x, None, deterministic=True)
    assert np.abs(np.asarray(out) - np.asarray(base)).max() > 1e-4


@pytest.mark.parametrize("mode", ["projection", "softmax"])
def test_learned_branch_weights_start_on_the_simplex(mode):
  block = modules.BranchWeights(num_branches=8, mode=mode)
  params = block.init(jax.random.key(0), deterministic=True)
  weights = np.asarray(block.apply(params, deterministic=True))
  assert weights.shape == (8,) and (weights > 0).all()
  np.testing.assert_allclose(weights.sum(), 1.0, atol=1e-6)
  assert weights.std() > 1e-3  # random, not uniform


def test_both_learned_modes_start_from_the_same_weights():
  init = lambda mode: modules.BranchWeights(8, mode).init(jax.random.key(5), deterministic=True)
  apply = lambda mode: modules.BranchWeights(8, mode).apply(init(mode), deterministic=True)
  np.testing.assert_allclose(
    np.asarray(apply("projection")), np.asarray(apply("softmax")), atol=1e-6
  )


def test_uniform_mode_has_no_parameter_and_test_time_replacements():
  uniform = modules.BranchWeights(num_branches=4, mode="uniform")
  assert uniform.init(jax.random.key(0), deterministic=True) == {}
  np.testing.assert_allclose(np.asarray(uniform.apply({}, deterministic=True)), 0.25)

  learned = modules.BranchWeights(num_branches=4)
  params = learned.init(jax.random.key(0), deterministic=True)
  as_uniform = modules.BranchWeights(num_branches=4, test_weights="uniform")
  np.testing.assert_allclose(np.asarray(as_uniform.apply(params, deterministic=True)), 0.25)
  # At training time the learned weights are used whatever the test-time setting.
  np.testing.assert_allclose(
    np.asarray(as_uniform.apply(params, deterministic=False)),
    np.asarray(params["params"]["weights"]),
  )
  as_random = modules.BranchWeights(num_branches=4, test_weights="random")
  first = np.asarray(as_random.apply(params, deterministic=True))
  np.testing.assert_allclose(first.sum(), 1.0, atol=1e-6)
  np.testing.assert_array_equal(first, np.asarray(as_random.apply(params, deterministic=True)))
  assert np.abs(first - np.asarray(params["params"]["weights"])).max() > 1e-3
