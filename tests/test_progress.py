"""Progress reporting: a tqdm bar on a terminal, a plain line every so many seconds elsewhere
(log files, pipes, nohup), and the Trainer uses it."""

import io

import pytest

from wt import progress, train


class FakeClock:
  def __init__(self):
    self.now = 1000.0

  def __call__(self):
    return self.now


class TerminalLike(io.StringIO):
  def isatty(self):
    return True


def run_loop(stream, clock, steps=600, seconds_per_step=0.5, **kwargs):
  bar = progress.Progress(steps, desc="run", stream=stream, clock=clock, **kwargs)
  for step in range(1, steps + 1):
    clock.now += seconds_per_step
    bar.update(1)
    if step % 25 == 0:
      bar.set_metrics(loss=5.0 - step / 200, tokens_per_second=2000.0 + step)
  bar.close()
  return stream.getvalue()


def test_off_a_terminal_a_plain_line_every_interval_with_speed_loss_and_eta():
  stream, clock = io.StringIO(), FakeClock()
  text = run_loop(stream, clock, interval=35)  # 600 steps of 0.5 s: 300 s
  assert "\r" not in text and "\x1b" not in text
  lines = text.splitlines()
  assert len(lines) == 9  # at 35 s, 70 s, ... 280 s, and when closed
  assert lines[0] == ("run: step 70/600 (12%), loss 4.750, 2050 tokens/s, 35s elapsed, ETA 4m25s")
  assert lines[-1] == "run: step 600/600 (100%), loss 2.000, 2600 tokens/s, 5m00s elapsed"


def test_the_eta_leaves_out_the_wait_before_the_first_step():
  stream, clock = io.StringIO(), FakeClock()
  bar = progress.Progress(600, initial=100, desc="run", stream=stream, clock=clock, interval=30)
  clock.now += 120.0  # compiling (a resumed run): no step yet
  bar.update(1)
  assert "ETA" not in bar.line()  # one step gives no rate
  for _ in range(99):
    clock.now += 0.5
    bar.update(1)
  # 99 steps in 49.5 s since the first: 0.5 s a step for the 400 left, not (120 + 49.5) / 100
  assert bar.line().endswith("2m50s elapsed, ETA 3m20s")


def test_a_short_loop_off_a_terminal_writes_one_line_when_closed():
  stream, clock = io.StringIO(), FakeClock()
  lines = run_loop(stream, clock, steps=20, seconds_per_step=0.1, interval=30).splitlines()
  assert lines == ["run: step 20/20 (100%), 2s elapsed"]


def test_the_interval_comes_from_the_environment_and_bad_values_are_refused(monkeypatch):
  monkeypatch.setenv(progress.INTERVAL_ENV, "60")
  stream, clock = io.StringIO(), FakeClock()
  assert len(run_loop(stream, clock).splitlines()) == 5
  for bad in ("0", "-5", "nan", "soon"):
    monkeypatch.setenv(progress.INTERVAL_ENV, bad)
    with pytest.raises(ValueError, match=f"{progress.INTERVAL_ENV}=.*positive number"):
      progress.Progress(10, stream=io.StringIO())


def test_on_a_terminal_it_is_a_tqdm_bar():
  stream = TerminalLike()
  text = run_loop(stream, FakeClock(), steps=50, interval=30)
  assert isinstance(progress.Progress(1, stream=TerminalLike()).bar, progress.tqdm.tqdm)
  assert "\r" in text and "50/50" in text and "loss=4.750" in text


def test_disabled_writes_nothing():
  for stream in (io.StringIO(), TerminalLike()):
    assert run_loop(stream, FakeClock(), enabled=False) == ""


@pytest.mark.slow
def test_the_trainer_writes_plain_lines_to_a_log_file_not_a_bar_update_per_step(
  tiny_config, tmp_path, monkeypatch
):
  log = io.StringIO()  # stderr redirected to a file: not a terminal
  monkeypatch.setattr("sys.stderr", log)
  tiny_config.train.update(num_steps=6, eval_every=3, log_every=3, checkpoint_every=6)
  train.train_and_evaluate(tiny_config, str(tmp_path / "run"))
  progress_lines = [line for line in log.getvalue().splitlines() if line.startswith("run: ")]
  assert "\r" not in log.getvalue()
  assert len(progress_lines) == 1 and progress_lines[0].startswith("run: step 6/6 (100%), loss ")
  assert "tokens/s" in progress_lines[0]
