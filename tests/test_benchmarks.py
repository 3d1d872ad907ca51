"""The benchmark's sections (experiments/benchmarks/): the checkpoint section's rows on a tiny
state and their table, the compile section's timings on a tiny model, and docs/benchmarks.md
against its rendering from docs/benchmarks.json. The command itself (experiments/bench.py,
its flags) is not imported, only run: its flags' names are other commands' too."""

import pathlib
import subprocess
import sys

from experiments.benchmarks import checkpoint, compilation, report
from experiments.benchmarks import train as bench_train
from experiments.configs import multi30k
from wt import models


def test_every_training_variant_is_the_size_changed_only_where_it_says():
  vocab, d_model, d_ff, heads, layers = bench_train.SIZES["bench-small"][:5]
  for variant, changes in bench_train.VARIANTS.items():
    config = bench_train.model_config("bench-small", variant, "float32")
    assert (config.vocab_size, config.d_model, config.d_ff) == (vocab, d_model, d_ff), variant
    assert (config.num_heads, config.num_layers) == (heads, layers), variant
    assert config.num_branches == changes.get("num_branches", heads), variant
    assert all(getattr(config, name) == value for name, value in changes.items()), variant
  assert bench_train.model_config("bench-small", "weighted-4-branches", "float32").num_branches == 4


def test_checkpoint_rows_time_saves_after_the_first_and_render_as_the_table():
  config = multi30k.get_config("tiny")
  config.data.vocab_size = 96
  row = checkpoint.measure("multi30k.py:tiny", config, saves=2)
  state = checkpoint.run_state(config)
  assert row["config"] == "multi30k.py:tiny" and row["saves"] == 2
  assert row["params"] == models.count_params(state["params"])
  for name in ("orbax_save", "seal", "verify"):
    assert len(row[f"{name}_seconds_all"]) == 2  # every save is timed, the first one dropped
    assert row[f"{name}_seconds"] == row[f"{name}_seconds_all"][1] > 0
  assert 0 < row["state_mib"] < 10
  lines = report.checkpoint_markdown([row])
  assert lines[0] == "## Checkpoint integrity: what sealing a save costs"
  assert "| config | params | state MiB | orbax save s | seal s | verify at restore s |" in lines
  assert f"| multi30k.py:tiny | {row['params'] / 1e6:.1f}M |" in lines[-2]


def test_compile_timings_cover_every_round_of_both_ways_and_render_as_the_table():
  config = multi30k.get_config("tiny")
  times = compilation.compile_all_shapes(config, 96, [(5, 6), (7, 7)], rounds=2)
  assert set(times) == {"one at a time", "compile_each"}
  assert all(len(seconds) == 2 and min(seconds) > 0 for seconds in times.values())
  row = dict(
    model="transformer",
    shapes=2,
    threads=2,
    one_at_a_time_seconds=2.0,
    compile_each_seconds=1.1,
    ratio=0.55,
    rounds=2,
  )
  lines = report.compile_markdown([row])
  assert "| transformer | 2 | 2 | 2.0 | 1.1 | 0.55 | 2 |" in lines


def test_checkpoint_configs_are_named_as_files_of_experiments_configs():
  assert checkpoint.load_config("multi30k.py:small") == multi30k.get_config("small")
  assert checkpoint.load_config("wmt14.py:transformer_base").model.d_model == 512


def test_docs_benchmarks_md_is_what_the_command_renders_from_docs_benchmarks_json(tmp_path):
  """`--render` measures nothing; the committed report must be its rendering of the committed
  results, so edited notes (report.FINDINGS) reach docs/benchmarks.md."""
  out = tmp_path / "benchmarks.md"
  root = pathlib.Path(__file__).resolve().parent.parent
  subprocess.run(
    [
      sys.executable,
      "-m",
      "experiments.bench",
      "--render",
      "docs/benchmarks.json",
      f"--markdown={out}",
    ],
    cwd=root,
    check=True,
    capture_output=True,
  )
  assert out.read_text(encoding="utf-8") == (root / "docs/benchmarks.md").read_text("utf-8"), (
    "docs/benchmarks.md is stale: python -m experiments.bench --render docs/benchmarks.json"
  )
