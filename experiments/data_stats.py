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

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from experiments.configs import multi30k
from wt import models, optim, parallel, train
from wt.data import default_data_config, load_translation_data

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "Optional experiment config file; its `data` field is used.", lock_config=False
)
_EPOCHS = flags.DEFINE_integer("epochs", 2, "Training epochs to measure.")
_SEED = flags.DEFINE_integer("seed", 0, "Shuffle seed.")
_ROW_MULTIPLE = flags.DEFINE_integer("row_multiple", 1, "Devices: global rows are a multiple.")
_STEPS = flags.DEFINE_integer(
  "train_steps",
  5,
  "Timed training steps of the config's model "
  "(multi30k.py:quick without --config) on the most frequent batch "
  "shape, to compare with the pipeline's speed; 0 skips them.",
)


def _define_data_flags() -> dict:
  """One flag per config.data field; None (the default) keeps the config's value."""
  define = {int: flags.DEFINE_integer, str: flags.DEFINE_string}
  return {
    name: define.get(type(value), flags.DEFINE_string)(
      name, None, f"Overrides config.data.{name} (default {value!r})."
    )
    for name, value in default_data_config().items()
  }


_DATA_FLAGS = _define_data_flags()


def _data_config():
  config = _CONFIG.value.data if _CONFIG.value is not None else default_data_config()
  for name, flag in _DATA_FLAGS.items():
    if flag.value is not None:
      config[name] = flag.value
  return config


def _training_examples_per_second(data, batch: dict) -> float:
  """Examples per second that training steps consume on `batch`'s shape (after 2 warm-ups)."""
  config = _CONFIG.value if _CONFIG.value is not None else multi30k.get_config("quick")
  model_config = train.model_config_from(config, data.tokenizer.vocab_size)
  optimizer, _ = optim.make_optimizer(config.train, model_config)
  data_parallel = parallel.data_parallel(config.train.wrapper)
  state = train.create_train_state(model_config, optimizer, config.train.seed, data_parallel)
  device_batch = data_parallel.device_batch({k: batch[k] for k in ("inputs", "targets")})
  step = train.compile_train_step(
    models.Transformer(model_config),
    optimizer,
    config.train.label_smoothing,
    data_parallel,
    state,
    device_batch,
  )
  for _ in range(2):
    state, _ = step(state, device_batch)
  jax.block_until_ready(state)
  started = time.perf_counter()
  for _ in range(_STEPS.value):
    state, _ = step(state, device_batch)
  jax.block_until_ready(state)
  return len(batch["inputs"]) * _STEPS.value / (time.perf_counter() - started)


def _efficiency(real: float, slots: float) -> str:
  return f"{real / slots:.3f}" if slots else "-"


def main(argv):
  del argv
  data_config = _data_config()
  started = time.perf_counter()
  data = load_translation_data(data_config, row_multiple=_ROW_MULTIPLE.value)
  load_s = time.perf_counter() - started

  per_shape = collections.defaultdict(lambda: np.zeros(3))  # batches, real tokens, slots
  example_batch = {}  # one batch of each shape, for the training-step measurement
  examples = 0
  count = _EPOCHS.value * data.batches_per_epoch
  started = time.perf_counter()
  for batch in data.train_batches(_SEED.value):
    shape = (len(batch["inputs"]), batch["inputs"].shape[1], batch["targets"].shape[1])
    real = np.count_nonzero(batch["inputs"]) + np.count_nonzero(batch["targets"])
    per_shape[shape] += (1, real, batch["inputs"].size + batch["targets"].size)
    example_batch.setdefault(shape, batch)
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

  print(
    f"dataset={data_config.dataset} vocab_size={data.tokenizer.vocab_size} "
    f"tokens_per_batch={data_config.tokens_per_batch} num_buckets="
    f"{data_config.num_buckets} length_quantum={data_config.length_quantum} "
    f"max_length={data_config.max_length}; loaded in {load_s:.1f} s"
  )
  print(
    f"train: {data.num_examples(data_config.train_split)} usable pairs, "
    f"{data.batches_per_epoch} batches per epoch, {len(per_shape)} distinct shapes\n"
  )
  print("| rows | source len | target len | batches/epoch | padding efficiency |")
  print("|---:|---:|---:|---:|---:|")
  for shape, (shape_batches, shape_real, shape_slots) in sorted(per_shape.items()):
    print(
      f"| {' | '.join(map(str, shape))} | {shape_batches / _EPOCHS.value:.0f} "
      f"| {_efficiency(shape_real, shape_slots)} |"
    )
  print("\n| measure | value |\n|---|---:|")
  for name, value in [
    ("training padding efficiency (non-pad / slots, both sides)", _efficiency(real, slots)),
    ("distinct training batch shapes", len(per_shape)),
    ("epochs measured", _EPOCHS.value),
    ("examples per second (batch production)", f"{examples / iterate_s:,.0f}"),
    ("non-pad tokens per second (batch production)", f"{real / iterate_s:,.0f}"),
    (f"{data_config.eval_split} padding efficiency", _efficiency(eval_real, eval_slots)),
    (f"{data_config.eval_split} batch shapes", len(eval_shapes)),
  ]:
    print(f"| {name} | {value} |")
  if _STEPS.value > 0:
    shape = max(per_shape, key=lambda k: per_shape[k][0])
    consumed = _training_examples_per_second(data, example_batch[shape])
    print(f"| examples per second a training step consumes (shape {shape}) | {consumed:,.0f} |")
    print(f"| pipeline speed / training consumption | {examples / iterate_s / consumed:,.0f}x |")
  assert batches == count


if __name__ == "__main__":
  app.run(main)
