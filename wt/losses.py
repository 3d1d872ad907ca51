"""The label-smoothed cross entropy over the vocabulary, fused: one custom-VJP function.

Written plainly (log_softmax, then a product with the soft targets), autodiff walks the
`[tokens, vocab]` logits several times: the forward pass writes the log-probabilities and
reads them back for each sum, and the backward pass recomputes their softmax and writes
intermediate gradients. On CPU that was 15% of a small model's training step
(docs/benchmarks.md). Here the forward pass only reduces the logits (row max, sum of
exponentials, row sum, the gold logit) to per-token numbers, using

  -sum_v soft_v log p_v = lse - (1 - ls - low) logit_gold - low sum_v logit_v,

(soft = the smoothed target, ls on the vocab - 1 wrong tokens, low = ls / (vocab - 1),
lse = logsumexp of the row), and the backward pass writes the logits' gradient in one
element-wise loop over the logits,

  d logits = w (g_loss + g_nll) softmax - w (g_loss (1 - ls - low) + g_nll) onehot - w g_loss low,

with the softmax recomputed from the saved lse and the one-hot from an iota comparison (no
gather turns into a scatter, no transposed copy). Both outputs, the weights and the
per-token values have exact gradients, so the function can be differentiated like the
plain formula (tests/test_losses.py checks it against the NumPy reference and jax.grad of
the plain formula).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

Array = jax.Array


def smoothing_constants(vocab: int, label_smoothing: float) -> tuple[float, float, float]:
  """(confidence, low, floor): the gold token's and every other token's target probability,
  and the smoothed target's entropy (with 0 log 0 = 0), which is subtracted from the loss so
  that a perfect prediction scores 0."""
  confidence = 1.0 - label_smoothing
  low = label_smoothing / (vocab - 1) if vocab > 1 else 0.0
  xlogx = lambda p: p * math.log(p) if p > 0.0 else 0.0
  floor = -(xlogx(confidence) + (vocab - 1) * xlogx(low))
  return confidence, low, floor


def _per_token(logits: Array, targets: Array, label_smoothing: float):
  """(smoothed loss, NLL, lse) per row of 2-D float32 logits, from reductions only."""
  vocab = logits.shape[-1]
  confidence, low, floor = smoothing_constants(vocab, label_smoothing)
  row_max = jax.lax.stop_gradient(jnp.max(logits, axis=-1))
  lse = jnp.log(jnp.sum(jnp.exp(logits - row_max[:, None]), axis=-1)) + row_max
  gold = jnp.take_along_axis(logits, targets[:, None], axis=-1, mode="clip")[:, 0]
  nll = lse - gold
  if low == 0.0:
    smoothed = lse - confidence * gold - floor
  else:
    smoothed = lse - (confidence - low) * gold - low * jnp.sum(logits, axis=-1) - floor
  return smoothed, nll, lse


_SCOPE = (
  "label_smoothed_cross_entropy"  # names the ops in profiles (experiments/benchmarks/profile.py)
)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _fused(logits: Array, targets: Array, weights: Array, label_smoothing: float):
  with jax.named_scope(_SCOPE):
    smoothed, nll, _ = _per_token(logits.astype(jnp.float32), targets, label_smoothing)
    return jnp.sum(smoothed * weights), jnp.sum(nll * weights)


def _fused_forward(logits, targets, weights, label_smoothing):
  with jax.named_scope(_SCOPE):
    smoothed, nll, lse = _per_token(logits.astype(jnp.float32), targets, label_smoothing)
    outputs = (jnp.sum(smoothed * weights), jnp.sum(nll * weights))
  return outputs, (logits, targets, weights, smoothed, nll, lse)


@jax.named_scope(_SCOPE)
def _fused_backward(label_smoothing, residuals, cotangents):
  logits, targets, weights, smoothed, nll, lse = residuals
  g_loss, g_nll = cotangents
  confidence, low, _ = smoothing_constants(logits.shape[-1], label_smoothing)
  on_softmax = weights * (g_loss + g_nll)
  on_gold = weights * (g_loss * (confidence - low) + g_nll)
  on_every = weights * g_loss * low
  is_gold = jax.lax.broadcasted_iota(jnp.int32, logits.shape, 1) == targets[:, None]
  probs = jnp.exp(logits.astype(jnp.float32) - lse[:, None])
  d_logits = (
    on_softmax[:, None] * probs - jnp.where(is_gold, on_gold[:, None], 0.0) - on_every[:, None]
  )
  d_weights = (g_loss * smoothed + g_nll * nll).astype(weights.dtype)
  # Integer targets take a float0 cotangent (they have no tangent space).
  d_targets = jnp.zeros(targets.shape, jax.dtypes.float0)
  return d_logits.astype(logits.dtype), d_targets, d_weights


_fused.defvjp(_fused_forward, _fused_backward)


def label_smoothed_cross_entropy(
  logits: Array, targets: Array, weights: Array, label_smoothing: float
) -> tuple[Array, Array]:
  """Summed label-smoothed cross entropy and summed plain negative log-likelihood.

  logits `[..., vocab]` (any float dtype; computed in float32), targets `[...]` int,
  weights `[...]` (1 = real token, 0 = padding; any non-negative weights). The smoothed
  target puts 1 - ls on the gold token and ls / (vocab - 1) on each other one; its entropy is
  subtracted, so a perfect prediction scores 0. Both sums are differentiable (module
  docstring); the training loss differentiates the first only.
  """
  if not 0.0 <= label_smoothing <= 1.0:
    raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
  vocab = logits.shape[-1]
  return _fused(
    logits.reshape(-1, vocab),
    targets.reshape(-1).astype(jnp.int32),
    weights.reshape(-1).astype(jnp.float32),
    float(label_smoothing),
  )
