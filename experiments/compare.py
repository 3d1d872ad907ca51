"""The main job: Transformer vs Weighted Transformer on the same data, budget and seeds.

    python -m experiments.compare --config experiments/configs/multi30k.py:quick

Trains every (model, seed) of `config.compare` (interleaved in one process by default, so
wall-clock times are comparable), decodes the test split with beam search, and writes
`report.md` with its PNG plots into --outdir (default runs/compare-<config>-<variant>).
Finished runs are not trained again: rerunning only rebuilds the report.
"""

import os
import sys

from absl import app, flags
from ml_collections import config_flags

from experiments import common, comparisons

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment config file[:variant]")
_OUTDIR = flags.DEFINE_string("outdir", None, "output folder (runs and report)")
_ATTENTION_MAPS = common.define_attention_maps_flag()
flags.declare_key_flag("attention_maps")  # listed by --helpshort, though common defines it
flags.mark_flags_as_required(["config"])


def main(argv):
  del argv
  config = _CONFIG.value
  common.start(config)
  outdir = _OUTDIR.value or os.path.join("runs", f"compare-{common.config_name('-')}")
  path = comparisons.compare(
    config,
    outdir,
    name=common.config_name(),
    command=common.command_line(sys.argv),
    attention_maps=_ATTENTION_MAPS.value,
  )
  print(f"report: {path}")


if __name__ == "__main__":
  app.run(main)
