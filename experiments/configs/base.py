"""The full experiment config with every field and its default (the papers' settings).

Config files in this folder start from `get_base_config()` and change what their experiment
needs; any field can be overridden on the command line, e.g. `--config.model.num_branches=4`.

  model        wt.models.ModelConfig fields (vocab_size follows data.vocab_size)
  data         wt.data config: dataset, vocabulary, token budget, buckets
  train        optimisation, parallelism, checkpoints, logging
  decode       beam search and checkpoint averaging for BLEU
  compare      the two models and the seeds of `experiments.compare`
  distributed  multi-process start (empty: single process, or set by the environment)
"""

import dataclasses

import ml_collections

from wt.data import default_data_config
from wt.models import ModelConfig


def get_base_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.data = default_data_config()
  model = dataclasses.asdict(ModelConfig())
  model["attention_implementation"] = ml_collections.config_dict.placeholder(str)
  config.model = ml_collections.ConfigDict(model)
  config.model.vocab_size = config.data.get_ref("vocab_size")

  config.train = ml_collections.ConfigDict(dict(
      seed=0,
      num_steps=100_000,
      warmup_steps=4000,
      learning_rate_scale=1.0,       # multiplies both schedules
      adam_b1=0.9, adam_b2=0.98, adam_eps=1e-9,
      label_smoothing=0.1,
      branch_schedule="own",         # kappa/alpha: "own" (Ahmed et al.) or "shared"
      branch_warmup_steps=400,
      branch_freeze_steps=-1,        # -1: the paper's last 10K of 60K, scaled; 0: never
      wrapper="shard_map",           # "shard_map" (jit) or "pmap" (legacy)
      log_every=100,
      eval_every=1000,
      checkpoint_every=1000,
      keep_checkpoints=5,
  ))
  config.decode = ml_collections.ConfigDict(dict(
      beam_size=4,
      length_penalty=0.6,
      max_extra_len=50,              # decode up to input length + 50
      average_last=1,                # average the last n checkpoints (Vaswani: 5 base, 20 big)
  ))
  config.compare = ml_collections.ConfigDict(dict(
      models=("multihead", "weighted"),
      seeds=(0,),
      interleave=True,               # alternate the runs in one process (fair wall-clock)
      interleave_steps=100,
      splits=("test",),
      notes="",                      # shown under the report's table
  ))
  config.distributed = ml_collections.ConfigDict(dict(
      coordinator_address="",        # e.g. "10.0.0.1:1234"; empty: single process
      num_processes=-1,
      process_id=-1,
  ))
  return config
