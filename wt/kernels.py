"""Pure attention kernels: masks, scaled dot-product attention and dropout, in plain jax.numpy.

Nothing here knows about Flax, configs or data. Both the standard multi-head block and the
branched (Weighted Transformer) block call `dot_product_attention` and get the per-head outputs
back, before any output projection, because the two blocks project them differently.

Shape names used throughout:
  batch, q_len (query positions), kv_len (key/value positions), heads, depth (per-head size).

Masks are boolean, True where a query position may attend to a key position, and broadcastable
to `[batch, heads, q_len, kv_len]`. Masked scores are replaced by a large negative *finite*
number, not minus infinity, so a row with every key masked (an all-padding sentence) gives a
uniform average instead of NaN: every output is finite for every valid input.
"""

from __future__ import annotations

import functools
import math
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from wt import matmul

Array = jax.Array

# Accepted values of `implementation` (None lets JAX pick for the backend).
IMPLEMENTATIONS = (None, "xla", "cudnn", "einsum")


def causal_mask(length: int) -> Array:
  """Lower-triangular mask `[1, 1, length, length]`: position i may attend to j <= i."""
  positions = jnp.arange(length)
  return (positions[None, :] <= positions[:, None])[None, None]


def padding_mask(query_valid: Array, key_valid: Array) -> Array:
  """Mask `[batch, 1, q_len, kv_len]` from validity vectors `[batch, q_len]`, `[batch, kv_len]`.

  A pair is allowed when both the query and the key position hold a real (non-pad) token.
  Padded query rows still get a finite output (see module docstring); callers ignore them.
  """
  return jnp.logical_and(query_valid[:, None, :, None], key_valid[:, None, None, :])


def key_padding_mask(key_valid: Array) -> Array:
  """Mask `[batch, 1, 1, kv_len]` that only hides padded keys (any number of queries)."""
  return key_valid[:, None, None, :]


def combine_masks(*masks: Optional[Array]) -> Optional[Array]:
  """Logical AND of the masks that are not None (broadcasting); None if all are None."""
  present = [m for m in masks if m is not None]
  if not present:
    return None
  combined = present[0]
  for mask in present[1:]:
    combined = jnp.logical_and(combined, mask)
  return combined


_THREEFRY_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def _threefry2x32(key0: Array, key1: Array, count0: Array, count1: Array):
  """The Threefry-2x32 block cipher, 20 rounds (Salmon et al. 2011): jax.random's hash.

  Written out, not looped: JAX lowers its own on CPU as an XLA while loop (to compile
  faster), which writes the whole array out after each group of four rounds; unrolled, XLA
  fuses the hash into the op that uses the bits (about 6x faster for dropout masks).
  """
  rotate = lambda x, r: (x << np.uint32(r)) | (x >> np.uint32(32 - r))
  keys = (key0, key1, key0 ^ key1 ^ np.uint32(0x1BD11BDA))
  x0, x1 = count0 + keys[0], count1 + keys[1]
  for group in range(5):
    for rotation in _THREEFRY_ROTATIONS[group % 2]:
      x0 = x0 + x1
      x1 = x0 ^ rotate(x1, rotation)
    x0 = x0 + keys[(group + 1) % 3]
    x1 = x1 + keys[(group + 2) % 3] + np.uint32(group + 1)
  return x0, x1


def _row_major_index(shape) -> Array:
  """uint32 `[*shape]`: each element's position in the flattened array."""
  index, stride = jnp.zeros(shape, jnp.uint32), 1
  for axis in reversed(range(len(shape))):
    index = index + jax.lax.broadcasted_iota(jnp.uint32, shape, axis) * np.uint32(stride)
    stride *= shape[axis]
  return index


def bernoulli_mask(rng: Array, keep_prob: float, shape) -> Array:
  """`jax.random.bernoulli(rng, keep_prob, shape)`, element for element, computed faster.

  For a threefry key (the default implementation) and fewer than 2^32 elements this is the
  same hash of the same counters (jax_threefry_partitionable, JAX's default) and the same
  comparison (uniform = the top 23 bits / 2^23 < keep_prob, here on the integer bits), so
  training draws the same dropout masks as `flax.linen.Dropout`; other keys, other settings
  and larger arrays go to `jax.random.bernoulli` itself.
  """
  shape = tuple(shape)
  typed = jnp.issubdtype(rng.dtype, jax.dtypes.prng_key)
  impl = str(jax.random.key_impl(rng)) if typed else jax.config.jax_default_prng_impl  # type: ignore[attr-defined]
  if (
    "threefry" not in impl
    or not jax.config.jax_threefry_partitionable  # type: ignore[attr-defined]
    or math.prod(shape) >= 2**32
    or rng.shape != ((2,) if not typed else ())
  ):
    return jax.random.bernoulli(rng, keep_prob, shape)
  key = jax.random.key_data(rng) if typed else rng
  bits0, bits1 = _threefry2x32(
    key[0], key[1], jnp.zeros(shape, jnp.uint32), _row_major_index(shape)
  )
  threshold = math.ceil(float(np.float32(keep_prob)) * 2**23)
  return ((bits0 ^ bits1) >> np.uint32(9)) < np.uint32(threshold)


def dropout(x: Array, rate: float, rng: Optional[Array]) -> Array:
  """Inverted dropout: zero each element with probability `rate`, scale the rest by 1/(1-rate).

  The mask is `flax.linen.Dropout`'s for the same key (`bernoulli_mask`)."""
  if rate == 0.0 or rng is None:
    return x
  if not 0.0 <= rate < 1.0:
    raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
  keep = bernoulli_mask(rng, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def tied_logits(x: Array, embedding: Array, operand_dtype=None) -> Array:
  """Logits `[..., vocab]` = x `[..., features]` times embedding `[vocab, features]` transposed.

  The product of `nn.Embed.attend`; only the backward pass is written out. Autodiff forms the
  embedding's gradient as g^T x, for which XLA:CPU first copies the `[tokens, vocab]` logits
  gradient g into a transposed layout (64 MB, strided, at bench-small); here it is (x^T g)^T,
  which reads g in place (0.7x the logits matmul + loss forward and backward, measured with
  wt.losses). With `operand_dtype` (jnp.bfloat16, `model.matmul_dtype`) the product and both
  gradients read operands of that dtype and return float32, as wt/matmul.py's `einsum` does.
  """
  with jax.named_scope("tied_logits"):
    return matmul.product("...d,vd->...v", x, embedding, operand_dtype)


def _tied_logits_forward(x, embedding, operand_dtype):
  return tied_logits(x, embedding, operand_dtype), (x, embedding)


@jax.named_scope("tied_logits")
def _tied_logits_backward(operand_dtype, residuals, grad):
  x, embedding = residuals
  d_x = matmul.product("...v,vd->...d", grad, embedding, operand_dtype).astype(x.dtype)
  flat_grad, flat_x = grad.reshape(-1, grad.shape[-1]), x.reshape(-1, x.shape[-1])
  d_embedding = matmul.product("nd,nv->dv", flat_x, flat_grad, operand_dtype).T
  d_embedding = d_embedding.astype(embedding.dtype)
  return d_x, d_embedding


tied_logits.defvjp(_tied_logits_forward, _tied_logits_backward)


def _as_4d(x: Array) -> Array:
  """Left-pads the rank of a mask or bias to 4 so it broadcasts as [batch, heads, q, kv]."""
  return jnp.reshape(x, (1,) * (4 - x.ndim) + x.shape) if x.ndim < 4 else x


def _masked_value(dtype) -> float:
  """The large negative finite score that stands for 'may not attend' (as jax.nn uses)."""
  return -0.7 * float(jnp.finfo(dtype).max)


def default_scale(depth: int) -> float:
  """The paper's 1/sqrt(d_k) factor that keeps the softmax out of its flat region."""
  return 1.0 / math.sqrt(depth)


def attention_weights(
  query: Array,
  key: Array,
  mask: Optional[Array] = None,
  bias: Optional[Array] = None,
  *,
  scale: Optional[float] = None,
) -> Array:
  """Softmax attention weights `[batch, heads, q_len, kv_len]`, for inspection and plots.

  Args:
    query: `[batch, q_len, heads, depth]`.
    key: `[batch, kv_len, heads, depth]`.
    mask: boolean, broadcastable to `[batch, heads, q_len, kv_len]`, True = may attend.
    bias: additive, broadcastable to `[batch, heads, q_len, kv_len]`.
    scale: multiplies the scores; default 1/sqrt(depth), 1.0 turns scaling off.
  Returns:
    float32 weights; each row sums to 1.
  """
  scale = default_scale(query.shape[-1]) if scale is None else scale
  logits = jnp.einsum("bqhd,bkhd->bhqk", query, key, preferred_element_type=jnp.float32)
  logits = logits * scale
  if bias is not None:
    logits = logits + _as_4d(bias).astype(jnp.float32)
  if mask is not None:
    logits = jnp.where(_as_4d(mask), logits, _masked_value(jnp.float32))
  return jax.nn.softmax(logits, axis=-1)


def einsum_attention(
  query: Array,
  key: Array,
  value: Array,
  mask: Optional[Array] = None,
  bias: Optional[Array] = None,
  *,
  scale: Optional[float] = None,
  dropout_rate: float = 0.0,
  dropout_rng: Optional[Array] = None,
) -> Array:
  """The explicit einsum path of `dot_product_attention` (same arguments and shapes).

  Scores and softmax are computed in float32; attention dropout, when `dropout_rng` is given,
  drops whole weights (a query stops seeing a key), as in Vaswani et al.'s reference code.
  """
  weights = attention_weights(query, key, mask, bias, scale=scale)
  weights = dropout(weights, dropout_rate, dropout_rng).astype(value.dtype)
  return jnp.einsum("bhqk,bkhd->bqhd", weights, value)


def dot_product_attention(
  query: Array,
  key: Array,
  value: Array,
  mask: Optional[Array] = None,
  bias: Optional[Array] = None,
  *,
  scale: Optional[float] = None,
  dropout_rate: float = 0.0,
  dropout_rng: Optional[Array] = None,
  implementation: Optional[str] = None,
) -> Array:
  """softmax(Q K^T * scale + bias, masked) V, per head, not yet projected.

  Args:
    query: `[batch, q_len, heads, depth]`.
    key: `[batch, kv_len, heads, depth]`.
    value: `[batch, kv_len, heads, depth]`.
    mask: boolean, broadcastable to `[batch, heads, q_len, kv_len]`, True = may attend.
    bias: additive, broadcastable to `[batch, heads, q_len, kv_len]`.
    scale: multiplies the scores; default 1/sqrt(depth), 1.0 turns scaling off.
    dropout_rate: attention dropout on the weights (used only with `dropout_rng`).
    dropout_rng: PRNG key for attention dropout; None means deterministic.
    implementation: None, "xla" or "cudnn" go to `jax.nn.dot_product_attention`;
      "einsum" forces `einsum_attention`.
  Returns:
    `[batch, q_len, heads, depth]` in the dtype of `value`.

  Without dropout this calls `jax.nn.dot_product_attention` (fused kernels where the backend
  has them); with dropout it takes the einsum path, whose weights can be dropped out. The two
  paths agree to float tolerance (tested).
  """
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f"attention implementation {implementation!r} is not one of {IMPLEMENTATIONS}")
  scale = default_scale(query.shape[-1]) if scale is None else scale
  if implementation == "einsum" or (dropout_rate > 0.0 and dropout_rng is not None):
    return einsum_attention(
      query, key, value, mask, bias, scale=scale, dropout_rate=dropout_rate, dropout_rng=dropout_rng
    )
  return jax.nn.dot_product_attention(
    query,
    key,
    value,
    bias=None if bias is None else _as_4d(bias),
    mask=None if mask is None else _as_4d(mask),
    scale=scale,
    implementation=implementation,  # type: ignore[arg-type]  # checked above: not "einsum"
  )
