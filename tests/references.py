"""Independent NumPy references the tests compare the library against: loops and explicit
formulas in float64, written from the papers' equations, sharing no code with `wt`."""

import itertools

import numpy as np


def numpy_attention(q, k, v, mask=None, bias=None, scale=None):
  """softmax(QK^T * scale + bias, masked) V written with NumPy loops over batch and heads.

  Returns (outputs `[batch, q_len, heads, depth]`, weights `[batch, heads, q_len, kv_len]`).
  """
  batch, q_len, heads, depth = q.shape
  scale = 1.0 / np.sqrt(depth) if scale is None else scale
  out = np.zeros(q.shape, np.float64)
  weights = np.zeros((batch, heads, q_len, k.shape[1]))
  for b in range(batch):
    for h in range(heads):
      scores = q[b, :, h, :].astype(np.float64) @ k[b, :, h, :].T.astype(np.float64) * scale
      if bias is not None:
        scores = scores + np.broadcast_to(bias, (batch, heads) + scores.shape)[b, h]
      if mask is not None:
        allowed = np.broadcast_to(mask, (batch, heads) + scores.shape)[b, h]
        scores = np.where(allowed, scores, -1e30)
      scores = scores - scores.max(axis=-1, keepdims=True)
      w = np.exp(scores) / np.exp(scores).sum(axis=-1, keepdims=True)
      weights[b, h] = w
      out[b, :, h, :] = w @ v[b, :, h, :]
  return out, weights


def numpy_smoothed_cross_entropy(logits, targets, weights, smoothing):
  """(sum of weighted label-smoothed cross-entropy minus the smoothed targets' entropy, sum of
  weighted NLL); the smoothing mass is spread over the vocab - 1 wrong tokens."""
  vocab = logits.shape[-1]
  shifted = logits - logits.max(-1, keepdims=True)
  log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
  soft = np.full(logits.shape, smoothing / (vocab - 1))
  np.put_along_axis(soft, targets[..., None], 1.0 - smoothing, axis=-1)
  entropy = -np.sum(soft * np.log(np.where(soft > 0, soft, 1.0)), axis=-1)
  loss = -np.sum(soft * log_probs, axis=-1) - entropy
  nll = -np.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
  return np.sum(loss * weights), np.sum(nll * weights)


def brute_force_simplex_projection(v):
  """Tries every support set S: w_S = v_S - (sum v_S - 1) / |S|, zero elsewhere; keeps the
  feasible candidate closest to v."""
  best, best_distance = None, np.inf
  for size in range(1, len(v) + 1):
    for support in itertools.combinations(range(len(v)), size):
      w = np.zeros_like(v)
      idx = list(support)
      w[idx] = v[idx] - (v[idx].sum() - 1.0) / size
      if (w >= 0).all():
        distance = np.sum((w - v) ** 2)
        if distance < best_distance:
          best, best_distance = w, distance
  return best


def numpy_layer_norm(x, scale, bias, epsilon=1e-6):
  """(x - mean) / sqrt(var + epsilon) * scale + bias over the last axis."""
  x = x.astype(np.float64)
  mean = x.mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(x.var(-1, keepdims=True) + epsilon) * scale + bias


def numpy_heads(params, x, kv, mask):
  """Per-head attention outputs `[batch, q_len, heads, depth]` from the projection kernels
  `[model, heads, depth]` of an attention block's parameters."""
  q = np.einsum("bqm,mhd->bqhd", x, params["query"]["kernel"])
  k = np.einsum("bkm,mhd->bkhd", kv, params["key"]["kernel"])
  v = np.einsum("bkm,mhd->bkhd", kv, params["value"]["kernel"])
  return numpy_attention(q, k, v, mask)[0]


def numpy_branched_attention(
  params,
  x,
  kv,
  mask,
  *,
  branch_ffn="split",
  residual="block",
  output_bias="shared",
  norm="post",
  layer_input=None,
):
  """Ahmed et al. Eqs. 5-7 with an explicit loop over branches, and the residual placements
  of `BranchedAttention` written out per branch:

    block:     sum_i alpha_i FFN_i(o_i)                 (one b2 outside the sum if shared)
    ffn:       sum_i alpha_i LN_i(o_i + FFN_i(o_i))     pre: o_i + FFN_i(LN_i(o_i))
    sublayers: z_i = LN_i(x + o_i), u_i = LN'_i(z_i + FFN_i(z_i)), sum_i alpha_i u_i
               pre: z_i = x + o_i, u_i = z_i + FFN_i(LN'_i(z_i))

  with o_i = kappa_i head_i W^{O_i}; `layer_input` is x (the layer's input) for sublayers.
  """
  heads = numpy_heads(params["heads"], x, kv, mask)
  num_branches, depth = heads.shape[2], heads.shape[3]
  w_out = params["out"].reshape(num_branches, depth, -1)
  kappa, alpha = params["kappa"]["weights"], params["alpha"]["weights"]

  def branch(name, i):
    value = params[name]
    shared = branch_ffn == "shared" if name != "output_bias" else output_bias == "shared"
    return value if shared else value[i]

  def ffn(y, i, with_bias=True):
    hidden = np.maximum(y @ branch("hidden_kernel", i) + branch("hidden_bias", i), 0)
    return hidden @ branch("output_kernel", i) + (branch("output_bias", i) if with_bias else 0)

  def layer_norm(name, y, i):
    return numpy_layer_norm(y, params[name]["scale"][i], params[name]["bias"][i])

  total = 0.0
  for i in range(num_branches):
    o = heads[:, :, i, :] @ w_out[i] * kappa[i]
    if residual == "block":
      total = total + alpha[i] * ffn(o, i, with_bias=output_bias == "per_branch")
    elif residual == "ffn":
      if norm == "pre":
        total = total + alpha[i] * (o + ffn(layer_norm("ffn_norm", o, i), i))
      else:
        total = total + alpha[i] * layer_norm("ffn_norm", o + ffn(o, i), i)
    else:
      if norm == "pre":
        z = layer_input + o
        u = z + ffn(layer_norm("ffn_norm", z, i), i)
      else:
        z = layer_norm("attention_norm", layer_input + o, i)
        u = layer_norm("ffn_norm", z + ffn(z, i), i)
      total = total + alpha[i] * u
  if residual == "block" and output_bias == "shared":
    total = total + params["output_bias"]
  return total
