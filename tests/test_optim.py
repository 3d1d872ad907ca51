"""Schedules against the papers' formulas; simplex projection against brute force; the kappa/alpha
parameter group, its projection and its freeze."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from tests.references import brute_force_simplex_projection
from wt import models, optim
from wt.modules import is_branch_weight
from wt.train_config import TrainConfig


def test_simplex_projection_matches_brute_force():
  rng = np.random.default_rng(0)
  vectors = [rng.normal(size=6) * scale for scale in (0.1, 1.0, 5.0) for _ in range(20)]
  vectors += [np.full(5, 0.2), np.array([3.0, -1.0, 0.5, 0.0]), rng.dirichlet(np.ones(8))]
  for v in vectors:
    got = np.asarray(optim.project_onto_simplex(jnp.asarray(v, jnp.float32)))
    np.testing.assert_allclose(got, brute_force_simplex_projection(v), atol=1e-5)
    assert (got >= 0).all() and abs(got.sum() - 1.0) < 1e-5


def test_projection_works_on_a_batch_of_vectors():
  v = np.random.default_rng(1).normal(size=(4, 7)).astype(np.float32)
  got = np.asarray(optim.project_onto_simplex(jnp.asarray(v)))
  for row, expected in zip(got, map(brute_force_simplex_projection, v)):
    np.testing.assert_allclose(row, expected, atol=1e-5)


def test_schedules_follow_the_papers():
  lr = optim.vaswani_schedule(512, 4000)
  for step in (1, 100, 4000, 10_000, 100_000):
    expected = 512**-0.5 * min(step**-0.5, step * 4000**-1.5)
    np.testing.assert_allclose(float(lr(step - 1)), expected, rtol=1e-5)  # optax counts from 0
  branch = optim.branch_schedule(512, 6, 400)
  for step in (1, 400, 60_000):
    expected = (512 / 6) ** -0.5 * min(step**-0.5, step * 400**-1.5)
    np.testing.assert_allclose(float(branch(step - 1)), expected, rtol=1e-5)


def _train_config(**overrides):
  values = dict(
    num_steps=30,
    warmup_steps=5,
    learning_rate_scale=1.0,
    adam_b1=0.9,
    adam_b2=0.98,
    adam_eps=1e-9,
    branch_schedule="own",
    branch_warmup_steps=2,
    branch_freeze_steps=10,
  )
  values.update(overrides)
  return ml_collections.ConfigDict(values)


def _weighted_params(branch_weights="projection"):
  config = models.ModelConfig(
    vocab_size=20,
    attention="weighted",
    num_layers=1,
    d_model=8,
    d_ff=16,
    num_heads=2,
    num_branches=4,
    branch_weights=branch_weights,
  )
  return config, models.init_params(config, jax.random.key(0))


def _run(optimizer, params, steps, seed=0):
  """Applies `steps` updates with random gradients; returns the parameters after each.

  The gradients are drawn with NumPy and the update and its application are compiled: a
  jax.random draw and an add per leaf, run op by op, took most of the test's time."""
  state = optimizer.init(params)
  history = []
  update, apply = jax.jit(optimizer.update), jax.jit(optax.apply_updates)
  rng = np.random.default_rng(seed)
  for _ in range(steps):
    grads = jax.tree.map(lambda p: rng.normal(size=p.shape).astype(np.float32), params)
    updates, state = update(grads, state, params)
    params = apply(params, updates)
    history.append(params)
  return history


def _branch_leaves(params):
  return [
    np.asarray(x)
    for path, x in jax.tree_util.tree_leaves_with_path(params)
    if is_branch_weight(path)
  ]


def _other_leaves(params):
  return [
    np.asarray(x)
    for path, x in jax.tree_util.tree_leaves_with_path(params)
    if not is_branch_weight(path)
  ]


def test_kappa_alpha_stay_on_the_simplex_and_freeze_for_the_last_k_steps():
  model_config, params = _weighted_params()
  optimizer, _ = optim.make_optimizer(_train_config(), model_config)
  history = _run(optimizer, params, 30)
  assert len(_branch_leaves(params)) == 4  # kappa and alpha of 2 branched sublayers
  for p in history:
    for w in _branch_leaves(p):
      assert (w >= 0).all() and abs(w.sum() - 1.0) < 1e-5
  # Steps 1..20 move kappa/alpha; steps 21..30 (the last K = 10) leave them exactly as they are.
  moving = [_branch_leaves(p) for p in history[:20]]
  assert all(np.abs(a - b).max() > 0 for a, b in zip(moving[0], moving[-1]))
  frozen = [_branch_leaves(p) for p in history[19:]]
  for later in frozen[1:]:
    for a, b in zip(frozen[0], later):
      np.testing.assert_array_equal(a, b)
  # ... while every other weight keeps training.
  for a, b in zip(_other_leaves(history[19]), _other_leaves(history[-1])):
    assert np.abs(a - b).max() > 0


def test_default_freeze_is_the_papers_10k_of_60k_scaled():
  paper = _train_config(num_steps=60_000, branch_freeze_steps=-1)
  assert optim.branch_freeze_steps(paper) == 10_000
  assert optim.branch_freeze_steps(_train_config(num_steps=1200, branch_freeze_steps=-1)) == 200
  assert optim.branch_freeze_steps(_train_config(branch_freeze_steps=0)) == 0


def test_softmax_mode_learns_free_logits_without_projection():
  model_config, params = _weighted_params("softmax")
  optimizer, _ = optim.make_optimizer(_train_config(branch_freeze_steps=0), model_config)
  last = _run(optimizer, params, 5)[-1]
  assert any(abs(w.sum() - 1.0) > 1e-3 for w in _branch_leaves(last))  # logits, not weights


def test_every_checked_branch_schedule_builds_and_others_are_refused_by_the_config():
  model_config, _ = _weighted_params()
  for name in optim.BRANCH_SCHEDULES:
    _, schedules = optim.make_optimizer(_train_config(branch_schedule=name), model_config)
    assert (schedules["branch_learning_rate"] is schedules["learning_rate"]) == (name == "shared")
  with pytest.raises(ValueError, match="branch_schedule.*'fast'"):
    TrainConfig.from_mapping(dict(branch_schedule="fast"))
