r"""Ablations: a named grid of overrides times the config's seeds, as resumable jobs.

    python -m experiments.ablate --config experiments/configs/multi30k.py:small \
        --sweep branch_weights

Sweeps are defined in experiments/sweeps.py. Each training run is a job in
--outdir/<point>/seed<k> (default runs/ablate-<sweep>-<config>), or under --runs_dir when
several studies share their baselines:

    python -m experiments.ablate --config ...:small --sweep branch_ffn \
        --runs_dir runs/small --outdir runs/small-branch_ffn

Finished jobs are not run again, and `report.md` tabulates every point (mean and spread over
seeds).
"""

import os
import sys

from absl import app, flags
from ml_collections import config_flags

from experiments import common, comparisons, sweeps

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment config file[:variant]")
_SWEEP = flags.DEFINE_enum("sweep", None, sorted(sweeps.SWEEPS), "the grid to run")
_OUTDIR = flags.DEFINE_string("outdir", None, "output folder (report, and runs by default)")
_RUNS_DIR = flags.DEFINE_string(
  "runs_dir",
  None,
  "the runs' folder (default: --outdir); studies given the same one share their common runs "
  "(the baselines): run them one after another, not at the same time",
)
_ATTENTION_MAPS = common.define_attention_maps_flag()
flags.declare_key_flag("attention_maps")  # listed by --helpshort, though common defines it
flags.mark_flags_as_required(["config", "sweep"])


def main(argv):
  del argv
  config = _CONFIG.value
  common.start(config)
  outdir = _OUTDIR.value or os.path.join("runs", f"ablate-{_SWEEP.value}-{common.config_name('-')}")
  path = comparisons.ablate(
    config,
    _SWEEP.value,
    outdir,
    name=common.config_name(),
    command=common.command_line(sys.argv),
    runs_dir=_RUNS_DIR.value,
    attention_maps=_ATTENTION_MAPS.value,
  )
  print(f"report: {path}")


if __name__ == "__main__":
  app.run(main)
