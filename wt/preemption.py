"""Preemption: a scheduler's notice that it is about to stop the job becomes a checkpoint.

SLURM, Kubernetes and preemptible cloud VMs send SIGTERM some seconds before they kill a job,
and `kill` sends it by default. While a Trainer trains (`notices()` around its loop), SIGTERM
only sets a flag. The loop then saves a checkpoint at the step it has reached and raises
`Preempted`, which ends the command with exit code 143 (128 + SIGTERM, what a job the signal
ended returns; a Kubernetes Job restarts it). Rerunning the same command resumes from that step,
not from the last periodic checkpoint. Outside the training loop SIGTERM keeps its usual
effect.

Every process must save at the same step, so they agree on it. A single process looks at its
flag after every step (no synchronisation). In a multi-process run the processes compare their
flags, with one small collective, only at the logging steps, where they wait for the device
anyway.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

import jax
import numpy as np
from jax.experimental import multihost_utils

EXIT_CODE = 128 + signal.SIGTERM
_notice = threading.Event()


class Preempted(SystemExit):
  """The run saved a checkpoint at `step` on a SIGTERM and stops (exit code 143)."""

  def __init__(self, step: int):
    super().__init__(EXIT_CODE)
    self.step = step


def _on_sigterm(signum, frame) -> None:
  del signum, frame
  _notice.set()


@contextlib.contextmanager
def notices() -> Iterator[None]:
  """SIGTERM sets the notice instead of ending the process, inside this block. Nothing changes
  off the main thread (Python delivers signals there only) or when the program has its own
  SIGTERM handler."""
  if (
    threading.current_thread() is not threading.main_thread()
    or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
  ):
    yield
    return
  _notice.clear()
  signal.signal(signal.SIGTERM, _on_sigterm)
  try:
    yield
  finally:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def requested(*, synchronised: bool) -> bool:
  """Whether to save and stop after this step. With several processes, the answer is the same
  on every one: True when any of them got the notice, asked only at `synchronised` steps (the
  same steps on every process)."""
  if jax.process_count() == 1:
    return _notice.is_set()
  if not synchronised:
    return False
  return bool(np.max(multihost_utils.process_allgather(np.int32(_notice.is_set()))))
