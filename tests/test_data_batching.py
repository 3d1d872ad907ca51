"""Tests of wt/data/batching.py: ragged tokens, bucket shapes, training and evaluation plans."""

import numpy as np
import pytest

from wt.data import DataError, batching


def _lengths(num_examples=3000, seed=0):
  """Caption-like lengths: source ~ 16 +- 5 tokens, target a little longer."""
  rng = np.random.default_rng(seed)
  source = np.clip(rng.normal(16, 5, num_examples).round(), 2, 60).astype(np.int64)
  target = np.clip(source + rng.integers(-3, 6, num_examples), 2, 64).astype(np.int64)
  return source, target


def test_ragged_tokens_padding_selection_and_truncation():
  tokens = batching.RaggedTokens.from_lists([[5, 6, 1], [7, 1], [8, 9, 10, 11, 1]])
  assert tokens.lengths.tolist() == [3, 2, 5]
  np.testing.assert_array_equal(
    tokens.padded(np.array([2, -1, 1]), 6),
    [[8, 9, 10, 11, 1, 0], [0, 0, 0, 0, 0, 0], [7, 1, 0, 0, 0, 0]],
  )
  selected = tokens.select(np.array([2, 0]))
  np.testing.assert_array_equal(
    selected.padded(np.arange(2), 5), [[8, 9, 10, 11, 1], [5, 6, 1, 0, 0]]
  )
  joined = batching.RaggedTokens.concatenate([tokens, selected, tokens.select(np.array([], int))])
  np.testing.assert_array_equal(joined.lengths, [3, 2, 5, 5, 3])
  np.testing.assert_array_equal(joined.padded(np.array([4]), 3), [[5, 6, 1]])
  truncated = tokens.truncated(3, end_id=1)
  np.testing.assert_array_equal(
    truncated.padded(np.arange(3), 3), [[5, 6, 1], [7, 1, 0], [8, 9, 1]]
  )


def test_chosen_shapes_cover_all_examples_and_beat_equal_width_buckets():
  source, target = _lengths()
  shapes = batching.choose_bucket_lengths(source, target, num_buckets=6, quantum=1)
  assert 1 < len(shapes) <= 6
  assert shapes[-1] == (source.max(), target.max())  # The covering shape.
  buckets = batching.assign_buckets(source, target, shapes)
  assert (buckets >= 0).all()
  chosen = np.asarray(shapes)[buckets]
  assert (chosen[:, 0] >= source).all() and (chosen[:, 1] >= target).all()
  efficiency = (source + target).sum() / chosen.sum()
  equal_width = np.array([(b, b) for b in np.linspace(64 / 6, 64, 6).round().astype(int)])
  equal_buckets = batching.assign_buckets(source, target, equal_width)
  assert efficiency > (source + target).sum() / equal_width[equal_buckets].sum() + 0.05
  assert efficiency > 0.8


def test_shapes_follow_the_quantum():
  source, target = _lengths()
  for quantum in (4, 8):
    shapes = batching.choose_bucket_lengths(source, target, num_buckets=4, quantum=quantum)
    assert len(shapes) == 4 and all(s % quantum == 0 and t % quantum == 0 for s, t in shapes)


def test_no_useless_shapes_are_added():
  source, target = np.array([3, 3, 9, 9]), np.array([4, 4, 12, 12])
  shapes = batching.choose_bucket_lengths(source, target, num_buckets=8, quantum=1)
  assert shapes == [(3, 4), (9, 12)]


def test_rows_fit_the_token_budget_and_the_row_multiple():
  rows = batching.rows_per_bucket([(10, 12), (30, 20), (64, 64)], 1000, row_multiple=8)
  assert rows == [80, 32, 8]
  with pytest.raises(DataError, match=r"tokens_per_batch=1000 .* at least 1024"):
    batching.rows_per_bucket([(64, 64)], 1000, row_multiple=16)


def _plan(num_examples=3000):
  source, target = _lengths(num_examples)
  shapes = batching.choose_bucket_lengths(source, target, num_buckets=5, quantum=1)
  rows = batching.rows_per_bucket(shapes, 1024, row_multiple=4)
  return (
    batching.TrainPlan(batching.assign_buckets(source, target, shapes), shapes, rows),
    source,
    target,
    shapes,
    rows,
  )


def test_train_plan_epoch_fits_shapes_and_uses_each_example_at_most_once():
  plan, source, target, shapes, rows = _plan()
  for seed, epoch in ((0, 0), (0, 1), (5, 0)):
    batches = plan.epoch(seed, epoch)
    assert len(batches) == plan.batches_per_epoch
    used = np.concatenate([indices for _, indices in batches])
    assert len(np.unique(used)) == len(used) == len(source) - plan.dropped_per_epoch
    for bucket, indices in batches:
      assert len(indices) == rows[bucket]
      assert (source[indices] <= shapes[bucket][0]).all()
      assert (target[indices] <= shapes[bucket][1]).all()
  assert plan.dropped_per_epoch < rows[-1]  # Only the last shape's leftover is dropped.


def test_train_plan_is_deterministic_per_seed_and_epoch():
  plan = _plan()[0]

  def flat(seed, epoch):
    return np.concatenate([indices for _, indices in plan.epoch(seed, epoch)])

  np.testing.assert_array_equal(flat(3, 2), flat(3, 2))
  assert not np.array_equal(flat(3, 2), flat(4, 2))
  assert not np.array_equal(flat(3, 2), flat(3, 3))


def test_eval_plan_yields_every_example_once_moving_leftovers_on():
  buckets = np.array([1, 0, 1, 1, 2, 0, 1, 0])
  plan = batching.eval_plan(buckets, rows=2, spill_to=[1, 2, None])
  assert [bucket for bucket, _ in plan] == [0, 1, 1, 2]
  assert [indices.tolist() for _, indices in plan] == [[1, 5], [0, 2], [3, 6], [4, 7]]
  plan = batching.eval_plan(buckets, rows=2, spill_to=[None, None, None])
  assert [indices.tolist() for _, indices in plan] == [[1, 5], [7, -1], [0, 2], [3, 6], [4, -1]]


def test_spill_targets_are_the_smallest_shapes_that_hold_each_shape():
  assert batching.spill_targets([(8, 8), (6, 12), (10, 10), (12, 12)]) == [2, 3, 3, None]


def test_process_rows_partition_a_batch():
  parts = [np.arange(12)[batching.process_rows(12, i, 3)] for i in range(3)]
  np.testing.assert_array_equal(np.concatenate(parts), np.arange(12))
