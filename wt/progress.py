"""Progress of a long loop on stderr: a tqdm bar on a terminal, a plain line now and then elsewhere.

A progress bar redraws itself with carriage returns, which a terminal overwrites and a log file
keeps: off a terminal (a file, a pipe, `nohup`, a cluster job's log) a 600-step run would leave
hundreds of updates, a paper-scale run hundreds of thousands. So `Progress` asks its stream:
on a terminal it is a tqdm bar; anywhere else it writes one plain line every `interval`
seconds (default 30, or $WT_PROGRESS_SECONDS) and one when closed, e.g.

    run: step 120/600 (20%), 1830 tokens/s, loss 3.456, 1m05s elapsed, ETA 4m20s

The ETA extrapolates the steps done since the first one this `Progress` saw: a resumed run's
earlier steps do not count, and neither does the wait before that first step (compilation,
and in interleaved runs the other runs' compilations). The metrics are whatever the loop last
gave `set_metrics`.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Callable, Optional, TextIO

import tqdm

DEFAULT_INTERVAL_SECONDS = 30.0
INTERVAL_ENV = "WT_PROGRESS_SECONDS"
# How set_metrics' names are shown: (the bar's key, the bar's format, the plain line's format).
_FORMATS = {
  "tokens_per_second": ("tok_s", "{:.0f}", "{:.0f} tokens/s"),
  "loss": ("loss", "{:.3f}", "loss {:.3f}"),
}


def _format(name: str) -> tuple[str, str, str]:
  return _FORMATS.get(name, (name, "{:.4g}", name + " {:.4g}"))


def is_terminal(stream) -> bool:
  """Whether `stream` is an interactive terminal (False for files, pipes and closed streams)."""
  try:
    return bool(stream.isatty())
  except (AttributeError, ValueError, OSError):
    return False


def interval_from_env() -> float:
  """Seconds between plain progress lines: $WT_PROGRESS_SECONDS, else 30."""
  value = os.environ.get(INTERVAL_ENV)
  if value is None or not value.strip():
    return DEFAULT_INTERVAL_SECONDS
  try:
    seconds = float(value)
  except ValueError:
    seconds = float("nan")
  if not seconds > 0 or seconds == float("inf"):
    raise ValueError(
      f"{INTERVAL_ENV}={value!r} is not a positive number of seconds; set it to "
      f"e.g. 30 (seconds between progress lines off a terminal) or unset it"
    )
  return seconds


def format_duration(seconds: float) -> str:
  """'45s', '4m20s', '2h05m'."""
  seconds = int(round(max(seconds, 0.0)))
  if seconds < 60:
    return f"{seconds}s"
  if seconds < 3600:
    return f"{seconds // 60}m{seconds % 60:02d}s"
  return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
  """`update(n)` per step, `set_metrics(loss=..., tokens_per_second=...)` now and then, `close()`.

  Args:
    total: steps at the end; initial: steps already done (a resumed run).
    desc: the line's prefix (e.g. the run's folder name); unit: what a step is called.
    enabled: False writes nothing (e.g. processes other than the chief).
    stream: where to write (default: sys.stderr when constructed).
    interval: seconds between plain lines off a terminal (default: `interval_from_env()`).
    position: the bar's row on a terminal, for several bars at once (ignored off a terminal).
    clock: seconds, monotonic (tests pass a fake one).
  """

  def __init__(
    self,
    total: int,
    *,
    initial: int = 0,
    desc: str = "",
    unit: str = "step",
    enabled: bool = True,
    stream: Optional[TextIO] = None,
    interval: Optional[float] = None,
    position: int = 0,
    clock: Callable[[], float] = time.monotonic,
  ):
    self.total, self.n, self.desc, self.unit = total, initial, desc, unit
    self.enabled = enabled
    self.stream = sys.stderr if stream is None else stream
    self.interval = interval_from_env() if interval is None else float(interval)
    self.metrics: dict[str, float] = {}
    self._clock = clock
    self._start_n, self._start = initial, clock()
    self._rate_from: Optional[tuple[int, float]] = None  # (n, time) at the first update
    self._last_line, self._last_line_n = self._start, initial
    self._closed = False
    self._new_metrics = False  # set_metrics since the last plain line
    self.bar = None
    if enabled and is_terminal(self.stream):
      self.bar = tqdm.tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit=unit,
        file=self.stream,
        dynamic_ncols=True,
        position=position,
      )

  @property
  def plain(self) -> bool:
    """True when writing plain lines (enabled, and the stream is not a terminal)."""
    return self.enabled and self.bar is None

  def update(self, n: int = 1) -> None:
    self.n += n
    if self._rate_from is None:
      self._rate_from = (self.n, self._clock())
    if self.bar is not None:
      self.bar.update(n)
    elif (
      self.plain
      and self.n < self.total  # the last step's line is close()'s
      and self._clock() - self._last_line >= self.interval
    ):
      self._write_line()

  def set_metrics(self, **metrics: float) -> None:
    """The latest values to show (e.g. loss, tokens_per_second); the bar refreshes on its own
    schedule, the plain line shows them at its next writing."""
    self.metrics.update({k: float(v) for k, v in metrics.items()})
    self._new_metrics = True
    if self.bar is not None:
      self.bar.set_postfix(
        {_format(k)[0]: _format(k)[1].format(v) for k, v in self.metrics.items()}, refresh=False
      )

  def line(self) -> str:
    """The plain progress line for now."""
    now = self._clock()
    elapsed = now - self._start
    parts = [
      f"{self.unit} {self.n}/{self.total}"
      + (f" ({100 * self.n / self.total:.0f}%)" if self.total else "")
    ]
    parts += [_format(k)[2].format(v) for k, v in self.metrics.items()]
    parts.append(f"{format_duration(elapsed)} elapsed")
    if self._rate_from is not None and self.n < self.total:
      rate_n, rate_time = self._rate_from
      if self.n > rate_n and now > rate_time:
        eta = (self.total - self.n) * (now - rate_time) / (self.n - rate_n)
        parts.append(f"ETA {format_duration(eta)}")
    return (f"{self.desc}: " if self.desc else "") + ", ".join(parts)

  def _write_line(self) -> None:
    self.stream.write(self.line() + "\n")
    self.stream.flush()
    self._last_line, self._last_line_n = self._clock(), self.n
    self._new_metrics = False

  def close(self) -> None:
    """Closes the bar, or writes the last plain line (if steps or metrics came since the last)."""
    if self._closed:
      return
    self._closed = True
    if self.bar is not None:
      self.bar.close()
    elif self.plain and (self.n != self._last_line_n or self._new_metrics):
      self._write_line()
