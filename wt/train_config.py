"""The train section (`config.train`): `TrainConfig`, its fields, defaults and checks; and
`CONFIG_SECTIONS`, the dataclass of every section of a run's config that the library reads.

wt/train.py's Trainer and wt/optim.py's make_optimizer read `config.train`.
"""

from __future__ import annotations

import dataclasses

from wt import config_checks as checks
from wt import optim, parallel
from wt.data.config import DataConfig
from wt.decode_config import DecodeConfig
from wt.models import ModelConfig


@dataclasses.dataclass(frozen=True)
class TrainConfig(checks.Section, section="train"):
  """How a run trains: budget, optimizer, kappa/alpha schedule, wrapper, cadences. Checked when
  built.

  Attributes:
    seed: parameters from PRNGKey(seed), dropout from PRNGKey(seed + 1), the data order.
    num_steps: optimizer steps of the run.
    warmup_steps: Vaswani et al.'s warm-up of the weights' learning rate.
    learning_rate_scale: multiplies both schedules.
    adam_b1, adam_b2, adam_eps: Adam's moment decays and epsilon (Vaswani: 0.9, 0.98, 1e-9).
    label_smoothing: of the training loss (and of the reported validation loss).
    branch_schedule: kappa/alpha's learning rate: "own" (Ahmed et al.) or "shared".
    branch_warmup_steps: warm-up of the "own" schedule.
    branch_freeze_steps: kappa/alpha frozen for the last K steps: -1 the paper's 10K of 60K,
      scaled to num_steps; 0 never.
    wrapper: "shard_map" (jit, the default) or "pmap" (legacy): see wt/parallel.py.
    log_every, eval_every, checkpoint_every: cadences in steps. keep_checkpoints: steps kept.
  """

  seed: int = 0
  num_steps: int = 100_000
  warmup_steps: int = 4000
  learning_rate_scale: float = 1.0
  adam_b1: float = 0.9
  adam_b2: float = 0.98
  adam_eps: float = 1e-9
  label_smoothing: float = 0.1
  branch_schedule: str = "own"
  branch_warmup_steps: int = 400
  branch_freeze_steps: int = -1
  wrapper: str = "shard_map"
  log_every: int = 100
  eval_every: int = 1000
  checkpoint_every: int = 1000
  keep_checkpoints: int = 5

  def __post_init__(self):
    checks.check_types(self)
    checks.positive_int(
      self,
      "num_steps",
      "warmup_steps",
      "branch_warmup_steps",
      "log_every",
      "eval_every",
      "checkpoint_every",
      "keep_checkpoints",
    )
    checks.positive(self, "learning_rate_scale", "adam_eps")
    checks.in_range(self, 0.0, 1.0, "adam_b1", "adam_b2", "label_smoothing")
    checks.one_of(self, "branch_schedule", optim.BRANCH_SCHEDULES)
    checks.one_of(self, "wrapper", parallel.WRAPPERS)
    checks.at_least(self, "branch_freeze_steps", -1, "(-1: the paper's 1/6 of the steps, 0: never)")
    if optim.branch_freeze_steps(self) >= self.num_steps:
      raise checks.fail(
        self,
        "branch_freeze_steps",
        f"freezes kappa/alpha for the whole run "
        f"of train.num_steps={self.num_steps}; use fewer (or -1 for the "
        f"paper's 1/6, 0 for never)",
      )


# The sections of a run's config that the library reads, each built (and so checked) by
# wt/train.py's validate_config; the experiments add `compare`.
CONFIG_SECTIONS = {
  "model": ModelConfig,
  "data": DataConfig,
  "train": TrainConfig,
  "decode": DecodeConfig,
  "distributed": parallel.DistributedConfig,
}
