"""Dropout masks from the unrolled Threefry hash (wt/kernels.py `bernoulli_mask`, the modules'
`Dropout`): the same masks as jax.random.bernoulli and flax.linen.Dropout, the keep rate, and
independence between elements and between keys."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wt import kernels, models, modules


@pytest.mark.parametrize(
  "make_key",
  [jax.random.PRNGKey, jax.random.key, lambda seed: jax.random.key(seed, impl="rbg")],
  ids=["raw threefry", "typed threefry", "rbg (falls back)"],
)
@pytest.mark.parametrize("shape", [(1,), (5, 7), (3, 4, 33)])
@pytest.mark.parametrize("keep", [0.9, 0.5, 0.013])
def test_masks_equal_jax_random_bernoulli(make_key, shape, keep):
  key = make_key(11)
  got = jax.jit(kernels.bernoulli_mask, static_argnums=(1, 2))(key, keep, shape)
  np.testing.assert_array_equal(np.asarray(got), np.asarray(jax.random.bernoulli(key, keep, shape)))


def test_keep_rate_and_independence():
  keep, shape = 0.9, (64, 128, 64)  # 524288 draws per mask
  key_a, key_b = jax.random.split(jax.random.PRNGKey(0))
  a = np.asarray(kernels.bernoulli_mask(key_a, keep, shape), np.float64)
  b = np.asarray(kernels.bernoulli_mask(key_b, keep, shape), np.float64)
  sigma = np.sqrt(keep * (1 - keep) / a.size)
  assert abs(a.mean() - keep) < 5 * sigma
  # Two keys' masks and neighbouring elements of one mask: P(both kept) = keep^2.
  assert abs((a * b).mean() - keep**2) < 5 * sigma
  assert abs((a[..., 1:] * a[..., :-1]).mean() - keep**2) < 5 * sigma
  assert abs((a[1:] * a[:-1]).mean() - keep**2) < 5 * sigma


def test_dropout_keeps_the_mean_and_scales_the_kept_values():
  x = jnp.ones((256, 512))
  y = np.asarray(kernels.dropout(x, 0.25, jax.random.PRNGKey(3)))
  np.testing.assert_allclose(np.unique(y), [0.0, 1.0 / 0.75], rtol=1e-6)
  assert abs(y.mean() - 1.0) < 0.01


@pytest.mark.slow
def test_the_model_draws_flax_dropout_s_masks():
  """The module is a drop-in: same RNG path names, same masks, the same training outputs."""
  config = models.ModelConfig(
    vocab_size=64,
    d_model=32,
    d_ff=64,
    num_heads=4,
    num_branches=4,
    num_layers=2,
    attention="weighted",
    branch_residual="sublayers",
    relu_dropout_rate=0.1,
    attention_dropout_rate=0.1,
  )
  params = models.init_params(config, jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)
  inputs = jnp.asarray(rng.integers(1, 64, (3, 7)), jnp.int32)
  targets = jnp.asarray(rng.integers(1, 64, (3, 5)), jnp.int32)
  run = lambda: models.Transformer(config).apply(
    {"params": params}, inputs, targets, train=True, rngs={"dropout": jax.random.PRNGKey(3)}
  )
  ours = run()
  original = (modules.Dropout, models.Dropout)
  modules.Dropout = models.Dropout = nn.Dropout
  try:
    flax_dropout = run()
  finally:
    modules.Dropout, models.Dropout = original
  np.testing.assert_array_equal(np.asarray(ours), np.asarray(flax_dropout))
  assert not np.allclose(
    np.asarray(ours),
    np.asarray(models.Transformer(config).apply({"params": params}, inputs, targets, train=False)),
  )  # dropout did act
