"""What every experiment command does first: quieter logs and the multi-process start."""

import logging as py_logging
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


class _DropLibraryChatter(py_logging.Filter):
  """Keeps orbax's per-save INFO lines out of the console (warnings still show)."""

  def filter(self, record):
    return record.levelno >= py_logging.WARNING or "orbax" not in record.pathname


def start(config) -> None:
  """Sets up logging and joins a distributed run when config.distributed asks for one."""
  from absl import logging  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.INFO)
  logging.get_absl_handler().addFilter(_DropLibraryChatter())
  from wt import parallel  # pylint: disable=g-import-not-at-top
  dist = config.distributed
  parallel.initialize_distributed(dist.coordinator_address or None,
                                  None if dist.num_processes < 0 else dist.num_processes,
                                  None if dist.process_id < 0 else dist.process_id)
