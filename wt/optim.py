"""Optimisation: the papers' schedules, the kappa/alpha parameter group, simplex projection.

  vaswani_schedule     lr = scale * d_model^-0.5 * min(step^-0.5, step * warmup^-1.5)
  branch_schedule      Ahmed et al.'s lr for kappa/alpha: (d_model / N)^-0.5 * min(...), warmup 400
  project_onto_simplex exact Euclidean projection onto {w >= 0, sum w = 1} (sort-based)
  make_optimizer       optax Adam(0.9, 0.98, 1e-9) for the weights; for kappa/alpha their own
                       schedule, the projection after every update, and a freeze for the last K
                       steps.

kappa/alpha are recognised by name: a parameter lives in the branch group when its path goes
through a module called "kappa" or "alpha" (see `modules.BranchWeights`).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from wt.modules import is_branch_weight

BRANCH_GROUP, WEIGHT_GROUP = "branch_weights", "weights"
BRANCH_SCHEDULES = ("own", "shared")


def _warmup_rsqrt(step, warmup_steps: int):
  step = jnp.maximum(jnp.asarray(step, jnp.float32) + 1.0, 1.0)  # optax counts from 0
  return jnp.minimum(step**-0.5, step * warmup_steps**-1.5)


def vaswani_schedule(d_model: int, warmup_steps: int, scale: float = 1.0) -> optax.Schedule:
  """Vaswani et al. Eq. 3: linear warm-up, then decay with the inverse square root of the step."""
  return lambda step: scale * d_model**-0.5 * _warmup_rsqrt(step, warmup_steps)


def branch_schedule(
  d_model: int, num_layers: int, warmup_steps: int = 400, scale: float = 1.0
) -> optax.Schedule:
  """Ahmed et al.'s schedule for kappa/alpha: (d_model / N)^-0.5 * min(step^-0.5, ...)."""
  return lambda step: scale * (d_model / num_layers) ** -0.5 * _warmup_rsqrt(step, warmup_steps)


def project_onto_simplex(values: jax.Array) -> jax.Array:
  """Euclidean projection of each vector along the last axis onto the probability simplex.

  argmin_w ||w - v||_2 subject to w >= 0, sum(w) = 1; the solution is max(v - theta, 0) for the
  threshold theta found from the sorted values (Held et al. 1974; Duchi et al. 2008).
  """
  ordered = -jnp.sort(-values, axis=-1)
  excess = jnp.cumsum(ordered, axis=-1) - 1.0
  ranks = jax.lax.broadcasted_iota(values.dtype, values.shape, values.ndim - 1) + 1.0
  support = jnp.sum(ordered - excess / ranks > 0, axis=-1, keepdims=True)
  theta = jnp.take_along_axis(excess, support - 1, axis=-1) / support.astype(values.dtype)
  return jnp.maximum(values - theta, 0.0)


def simplex_projection() -> optax.GradientTransformation:
  """Turns an update u into proj(params + u) - params, so new parameters lie on the simplex."""

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("simplex_projection needs the parameters: pass params to update()")
    updates = jax.tree.map(lambda u, p: project_onto_simplex(p + u) - p, updates, params)
    return updates, state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


class FreezeState(NamedTuple):
  count: jax.Array  # type: ignore[assignment]  # shadows tuple.count, as optax's states do


def freeze_from(step: int) -> optax.GradientTransformation:
  """Zeroes every update from optimizer step `step` on (exactly: frozen values do not move)."""

  def update_fn(updates, state, params=None):
    del params
    frozen = state.count >= step
    updates = jax.tree.map(lambda u: jnp.where(frozen, jnp.zeros_like(u), u), updates)
    return updates, FreezeState(state.count + 1)

  return optax.GradientTransformation(
    lambda params: FreezeState(jnp.zeros([], jnp.int32)), update_fn
  )


def parameter_groups(params):
  """The label tree optax.multi_transform needs: BRANCH_GROUP or WEIGHT_GROUP per leaf."""
  return jax.tree_util.tree_map_with_path(
    lambda path, _: BRANCH_GROUP if is_branch_weight(path) else WEIGHT_GROUP, params
  )


def branch_freeze_steps(train_config) -> int:
  """K, the final steps with kappa/alpha frozen: 10K of 60K in the paper, scaled by default."""
  if train_config.branch_freeze_steps >= 0:
    return int(train_config.branch_freeze_steps)
  return int(round(train_config.num_steps * 10 / 60))


def make_optimizer(
  train_config, model_config
) -> tuple[optax.GradientTransformation, dict[str, Callable]]:
  """The optimizer and its learning-rate schedules by name (for logging).

  train_config fields: num_steps, warmup_steps, learning_rate_scale, adam_b1, adam_b2,
  adam_eps, branch_schedule ("own" | "shared"), branch_warmup_steps, branch_freeze_steps
  (-1: the paper's 10K/60K scaled to num_steps; 0: never frozen).
  """
  adam = lambda lr: optax.adam(
    lr, b1=train_config.adam_b1, b2=train_config.adam_b2, eps=train_config.adam_eps
  )
  weights_lr = vaswani_schedule(
    model_config.d_model, train_config.warmup_steps, train_config.learning_rate_scale
  )
  # The field's values are checked once, by wt.train_config.TrainConfig (BRANCH_SCHEDULES).
  branch_lr = {
    "own": lambda: branch_schedule(
      model_config.d_model,
      model_config.num_layers,
      train_config.branch_warmup_steps,
      train_config.learning_rate_scale,
    ),
    "shared": lambda: weights_lr,
  }[train_config.branch_schedule]()
  branch_chain = [adam(branch_lr)]
  if model_config.branch_weights == "projection":
    branch_chain.append(simplex_projection())
  branch_chain.append(freeze_from(train_config.num_steps - branch_freeze_steps(train_config)))
  optimizer = optax.multi_transform(
    {WEIGHT_GROUP: adam(weights_lr), BRANCH_GROUP: optax.chain(*branch_chain)}, parameter_groups
  )
  return optimizer, {"learning_rate": weights_lr, "branch_learning_rate": branch_lr}
