"""The encoder-decoder: `ModelConfig` (frozen, validated) and the `Transformer` Linen module.

One class builds both models: `attention="multihead"` is Vaswani et al.'s Transformer,
`attention="weighted"` replaces attention + FFN sublayers by `BranchedAttention` (Ahmed et al.).
Every point the papers leave open is a field of `ModelConfig` with the paper's reading as
default (see docs/paper.md and docs/architecture.md).

Token conventions: id 0 is padding (and the decoder's start symbol), targets end with EOS.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from wt import config_checks, kernels, matmul
from wt import distributed as backend_rules
from wt.config_checks import ConfigError
from wt.modules import (
  BRANCH_FFN_MODES,
  BRANCH_OUTPUT_BIASES,
  BRANCH_RESIDUALS,
  BRANCH_WEIGHT_MODES,
  TEST_BRANCH_WEIGHTS,
  BranchedAttention,
  Dropout,
  FeedForward,
  MultiHeadAttention,
)

Array = jax.Array

ATTENTIONS = ("multihead", "weighted")  # the Transformer, the Weighted Transformer
_CHOICES = {
  "attention": ATTENTIONS,
  "branch_weights": BRANCH_WEIGHT_MODES,
  "branch_ffn": BRANCH_FFN_MODES,
  "branched_decoder": ("encdec", "self", "both"),
  "branch_residual": BRANCH_RESIDUALS,
  "branch_output_bias": BRANCH_OUTPUT_BIASES,
  "norm": ("post", "pre"),
  "test_branch_weights": TEST_BRANCH_WEIGHTS,
  "positional": ("sinusoidal", "learned"),
  "share_embeddings": ("all", "decoder", "none"),
  "dtype": ("float32", "bfloat16", "auto"),
  "matmul_dtype": ("float32", "bfloat16"),
  "attention_implementation": kernels.IMPLEMENTATIONS + ("auto",),
}


@dataclasses.dataclass(frozen=True)
class ModelConfig(config_checks.Section, section="model"):
  """Architecture of both models. Defaults: Transformer base / Weighted Transformer small.

  Attributes (the switches for the papers' open points are marked *):
    vocab_size: shared source/target vocabulary size.
    attention: "multihead" (Transformer) or "weighted" (Weighted Transformer).
    num_layers: N, layers in the encoder and in the decoder.
    d_model, d_ff, num_heads: model width, FFN inner size, heads of multi-head attention.
    num_branches: M, branches of a branched sublayer (one head of size d_model / M each).
    dropout_rate: residual and embedding dropout. attention_dropout_rate: on attention weights.
    relu_dropout_rate: on FFN hidden activations.
    branch_weights*: how kappa/alpha stay on the simplex: "projection" (after each step),
      "softmax" (of free logits) or "uniform" (fixed 1/M).
    branch_ffn*: "split" (M FFNs of d_ff/M), "shared" (one full FFN) or "full" (M full FFNs).
    branched_decoder*: which decoder attention is branched: "encdec", "self" or "both". The
      branched sublayer also replaces the FFN, so a weighted decoder layer has no separate FFN.
    branch_residual*: where the branched block keeps residuals and LayerNorms: "block" (one
      around the whole block), "ffn" (also one around each branch FFN) or "sublayers" (each
      branch keeps both of a Transformer layer's); equations in `BranchedAttention`.
    branch_output_bias*: the branch FFNs' output bias: "shared" (one b2) or "per_branch"
      (b2_i inside FFN_i, scaled by alpha_i as in the paper's equation). "shared" stays the
      default: "per_branch" measured no better (docs/results/ablate-branch_output_bias-*).
    norm*: "post" (LayerNorm(x + sublayer(x)), Vaswani) or "pre" (x + sublayer(LayerNorm(x)),
      with a final LayerNorm); in the branched block, for every residual it has.
    test_branch_weights*: kappa/alpha at test time: "learned", "uniform" or "random".
    positional: "sinusoidal" or "learned" encodings; max_len bounds positions.
    share_embeddings: "all" (source, target, pre-softmax share one matrix, Vaswani), "decoder"
      (target and pre-softmax only) or "none".
    scale_attention: multiply scores by 1/sqrt(d_k) (True) or not (the ablation).
    dtype: compute dtype ("float32", "bfloat16", or "auto": bfloat16 on GPU/TPU, float32 on
      CPU); parameters are always float32.
    matmul_dtype: operands of the dense layers' matmuls (projections, FFNs, branches, logits)
      when computing in float32: "float32", or "bfloat16" (bfloat16 operands, float32 results,
      in the forward pass and the activations' gradients; weight gradients stay float32;
      wt/matmul.py). Faster on CPUs with AVX512-BF16; no effect when the compute dtype is
      already bfloat16.
    attention_implementation: None, "xla", "cudnn" or "einsum" (kernels.dot_product_attention),
      or "auto": cuDNN's fused kernel on a GPU where its constraints hold, else XLA
      (wt/distributed.py `attention_path`).
    fold_branch_output: compute a branch as head_i (kappa_i W^{O_i} W1_i) instead of the paper's
      (head_i kappa_i W^{O_i}) W1_i: the same function and parameters, fewer FLOPs.
  """

  vocab_size: int = 37000
  attention: str = "multihead"
  num_layers: int = 6
  d_model: int = 512
  d_ff: int = 2048
  num_heads: int = 8
  num_branches: int = 8
  dropout_rate: float = 0.1
  attention_dropout_rate: float = 0.0
  relu_dropout_rate: float = 0.0
  branch_weights: str = "projection"
  branch_ffn: str = "split"
  branched_decoder: str = "encdec"
  branch_residual: str = "block"
  branch_output_bias: str = "shared"
  norm: str = "post"
  test_branch_weights: str = "learned"
  positional: str = "sinusoidal"
  max_len: int = 512
  share_embeddings: str = "all"
  scale_attention: bool = True
  dtype: str = "float32"
  matmul_dtype: str = "float32"
  attention_implementation: Optional[str] = None
  fold_branch_output: bool = False
  layer_norm_epsilon: float = 1e-6

  def __post_init__(self):
    config_checks.check_types(self)
    for field, choices in _CHOICES.items():
      config_checks.one_of(self, field, choices)
    config_checks.positive_int(
      self, "vocab_size", "num_layers", "d_model", "d_ff", "num_heads", "num_branches", "max_len"
    )
    config_checks.in_range(
      self, 0.0, 1.0, "dropout_rate", "attention_dropout_rate", "relu_dropout_rate"
    )
    config_checks.positive(self, "layer_norm_epsilon")
    if self.d_model % self.num_heads:
      raise config_checks.fail(
        self,
        "num_heads",
        f"does not divide model.d_model={self.d_model}; use a divisor of {self.d_model}",
      )
    if self.attention == "weighted":
      if self.d_model % self.num_branches:
        raise config_checks.fail(
          self,
          "num_branches",
          f"does not divide model.d_model="
          f"{self.d_model} (each branch has one head of size d_model "
          f"/ M); use a divisor of {self.d_model}",
        )
      if self.fold_branch_output and self.branch_residual != "block":
        raise ConfigError(
          f"model.fold_branch_output=True needs model.branch_residual='block' "
          f"(got {self.branch_residual!r}): the other placements add o_i "
          f"itself to a residual; set fold_branch_output=False"
        )
      if self.branch_ffn == "split" and self.d_ff % self.num_branches:
        raise config_checks.fail(
          self,
          "num_branches",
          f"does not divide model.d_ff="
          f"{self.d_ff}, which branch_ffn='split' needs; use a divisor "
          f"of {self.d_ff} or branch_ffn='shared'/'full'",
        )

  def replace(self, **changes) -> "ModelConfig":
    return dataclasses.replace(self, **changes)

  @property
  def compute_dtype(self):
    return jnp.bfloat16 if backend_rules.resolve_dtype(self.dtype) == "bfloat16" else jnp.float32

  @property
  def matmul_operand_dtype(self):
    """The operand dtype for wt/matmul.py: jnp.bfloat16, or None for the matmuls' own dtypes."""
    if self.matmul_dtype == "bfloat16" and self.compute_dtype == jnp.float32:
      return jnp.bfloat16
    return None

  @property
  def weighted(self) -> bool:
    return self.attention == "weighted"

  def branched_sublayers(self) -> tuple[str, ...]:
    """Names of the branched sublayers of one decoder layer ("self", "cross")."""
    if not self.weighted:
      return ()
    return {"encdec": ("cross",), "self": ("self",), "both": ("self", "cross")}[
      self.branched_decoder
    ]


def shift_right(targets: Array) -> Array:
  """Decoder inputs: targets moved one position right, starting with the pad/start id 0."""
  return jnp.pad(targets, ((0, 0), (1, 0)))[:, :-1]


def sinusoidal_table(max_len: int, d_model: int) -> np.ndarray:
  """PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(...), as `[max_len, d_model]`."""
  position = np.arange(max_len)[:, None]
  rates = np.exp(-np.log(10000.0) * np.arange(0, d_model, 2) / d_model)
  table = np.zeros((max_len, d_model), np.float32)
  table[:, 0::2] = np.sin(position * rates)
  table[:, 1::2] = np.cos(position * rates)[:, : d_model // 2]
  return table


def _attention(
  config: ModelConfig,
  branched: bool,
  name: str,
  *,
  q_len: int,
  kv_len: int,
  deterministic: bool,
  decode: bool = False,
) -> nn.Module:
  """The attention sublayer: branched (attention + FFN in one block) or multi-head, with the
  kernel that wt/distributed.py's `attention_path` picks for this call."""
  head_dim = config.d_model // (config.num_branches if branched else config.num_heads)
  implementation = backend_rules.sublayer_implementation(
    config, head_dim, q_len=q_len, kv_len=kv_len, training=not deterministic, decode=decode
  )
  if branched:
    return BranchedAttention(
      num_branches=config.num_branches,
      d_model=config.d_model,
      d_ff=config.d_ff,
      branch_ffn=config.branch_ffn,
      branch_weights=config.branch_weights,
      test_branch_weights=config.test_branch_weights,
      branch_residual=config.branch_residual,
      branch_output_bias=config.branch_output_bias,
      norm=config.norm,
      scale_attention=config.scale_attention,
      attention_dropout_rate=config.attention_dropout_rate,
      relu_dropout_rate=config.relu_dropout_rate,
      residual_dropout_rate=config.dropout_rate,
      layer_norm_epsilon=config.layer_norm_epsilon,
      implementation=implementation,
      fold_output=config.fold_branch_output,
      dtype=config.compute_dtype,
      matmul_dtype=config.matmul_operand_dtype,
      name=name,
    )
  return MultiHeadAttention(
    num_heads=config.num_heads,
    d_model=config.d_model,
    scale_attention=config.scale_attention,
    dropout_rate=config.attention_dropout_rate,
    implementation=implementation,
    dtype=config.compute_dtype,
    matmul_dtype=config.matmul_operand_dtype,
    name=name,
  )


def _residual(config: ModelConfig, x: Array, sublayer, *, name: str, deterministic: bool) -> Array:
  """Post-norm LayerNorm(x + Dropout(f(x))) or pre-norm x + Dropout(f(LayerNorm(x)))."""
  norm = nn.LayerNorm(epsilon=config.layer_norm_epsilon, dtype=config.compute_dtype, name=name)
  drop = lambda y: Dropout(config.dropout_rate)(y, deterministic=deterministic)
  if config.norm == "pre":
    return x + drop(sublayer(norm(x)))
  return norm(x + drop(sublayer(x)))


def _attention_sublayer(
  config: ModelConfig,
  x: Array,
  mask: Optional[Array],
  *,
  kind: str,
  branched: bool,
  deterministic: bool,
  decode: bool = False,
  encoded: Optional[Array] = None,
) -> Array:
  """x after one attention sublayer and its residual: self-attention (`kind="self"`) or
  encoder-decoder attention over `encoded` (`kind="cross"`). A branched block with
  branch_residual="sublayers" keeps its residuals inside (it gets x as `residual`); only its
  pre-norm input LayerNorm is added here."""
  cross = kind == "cross"
  source = x
  if cross:
    if encoded is None:
      raise ValueError("encoder-decoder attention needs `encoded`")
    source = encoded
  attention = _attention(
    config,
    branched,
    f"{kind}_attention",
    q_len=x.shape[1],
    kv_len=source.shape[1],
    deterministic=deterministic,
    decode=decode,
  )

  def attend(y, **residual):
    keys_values = source if cross else y
    return attention(
      y, keys_values, mask, deterministic=deterministic, decode=decode, cross=cross, **residual
    )

  name = f"{kind}_attention_norm"
  if not (branched and config.branch_residual == "sublayers"):
    return _residual(config, x, attend, name=name, deterministic=deterministic)
  if config.norm == "pre":
    norm = nn.LayerNorm(epsilon=config.layer_norm_epsilon, dtype=config.compute_dtype, name=name)
    return attend(norm(x), residual=x)
  return attend(x, residual=x)


def _feed_forward_sublayer(config: ModelConfig, x: Array, deterministic: bool) -> Array:
  ffn = FeedForward(
    config.d_model,
    config.d_ff,
    config.relu_dropout_rate,
    config.compute_dtype,
    config.matmul_operand_dtype,
    name="ffn",
  )
  return _residual(
    config,
    x,
    lambda y: ffn(y, deterministic=deterministic),
    name="ffn_norm",
    deterministic=deterministic,
  )


class EncoderLayer(nn.Module):
  """Self-attention then FFN (Transformer), or one branched self-attention (weighted)."""

  config: ModelConfig

  @nn.compact
  def __call__(self, x: Array, mask: Array, *, deterministic: bool) -> Array:
    cfg = self.config
    x = _attention_sublayer(
      cfg, x, mask, kind="self", branched=cfg.weighted, deterministic=deterministic
    )
    if not cfg.weighted:
      x = _feed_forward_sublayer(cfg, x, deterministic)
    return x


class DecoderLayer(nn.Module):
  """Masked self-attention, encoder-decoder attention, FFN; branched where configured."""

  config: ModelConfig

  @nn.compact
  def __call__(
    self,
    x: Array,
    encoded: Array,
    self_mask: Optional[Array],
    cross_mask: Array,
    *,
    deterministic: bool,
    decode: bool = False,
  ) -> Array:
    cfg = self.config
    branched = cfg.branched_sublayers()
    for kind, mask in (("self", self_mask), ("cross", cross_mask)):
      x = _attention_sublayer(
        cfg,
        x,
        mask,
        kind=kind,
        branched=kind in branched,
        deterministic=deterministic,
        decode=decode,
        encoded=encoded,
      )
    if not branched:
      x = _feed_forward_sublayer(cfg, x, deterministic)
    return x


class Embedder(nn.Module):
  """Token embedding times sqrt(d_model) plus positional encoding, then dropout.

  `decode=True` keeps the next position in the 'cache' collection, for one-token steps.
  """

  config: ModelConfig
  embed: nn.Embed

  @nn.compact
  def __call__(self, tokens: Array, *, deterministic: bool, decode: bool = False) -> Array:
    cfg = self.config
    x = self.embed(tokens).astype(jnp.float32) * np.sqrt(cfg.d_model)
    if cfg.positional == "learned":
      table = self.param(
        "position_embedding", nn.initializers.normal(0.02), (cfg.max_len, cfg.d_model)
      )
    else:
      table = jnp.asarray(sinusoidal_table(cfg.max_len, cfg.d_model))
    length = tokens.shape[1]
    if decode:
      is_initialized = self.has_variable("cache", "position")
      position = self.variable("cache", "position", lambda: jnp.array(0, jnp.int32))
      if is_initialized:
        start = position.value
        position.value = start + length
        x = x + jax.lax.dynamic_slice_in_dim(table, start, length)[None]
      else:
        x = x + table[None, :length]
    else:
      x = x + table[None, :length]
    x = Dropout(cfg.dropout_rate)(x, deterministic=deterministic)
    return x.astype(cfg.compute_dtype)


class Transformer(nn.Module):
  """Encoder-decoder for both models; `__call__(inputs, targets, train=...)` gives logits.

  inputs `[batch, source_len]` and targets `[batch, target_len]` are int token ids, 0 = pad.
  Logits are `[batch, target_len, vocab_size]` float32, predicting targets from shifted targets.
  """

  config: ModelConfig

  def setup(self):
    cfg = self.config
    init = nn.initializers.normal(stddev=cfg.d_model**-0.5)
    embed = lambda: nn.Embed(cfg.vocab_size, cfg.d_model, embedding_init=init)
    self.target_embed = embed()
    self.source_embed = self.target_embed if cfg.share_embeddings == "all" else embed()
    if cfg.share_embeddings == "none":
      self.logits_projection = nn.Dense(
        cfg.vocab_size,
        use_bias=False,
        kernel_init=nn.initializers.xavier_uniform(),
        dot_general=matmul.dense_dot_general(cfg.matmul_operand_dtype),
      )
    self.encoder_embedder = Embedder(cfg, self.source_embed)
    self.decoder_embedder = Embedder(cfg, self.target_embed)
    self.encoder_layers = [EncoderLayer(cfg) for _ in range(cfg.num_layers)]
    self.decoder_layers = [DecoderLayer(cfg) for _ in range(cfg.num_layers)]
    if cfg.norm == "pre":
      self.encoder_norm = nn.LayerNorm(epsilon=cfg.layer_norm_epsilon, dtype=cfg.compute_dtype)
      self.decoder_norm = nn.LayerNorm(epsilon=cfg.layer_norm_epsilon, dtype=cfg.compute_dtype)

  def encode(self, inputs: Array, *, train: bool = False) -> Array:
    """inputs `[batch, source_len]` -> encoded `[batch, source_len, d_model]`."""
    valid = inputs > 0
    mask = kernels.padding_mask(valid, valid)
    x = self.encoder_embedder(inputs, deterministic=not train)
    for layer in self.encoder_layers:
      x = layer(x, mask, deterministic=not train)
    return self.encoder_norm(x) if self.config.norm == "pre" else x

  def decode(
    self,
    encoded: Array,
    inputs: Array,
    targets: Array,
    *,
    train: bool = False,
    decode: bool = False,
  ) -> Array:
    """Logits `[batch, len, vocab]` from the encoder output and the source ids (for its mask).

    Teacher forcing (`decode=False`): `targets` are the gold targets, shifted right inside.
    Incremental (`decode=True`, with a 'cache' collection): `targets` `[batch, 1]` is the
    previous token (0 at the first step); the cache holds everything before it.
    """
    source_valid = inputs > 0
    if decode:
      decoder_inputs, self_mask = targets, None
      cross_mask = kernels.key_padding_mask(source_valid)
    else:
      decoder_inputs = shift_right(targets)
      target_valid = targets > 0
      self_mask = kernels.combine_masks(
        kernels.causal_mask(targets.shape[1]), kernels.padding_mask(target_valid, target_valid)
      )
      cross_mask = kernels.padding_mask(target_valid, source_valid)
    y = self.decoder_embedder(decoder_inputs, deterministic=not train, decode=decode)
    for layer in self.decoder_layers:
      y = layer(y, encoded, self_mask, cross_mask, deterministic=not train, decode=decode)
    if self.config.norm == "pre":
      y = self.decoder_norm(y)
    if self.config.share_embeddings == "none":
      return self.logits_projection(y.astype(jnp.float32))
    # target_embed.attend's product, with a backward pass that avoids a transposed copy of
    # the [tokens, vocab] gradient (kernels.tied_logits).
    return kernels.tied_logits(
      y.astype(jnp.float32), self.target_embed.embedding, self.config.matmul_operand_dtype
    )

  def __call__(self, inputs: Array, targets: Array, *, train: bool = False) -> Array:
    return self.decode(self.encode(inputs, train=train), inputs, targets, train=train)


def init_params(config: ModelConfig, rng: Array, source_len: int = 8, target_len: int = 8):
  """Float32 parameters of a freshly initialised model (shapes do not depend on lengths)."""
  inputs = jnp.ones((1, source_len), jnp.int32)
  targets = jnp.ones((1, target_len), jnp.int32)
  return Transformer(config).init(rng, inputs, targets, train=False)["params"]


def init_cache(model: Transformer, params, encoded: Array, inputs: Array, max_len: int):
  """The 'cache' collection for incremental decoding of `max_len` target positions.

  Allocates self-attention caches `[batch, heads, max_len, depth]` (heads-major: see
  `modules.AttentionHeads`) and projects the encoder output once for every cross-attention.
  `encoded`/`inputs` set the batch (e.g. batch * beam).
  """
  if max_len > model.config.max_len:
    raise ConfigError(
      f"decoding {max_len} positions exceeds model.max_len="
      f"{model.config.max_len}; raise model.max_len or shorten the inputs"
    )
  dummy_targets = jnp.zeros((inputs.shape[0], max_len), jnp.int32)
  _, variables = model.apply(
    {"params": params},
    encoded,
    inputs,
    dummy_targets,
    decode=True,
    mutable=["cache"],
    method=Transformer.decode,
  )
  return variables["cache"]


def count_params(params) -> int:
  """Total number of scalars in a parameter tree."""
  return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))
