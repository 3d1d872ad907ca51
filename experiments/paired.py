r"""Any two trained systems, tested against each other: their runs matched by seed.

    python -m experiments.paired --config experiments/configs/multi30k.py:small256 \
        --baseline runs/s256/attention-weighted --baseline_label "8 branches" \
        --system runs/s256m4/attention-weighted --system_label "4 branches" \
        --write docs/results/.../paired.md

A study's report tests each point against the study's own baselines. This command tests two
systems from anywhere, such as the same reading at two settings trained by two studies: each of
--baseline and --system is a point's folder, holding one `seed<k>/result.json` per finished run
(experiments/jobs.py). Seeds present in both are paired, on every split of
`config.compare.splits` (the config gives the references), with the same tests as the
reports (experiments/significance.py). Runs moved since they were trained (brought back from
another machine) are read from where they are now.
"""

from __future__ import annotations

import glob
import json
import os
import sys
from typing import Mapping, Sequence

from absl import app, flags
from ml_collections import config_flags

from experiments import common, report, significance
from wt import data as data_lib


def load_runs(folder: str) -> list[dict]:
  """The results of every finished run in `folder` (its seed<k>/result.json), with their
  translation files looked up where the runs are now."""
  paths = sorted(glob.glob(os.path.join(folder, "seed*", "result.json")))
  if not paths:
    raise ValueError(
      f"{folder} holds no seed<k>/result.json: give a point's folder of a finished study "
      "(runs/<study>/<point>, whose seed folders each hold a result.json)"
    )
  runs = []
  for path in paths:
    with open(path, encoding="utf-8") as f:
      result = json.load(f)
    workdir = os.path.dirname(path)
    result["workdir"] = workdir
    for by_split in result["evaluations"].values():
      for scored in by_split.values():
        name = os.path.basename(scored["translations_file"])
        scored["translations_file"] = os.path.join(workdir, name)
    runs.append(result)
  return runs


System = tuple[str, list[dict], str]  # label, runs (results over seeds), evaluation name


def paired_markdown(
  baseline: System, system: System, test_sets: Mapping[str, tuple[Sequence[str], Sequence[str]]]
) -> str:
  """The tests of `system` against `baseline` on every split of `test_sets` ({split: (sources,
  references)}): a table, then the same in words."""
  seeds = {r["seed"] for r in baseline[1]} & {r["seed"] for r in system[1]}
  if not seeds:
    raise ValueError(
      f"{system[0]} and {baseline[0]} share no seed: the paired tests match runs by seed, "
      "so give two folders trained with the same seeds"
    )
  comparisons = [
    significance.compare_runs(baseline, system, split, references)
    for split, (_, references) in test_sets.items()
  ]
  loss = significance.loss_test(baseline[1], system[1])
  spread = "" if loss.sd is None else f" ± {loss.sd:.3f}"
  over_seeds = "" if loss.p_value is None else f", paired t-test over seeds p {loss.p_value:.3f}"
  lines = [
    f"# {system[0]} against {baseline[0]}",
    "",
    f"Best validation loss, {system[0]} − {baseline[0]}: {loss.mean:+.3f}{spread} "
    f"(seeds {', '.join(str(s) for s in sorted(seeds))}{over_seeds}).",
    "",
    *report.significance_section(comparisons),
  ]
  untuned = significance.untuned_note(list(test_sets))
  return "\n".join(lines + ([untuned] if untuned else [])) + "\n"


def main(argv):
  del argv
  args = flags.FLAGS
  config = args.config
  common.start(config, quiet=True)
  baseline, system = load_runs(args.baseline), load_runs(args.system)
  data = data_lib.load_translation_data(config.data)
  test_sets = {split: tuple(data.raw_split(split)) for split in config.compare.splits}
  text = paired_markdown(
    (args.baseline_label, baseline, args.evaluation),
    (args.system_label, system, args.evaluation),
    test_sets,
  )
  text += f"\nCommand: `{common.command_line(sys.argv)}`\n"
  if args.write:
    with open(args.write, "w", encoding="utf-8") as f:
      f.write(text)
  else:
    sys.stdout.write(text)


def _define_flags() -> None:
  """Defined when run, not on import: tests import this module beside commands whose flags
  have the same names (--config, --write)."""
  config_flags.DEFINE_config_file(
    "config", None, "the config the runs were trained with (for its data and test splits)"
  )
  flags.DEFINE_string("baseline", None, "the baseline's folder of seed<k> runs")
  flags.DEFINE_string("system", None, "the system's folder of seed<k> runs")
  flags.DEFINE_string("baseline_label", "baseline", "the baseline's name")
  flags.DEFINE_string("system_label", "system", "the system's name")
  flags.DEFINE_string(
    "evaluation", "default", "which evaluation of the runs to test (a test-time variant's label)"
  )
  flags.DEFINE_string("write", None, "write the Markdown here (default: print it)")
  flags.mark_flags_as_required(["config", "baseline", "system"])


if __name__ == "__main__":
  _define_flags()
  app.run(main)
