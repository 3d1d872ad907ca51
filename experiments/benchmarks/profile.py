"""The `profile` section: where a bench-small training step spends its time, by kind of
operation, from a `jax.profiler` trace of the compiled step's HLO ops (to explain the MFU)."""

import collections
import gzip
import json
import os
import re
import tempfile

import jax

from experiments.benchmarks import timing
from experiments.benchmarks.options import Options
from experiments.benchmarks.train import SIZES, StepRunner, model_config

# (kind, pattern on the op's JAX name), first match wins; matmuls are told apart by name.
KINDS = (
  (
    "logits matmul (and its gradients)",
    r"(attend|tied_logits)/.*dot_general|"
    r"tied_logits/transpose",
  ),
  (
    "loss: softmax cross entropy over the vocabulary",
    r"label_smoothed_cross_entropy|log_softmax|argmax",
  ),
  ("Q/K/V/output projections (matmuls)", r"(query|key|value|out)/(transpose/)?dot_general|hdm->"),
  (
    "attention scores and values (matmuls)",
    r"BTNH.*dot_general|BNTS.*dot_general|"
    r"bqhd,bkhd|bhqk,bkhd",
  ),
  ("attention softmax, masks, transposes", r"heads/"),
  ("feed-forward (matmuls)", r"(ffn/.*|hmf|hfm|hdf)[^/]*/dot_general"),
  ("feed-forward bias, ReLU, layouts", r"ffn/|hmf|hfm|hdf|relu"),
  ("layer norm", r"_norm/"),
  ("dropout", r"Dropout|bernoulli|threefry|random"),
  ("optimizer update", r"optax|adam|params\[|apply_updates|simplex"),
)


def hlo_names(hlo_text: str) -> dict:
  """{instruction name: JAX op name} from the compiled HLO's metadata."""
  names = {}
  for match in re.finditer(
    r"^\s*(?:ROOT )?%(\S+) = .*?op_name=\"([^\"]*)\"", hlo_text, re.MULTILINE
  ):
    names[match.group(1)] = match.group(2)
  return names


def profile_section(options: Options) -> list:
  return [profile_variant(variant, options.dtype) for variant in options.profile_variants]


def profile_variant(variant: str, dtype: str, steps: int = 2) -> dict:
  """Traces `steps` steps of a bench-small model and sums op time by kind."""
  runner = StepRunner(model_config("bench-small", variant, dtype), *SIZES["bench-small"][5:])
  for _ in range(2):
    runner()
  names = hlo_names(runner.compiled.as_text())
  with tempfile.TemporaryDirectory() as folder:
    with jax.profiler.trace(folder, create_perfetto_trace=True):
      wall = sum(timing.timed(runner) for _ in range(steps)) / steps
    path = next(
      os.path.join(d, f)
      for d, _, files in os.walk(folder)
      for f in files
      if f == "perfetto_trace.json.gz"
    )
    with gzip.open(path) as f:
      trace = json.load(f)
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  by_kind: collections.Counter = collections.Counter()
  for event in events:
    if event.get("ph") != "X" or event["name"] not in names:
      continue
    op_name = names[event["name"]]
    if event["name"].startswith("dot") and "dot_general" not in op_name:
      op_name += "/dot_general"  # a weight gradient's dot, named after its transpose
    kind = next((k for k, pattern in KINDS if re.search(pattern, op_name)), "other")
    by_kind[kind] += event.get("dur", 0) / 1e6 / steps
  busy = sum(by_kind.values())
  matmul_ops = [
    e
    for e in events
    if e.get("ph") == "X"
    and e["name"] in names
    and ("dot_general" in names[e["name"]] or e["name"].startswith("dot"))
  ]
  return {
    "variant": variant,
    "step_seconds": wall,
    "op_seconds": busy,
    "matmul_op_seconds": sum(e.get("dur", 0) for e in matmul_ops) / 1e6 / steps,
    "kinds": [dict(kind=k, seconds=v, share=v / busy) for k, v in by_kind.most_common()],
  }
