"""Linen building blocks: thin wrappers that own parameters and call the pure kernels.

  AttentionHeads     Q/K/V projections + `kernels.dot_product_attention` + the decode cache;
                     returns per-head outputs `[batch, q_len, heads, depth]`.
  MultiHeadAttention AttentionHeads, then Concat(heads) W^O                  (Vaswani Eq. in 3.2.2)
  FeedForward        max(0, x W1 + b1) W2 + b2
  BranchedAttention  AttentionHeads with one head per branch, then
                     sum_i alpha_i FFN_i(kappa_i head_i W^{O_i})             (Ahmed et al. Eqs. 5-7)
                     with the residuals and norms where `branch_residual` puts them
  BranchLayerNorm    one LayerNorm per branch, on a branch-major `[M, n, features]` array
  BranchWeights      kappa or alpha: M positive scalars on the probability simplex.
  Dropout            flax's Dropout with the same masks, drawn faster (kernels.bernoulli_mask)

The blocks know nothing of training: dropout keys come from the 'dropout' RNG stream when
`deterministic=False`, and incremental decoding state lives in the 'cache' collection.
"""

from __future__ import annotations

import zlib
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from wt import kernels, matmul

Array = jax.Array
Dtype = Any

BRANCH_WEIGHT_MODES = ("projection", "softmax", "uniform")
TEST_BRANCH_WEIGHTS = ("learned", "uniform", "random")
BRANCH_FFN_MODES = ("split", "shared", "full")
BRANCH_RESIDUALS = ("block", "ffn", "sublayers")
BRANCH_OUTPUT_BIASES = ("shared", "per_branch")

# Glorot-uniform with the fans of one branch: axis 0 of a per-branch kernel is the branch axis.
branch_kernel_init = nn.initializers.xavier_uniform(in_axis=-2, out_axis=-1, batch_axis=(0,))


def _heads_major(x: Array) -> Array:
  """`[batch, length, heads, depth]` <-> `[batch, heads, length, depth]` (its own inverse)."""
  return jnp.swapaxes(x, 1, 2)


class AttentionHeads(nn.Module):
  """Projects queries, keys and values into heads and attends; returns per-head outputs.

  Attributes:
    num_heads: number of heads h.
    head_dim: per-head size d_k = d_v.
    scale_attention: multiply scores by 1/sqrt(d_k) (True, the paper) or not (the ablation).
    dropout_rate: attention dropout on the weights.
    implementation: see `kernels.dot_product_attention`.
    dtype: compute dtype; parameters stay float32.

  Incremental decoding (`decode=True`): self-attention appends this step's key and value to a
  cache `[batch, max_len, heads, depth]` and attends to the filled part; cross-attention
  projects the encoder output once, when the cache is created, and reuses it at every step.
  """

  num_heads: int
  head_dim: int
  scale_attention: bool = True
  dropout_rate: float = 0.0
  implementation: Optional[str] = None
  dtype: Dtype = jnp.float32
  matmul_dtype: Optional[Dtype] = None

  def _projection(self, name: str) -> nn.DenseGeneral:
    return nn.DenseGeneral(
      features=(self.num_heads, self.head_dim),
      use_bias=False,
      kernel_init=nn.initializers.xavier_uniform(),
      dtype=self.dtype,
      dot_general=matmul.dense_dot_general(self.matmul_dtype),
      name=name,
    )

  @nn.compact
  def __call__(
    self,
    inputs_q: Array,
    inputs_kv: Array,
    mask: Optional[Array],
    *,
    deterministic: bool,
    decode: bool = False,
    cross: bool = False,
  ) -> Array:
    """inputs_q `[batch, q_len, features]`, inputs_kv `[batch, kv_len, features]`.

    `mask` is broadcastable to `[batch, heads, q_len, kv_len]`; in self-attention decode mode
    the cache supplies the causal mask and `mask` may be None. Returns
    `[batch, q_len, heads, head_dim]`.
    """
    query_proj, key_proj, value_proj = (self._projection(n) for n in ("query", "key", "value"))
    query = query_proj(inputs_q)
    if decode and cross:
      key, value = self._cached_encoder_projection(inputs_kv, key_proj, value_proj)
    else:
      key, value = key_proj(inputs_kv), value_proj(inputs_kv)
      if decode:
        key, value, mask = self._extend_self_attention_cache(key, value, mask)

    dropout_rng = None
    if not deterministic and self.dropout_rate > 0.0:
      dropout_rng = self.make_rng("dropout")
    scale = None if self.scale_attention else 1.0
    return kernels.dot_product_attention(
      query,
      key,
      value,
      mask,
      scale=scale,
      dropout_rate=self.dropout_rate,
      dropout_rng=dropout_rng,
      implementation=self.implementation,
    )

  def _cached_encoder_projection(self, encoded, key_proj, value_proj):
    """Keys and values of the encoder output, computed when the cache is created."""
    cached_key = self.variable("cache", "cross_key", lambda: key_proj(encoded))
    cached_value = self.variable("cache", "cross_value", lambda: value_proj(encoded))
    return cached_key.value, cached_value.value

  def _extend_self_attention_cache(self, key, value, mask):
    """Writes this step's key/value at the cache index; returns the whole cache and its mask.

    On the call that creates the cache (the caller passes the full-length target shape) the
    cache is only allocated, with zeros, and the inputs pass through unchanged.
    """
    is_initialized = self.has_variable("cache", "cached_key")
    # Stored heads-major, `[batch, heads, max_len, depth]`, the layout the score and value
    # products read: stored `[batch, max_len, ...]`, XLA:CPU copied the whole cache at each
    # step's write instead of updating it in place.
    cached_key = self.variable("cache", "cached_key", lambda: jnp.zeros_like(_heads_major(key)))
    cached_value = self.variable(
      "cache", "cached_value", lambda: jnp.zeros_like(_heads_major(value))
    )
    cache_index = self.variable("cache", "cache_index", lambda: jnp.array(0, jnp.int32))
    if not is_initialized:
      return key, value, mask
    batch, num_heads, max_len, head_dim = cached_key.value.shape
    if key.shape != (batch, 1, num_heads, head_dim):
      raise ValueError(
        f"incremental decoding feeds one position at a time: expected a key of "
        f"shape {(batch, 1, num_heads, head_dim)}, got {key.shape}"
      )
    index = cache_index.value
    at = (0, 0, index, 0)
    cached_key.value = jax.lax.dynamic_update_slice(cached_key.value, _heads_major(key), at)
    cached_value.value = jax.lax.dynamic_update_slice(cached_value.value, _heads_major(value), at)
    cache_index.value = index + 1
    filled = (jnp.arange(max_len) <= index)[None, None, None, :]
    return (
      _heads_major(cached_key.value),
      _heads_major(cached_value.value),
      kernels.combine_masks(mask, filled),
    )


class MultiHeadAttention(nn.Module):
  """MultiHead(Q, K, V) = Concat(head_1..head_h) W^O, with W^O stored as `[heads, depth, model]`.

  Storing W^O per head makes the identity with the branched block visible: the concatenation
  times W^O equals the sum over heads of head_i W^{O_i}.
  """

  num_heads: int
  d_model: int
  scale_attention: bool = True
  dropout_rate: float = 0.0
  implementation: Optional[str] = None
  dtype: Dtype = jnp.float32
  matmul_dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, inputs_q, inputs_kv, mask, *, deterministic, decode=False, cross=False):
    heads = AttentionHeads(
      num_heads=self.num_heads,
      head_dim=self.d_model // self.num_heads,
      scale_attention=self.scale_attention,
      dropout_rate=self.dropout_rate,
      implementation=self.implementation,
      dtype=self.dtype,
      matmul_dtype=self.matmul_dtype,
      name="heads",
    )(inputs_q, inputs_kv, mask, deterministic=deterministic, decode=decode, cross=cross)
    return nn.DenseGeneral(
      self.d_model,
      axis=(-2, -1),
      use_bias=False,
      kernel_init=nn.initializers.xavier_uniform(),
      dtype=self.dtype,
      dot_general=matmul.dense_dot_general(self.matmul_dtype),
      name="out",
    )(heads)


class Dropout(nn.Module):
  """`flax.linen.Dropout` (same name, so the same RNG path and keys; same masks), drawing its
  mask with `kernels.bernoulli_mask`, whose Threefry hash XLA:CPU fuses into the mask's use."""

  rate: float

  @nn.compact
  def __call__(self, inputs: Array, *, deterministic: bool) -> Array:
    if self.rate == 0.0 or deterministic:
      return inputs
    return kernels.dropout(inputs, self.rate, self.make_rng("dropout"))


class FeedForward(nn.Module):
  """FFN(x) = max(0, x W1 + b1) W2 + b2, with optional dropout on the hidden activations."""

  d_model: int
  d_ff: int
  dropout_rate: float = 0.0
  dtype: Dtype = jnp.float32
  matmul_dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x: Array, *, deterministic: bool) -> Array:
    dense = lambda features, name: nn.Dense(
      features,
      dtype=self.dtype,
      name=name,
      kernel_init=nn.initializers.xavier_uniform(),
      dot_general=matmul.dense_dot_general(self.matmul_dtype),
    )
    hidden = nn.relu(dense(self.d_ff, "hidden")(x))
    hidden = Dropout(self.dropout_rate)(hidden, deterministic=deterministic)
    return dense(self.d_model, "output")(hidden)


def random_simplex_point(key: Array, size: int) -> Array:
  """A point of the probability simplex: uniform(0, 1) draws normalised to sum to 1."""
  weights = jax.random.uniform(key, (size,), jnp.float32, minval=1e-3, maxval=1.0)
  return weights / jnp.sum(weights)


class BranchWeights(nn.Module):
  """kappa or alpha of one branched sublayer: `[num_branches]` positive, summing to 1.

  Modes (`ModelConfig.branch_weights`):
    projection: the parameter is the weight itself, kept on the simplex by the optimizer's
      Euclidean projection after every update (the paper's reading);
    softmax: the parameter holds logits and the weight is their softmax;
    uniform: no parameter, the weight is fixed at 1/M.
  Both learned modes start from the same random simplex point (the paper's distribution is not
  stated). `test_weights` replaces the learned values when `deterministic` (the paper's
  Table 3): "uniform" gives 1/M, "random" a fixed simplex point drawn from the module's path.
  """

  num_branches: int
  mode: str = "projection"
  test_weights: str = "learned"

  @nn.compact
  def __call__(self, *, deterministic: bool) -> Array:
    size = self.num_branches
    uniform = jnp.full((size,), 1.0 / size, jnp.float32)
    if self.mode == "projection":
      weights = self.param("weights", random_simplex_point, size)
    elif self.mode == "softmax":
      logits = self.param("weights", lambda key, n: jnp.log(random_simplex_point(key, n)), size)
      weights = jax.nn.softmax(logits)
    else:
      weights = uniform
    if not deterministic or self.test_weights == "learned":
      return weights
    if self.test_weights == "uniform":
      return uniform
    path_seed = zlib.crc32("/".join(self.path).encode())
    return random_simplex_point(jax.random.key(path_seed), size)


def is_branch_weight(path) -> bool:
  """True for a parameter path (jax key path) that goes through a kappa or alpha module."""
  return any(getattr(key, "key", None) in ("kappa", "alpha") for key in path)


def branch_weight_values(params, mode: str) -> dict[str, jax.Array]:
  """{"encoder_layers_0/self_attention/kappa": weights, ...}: the effective kappa and alpha
  vectors of a parameter tree (softmax applied in "softmax" mode), for logs and plots."""
  values = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    if is_branch_weight(path):
      name = "/".join(str(getattr(key, "key", key)) for key in path[:-1])
      values[name] = jax.nn.softmax(leaf) if mode == "softmax" else leaf
  return values


class BranchedAttention(nn.Module):
  """Branched attention of the Weighted Transformer; replaces attention + FFN of a layer.

    head_i          = Attention(Q W_i^Q, K W_i^K, V W_i^V)        one head per branch
    o_i             = kappa_i head_i W^{O_i}                      W^{O_i}: [depth, model]
    BranchedAtt(x)  = sum_i alpha_i FFN_i(o_i)                    (Ahmed et al. Eqs. 5-7)

  All branches run as batched einsums over a branch axis (no Python loop). `branch_ffn`:
    split:  M FFNs of inner size d_ff / M (parameter count equal to a Transformer layer);
    shared: one full FFN applied to every branch;
    full:   M FFNs of inner size d_ff.

  The paper keeps "residual connections and layer normalisation" without saying where.
  `branch_residual` places them (post-norm shown; LN_i is one LayerNorm per branch, `residual`
  is the layer's input x, and each Dropout is the residual dropout):
    block:     sum_i alpha_i FFN_i(o_i); the layer adds LN(x + Dropout(.)) around the block.
    ffn:       sum_i alpha_i LN_i(o_i + Dropout(FFN_i(o_i))); the layer's LN(x + .) around it,
               as the public PyTorch implementation of the paper does.
    sublayers: z_i = LN_i(x + Dropout(o_i)),  u_i = LN'_i(z_i + Dropout(FFN_i(z_i))),
               sum_i alpha_i u_i: each branch keeps both residuals of a Transformer layer,
               and the layer adds nothing around the block.
  With `norm="pre"` each LN moves onto its sublayer's input (x + f(LN(x))) instead.

  `branch_output_bias`: "shared" adds one b2 to every FFN_i; "per_branch" gives FFN_i its own
  b2_i, weighted by alpha_i with the rest of FFN_i. On the simplex the two are the same
  function in "block" mode, but not the same parametrisation: the gradient reaching alpha
  differs, and with it Adam's steps.

  `fold_output` ("block" only) computes the same function in another order:
  (head_i kappa_i W^{O_i}) W1_i = head_i (kappa_i W^{O_i} W1_i), the product `[M, depth, F]`
  formed once per call, which replaces two matmuls per token by one narrower one.
  """

  num_branches: int
  d_model: int
  d_ff: int
  branch_ffn: str = "split"
  branch_weights: str = "projection"
  test_branch_weights: str = "learned"
  branch_residual: str = "block"
  branch_output_bias: str = "shared"
  norm: str = "post"
  scale_attention: bool = True
  attention_dropout_rate: float = 0.0
  relu_dropout_rate: float = 0.0
  residual_dropout_rate: float = 0.0
  layer_norm_epsilon: float = 1e-6
  implementation: Optional[str] = None
  fold_output: bool = False
  dtype: Dtype = jnp.float32
  matmul_dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(
    self, inputs_q, inputs_kv, mask, *, deterministic, decode=False, cross=False, residual=None
  ):
    """inputs_q `[batch, q_len, model]`, inputs_kv `[batch, kv_len, model]`; `residual`
    `[batch, q_len, model]` is the layer's input x, used (and required) by "sublayers" only.
    Returns `[batch, q_len, model]`."""
    if self.branch_residual == "sublayers" and residual is None:
      raise ValueError(
        "branch_residual='sublayers' adds the layer input inside the block: pass it as `residual`"
      )
    if self.fold_output and self.branch_residual != "block":
      raise ValueError(
        f"fold_output needs branch_residual='block' (got "
        f"{self.branch_residual!r}): the other placements use o_i itself"
      )
    num_branches, head_dim = self.num_branches, self.d_model // self.num_branches
    heads = AttentionHeads(
      num_heads=num_branches,
      head_dim=head_dim,
      scale_attention=self.scale_attention,
      dropout_rate=self.attention_dropout_rate,
      implementation=self.implementation,
      dtype=self.dtype,
      matmul_dtype=self.matmul_dtype,
      name="heads",
    )(
      inputs_q, inputs_kv, mask, deterministic=deterministic, decode=decode, cross=cross
    )  # [b, q, M, depth]
    weight = lambda name: BranchWeights(
      num_branches, self.branch_weights, self.test_branch_weights, name=name
    )(deterministic=deterministic)
    kappa, alpha = weight("kappa"), weight("alpha")
    out_kernel, ffn = self._parameters()
    out_kernel = out_kernel * kappa[:, None, None]

    # Branch-major with batch and positions flattened, [M, b * q, depth]: XLA then runs every
    # branch einsum as a plain batched matmul without a transpose around it.
    batch, length = heads.shape[:2]
    heads = jnp.transpose(heads, (2, 0, 1, 3)).reshape(num_branches, batch * length, head_dim)
    cast = lambda array: array.astype(self.dtype)
    if self.branch_residual == "block":
      if self.fold_output:
        # (head_i kappa_i W^{O_i}) W1_i = head_i (kappa_i W^{O_i} W1_i): one [depth, F] kernel.
        folded = jnp.einsum("hdm,hmf->hdf", out_kernel, ffn["hidden_kernel"])
        hidden = self._matmul("hnd,hdf->hnf", heads, folded)
      else:
        branches = self._matmul("hnd,hdm->hnm", heads, out_kernel)
        hidden = self._matmul("hnm,hmf->hnf", branches, ffn["hidden_kernel"])
      hidden = self._relu_dropout(hidden, ffn, deterministic)
      # alpha folded into W2: sum_i alpha_i (h_i W2_i) = sum_i h_i (alpha_i W2_i), one contraction.
      output = self._matmul("hnf,hfm->nm", hidden, ffn["output_kernel"] * alpha[:, None, None])
      if self.branch_output_bias == "per_branch":
        bias = jnp.einsum("h,hm->m", alpha, ffn["output_bias"])
      else:  # one b2 outside the alpha sum: no gradient reaches alpha through it
        bias = ffn["output_bias"][0]
      output = output + cast(bias)[None, :]
    else:
      branches = self._matmul("hnd,hdm->hnm", heads, out_kernel)  # o_i, [M, b * q, model]
      if self.branch_residual == "ffn":
        branch_outputs = self._branch_sublayer(
          branches, lambda y: self._ffn(y, ffn, deterministic), "ffn_norm", deterministic
        )
      else:
        x = jnp.broadcast_to(
          cast(residual).reshape(1, batch * length, self.d_model), branches.shape
        )
        if self.norm == "pre":  # the layer normalised the attention's input already
          z = x + Dropout(self.residual_dropout_rate)(branches, deterministic=deterministic)
        else:
          z = self._branch_sublayer(x, lambda _: branches, "attention_norm", deterministic)
        branch_outputs = self._branch_sublayer(
          z, lambda y: self._ffn(y, ffn, deterministic), "ffn_norm", deterministic
        )
      output = jnp.einsum("h,hnm->nm", cast(alpha), branch_outputs)
    return output.reshape(batch, length, self.d_model)

  def _parameters(self):
    """W^O `[M, depth, model]` and the branch FFNs' kernels and biases, every one with a
    leading branch axis (broadcast for "shared" FFNs and a "shared" output bias)."""
    num_branches, head_dim = self.num_branches, self.d_model // self.num_branches
    # W^{O_i}: the i-th row block of a Transformer's W^O; same initialisation as MultiHead's.
    out_kernel = self.param(
      "out", nn.initializers.xavier_uniform(), (num_branches * head_dim, self.d_model)
    ).reshape(num_branches, head_dim, self.d_model)
    hidden_size = self.d_ff // num_branches if self.branch_ffn == "split" else self.d_ff
    shapes = {
      "hidden_kernel": (self.d_model, hidden_size),
      "hidden_bias": (hidden_size,),
      "output_kernel": (hidden_size, self.d_model),
      "output_bias": (self.d_model,),
    }
    per_branch = {name: self.branch_ffn != "shared" for name in shapes}
    per_branch["output_bias"] = self.branch_output_bias == "per_branch"
    ffn = {}
    for name, shape in shapes.items():
      if "kernel" in name:
        init = branch_kernel_init if per_branch[name] else nn.initializers.xavier_uniform()
      else:
        init = nn.initializers.zeros
      if per_branch[name]:
        ffn[name] = self.param(name, init, (num_branches,) + shape)
      else:
        ffn[name] = jnp.broadcast_to(self.param(name, init, shape), (num_branches,) + shape)
    return out_kernel, ffn

  def _matmul(self, spec: str, activations: Array, kernel: Array) -> Array:
    """A branch matmul in the compute dtype, or with `matmul_dtype` operands (wt/matmul.py)."""
    return matmul.einsum(spec, activations, kernel.astype(self.dtype), self.matmul_dtype)

  def _relu_dropout(self, hidden, ffn, deterministic):
    """max(0, hidden + b1_i) and dropout, hidden `[M, n, F]`."""
    hidden = nn.relu(hidden + ffn["hidden_bias"][:, None, :].astype(self.dtype))
    return Dropout(self.relu_dropout_rate)(hidden, deterministic=deterministic)

  def _ffn(self, inputs, ffn, deterministic):
    """FFN_i(inputs_i) for every branch at once: inputs `[M, n, model]` -> `[M, n, model]`."""
    hidden = self._matmul("hnm,hmf->hnf", inputs, ffn["hidden_kernel"])
    hidden = self._relu_dropout(hidden, ffn, deterministic)
    output = self._matmul("hnf,hfm->hnm", hidden, ffn["output_kernel"])
    return output + ffn["output_bias"][:, None, :].astype(self.dtype)

  def _branch_sublayer(self, x, sublayer, name, deterministic):
    """Per-branch LN_i(x_i + Dropout(f(x_i))) (post) or x_i + Dropout(f(LN_i(x_i))) (pre) on
    `[M, n, model]`, with one LayerNorm per branch."""
    norm = BranchLayerNorm(self.num_branches, self.layer_norm_epsilon, self.dtype, name=name)
    drop = lambda y: Dropout(self.residual_dropout_rate)(y, deterministic=deterministic)
    if self.norm == "pre":
      return x + drop(sublayer(norm(x)))
    return norm(x + drop(sublayer(x)))


class BranchLayerNorm(nn.Module):
  """M LayerNorms over the last axis of `[M, n, features]`, one scale and bias per branch;
  statistics in float32."""

  num_branches: int
  epsilon: float = 1e-6
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    features = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (self.num_branches, features))
    bias = self.param("bias", nn.initializers.zeros, (self.num_branches, features))
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    variance = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
    normalised = (x32 - mean) * jax.lax.rsqrt(variance + self.epsilon)
    return (normalised * scale[:, None, :] + bias[:, None, :]).astype(self.dtype)
