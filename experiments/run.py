"""Trains one model: `python -m experiments.run --config FILE[:VARIANT] --workdir DIR`.

Any config field can be overridden, e.g. `--config.model.attention=weighted
--config.train.num_steps=2000`. Restarting with the same workdir resumes from its latest good
checkpoint; a workdir that holds a different config is refused unless --overwrite is given.
Multi-process: set --config.distributed.* (or WT_COORDINATOR_ADDRESS, WT_NUM_PROCESSES,
WT_PROCESS_ID) and start the same command once per process.
"""

import json

from absl import app, flags
from ml_collections import config_flags

from experiments import common
from wt import train

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment config file[:variant]")
_WORKDIR = flags.DEFINE_string("workdir", None, "where checkpoints, logs and results go")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "delete a different run in --workdir")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  config = _CONFIG.value
  common.start(config)
  summary = train.train_and_evaluate(config, _WORKDIR.value, overwrite=_OVERWRITE.value)
  print(json.dumps(summary, indent=2))


if __name__ == "__main__":
  app.run(main)
