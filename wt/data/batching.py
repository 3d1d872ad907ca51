"""Batches by token budget in a few fixed shapes: pure numpy plans over a tokenized corpus.

The scheme, and why:
  * Each compiled train step costs seconds on CPU, so batches come in `num_buckets` fixed
    (source length S, target length T) shapes; a bucket's row count is the most rows whose
    longer side fits the token budget (rows * max(S, T) <= tokens_per_batch), rounded down to
    the row multiple (devices * processes).
  * The shapes are chosen from the training lengths (`choose_bucket_lengths`): greedily, then
    refined, to minimise the padded slots S + T summed over the examples, each example going to
    the smallest shape it fits. They are a pure function of the training lengths, so every seed,
    both models and every process get the same shapes. Independent (S, T) pairs cost nothing
    extra over S = T and suit language pairs whose sides differ in length. A grid of
    (source bucket) x (target bucket) shapes was rejected: 3 x 3 = 9 shapes reach only ~0.75
    padding efficiency on Multi30k, where 8 chosen shapes reach ~0.87. Sorting a window and
    padding to a quantum gives one shape per (S, T) quantum pair: far more compiles.
  * Batches per epoch must not depend on the shuffle, and no training slot should be wasted on
    all-pad rows: each epoch permutes every bucket, cuts full batches, and moves the leftover
    (< rows) examples into the smallest larger shape that holds them, where they join the next
    cut (`TrainPlan`). Bucket sizes are fixed, so the batch counts are too. Only the largest
    shape's leftover (a few dozen examples, different ones each epoch) is dropped.
  * Evaluation (`eval_plan`) batches every example exactly once, bucket by bucket in index
    order, moving leftovers on in the same way; the last batch of the largest shape is filled
    with index -1 (all-pad rows).
"""

import dataclasses
import itertools
from typing import Sequence

import numpy as np

from wt.data.errors import DataError

Shape = tuple[int, int]  # (source length, target length)


@dataclasses.dataclass(frozen=True)
class RaggedTokens:
  """Variable-length token sequences stored flat: sequence i is flat[offsets[i]:offsets[i+1]]."""

  flat: np.ndarray
  offsets: np.ndarray

  @classmethod
  def from_lists(cls, sequences: Sequence[Sequence[int]], dtype=np.int32) -> "RaggedTokens":
    lengths = np.fromiter(map(len, sequences), np.int64, count=len(sequences))
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    flat = np.fromiter(itertools.chain.from_iterable(sequences), dtype, count=offsets[-1])
    return cls(flat, offsets)

  @classmethod
  def concatenate(cls, parts: Sequence["RaggedTokens"], dtype=np.int32) -> "RaggedTokens":
    lengths = np.concatenate([np.zeros(0, np.int64)] + [part.lengths for part in parts])
    flat = np.concatenate([np.zeros(0, dtype)] + [part.flat for part in parts])
    return cls(flat, np.concatenate([[0], np.cumsum(lengths)]))

  def __len__(self) -> int:
    return len(self.offsets) - 1

  @property
  def lengths(self) -> np.ndarray:
    return np.diff(self.offsets)

  def _gather(self, starts: np.ndarray, lengths: np.ndarray) -> "RaggedTokens":
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    positions = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])
    return RaggedTokens(self.flat[positions], offsets)

  def _lengths_at(self, indices: np.ndarray) -> np.ndarray:
    return self.offsets[indices + 1] - self.offsets[indices]

  def select(self, indices: np.ndarray) -> "RaggedTokens":
    """The sequences at `indices`, in that order."""
    return self._gather(self.offsets[indices], self._lengths_at(indices))

  def truncated(self, max_length: int, end_id: int) -> "RaggedTokens":
    """Sequences longer than `max_length` cut to their first max_length - 1 tokens + end_id."""
    lengths = np.minimum(self.lengths, max_length)
    result = self._gather(self.offsets[:-1], lengths)
    result.flat[result.offsets[1:][self.lengths > max_length] - 1] = end_id
    return result

  def padded(self, indices: np.ndarray, width: int) -> np.ndarray:
    """[len(indices), width] int32 of the sequences at `indices`, 0-padded; -1 = all-pad row."""
    indices = np.asarray(indices)
    valid = indices >= 0
    safe = np.where(valid, indices, 0)
    lengths = np.where(valid, self._lengths_at(safe), 0)
    columns = np.arange(width)
    positions = np.minimum(self.offsets[safe][:, None] + columns, max(len(self.flat) - 1, 0))
    mask = columns < lengths[:, None]
    return np.where(mask, self.flat[positions], 0).astype(np.int32)


def round_up(value, quantum: int):
  return -(-value // quantum) * quantum


def _sorted_by_slots(shapes) -> list[Shape]:
  return sorted(set(shapes), key=lambda shape: (shape[0] + shape[1], shape))


def choose_bucket_lengths(
  source_lengths: np.ndarray,
  target_lengths: np.ndarray,
  *,
  num_buckets: int,
  quantum: int,
  refinement_rounds: int = 2,
) -> list[Shape]:
  """At most `num_buckets` (S, T) shapes (multiples of `quantum`) that hold every example.

  Minimises the sum over examples of S + T of the smallest shape the example fits: the
  covering shape (longest source, longest target) first, then the shape that lowers the sum
  most, until there are `num_buckets` (or no shape helps); then each shape but the covering
  one is replaced by the best one given the others, `refinement_rounds` times. Each step
  scores every candidate shape at once on the 2-D length histogram, in O(buckets x S x T).
  Returns the shapes sorted by S + T.
  """
  cells = np.stack(
    [-(-np.asarray(source_lengths) // quantum), -(-np.asarray(target_lengths) // quantum)]
  )
  size = tuple(int(n) + 1 for n in cells.max(axis=1))
  counts = np.zeros(size)
  np.add.at(counts, tuple(cells), 1)
  candidate_slots = np.add.outer(np.arange(size[0]), np.arange(size[1]))
  cover = (size[0] - 1, size[1] - 1)

  def best_addition(shapes: list[Shape]) -> Shape | None:
    """The shape that, added to `shapes`, saves the most slots; None if none saves any."""
    slots = np.full(size, np.inf)  # Per cell: slots of the smallest shape holding it.
    for s, t in shapes:
      slots[: s + 1, : t + 1] = np.minimum(slots[: s + 1, : t + 1], s + t)
    saving = np.zeros(size)
    for value in np.unique(slots):
      # Examples now padded to `value` slots that candidate (s, t) would hold.
      held = (counts * (slots == value)).cumsum(axis=0).cumsum(axis=1)
      saving += np.maximum(value - candidate_slots, 0) * held
    best = np.unravel_index(np.argmax(saving), size)
    return (int(best[0]), int(best[1])) if saving[best] > 0 else None

  shapes = [cover]
  while len(shapes) < num_buckets and (addition := best_addition(shapes)) is not None:
    shapes.append(addition)
  for _ in range(refinement_rounds):
    for i in range(1, len(shapes)):
      shapes[i] = best_addition(shapes[:i] + shapes[i + 1 :]) or cover
  return _sorted_by_slots((s * quantum, t * quantum) for s, t in shapes)


def assign_buckets(
  source_lengths: np.ndarray, target_lengths: np.ndarray, bucket_lengths: Sequence[Shape]
) -> np.ndarray:
  """Index of the first (= smallest, for sorted shapes) shape each example fits; -1 if none."""
  shapes = np.asarray(bucket_lengths).reshape(-1, 2)
  fits = (np.asarray(source_lengths)[:, None] <= shapes[:, 0]) & (
    np.asarray(target_lengths)[:, None] <= shapes[:, 1]
  )
  return np.where(fits.any(axis=1), fits.argmax(axis=1), -1)


def rows_per_bucket(
  bucket_lengths: Sequence[Shape], tokens_per_batch: int, row_multiple: int
) -> list[int]:
  """Rows of each shape: the most that keep rows * max(S, T) <= budget, a multiple of rows."""
  rows = []
  for source_length, target_length in bucket_lengths:
    longest = max(source_length, target_length)
    fitting = tokens_per_batch // longest // row_multiple * row_multiple
    if fitting == 0:
      raise DataError(
        f"config.data.tokens_per_batch={tokens_per_batch} holds "
        f"{tokens_per_batch // longest} sentences of {longest} tokens, fewer than the "
        f"{row_multiple} rows a batch needs (one per device and process): raise "
        f"tokens_per_batch to at least {row_multiple * longest}."
      )
    rows.append(fitting)
  return rows


def spill_targets(bucket_lengths: Sequence[Shape]) -> list[int | None]:
  """For each shape, the first later (= smallest larger, for sorted shapes) one that holds it."""
  return [
    next(
      (
        later
        for later in range(bucket + 1, len(bucket_lengths))
        if all(np.greater_equal(bucket_lengths[later], bucket_lengths[bucket]))
      ),
      None,
    )
    for bucket in range(len(bucket_lengths))
  ]


class TrainPlan:
  """Which examples form each global training batch of an epoch, for any (seed, epoch).

  The number of batches per epoch, and of each shape, depends only on the bucket sizes; the
  shuffle decides which examples go where and the order of the batches.
  """

  def __init__(self, bucket_ids: np.ndarray, bucket_lengths: Sequence[Shape], rows: Sequence[int]):
    self.rows = list(rows)
    self._members = [np.flatnonzero(bucket_ids == b) for b in range(len(self.rows))]
    self._spill_targets = spill_targets(bucket_lengths)
    incoming = [0] * len(self.rows)
    self.batches_per_bucket = []
    self.dropped_per_epoch = 0
    for bucket, (members, rows_here) in enumerate(zip(self._members, self.rows)):
      pool = len(members) + incoming[bucket]
      self.batches_per_bucket.append(pool // rows_here)
      leftover = pool % rows_here
      target = self._spill_targets[bucket]
      if target is None:
        self.dropped_per_epoch += leftover
      else:
        incoming[target] += leftover
    self.batches_per_epoch = sum(self.batches_per_bucket)

  def epoch(self, seed: int, epoch: int) -> list[tuple[int, np.ndarray]]:
    """The epoch's global batches in order, each (bucket, example indices)."""
    rng = np.random.default_rng([seed, epoch])
    incoming = [[] for _ in self.rows]
    batches = []
    for bucket, (members, rows_here) in enumerate(zip(self._members, self.rows)):
      pool = rng.permutation(np.concatenate([members, *incoming[bucket]]))
      full = self.batches_per_bucket[bucket] * rows_here
      batches.extend((bucket, chunk) for chunk in pool[:full].reshape(-1, rows_here))
      target = self._spill_targets[bucket]
      if target is not None:
        incoming[target].append(pool[full:])
    return [batches[i] for i in rng.permutation(len(batches))]


def eval_plan(
  bucket_ids: np.ndarray, rows: int, spill_to: Sequence[int | None]
) -> list[tuple[int, np.ndarray]]:
  """Every example exactly once: (bucket, indices) batches of `rows`, bucket by bucket.

  As in training, the leftover (< rows examples) of a bucket moves on to `spill_to[bucket]`;
  a bucket without a spill target fills its last batch with index -1 (all-pad rows).
  Indices are increasing within a bucket.
  """
  incoming = [[] for _ in spill_to]
  plan = []
  for bucket, target in enumerate(spill_to):
    pool = np.sort(np.concatenate([np.flatnonzero(bucket_ids == bucket), *incoming[bucket]]))
    if target is not None:
      full = len(pool) // rows * rows
      incoming[target].append(pool[full:])
      pool = pool[:full]
    filled = np.full(round_up(len(pool), rows), -1, dtype=np.int64)
    filled[: len(pool)] = pool
    plan.extend((bucket, chunk) for chunk in filled.reshape(-1, rows))
  return plan


def process_rows(global_rows: int, process_index: int, process_count: int) -> slice:
  """The rows of a global batch that process `process_index` materialises."""
  share = global_rows // process_count
  return slice(process_index * share, (process_index + 1) * share)
