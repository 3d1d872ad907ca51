"""The fused label-smoothed cross entropy (wt/losses.py) and the tied logits projection
(wt/kernels.py `tied_logits`): values against the NumPy reference, gradients against autodiff
of the plain formula and against finite differences of the NumPy reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.references import numpy_smoothed_cross_entropy
from wt import kernels, losses


def _case(seed=0, shape=(3, 5), vocab=11, scale=3.0):
  rng = np.random.default_rng(seed)
  logits = (rng.normal(size=shape + (vocab,)) * scale).astype(np.float32)
  targets = rng.integers(1, vocab, size=shape)
  targets[0, 3:] = 0  # padding
  weights = (targets > 0).astype(np.float32)
  return logits, targets, weights


def plain_formula(logits, targets, weights, smoothing):
  """The loss as autodiff sees it written out: -sum(soft * log_softmax) - entropy."""
  vocab = logits.shape[-1]
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  gold = jax.nn.one_hot(targets, vocab, dtype=jnp.float32)
  low = smoothing / (vocab - 1)
  soft = gold * (1.0 - smoothing - low) + low
  entropy = -jnp.sum(jax.scipy.special.xlogy(soft, soft), axis=-1)
  loss = -jnp.sum(soft * log_probs, axis=-1) - entropy
  nll = -jnp.sum(gold * log_probs, axis=-1)
  return jnp.sum(loss * weights), jnp.sum(nll * weights)


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.4, 1.0])
def test_values_match_numpy(smoothing):
  logits, targets, weights = _case(scale=20.0)  # large logits: the row max matters
  loss, nll = losses.label_smoothed_cross_entropy(logits, targets, weights, smoothing)
  want_loss, want_nll = numpy_smoothed_cross_entropy(
    logits.astype(np.float64), targets, weights.astype(np.float64), smoothing
  )
  np.testing.assert_allclose(float(loss), want_loss, rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(float(nll), want_nll, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_gradients_match_autodiff_of_the_plain_formula(smoothing):
  logits, targets, weights = _case(seed=1)
  weights = weights * np.linspace(0.5, 2.0, weights.size, dtype=np.float32).reshape(
    weights.shape
  )  # non-uniform weights: their gradient is checked too
  for output in (0, 1):  # the smoothed loss and the NLL, each on its own
    fused = jax.grad(
      lambda x, w, o=output: losses.label_smoothed_cross_entropy(x, targets, w, smoothing)[o],
      argnums=(0, 1),
    )(logits, weights)
    plain = jax.grad(
      lambda x, w, o=output: plain_formula(x, targets, w, smoothing)[o], argnums=(0, 1)
    )(logits, weights)
    for got, want in zip(fused, plain):
      np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-6)


def test_gradient_matches_finite_differences_of_numpy():
  smoothing, step = 0.1, 1e-3
  logits, targets, weights = _case(seed=2, shape=(2, 3), vocab=7, scale=2.0)
  # Both outputs at once, with cotangents 0.7 and -0.3.
  combined = lambda x: (
    0.7 * losses.label_smoothed_cross_entropy(x, targets, weights, smoothing)[0]
    - 0.3 * losses.label_smoothed_cross_entropy(x, targets, weights, smoothing)[1]
  )
  grad = np.asarray(jax.grad(combined)(logits), np.float64)

  def reference(x):
    loss, nll = numpy_smoothed_cross_entropy(x, targets, weights.astype(np.float64), smoothing)
    return 0.7 * loss - 0.3 * nll

  base = logits.astype(np.float64)
  numeric = np.zeros_like(base)
  for index in np.ndindex(base.shape):
    plus, minus = base.copy(), base.copy()
    plus[index] += step
    minus[index] -= step
    numeric[index] = (reference(plus) - reference(minus)) / (2 * step)
  np.testing.assert_allclose(grad, numeric, rtol=1e-3, atol=1e-5)
  assert np.all(grad[0, 3:] == 0.0)  # padded positions get no gradient


def test_bfloat16_logits_give_bfloat16_gradients_close_to_float32():
  logits, targets, weights = _case(seed=3)
  loss = lambda x: losses.label_smoothed_cross_entropy(x, targets, weights, 0.1)[0]
  got = jax.grad(loss)(jnp.asarray(logits, jnp.bfloat16))
  want = jax.grad(loss)(jnp.asarray(logits, jnp.bfloat16).astype(jnp.float32))
  assert got.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want), atol=2e-2)


def test_a_perfect_prediction_scores_zero_and_bad_smoothing_is_refused():
  vocab, smoothing = 7, 0.1
  probs = np.full((1, vocab), smoothing / (vocab - 1))
  probs[0, 3] = 1 - smoothing
  loss, _ = losses.label_smoothed_cross_entropy(
    np.log(probs).astype(np.float32), np.array([3]), np.ones(1, np.float32), smoothing
  )
  assert abs(float(loss)) < 1e-5
  with pytest.raises(ValueError, match="label_smoothing"):
    losses.label_smoothed_cross_entropy(
      np.zeros((1, vocab), np.float32), np.array([3]), np.ones(1, np.float32), 1.5
    )


def test_tied_logits_match_the_plain_product_and_its_gradients():
  rng = np.random.default_rng(4)
  x = rng.normal(size=(2, 3, 8)).astype(np.float32)
  embedding = rng.normal(size=(13, 8)).astype(np.float32)
  cotangent = rng.normal(size=(2, 3, 13)).astype(np.float32)
  np.testing.assert_allclose(
    np.asarray(kernels.tied_logits(x, embedding)),
    np.einsum("bld,vd->blv", x, embedding),
    rtol=1e-5,
    atol=1e-5,
  )
  fused = jax.vjp(kernels.tied_logits, x, embedding)[1](cotangent)
  want_x = np.einsum("blv,vd->bld", cotangent, embedding)
  want_embedding = np.einsum("blv,bld->vd", cotangent, x)
  np.testing.assert_allclose(np.asarray(fused[0]), want_x, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(fused[1]), want_embedding, rtol=1e-5, atol=1e-5)
