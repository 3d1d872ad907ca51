"""The `kernels` section: attention forward and forward+backward at base-size heads (8 x 64)
with a key padding mask, `jax.nn.dot_product_attention` against the einsum path
(wt/kernels.py), interleaved, at each of --attention_lengths."""

import functools

import jax
import jax.numpy as jnp

from experiments.benchmarks import timing
from experiments.benchmarks.options import Options
from wt import kernels


def kernels_section(options: Options) -> list:
  """Attention at base-size heads (8 x 64), batch * length = --attention_tokens."""
  median = timing.median
  rows = []
  for length in options.attention_lengths:
    batch = max(options.attention_tokens // length, 1)
    q, k, v = (jax.random.normal(jax.random.key(i), (batch, length, 8, 64)) for i in range(3))
    valid = jnp.arange(length)[None, :] < jnp.linspace(length // 2, length, batch)[:, None]
    mask = kernels.key_padding_mask(valid)
    calls = {}
    for impl in (None, "einsum"):
      attend = functools.partial(kernels.dot_product_attention, mask=mask, implementation=impl)
      forward = jax.jit(attend)
      backward = jax.jit(
        jax.grad(lambda q, k, v, f=attend: jnp.sum(f(q, k, v) ** 2), argnums=(0, 1, 2))
      )
      name = impl or "jax.nn"
      calls[(name, "forward")] = lambda f=forward, a=(q, k, v): f(*a).block_until_ready()
      calls[(name, "forward+backward")] = lambda f=backward, a=(q, k, v): jax.block_until_ready(
        f(*a)
      )
    times = timing.interleaved(calls, options.steps, 1)
    forward_flops = 4.0 * batch * length * length * 512
    for pass_ in ("forward", "forward+backward"):
      fast, slow = median(times[("jax.nn", pass_)]), median(times[("einsum", pass_)])
      pass_flops = forward_flops * (1 if pass_ == "forward" else 3)
      rows.append(
        dict(
          length=length,
          batch=batch,
          pass_=pass_,
          jax_nn_seconds=fast,
          einsum_seconds=slow,
          einsum_over_jax_nn=median(
            [s / f for s, f in zip(times[("einsum", pass_)], times[("jax.nn", pass_)])]
          ),
          jax_nn_flops_per_second=pass_flops / fast,
        )
      )
  return rows
