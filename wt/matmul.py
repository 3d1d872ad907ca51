"""Matmuls with bfloat16 operands and float32 results (`model.matmul_dtype="bfloat16"`).

An opt-in middle ground between float32 and `model.dtype="bfloat16"`: the dense layers'
matmuls (projections, FFNs, branches, logits) round their operands to bfloat16 and accumulate
and return float32, in the forward pass and in both gradients of the backward pass, as a TPU
does at its default precision. Everything else (attention scores, LayerNorm, softmax,
residuals, the loss, the optimizer and the parameters) stays float32. On a CPU with
AVX512-BF16 such a matmul takes about 0.6x the float32 one, while a matmul with bfloat16
results, what `model.dtype="bfloat16"` computes, takes longer than float32
(docs/benchmarks.md).

Autodiff would not keep the backward matmuls in bfloat16: the transpose of a dot with a
float32 result and bfloat16 operands is a float32 dot. `einsum` therefore has its own VJP.
XLA:CPU's fast bfloat16 kernels contract the minor dimension of both operands; for a weight
gradient (which contracts tokens, the major dimension) XLA copies one operand transposed,
except for batched products (the branch kernels' gradients), which it computes in float32
from the rounded operands: same numbers, float32 speed.
"""

import functools
import string

import jax
import jax.numpy as jnp

Array = jax.Array


def einsum(spec: str, a: Array, b: Array, operand_dtype=None) -> Array:
  """`jnp.einsum(spec, a, b)`; with `operand_dtype` (jnp.bfloat16) the product and both of its
  gradients read operands of that dtype and return float32.

  `spec` has two operands ("ab,bc->ac"); every index of one operand must appear in the other
  operand or in the output (no index summed out of one operand alone), as in every matmul.
  """
  if operand_dtype is None:
    return product(spec, a, b)
  return _low_precision_einsum(spec, jnp.dtype(operand_dtype), a, b)


def product(spec: str, a: Array, b: Array, operand_dtype=None) -> Array:
  """`jnp.einsum(spec, a, b)`, or with `operand_dtype` its operands cast to that dtype and a
  float32 result; autodiff's own gradients (no custom VJP)."""
  if operand_dtype is None:
    return jnp.einsum(spec, a, b)
  return jnp.einsum(
    spec, a.astype(operand_dtype), b.astype(operand_dtype), preferred_element_type=jnp.float32
  )


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _low_precision_einsum(spec, operand_dtype, a, b):
  return product(spec, a, b, operand_dtype)


def _low_precision_einsum_forward(spec, operand_dtype, a, b):
  return product(spec, a, b, operand_dtype), (a, b)


def _low_precision_einsum_backward(spec, operand_dtype, residuals, grad):
  a, b = residuals
  inputs, output = spec.split("->")
  a_indices, b_indices = inputs.split(",")
  d_a = product(f"{output},{b_indices}->{a_indices}", grad, b, operand_dtype)
  d_b = product(f"{a_indices},{output}->{b_indices}", a, grad, operand_dtype)
  return d_a.astype(a.dtype), d_b.astype(b.dtype)


_low_precision_einsum.defvjp(_low_precision_einsum_forward, _low_precision_einsum_backward)


def dense_dot_general(operand_dtype):
  """A `dot_general` for flax's `nn.Dense`/`nn.DenseGeneral` (their `dot_general=` field):
  None (flax's default, `lax.dot_general`) without `operand_dtype`, else `einsum` above.

  Dense layers contract some input dimensions with leading kernel dimensions and have no
  batch dimensions; that is the only form this accepts.
  """
  if operand_dtype is None:
    return None

  def dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
    del precision, preferred_element_type  # the point of this function is to set both
    (lhs_contracting, rhs_contracting), batch_dims = dimension_numbers
    if any(batch_dims):
      raise NotImplementedError(f"dense_dot_general: batch dimensions {batch_dims}")
    return einsum(
      _dot_general_spec(lhs.ndim, rhs.ndim, lhs_contracting, rhs_contracting),
      lhs,
      rhs,
      operand_dtype,
    )

  return dot_general


def _dot_general_spec(lhs_ndim: int, rhs_ndim: int, lhs_contracting, rhs_contracting) -> str:
  """The einsum spec of a batch-free dot_general: output = lhs free dims, then rhs free dims."""
  letters = iter(string.ascii_letters)
  lhs = [next(letters) for _ in range(lhs_ndim)]
  shared = {rhs_dim: lhs[lhs_dim] for lhs_dim, rhs_dim in zip(lhs_contracting, rhs_contracting)}
  rhs = [shared[d] if d in shared else next(letters) for d in range(rhs_ndim)]
  output = [lhs[d] for d in range(lhs_ndim) if d not in lhs_contracting]
  output += [rhs[d] for d in range(rhs_ndim) if d not in rhs_contracting]
  return f"{''.join(lhs)},{''.join(rhs)}->{''.join(output)}"
