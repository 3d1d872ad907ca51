"""Kernels against an independent NumPy formula; the two attention paths; masks; finiteness."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.references import numpy_attention
from wt import kernels


def random_qkv(seed, batch=2, q_len=5, kv_len=7, heads=3, depth=4):
  rng = np.random.default_rng(seed)
  q = rng.normal(size=(batch, q_len, heads, depth)).astype(np.float32)
  k = rng.normal(size=(batch, kv_len, heads, depth)).astype(np.float32)
  v = rng.normal(size=(batch, kv_len, heads, depth)).astype(np.float32)
  return q, k, v


@pytest.mark.parametrize("implementation", [None, "einsum"])
@pytest.mark.parametrize("scale", [None, 1.0])
def test_attention_matches_numpy_with_mask_and_bias(implementation, scale):
  q, k, v = random_qkv(0)
  rng = np.random.default_rng(1)
  key_valid = np.array([[1, 1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1, 1]], bool)
  mask = np.array(
    kernels.combine_masks(
      kernels.key_padding_mask(jnp.asarray(key_valid)), jnp.asarray(rng.random((1, 1, 5, 7)) > 0.3)
    )
  )
  mask[..., 0] = True  # every query may see at least one key
  bias = rng.normal(size=(2, 3, 5, 7)).astype(np.float32)
  expected, expected_weights = numpy_attention(q, k, v, mask, bias, scale)
  got = kernels.dot_product_attention(
    q, k, v, mask, bias, scale=scale, implementation=implementation
  )
  np.testing.assert_allclose(np.asarray(got), expected, atol=1e-5, rtol=1e-5)
  weights = kernels.attention_weights(q, k, mask, bias, scale=scale)
  np.testing.assert_allclose(np.asarray(weights), expected_weights, atol=1e-6)


def test_scaling_switch_changes_the_scores():
  q, k, v = random_qkv(2, depth=16)
  scaled = kernels.dot_product_attention(q, k, v)
  unscaled = kernels.dot_product_attention(q, k, v, scale=1.0)
  np.testing.assert_allclose(
    np.asarray(unscaled), numpy_attention(q, k, v, scale=1.0)[0], atol=1e-5
  )
  assert np.abs(np.asarray(scaled) - np.asarray(unscaled)).max() > 1e-2


def test_fast_path_equals_einsum_path_in_bfloat16_too():
  q, k, v = (jnp.asarray(x, jnp.bfloat16) for x in random_qkv(3, q_len=9, kv_len=9))
  mask = kernels.causal_mask(9)
  fast = kernels.dot_product_attention(q, k, v, mask)
  slow = kernels.dot_product_attention(q, k, v, mask, implementation="einsum")
  assert fast.dtype == slow.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(fast, np.float32), np.asarray(slow, np.float32), atol=2e-2)


def test_masks_match_their_definitions():
  np.testing.assert_array_equal(
    np.asarray(kernels.causal_mask(4))[0, 0], np.tril(np.ones((4, 4), bool))
  )
  q_valid = jnp.array([[True, True, False]])
  k_valid = jnp.array([[True, False]])
  expected = np.array([[[[True, False], [True, False], [False, False]]]])
  np.testing.assert_array_equal(np.asarray(kernels.padding_mask(q_valid, k_valid)), expected)
  assert kernels.combine_masks(None, None) is None
  both = kernels.combine_masks(
    kernels.causal_mask(3), None, kernels.key_padding_mask(jnp.array([[True, True, False]]))
  )
  np.testing.assert_array_equal(
    np.asarray(both)[0, 0], np.tril(np.ones((3, 3), bool)) & [True, True, False]
  )


@pytest.mark.parametrize("implementation", [None, "einsum"])
def test_outputs_are_finite_when_every_key_is_masked(implementation):
  q, k, v = random_qkv(4)
  mask = jnp.zeros((2, 1, 5, 7), bool)  # an all-padding sentence
  out = kernels.dot_product_attention(q, k, v, mask, implementation=implementation)
  assert np.isfinite(np.asarray(out)).all()
  # Large scores must not overflow either.
  out = kernels.dot_product_attention(q * 1e4, k * 1e4, v, implementation=implementation)
  assert np.isfinite(np.asarray(out)).all()


def test_masked_keys_get_zero_weight_and_rows_sum_to_one():
  q, k, _ = random_qkv(5)
  mask = kernels.key_padding_mask(jnp.array([[1, 1, 0, 0, 0, 0, 0], [1] * 7], bool))
  weights = np.asarray(kernels.attention_weights(q, k, mask))
  np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-6)
  assert weights[0, :, :, 2:].max() == 0.0


def test_attention_dropout_is_deterministic_per_key_and_unbiased():
  q, k, v = random_qkv(6, batch=1, q_len=64, kv_len=64, heads=4, depth=8)
  run = lambda seed: kernels.dot_product_attention(
    q, k, v, dropout_rate=0.5, dropout_rng=jax.random.key(seed)
  )
  np.testing.assert_array_equal(np.asarray(run(0)), np.asarray(run(0)))
  assert np.abs(np.asarray(run(0)) - np.asarray(run(1))).max() > 1e-3
  x = jnp.ones((200_000,))
  dropped = np.asarray(kernels.dropout(x, 0.25, jax.random.key(0)))
  assert abs((dropped == 0).mean() - 0.25) < 0.01
  assert abs(dropped.mean() - 1.0) < 0.01
  np.testing.assert_array_equal(np.asarray(kernels.dropout(x, 0.25, None)), np.asarray(x))


def test_unknown_implementation_is_refused():
  q, k, v = random_qkv(7)
  with pytest.raises(ValueError, match="cuda"):
    kernels.dot_product_attention(q, k, v, implementation="cuda")
