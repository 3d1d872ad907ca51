"""The encoder-decoder: config validation, causality, padding, incremental decoding, gradients,
and the parameter count against a closed-form formula."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wt import models

TINY = dict(
  vocab_size=40,
  num_layers=2,
  d_model=16,
  d_ff=32,
  num_heads=4,
  num_branches=4,
  max_len=32,
  dropout_rate=0.0,
)
VARIANTS = {
  "transformer": dict(attention="multihead"),
  "weighted-encdec": dict(attention="weighted", branched_decoder="encdec"),
  "weighted-self": dict(attention="weighted", branched_decoder="self"),
  "weighted-both": dict(attention="weighted", branched_decoder="both"),
  "transformer-prenorm": dict(attention="multihead", norm="pre"),
  "weighted-prenorm-softmax": dict(attention="weighted", norm="pre", branch_weights="softmax"),
  "weighted-ffn-residual": dict(
    attention="weighted", branch_residual="ffn", branch_output_bias="per_branch"
  ),
  "weighted-sublayers-both": dict(
    attention="weighted", branch_residual="sublayers", branched_decoder="both"
  ),
  "weighted-sublayers-prenorm": dict(
    attention="weighted", branch_residual="sublayers", norm="pre", branched_decoder="self"
  ),
}
INPUTS = np.array([[5, 6, 7, 8, 9, 1, 0, 0], [10, 11, 1, 0, 0, 0, 0, 0]], np.int32)
TARGETS = np.array([[12, 13, 14, 15, 1, 0], [16, 17, 18, 1, 0, 0]], np.int32)


@functools.lru_cache(maxsize=None)
def build(variant, **overrides):
  config = models.ModelConfig(**{**TINY, **VARIANTS[variant], **overrides})
  return models.Transformer(config), models.init_params(config, jax.random.key(0))


def logits_of(model, params, inputs, targets):
  return np.asarray(
    jax.jit(lambda p, i, t: model.apply({"params": p}, i, t))(params, inputs, targets)
  )


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_changing_a_later_target_changes_no_earlier_logit(variant):
  model, params = build(variant)
  base = logits_of(model, params, INPUTS, TARGETS)
  for position in range(1, 4):
    changed = TARGETS.copy()
    changed[:, position] = 33
    after = logits_of(model, params, INPUTS, changed)
    # Target `position` feeds decoder input position + 1: logits up to `position` are fixed.
    np.testing.assert_array_equal(after[:, : position + 1], base[:, : position + 1])
    assert np.abs(after[:, position + 1 :] - base[:, position + 1 :]).max() > 1e-6


@pytest.mark.parametrize("variant", ["transformer", "weighted-both"])
def test_padding_changes_no_output(variant):
  model, params = build(variant)
  base = logits_of(model, params, INPUTS, TARGETS)
  more_padding = np.pad(INPUTS, ((0, 0), (0, 5)))
  valid = TARGETS > 0  # padded target rows attend to nothing real; only real ones count
  np.testing.assert_allclose(
    logits_of(model, params, more_padding, TARGETS)[valid], base[valid], atol=1e-5
  )

  # Whatever the encoder leaves at padded source positions is never read by the decoder.
  encoded = model.apply({"params": params}, INPUTS, method=models.Transformer.encode)
  garbage = jnp.where((INPUTS > 0)[..., None], encoded, 1e3)
  decode = lambda enc: np.asarray(
    model.apply({"params": params}, enc, INPUTS, TARGETS, method=models.Transformer.decode)
  )
  np.testing.assert_array_equal(decode(garbage)[valid], decode(encoded)[valid])


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_incremental_decoding_equals_the_full_forward_pass(variant):
  model, params = build(variant)
  full = logits_of(model, params, INPUTS, TARGETS)
  encoded = model.apply({"params": params}, INPUTS, method=models.Transformer.encode)
  cache = models.init_cache(model, params, encoded, INPUTS, TARGETS.shape[1])

  @jax.jit
  def step(cache, token):
    logits, variables = model.apply(
      {"params": params, "cache": cache},
      encoded,
      INPUTS,
      token,
      decode=True,
      mutable=["cache"],
      method=models.Transformer.decode,
    )
    return variables["cache"], logits

  decoder_inputs = models.shift_right(TARGETS)
  steps = []
  for t in range(TARGETS.shape[1]):
    cache, logits = step(cache, decoder_inputs[:, t : t + 1])
    steps.append(np.asarray(logits))
  incremental = np.concatenate(steps, axis=1)
  valid = TARGETS > 0  # the full pass masks padded query rows; compare the real ones
  np.testing.assert_allclose(incremental[valid], full[valid], atol=2e-5)


@pytest.mark.parametrize(
  "variant",
  [
    "transformer",
    "weighted-both",
    # The other placements' gradients, in the full suite only (`make test`).
    pytest.param("weighted-prenorm-softmax", marks=pytest.mark.slow),
    pytest.param("weighted-ffn-residual", marks=pytest.mark.slow),
    pytest.param("weighted-sublayers-prenorm", marks=pytest.mark.slow),
  ],
)
def test_gradients_are_finite_and_reach_every_parameter(variant):
  config = models.ModelConfig(
    **{
      **TINY,
      **VARIANTS[variant],
      "dropout_rate": 0.1,
      "attention_dropout_rate": 0.1,
      "relu_dropout_rate": 0.1,
    }
  )
  model = models.Transformer(config)
  params = models.init_params(config, jax.random.key(1))

  def loss(p):
    logits = model.apply(
      {"params": p}, INPUTS, TARGETS, train=True, rngs={"dropout": jax.random.key(2)}
    )
    return -jnp.mean(jax.nn.log_softmax(logits)[..., 3])

  grads = jax.jit(jax.grad(loss))(params)
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    assert np.isfinite(np.asarray(g)).all(), path
    assert np.abs(np.asarray(g)).max() > 0, f"no gradient reaches {jax.tree_util.keystr(path)}"


def test_bfloat16_compute_keeps_float32_parameters_and_logits():
  model, params = build("weighted-encdec", dtype="bfloat16")
  assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(params))
  logits = logits_of(model, params, INPUTS, TARGETS)
  assert logits.dtype == np.float32 and np.isfinite(logits).all()
  f32_model, _ = build("weighted-encdec")
  reference = logits_of(f32_model, params, INPUTS, TARGETS)
  assert np.abs(logits - reference).max() < 0.1 * np.abs(reference).max()


@pytest.mark.parametrize(
  "field, value, message",
  [
    ("num_heads", 7, "num_heads=7 does not divide model.d_model=16"),
    ("num_branches", 3, "num_branches=3 does not divide model.d_model=16"),
    ("attention", "branched", "model.attention='branched' is not a valid choice"),
    ("branch_ffn", "half", "'split', 'shared', 'full'"),
    ("branch_residual", "inside", "'block', 'ffn', 'sublayers'"),
    ("branch_output_bias", "none", "'shared', 'per_branch'"),
    ("d_model", 0, "model.d_model=0 must be a positive integer"),
    ("dropout_rate", 1.5, r"model.dropout_rate=1.5 must be in \[0, 1\)"),
  ],
)
def test_invalid_configs_are_refused_with_the_field_and_the_fix(field, value, message):
  with pytest.raises(models.ConfigError, match=message):
    models.ModelConfig(**{**TINY, "attention": "weighted", field: value})


def test_folding_the_branch_output_needs_the_block_residual():
  with pytest.raises(models.ConfigError, match="fold_branch_output=True needs model.branch_resi"):
    models.ModelConfig(
      **{
        **TINY,
        "attention": "weighted",
        "fold_branch_output": True,
        "branch_residual": "sublayers",
      }
    )


def test_split_ffn_needs_branches_dividing_d_ff_and_unknown_fields_are_named():
  with pytest.raises(models.ConfigError, match="does not divide model.d_ff=34"):
    models.ModelConfig(**{**TINY, "attention": "weighted", "d_ff": 34})
  models.ModelConfig(**{**TINY, "attention": "weighted", "d_ff": 34, "branch_ffn": "full"})
  with pytest.raises(models.ConfigError, match=r"unknown model config field\(s\) \['heads'\]"):
    models.ModelConfig.from_mapping({"heads": 8})


def test_decoding_past_max_len_is_refused_before_compiling():
  model, params = build("transformer")
  with pytest.raises(models.ConfigError, match="exceeds model.max_len=32"):
    models.init_cache(model, params, jnp.zeros((2, 8, 16)), INPUTS, 33)


# ---------------------------------------------------------------------------------------------
# Parameter count: closed form, written independently of the code.


def transformer_params(vocab, n, d, d_ff):
  """Vaswani base: shared embedding; attention without biases; FFN with biases; 2 LN params
  (scale, bias) per sublayer. Encoder layers: 2 sublayers; decoder layers: 3."""
  attention = 4 * d * d
  ffn = d * d_ff + d_ff + d_ff * d + d
  norm = 2 * d
  encoder = n * (attention + ffn + 2 * norm)
  decoder = n * (2 * attention + ffn + 3 * norm)
  return vocab * d + encoder + decoder


def count(config):
  shapes = jax.eval_shape(lambda: models.init_params(config, jax.random.key(0)))
  return models.count_params(shapes)


def test_transformer_base_has_the_papers_65m_parameters():
  base = models.ModelConfig()  # 6+6 layers, 512, 2048, 8 heads, vocab 37000
  expected = transformer_params(37000, 6, 512, 2048)
  assert count(base) == expected
  assert 63e6 <= expected <= 66e6


@pytest.mark.parametrize(
  "n, d, d_ff, m", [(6, 512, 2048, 8), (2, 512, 2048, 8), (6, 1024, 4096, 16)]
)
def test_weighted_split_ffn_counts_the_transformers_weights_plus_kappa_and_alpha(n, d, d_ff, m):
  """Branched sublayers: the Transformer's weights plus 2M scalars each. One LayerNorm fewer
  each too: the branched block replaces two residual sublayers (attention, FFN) by one."""
  transformer = models.ModelConfig(num_layers=n, d_model=d, d_ff=d_ff, num_heads=m)
  weighted = transformer.replace(attention="weighted", num_branches=m)
  branched_sublayers = 2 * n  # every encoder layer, and encoder-decoder attention
  assert count(weighted) == (
    transformer_params(37000, n, d, d_ff) + branched_sublayers * (2 * m - 2 * d)
  )
  assert count(weighted.replace(branch_weights="uniform")) == (
    count(weighted) - branched_sublayers * 2 * m
  )


@pytest.mark.parametrize("norm", ["post", "pre"])
def test_residual_placements_and_per_branch_biases_change_the_count_as_expected(norm):
  """Per branched block: "ffn" adds M LayerNorms (one per branch FFN); "sublayers" has 2M in
  post-norm and none around the block, M in pre-norm plus the one on the block's input;
  per-branch output biases add (M - 1) d_model."""
  n, d, m = 2, 512, 8
  block = models.ModelConfig(num_layers=n, attention="weighted", num_branches=m, norm=norm)
  branched_sublayers, layer_norm = 2 * n, 2 * d
  assert count(block.replace(branch_residual="ffn")) == (
    count(block) + branched_sublayers * m * layer_norm
  )
  added = m if norm == "pre" else 2 * m - 1
  assert count(block.replace(branch_residual="sublayers")) == (
    count(block) + branched_sublayers * added * layer_norm
  )
  assert count(block.replace(branch_output_bias="per_branch")) == (
    count(block) + branched_sublayers * (m - 1) * d
  )


def test_embedding_sharing_and_learned_positions_change_the_count_as_expected():
  base = models.ModelConfig(num_layers=1)
  vocab_d = 37000 * 512
  assert count(base.replace(share_embeddings="decoder")) == count(base) + vocab_d
  assert count(base.replace(share_embeddings="none")) == count(base) + 2 * vocab_d
  assert count(base.replace(positional="learned")) == count(base) + 2 * 512 * 512
