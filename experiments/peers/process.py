"""Both sides of the peer protocol: the worker's loop (`serve`) and the benchmark's handle on
a worker process (`PeerProcess`); torch-free, so the benchmark process never imports torch.

A peer runs in its own process so that its library's thread pools (torch's OpenMP, XLA's)
never share one process, and each side times its own step and its own matmul probe; the
benchmark interleaves the requests round by round (experiments/peers/compare.py).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from typing import Callable, Iterable, Mapping, Optional, Sequence

TORCH_WORKER = "experiments.peers.torch_transformer"
INSTALL_HINT = (
  "install the pinned CPU build with `pip install -r requirements-peers.txt` "
  "(or `pip install -e .[peers]`)"
)


def missing_torch_message() -> Optional[str]:
  """Why the PyTorch peers cannot run (None when torch is importable)."""
  if importlib.util.find_spec("torch") is None:
    return f"PyTorch peers skipped: torch is not installed; {INSTALL_HINT}"
  return None


def seconds_of(fn: Callable[[], object]) -> float:
  """Seconds of one call of `fn` (which must block until its work is done)."""
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def serve(
  commands: Mapping[str, Callable[[], object]], lines: Iterable[str], reply: Callable[[str], None]
) -> None:
  """The worker's loop: answers each command line with the seconds that command took, until
  `quit` or the end of `lines`; an unknown command raises ValueError."""
  for line in lines:
    command = line.strip()
    if command == "quit":
      return
    if command not in commands:
      raise ValueError(
        f"unknown command {command!r}; expected one of {', '.join(sorted(commands))} or quit"
      )
    reply(f"{seconds_of(commands[command]):.6f}")


class PeerError(RuntimeError):
  """The worker failed to start, answered with an error or died."""


class PeerProcess:
  """One worker process (`python -m MODULE ARGS`), started and warmed up on construction.

  `request("step")` / `request("probe")` return the seconds the worker measured itself (the
  pipe's latency is not counted). `startup_seconds` is the worker's first step: with
  torch.compile, compilation. Use as a context manager, or call `close()`.
  """

  def __init__(self, name: str, args: Sequence[str] = (), module: str = TORCH_WORKER):
    self.name = name
    self._process = subprocess.Popen(
      [sys.executable, "-m", module, *args],
      stdin=subprocess.PIPE,
      stdout=subprocess.PIPE,
      text=True,
      bufsize=1,
    )
    try:
      self.startup_seconds = self._read_seconds("ready")
    except BaseException:
      self.close()
      raise

  def _read_seconds(self, expected: Optional[str] = None) -> float:
    assert self._process.stdout is not None
    line = self._process.stdout.readline().strip()
    if not line:
      code = self._process.wait()
      raise PeerError(
        f"peer {self.name} exited (status {code}) without an answer; its stderr above says why"
      )
    if line.startswith("error"):
      raise PeerError(f"peer {self.name}: {line}")
    words = line.split()
    if expected is not None:
      if words[0] != expected or len(words) != 2:
        raise PeerError(f"peer {self.name}: expected '{expected} <seconds>', got {line!r}")
      words = words[1:]
    try:
      return float(words[0])
    except ValueError:
      raise PeerError(f"peer {self.name}: expected seconds, got {line!r}") from None

  def request(self, command: str) -> float:
    """Sends `command` ("step" or "probe") and returns the seconds it took in the worker."""
    assert self._process.stdin is not None
    try:
      self._process.stdin.write(command + "\n")
      self._process.stdin.flush()
    except BrokenPipeError:
      raise PeerError(f"peer {self.name} is no longer running") from None
    return self._read_seconds()

  def close(self) -> None:
    if self._process.poll() is None:
      try:
        assert self._process.stdin is not None
        self._process.stdin.write("quit\n")
        self._process.stdin.close()
      except (BrokenPipeError, OSError):
        pass
      try:
        self._process.wait(timeout=30)
      except subprocess.TimeoutExpired:
        self._process.kill()
        self._process.wait()
    if self._process.stdout is not None:
      self._process.stdout.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
