"""The `compile` section: what it costs to compile a run's training step for every batch shape
before it trains, one shape after another against `wt.parallel.compile_each` (one thread per
core), for both models of the main job (multi30k.py:quick), interleaved.

A run compiles one program per training batch shape (`data.num_buckets`, 8 by default). XLA
compiles a program on one core, so on a 2-core CPU or a many-core GPU host the shapes can
compile side by side. Every compilation here builds a new program (the label smoothing moves
by 1e-7 each time) and the persistent compilation cache is off, so nothing is read back.
"""

import itertools

import jax

from experiments.benchmarks import timing
from experiments.benchmarks.options import Options
from experiments.configs import multi30k
from wt import models, optim, parallel
from wt import train as wt_train

# (source_len, target_len) of multi30k.py:quick's 8 training buckets on Multi30k, from its log;
# each batch holds tokens_per_batch // the longer length sentences, as the pipeline builds them.
QUICK_LENGTHS = ((12, 12), (14, 14), (16, 16), (18, 19), (21, 22), (25, 27), (33, 35), (53, 56))
QUICK_VOCAB = 8000


def compile_all_shapes(config, vocab_size: int, lengths, rounds: int) -> dict:
  """{"one at a time": [seconds per round], "compile_each": [...]}: compiling the train step
  of the experiment `config` for batches of (source_len, target_len) `lengths`."""
  model_config = wt_train.model_config_from(config, vocab_size)
  model = models.Transformer(model_config)
  optimizer, _ = optim.make_optimizer(config.train, model_config)
  data_parallel = parallel.data_parallel(config.train.wrapper)
  state = wt_train.create_train_state(model_config, optimizer, 0, data_parallel)
  tokens = config.data.tokens_per_batch
  devices = jax.device_count()  # rows split evenly over devices, as the pipeline makes them
  shapes = [(tokens // max(s, t) // devices * devices, s, t) for s, t in lengths]
  fresh = itertools.count(1)

  def compile_shapes(compile_all):
    return wt_train.compile_train_steps(
      model,
      optimizer,
      config.train.label_smoothing + 1e-7 * next(fresh),  # a program never compiled before
      data_parallel,
      state,
      shapes,
      compile_all,
    )

  return timing.interleaved(
    {
      "one at a time": lambda: compile_shapes(lambda one, keys: {k: one(k) for k in keys}),
      "compile_each": lambda: compile_shapes(parallel.compile_each),
    },
    rounds,
    0,
  )


def compile_section(options: Options) -> list:
  """Per model: median seconds to compile quick's 8 shapes one at a time and with
  `compile_each`, and their ratio (median over rounds of the per-round ratio)."""
  cache = jax.config.jax_enable_compilation_cache  # type: ignore[attr-defined]
  jax.config.update("jax_enable_compilation_cache", False)
  try:
    rows = []
    for attention in ("multihead", "weighted"):
      config = multi30k.get_config("quick")
      config.model.attention = attention
      times = compile_all_shapes(config, QUICK_VOCAB, QUICK_LENGTHS, options.compile_rounds)
      one, each = times["one at a time"], times["compile_each"]
      rows.append(
        dict(
          model="transformer" if attention == "multihead" else "weighted-split",
          shapes=len(QUICK_LENGTHS),
          threads=parallel.compile_workers(len(QUICK_LENGTHS)),
          one_at_a_time_seconds=timing.median(one),
          compile_each_seconds=timing.median(each),
          ratio=timing.median([b / a for a, b in zip(one, each)]),
          rounds=len(one),
        )
      )
    return rows
  finally:
    jax.config.update("jax_enable_compilation_cache", cache)
