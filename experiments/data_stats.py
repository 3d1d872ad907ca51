"""Padding efficiency, batch shapes and speed of the training batches of a dataset.

    python -m experiments.data_stats                        # Multi30k, default data settings
    python -m experiments.data_stats --vocab_size=16000 --tokens_per_batch=8192 --num_buckets=6
    python -m experiments.data_stats --config=experiments/configs/multi30k.py:quick  # its .data

Every field of `config.data` (wt/data/config.py) is also a flag of the same name. Padding
efficiency = non-pad tokens / all token slots, source and target counted together, over whole
training epochs; speed = examples (and non-pad tokens) per second that `train_batches` yields.
"""

import collections
import time

from absl import app
from absl import flags
from ml_collections import config_flags
import numpy as np

from wt.data import default_data_config, load_translation_data

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Optional experiment config file; its `data` field is used.",
    lock_config=False)
_EPOCHS = flags.DEFINE_integer("epochs", 2, "Training epochs to measure.")
_SEED = flags.DEFINE_integer("seed", 0, "Shuffle seed.")
_ROW_MULTIPLE = flags.DEFINE_integer("row_multiple", 1, "Devices: global rows are a multiple.")


def _define_data_flags() -> dict:
  """One flag per config.data field; None (the default) keeps the config's value."""
  define = {int: flags.DEFINE_integer, str: flags.DEFINE_string}
  return {name: define.get(type(value), flags.DEFINE_string)(
              name, None, f"Overrides config.data.{name} (default {value!r}).")
          for name, value in default_data_config().items()}


_DATA_FLAGS = _define_data_flags()


def _data_config():
  config = _CONFIG.value.data if _CONFIG.value is not None else default_data_config()
  for name, flag in _DATA_FLAGS.items():
    if flag.value is not None:
      config[name] = flag.value
  return config


def _efficiency(real: float, slots: float) -> str:
  return f"{real / slots:.3f}" if slots else "-"


def main(argv):
  del argv
  data_config = _data_config()
  started = time.perf_counter()
  data = load_translation_data(data_config, row_multiple=_ROW_MULTIPLE.value)
  load_s = time.perf_counter() - started

  per_shape = collections.defaultdict(lambda: np.zeros(3))  # batches, real tokens, slots
  examples = 0
  count = _EPOCHS.value * data.batches_per_epoch
  started = time.perf_counter()
  for batch in data.train_batches(_SEED.value):
    shape = (len(batch["inputs"]), batch["inputs"].shape[1], batch["targets"].shape[1])
    real = np.count_nonzero(batch["inputs"]) + np.count_nonzero(batch["targets"])
    per_shape[shape] += (1, real, batch["inputs"].size + batch["targets"].size)
    examples += shape[0]
    if batch["position"] == count:
      break
  iterate_s = time.perf_counter() - started
  batches, real, slots = np.sum(list(per_shape.values()), axis=0)

  eval_real = eval_slots = 0
  eval_shapes = set()
  for batch in data.eval_batches(data_config.eval_split):
    eval_shapes.add((batch["inputs"].shape, batch["targets"].shape))
    eval_real += np.count_nonzero(batch["inputs"]) + np.count_nonzero(batch["targets"])
    eval_slots += batch["inputs"].size + batch["targets"].size

  print(f"dataset={data_config.dataset} vocab_size={data.tokenizer.vocab_size} "
        f"tokens_per_batch={data_config.tokens_per_batch} num_buckets="
        f"{data_config.num_buckets} length_quantum={data_config.length_quantum} "
        f"max_length={data_config.max_length}; loaded in {load_s:.1f} s")
  print(f"train: {data.num_examples(data_config.train_split)} usable pairs, "
        f"{data.batches_per_epoch} batches per epoch, {len(per_shape)} distinct shapes\n")
  print("| rows | source len | target len | batches/epoch | padding efficiency |")
  print("|---:|---:|---:|---:|---:|")
  for shape, (shape_batches, shape_real, shape_slots) in sorted(per_shape.items()):
    print(f"| {' | '.join(map(str, shape))} | {shape_batches / _EPOCHS.value:.0f} "
          f"| {_efficiency(shape_real, shape_slots)} |")
  print("\n| measure | value |\n|---|---:|")
  for name, value in [
          ("training padding efficiency (non-pad / slots, both sides)",
           _efficiency(real, slots)),
          ("distinct training batch shapes", len(per_shape)),
          ("epochs measured", _EPOCHS.value),
          ("examples per second (batch production)", f"{examples / iterate_s:,.0f}"),
          ("non-pad tokens per second (batch production)", f"{real / iterate_s:,.0f}"),
          (f"{data_config.eval_split} padding efficiency", _efficiency(eval_real, eval_slots)),
          (f"{data_config.eval_split} batch shapes", len(eval_shapes))]:
    print(f"| {name} | {value} |")
  assert batches == count


if __name__ == "__main__":
  app.run(main)
