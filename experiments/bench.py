"""Speed benchmarks of both models on whatever backend JAX has: `python -m experiments.bench`.

    python -m experiments.bench                                   # everything (CPU: ~30 min)
    python -m experiments.bench --sections=train --skip_base --steps=3          # quick look

Sections (--sections, comma-separated):
  peak     the machine's practical peak: jitted f32 and bf16 matmuls, in FLOP/s.
  train    training steps (`wt.train.train_step`, Adam, dropout on) of the Transformer and of
           the Weighted Transformer in every branch-FFN mode, residual placement and output
           bias, at `bench-small` and at the base
           size: compile time, median step time, target tokens/s, FLOPs per step from XLA's
           cost analysis and from `wt.flops`, MFU and peak memory, and the weighted/standard
           step-time ratio.
  profile  where the Transformer's bench-small step spends its time, by kind of operation
           (from a `jax.profiler` trace), to explain the MFU.
  kernels  attention forward and forward+backward, `jax.nn.dot_product_attention` against
           the einsum path, at lengths 32 to 512.
  decode   greedy and beam-4 decoding, sentences per second (random weights: every sentence
           runs to its length limit, the slowest case).
  peers    the bench-small training step in PyTorch (`nn.Transformer`, eager and
           torch.compile; experiments/peers/), each in a second process, interleaved round by
           round with the wt steps and a matmul probe in every process: same-round ratios to
           PyTorch eager (`x_torch_eager`) and each one's MFU against its own matmul. Needs
           the optional torch (requirements-peers.txt); skipped with a message without it.

Timing is interleaved: every round runs each variant once (A, B, C, C, B, A, ...), and each
training round also times one 4096^2 f32 matmul, so that ratios and MFU come from the same
moments of a shared, variable-speed machine. MFU = (closed-form matmul FLOPs / step time) /
(matmul FLOP/s), taken per round; every reported figure is the median over the rounds.
"""

import collections
import functools
import gzip
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time

from absl import app, flags

from experiments import common  # noqa: F401  (quiet TensorFlow logs before JAX starts)

# isort: split
# After experiments.common: jax's import sets TF_CPP_MIN_LOG_LEVEL=1 unless it is already set.
import jax
import jax.numpy as jnp
import numpy as np

from experiments.configs.base import get_base_config
from experiments.peers import compare
from wt import decode, flops, kernels, models, optim, parallel, train

_SECTIONS = flags.DEFINE_list(
  "sections", ["peak", "train", "peers", "profile", "kernels", "decode"], "sections to run"
)
_STEPS = flags.DEFINE_integer("steps", 5, "timed rounds per measurement")
_WARMUP = flags.DEFINE_integer("warmup", 2, "untimed rounds first (at least 2 for training)")
_SKIP_BASE = flags.DEFINE_bool("skip_base", False, "train section: bench-small only")
_VARIANTS = flags.DEFINE_list("variants", None, "bench-small variants (default: all)")
_BASE_VARIANTS = flags.DEFINE_list(
  "base_variants", ["transformer", "weighted-split", "weighted-split-folded"], "base-size variants"
)
_BASE_BATCH = flags.DEFINE_integer(
  "base_batch",
  0,
  "base-size sentences; 0: the largest power "
  "of two up to --max_base_batch whose step fits in memory",
)
_MAX_BASE_BATCH = flags.DEFINE_integer(
  "max_base_batch",
  None,
  "cap of the automatic base batch (default: 32 on CPU, "
  "where time, not memory, is the limit; 1024 elsewhere)",
)
_PROFILE_VARIANTS = flags.DEFINE_list(
  "profile_variants",
  ["transformer", "weighted-split"],
  "profile section: bench-small variants to trace",
)
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "model compute dtype")
_LENGTHS = flags.DEFINE_list(
  "attention_lengths", ["32", "64", "128", "256", "512"], "kernels section: sequence lengths"
)
_ATTENTION_TOKENS = flags.DEFINE_integer(
  "attention_tokens", 8192, "kernels section: batch * length"
)
_DECODE_BATCH = flags.DEFINE_integer("decode_batch", 32, "decode section: sentences")
_DECODE_LEN = flags.DEFINE_integer("decode_len", 24, "decode section: source tokens")
_DECODE_EXTRA = flags.DEFINE_integer("decode_extra", 8, "decode section: max_extra_len")
_JSON = flags.DEFINE_string("json", "docs/benchmarks.json", "results as JSON ('' for none)")
_MARKDOWN = flags.DEFINE_string("markdown", "docs/benchmarks.md", "tables ('' for none)")

# name -> (vocab, d_model, d_ff, heads = branches, layers, sentences, source_len, target_len)
SIZES = {
  "bench-small": (8192, 256, 1024, 8, 3, 32, 64, 64),
  "base": (32768, 512, 2048, 8, 6, 0, 64, 64),
}
# name -> ModelConfig changes from the Transformer
VARIANTS = {
  "transformer": {},
  "weighted-split": dict(attention="weighted", branch_ffn="split"),
  "weighted-split-folded": dict(attention="weighted", branch_ffn="split", fold_branch_output=True),
  "weighted-shared": dict(attention="weighted", branch_ffn="shared"),
  "weighted-full": dict(attention="weighted", branch_ffn="full"),
  "weighted-ffn-residual": dict(attention="weighted", branch_residual="ffn"),
  "weighted-sublayers-residual": dict(attention="weighted", branch_residual="sublayers"),
  "weighted-per-branch-bias": dict(attention="weighted", branch_output_bias="per_branch"),
}
_PEERS = flags.DEFINE_list(
  "peers",
  ["torch-eager", "torch-compile"],
  "peers section: PyTorch variants (torch-eager, torch-compile)",
)
_PEER_VARIANTS = flags.DEFINE_list(
  "peer_variants",
  ["transformer", "weighted-split"],
  "peers section: wt bench-small variants timed with them",
)
PROBE = 4096  # the matmul timed in every training round (as long as a small step)


def _median(values):
  return float(statistics.median(values))


def _timed(fn):
  """Seconds of one call of `fn`, which must block until its work is done."""
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def interleaved(fns, rounds: int, warmup: int) -> dict:
  """{name: [seconds per round]}: `rounds` timed rounds of every fn in turn, after `warmup`.

  Odd rounds run in reverse order (A B C, C B A, ...) so that a steady drift of the machine's
  speed does not favour whichever runs first.
  """
  times = collections.defaultdict(list)
  for round_index in range(warmup + rounds):
    order = list(fns.items())
    for name, fn in order[::-1] if round_index % 2 else order:
      seconds = _timed(fn)
      if round_index >= warmup:
        times[name].append(seconds)
  return {name: times[name] for name in fns}


def _matmul(n: int, dtype):
  """A blocking call of a jitted n x n x n matmul, and its FLOPs."""
  a = jax.random.normal(jax.random.key(0), (n, n), dtype)
  b = jax.random.normal(jax.random.key(1), (n, n), dtype)
  matmul = jax.jit(jnp.matmul)
  return (lambda: matmul(a, b).block_until_ready()), 2.0 * n**3


def peak_section():
  """Practical matmul peak; bf16 too (CPUs without bf16 units emulate it, and it shows)."""
  calls, rows = {}, []
  for dtype in ("float32", "bfloat16"):
    for n in (2048, 4096):
      calls[(dtype, n)] = _matmul(n, getattr(jnp, dtype))
  times = interleaved({key: fn for key, (fn, _) in calls.items()}, _STEPS.value, 1)
  for (dtype, n), seconds in times.items():
    rows.append(
      dict(
        dtype=dtype,
        n=n,
        seconds=_median(seconds),
        flops_per_second=calls[(dtype, n)][1] / _median(seconds),
      )
    )
  return {
    "matmuls": rows,
    "float32": max(r["flops_per_second"] for r in rows if r["dtype"] == "float32"),
    "bfloat16": max(r["flops_per_second"] for r in rows if r["dtype"] == "bfloat16"),
  }


# ------------------------------------------------------------------------------------------
# Training steps.


def _model_config(size: str, variant: str):
  vocab, d_model, d_ff, heads, layers = SIZES[size][:5]
  return models.ModelConfig(
    vocab_size=vocab,
    d_model=d_model,
    d_ff=d_ff,
    num_heads=heads,
    num_branches=heads,
    num_layers=layers,
    dtype=_DTYPE.value,
    **VARIANTS[variant],
  )


def _batch(vocab: int, batch: int, source_len: int, target_len: int, seed: int = 0):
  """Random full-length sentences (no padding): every position is a real token."""
  rng = np.random.default_rng(seed)
  return {
    "inputs": rng.integers(2, vocab, (batch, source_len)).astype(np.int32),
    "targets": rng.integers(2, vocab, (batch, target_len)).astype(np.int32),
  }


class StepRunner:
  """One model's compiled training step on one device, with its state and a fixed batch."""

  def __init__(self, model_config, batch: int, source_len: int, target_len: int):
    optimizer, _ = optim.make_optimizer(get_base_config().train, model_config)
    one_device = parallel.data_parallel("shard_map", jax.devices()[:1])
    self.state = train.create_train_state(model_config, optimizer, 0, one_device)
    self.batch = one_device.device_batch(
      _batch(model_config.vocab_size, batch, source_len, target_len)
    )
    start = time.perf_counter()
    self.compiled = train.compile_train_step(
      models.Transformer(model_config), optimizer, 0.1, one_device, self.state, self.batch
    )
    self.compile_seconds = time.perf_counter() - start
    self.xla_flops = flops.compiled_flops(self.compiled)
    self.closed_form_flops = flops.train_step_flops(model_config, batch, source_len, target_len)
    memory = self.compiled.memory_analysis()
    self.peak_bytes = (
      memory.argument_size_in_bytes
      + memory.output_size_in_bytes
      - memory.alias_size_in_bytes
      + memory.temp_size_in_bytes
    )
    self.tokens = batch * target_len

  def __call__(self):
    self.state, metrics = self.compiled(self.state, self.batch)
    jax.block_until_ready((self.state, metrics))


def _largest_batch(source_len: int, target_len: int):
  """(batch, runner): --base_batch, or the largest power of two up to the cap whose
  Transformer step fits in 80% of the device's (or host's) memory, with its compiled runner."""
  config = _model_config("base", "transformer")
  if _BASE_BATCH.value:
    return _BASE_BATCH.value, None
  stats = jax.devices()[0].memory_stats() or {}
  limit = stats.get("bytes_limit") or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  batch = _MAX_BASE_BATCH.value or (32 if jax.default_backend() == "cpu" else 1024)
  while batch > 1:
    try:
      runner = StepRunner(config, batch, source_len, target_len)
      if runner.peak_bytes < 0.8 * limit:
        return batch, runner
    except Exception as error:  # pylint: disable=broad-except  (XLA: resource exhausted)
      print(f"  batch {batch} does not compile: {str(error)[:200]}", file=sys.stderr)
    batch //= 2
  return 1, None


def train_size(size: str, variants) -> dict:
  """Compiles every variant at `size`, then times their steps interleaved with the probe.
  The base size's batch is found first (see `_largest_batch`)."""
  batch, source_len, target_len = SIZES[size][5:]
  runners = {}
  if not batch:
    batch, runners["transformer"] = _largest_batch(source_len, target_len)
  for variant in variants:
    if runners.get(variant) is None:
      runners[variant] = StepRunner(_model_config(size, variant), batch, source_len, target_len)
    print(
      f"  {size} {variant}: compiled in {runners[variant].compile_seconds:.1f} s", file=sys.stderr
    )
  probe, probe_flops = _matmul(PROBE, jnp.float32)
  times = interleaved({"probe": probe, **runners}, _STEPS.value, max(_WARMUP.value, 2))
  peaks = [probe_flops / s for s in times["probe"]]
  # On an accelerator the probe is too small to reach the chip's peak: MFU is also given
  # against the data sheet's dense bf16 peak, where the chip is listed.
  nominal_peak = flops.device_peak_flops(jax.devices()[0].device_kind)
  rows = []
  for variant, runner in runners.items():
    steps = times[variant]
    rows.append(
      dict(
        variant=variant,
        batch=batch,
        source_len=source_len,
        target_len=target_len,
        compile_seconds=runner.compile_seconds,
        step_seconds=_median(steps),
        tokens_per_second=runner.tokens / _median(steps),
        xla_flops=runner.xla_flops,
        closed_form_flops=runner.closed_form_flops,
        peak_bytes=runner.peak_bytes,
        mfu=_median([runner.closed_form_flops / s / p for s, p in zip(steps, peaks)]),
        mfu_xla=_median([runner.xla_flops / s / p for s, p in zip(steps, peaks)]),
        best_mfu=runner.closed_form_flops / min(steps) / max(peaks),
        mfu_of_nominal_peak=(
          runner.closed_form_flops / _median(steps) / nominal_peak if nominal_peak else None
        ),
        ratio_to_transformer=(
          _median([s / t for s, t in zip(steps, times["transformer"])])
          if "transformer" in times
          else None
        ),
        step_seconds_all=steps,
      )
    )
  return {"size": size, "probe_flops_per_second": _median(peaks), "variants": rows}


def train_section():
  sizes = [("bench-small", _VARIANTS.value or list(VARIANTS))]
  if not _SKIP_BASE.value:
    sizes.append(("base", _BASE_VARIANTS.value))
  return [train_size(size, variants) for size, variants in sizes]


# ------------------------------------------------------------------------------------------
# Profile: time by kind of operation, from the trace of the compiled step's HLO ops.

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


def _hlo_names(hlo_text: str) -> dict:
  """{instruction name: JAX op name} from the compiled HLO's metadata."""
  names = {}
  for match in re.finditer(
    r"^\s*(?:ROOT )?%(\S+) = .*?op_name=\"([^\"]*)\"", hlo_text, re.MULTILINE
  ):
    names[match.group(1)] = match.group(2)
  return names


def peers_section() -> dict:
  """wt's bench-small steps against PyTorch's, interleaved (experiments/peers/compare.py)."""
  skipped = compare.skipped_without_torch()
  if skipped:
    return skipped
  unknown = sorted(set(_PEERS.value) - {"torch-eager", "torch-compile"})
  if unknown:
    raise app.UsageError(f"unknown peer(s) {unknown}; choose from torch-eager, torch-compile")
  vocab, d_model, d_ff, heads, layers, batch, source_len, target_len = SIZES["bench-small"]
  runners = {
    v: StepRunner(_model_config("bench-small", v), batch, source_len, target_len)
    for v in _PEER_VARIANTS.value
  }
  probe, probe_flops = _matmul(PROBE, jnp.float32)
  sizes = dict(
    vocab=vocab,
    d_model=d_model,
    heads=heads,
    d_ff=d_ff,
    layers=layers,
    batch=batch,
    source_len=source_len,
    target_len=target_len,
    probe=PROBE,
  )
  rows = compare.time_against_peers(
    {
      f"wt {v}": (lambda r=r: _timed(r), r.closed_form_flops, r.compile_seconds)
      for v, r in runners.items()
    },
    lambda: _timed(probe),
    probe_flops,
    _PEERS.value,
    [f"--{k}={v}" for k, v in sizes.items()],
    flops.train_step_flops(
      _model_config("bench-small", "transformer"), batch, source_len, target_len
    ),
    _STEPS.value,
    max(_WARMUP.value, 2),
  )
  description = (
    f"bench-small ({batch} x ({source_len} + {target_len}) tokens, f32, dropout 0.1, label "
    f"smoothing 0.1, Adam), {_STEPS.value} rounds. Each process times its own {PROBE}^2 f32 "
    f"matmul in every round; MFU: the model's matmul FLOPs (closed form, wt/flops.py: the "
    f"same count for every implementation of a model) per second against that process's "
    f"matmul; x torch eager: median over rounds of the step-time ratio to PyTorch eager in "
    f"the same round. startup: wt's compile, PyTorch's first step (torch.compile's "
    f"compilation). torch threads: 2."
  )
  return {"description": description, "rows": rows}


def profile_section():
  return [profile_variant(variant) for variant in _PROFILE_VARIANTS.value]


def profile_variant(variant: str, steps: int = 2):
  """Traces `steps` steps of a bench-small model and sums op time by kind."""
  runner = StepRunner(_model_config("bench-small", variant), *SIZES["bench-small"][5:])
  for _ in range(2):
    runner()
  names = _hlo_names(runner.compiled.as_text())
  with tempfile.TemporaryDirectory() as folder:
    with jax.profiler.trace(folder, create_perfetto_trace=True):
      wall = sum(_timed(runner) for _ in range(steps)) / steps
    path = next(
      os.path.join(d, f)
      for d, _, files in os.walk(folder)
      for f in files
      if f == "perfetto_trace.json.gz"
    )
    with gzip.open(path) as f:
      trace = json.load(f)
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  by_kind = collections.Counter()
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


# ------------------------------------------------------------------------------------------
# Attention kernels and decoding.


def kernels_section():
  """Attention at base-size heads (8 x 64), batch * length = --attention_tokens."""
  rows = []
  for length in map(int, _LENGTHS.value):
    batch = max(_ATTENTION_TOKENS.value // length, 1)
    q, k, v = (jax.random.normal(jax.random.key(i), (batch, length, 8, 64)) for i in range(3))
    valid = jnp.arange(length)[None, :] < jnp.linspace(length // 2, length, batch)[:, None]
    mask = kernels.key_padding_mask(valid)
    calls = {}
    for impl in (None, "einsum"):
      attend = functools.partial(kernels.dot_product_attention, mask=mask, implementation=impl)
      forward = jax.jit(attend)
      backward = jax.jit(
        jax.grad(lambda q, k, v, f=attend: jnp.sum(f(q, k, v) ** 2), argnums=(0, 1, 2))
      )
      name = impl or "jax.nn"
      calls[(name, "forward")] = lambda f=forward, a=(q, k, v): f(*a).block_until_ready()
      calls[(name, "forward+backward")] = lambda f=backward, a=(q, k, v): jax.block_until_ready(
        f(*a)
      )
    times = interleaved(calls, _STEPS.value, 1)
    forward_flops = 4.0 * batch * length * length * 512
    for pass_ in ("forward", "forward+backward"):
      fast, slow = _median(times[("jax.nn", pass_)]), _median(times[("einsum", pass_)])
      pass_flops = forward_flops * (1 if pass_ == "forward" else 3)
      rows.append(
        dict(
          length=length,
          batch=batch,
          pass_=pass_,
          jax_nn_seconds=fast,
          einsum_seconds=slow,
          einsum_over_jax_nn=_median(
            [s / f for s, f in zip(times[("einsum", pass_)], times[("jax.nn", pass_)])]
          ),
          jax_nn_flops_per_second=pass_flops / fast,
        )
      )
  return rows


def decode_section():
  """Greedy and beam-4 sentences/s of the bench-small models, random weights, interleaved."""
  inputs = _batch(SIZES["bench-small"][0], _DECODE_BATCH.value, _DECODE_LEN.value, 1)["inputs"]
  inputs[:, -1] = decode.EOS
  calls = {}
  for variant in ("transformer", "weighted-split"):
    config = _model_config("bench-small", variant)
    model, params = models.Transformer(config), models.init_params(config, jax.random.key(0))
    for method, beam in (("greedy", 1), ("beam", 4)):
      fn = decode.make_decode_fn(
        model, method=method, beam_size=beam, max_extra_len=_DECODE_EXTRA.value
      )
      calls[(variant, f"{method}-{beam}" if method == "beam" else method)] = (
        lambda fn=fn, params=params: jax.block_until_ready(fn(params, inputs))
      )
  times = interleaved(calls, _STEPS.value, 1)
  return [
    dict(
      variant=variant,
      method=method,
      seconds=_median(seconds),
      sentences_per_second=len(inputs) / _median(seconds),
      output_tokens=len(inputs) * (_DECODE_LEN.value + _DECODE_EXTRA.value),
    )
    for (variant, method), seconds in times.items()
  ]


# ------------------------------------------------------------------------------------------
# Report.


FINDINGS = """## Notes: where the rest of the time goes, and what was tried

Measured while tuning, on the 2-core CPU of docs/benchmarks.md, as same-round ratios of
interleaved runs (the machine was shared then: absolute times were 1.5-3x a quiet machine's).

- Quiet, the 2-core matmul peak is 170-205 GFLOP/s; when other jobs share the cores it drops
  to 65-100. Matmuls are now three quarters of a bench-small step's op time (profile above);
  the 2048 x 256 x 256 Q/K/V/output projections run at about half the peak.
- Loss over the vocabulary (wt/losses.py): one custom-VJP function whose forward pass only
  reduces the `[tokens, vocab]` logits and whose backward pass writes their gradient in one
  element-wise loop, instead of autodiff of `-sum(soft * log_softmax)`. With it, the logits
  projection's embedding gradient as `(x^T g)^T` (wt/kernels.py `tied_logits`): XLA had
  copied g into a transposed 64 MB layout for `g^T x`. Logits matmul + loss forward and
  backward alone: fused loss 0.84x, both 0.62-0.71x; the whole step: 0.95x, and its peak
  memory from 887 to 571 MiB (no log-probabilities kept for the backward pass).
- Dropout: JAX lowers its Threefry hash on CPU as an XLA while loop (faster compiles), which
  writes every mask out four times. The same hash unrolled (wt/kernels.py `bernoulli_mask`:
  the same bits, so the same masks as flax's Dropout, bit for bit) fuses into the mask's use:
  17 bench-small masks forward and backward 0.16x; the whole step 0.96x. Rejected: the rbg
  and unsafe_rbg generators (2.2x and 2.35x slower), two masks from one hash's two words
  (0.09x, but new masks), an integer-mix hash (0.03x; a weaker generator whose masks at two
  sites are shifted copies of each other).
- The three together: 0.89-0.90x the Transformer step, 0.91x the weighted-split step
  (weighted / standard 0.99). MFU is now counted with the closed-form matmul FLOPs: XLA's
  count includes element-wise work, the unrolled hash's integer operations too (101.4 against
  98.6 GFLOP per step), which would flatter it.
- XLA:CPU options, compiled side by side in one process: oneDNN 1.03x, XNNPACK 1.04x,
  prefer_vector_width=512 1.04x, the concurrency-optimised scheduler 1.05x (all slower or
  equal: XLA's YNNPACK fusions already run the dots); jax.default_matmul_precision and the
  BF16_BF16_F32 dot algorithm are ignored on CPU (f32 accuracy, f32 speed). Compile-time
  options: optimisation level 1 compiles in 0.86x but steps in 1.02x, no expensive LLVM passes
  0.94x and 0.99x: about even over 600 steps; not adopted.
- bfloat16 on this AVX512-BF16 CPU: a matmul with bf16 operands and f32 output
  (`preferred_element_type`) takes 0.42x (2048 x 256 x 256), 0.58x (x 1024), 0.69x (x 8192)
  and 0.56x (4096^2) of the f32 one; with bf16 output, as `model.dtype="bfloat16"` computes,
  1.08-1.21x. A matmul-only bf16 option (f32 elsewhere; bf16 operands and f32 results in the
  backward pass too, through a custom VJP) is the largest lever left, and an opt-in (it
  changes numerics). A prototype that routed every f32 dot so failed: the weight gradients'
  dots, which XLA:CPU runs outside YNNPACK (contracting the major dimension), refuse
  BF16 x BF16 = F32 ("UNIMPLEMENTED ... DotThunk"); it needs those dots in YNNPACK's layout.
- Also measured, not adopted: a custom-VJP LayerNorm, 0.77x flax's forward+backward (under 1%
  of a step); the einsum attention path for the whole step, 0.99x.
- PyTorch under load: when other processes oversubscribe the cores, its eager step slows 3-4x
  (each of its ~500 OpenMP parallel regions per step waits for a descheduled thread: Adam's
  sqrt, 91 calls, took 8 ms each), XLA's few large fusions far less; x torch eager is only
  meaningful on a quiet machine.
- Branched block layout (wt/modules.py): einsums over `[b, q, M, .]` ran one encoder block's
  forward+backward at 1.30x a Transformer layer's (attention + FFN): XLA made the branch axis
  the batch axis of each matmul and transposed around every einsum. Transposing the heads once
  to branch-major `[M, b*q, depth]` and keeping 3-D tensors: 1.03x (adopted); branch-major 4-D:
  1.17x; summing per-branch outputs instead of one `(M, F)` contraction: 1.5x (rejected).
- `fold_branch_output` (head_i (kappa_i W^{O_i} W1_i), same function and parameters): 0.66x a
  Transformer layer in the new layout (0.81x in the old); 22% fewer FLOPs per step here.
- One fused Q/K/V projection (concatenated kernels, one `[d, 3d]` matmul): 1.03x the three
  separate projections; not adopted. Einsum attention against `jax.nn`'s: 0.6x to 1.5x by
  length and pass (kernel table); attention is about 12% of a step, the default is kept.
- Compile time per batch shape (bench-small): 2.2 s at 1 layer, 3.4 s at 3, 5.7 s at 6, the
  same for both models: `nn.scan` over layers would save about 1.2 s per shape at 3 layers
  (10 s of the quick experiment's 8 shapes); not worth restructuring the model for.
"""


def machine() -> dict:
  device = jax.devices()[0]
  return {
    "backend": jax.default_backend(),
    "device": device.device_kind,
    "devices": jax.device_count(),
    "cpus": os.cpu_count(),
    "processor": platform.processor() or platform.machine(),
    "jax": jax.__version__,
    "python": platform.python_version(),
  }


def _table(header, rows) -> list[str]:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def markdown(results: dict) -> str:
  g = lambda x: f"{x / 1e9:.1f}"
  out = [
    "# Benchmarks",
    "",
    f"Command: `{results['command']}`  ",
    "Machine: " + ", ".join(f"{k} {v}" for k, v in results["machine"].items()),
    "",
  ]
  if "peak" in results:
    peak = results["peak"]
    out += (
      ["## Matmul peak", ""]
      + _table(
        ["dtype", "n", "ms", "GFLOP/s"],
        [
          (r["dtype"], r["n"], f"{r['seconds'] * 1e3:.0f}", g(r["flops_per_second"]))
          for r in peak["matmuls"]
        ],
      )
      + [""]
    )
  for size in results.get("train", []):
    first = size["variants"][0]
    out += [
      f"## Training step, {size['size']} ({first['batch']} sentences x "
      f"{first['source_len']} + {first['target_len']} tokens, {_DTYPE.value})",
      "",
      f"MFU: the model's matmul FLOPs (closed form, wt/flops.py) per second against the "
      f"{PROBE}^2 f32 matmul timed in the same rounds "
      f"({g(size['probe_flops_per_second'])} GFLOP/s, median), the median over rounds "
      f"(MFU XLA: with XLA's count, which also counts element-wise work, the dropout "
      f"hash's integer operations included); best MFU: fastest step against fastest "
      f"matmul (the machine unshared). x Transformer: median over rounds of the step-time "
      f"ratio.",
      "",
    ]
    on_chip = any(r.get("mfu_of_nominal_peak") for r in size["variants"])
    out += _table(
      [
        "model",
        "step s",
        "x Transformer",
        "target tok/s",
        "GFLOP XLA",
        "GFLOP closed form",
        "MFU",
        "MFU XLA",
        "best MFU",
        "peak memory MiB",
        "compile s",
      ]
      + (["MFU of the chip's bf16 peak"] if on_chip else []),
      [
        (
          r["variant"],
          f"{r['step_seconds']:.3f}",
          "" if r["ratio_to_transformer"] is None else f"{r['ratio_to_transformer']:.3f}",
          f"{r['tokens_per_second']:.0f}",
          g(r["xla_flops"]),
          g(r["closed_form_flops"]),
          f"{r['mfu']:.2f}",
          f"{r['mfu_xla']:.2f}",
          f"{r['best_mfu']:.2f}",
          f"{r['peak_bytes'] / 2**20:.0f}",
          f"{r['compile_seconds']:.1f}",
        )
        + ((f"{r['mfu_of_nominal_peak']:.2f}",) if on_chip else ())
        for r in size["variants"]
      ],
    ) + [""]
  for prof in results.get("profile", []):
    out += (
      [
        f"## Where the bench-small {prof['variant']} step goes",
        "",
        f"Step {prof['step_seconds']:.3f} s (traced); op time summed over threads "
        f"{prof['op_seconds']:.3f} s, of which matmuls {prof['matmul_op_seconds']:.3f} s.",
        "",
      ]
      + _table(
        ["kind of op (JAX name)", "s per step", "share"],
        [(r["kind"], f"{r['seconds']:.3f}", f"{r['share']:.0%}") for r in prof["kinds"]],
      )
      + [""]
    )
  if "kernels" in results:
    out += (
      ["## Attention kernels (8 heads x 64, key padding mask, f32)", ""]
      + _table(
        ["length", "batch", "pass", "jax.nn ms", "einsum ms", "einsum / jax.nn", "jax.nn GFLOP/s"],
        [
          (
            r["length"],
            r["batch"],
            r["pass_"],
            f"{r['jax_nn_seconds'] * 1e3:.1f}",
            f"{r['einsum_seconds'] * 1e3:.1f}",
            f"{r['einsum_over_jax_nn']:.2f}",
            g(r["jax_nn_flops_per_second"]),
          )
          for r in results["kernels"]
        ],
      )
      + [""]
    )
  if "peers" in results:
    out += compare.markdown(results["peers"])
  if "decode" in results:
    out += (
      [
        f"## Decoding, bench-small, random weights ({_DECODE_BATCH.value} sentences of "
        f"{_DECODE_LEN.value} tokens, up to {_DECODE_LEN.value + _DECODE_EXTRA.value} "
        f"output tokens each)",
        "",
      ]
      + _table(
        ["model", "method", "s per batch", "sentences/s"],
        [
          (r["variant"], r["method"], f"{r['seconds']:.2f}", f"{r['sentences_per_second']:.1f}")
          for r in results["decode"]
        ],
      )
      + [""]
    )
  return "\n".join(out)


def main(argv):
  del argv
  sections = {
    "peak": peak_section,
    "train": train_section,
    "peers": peers_section,
    "profile": profile_section,
    "kernels": kernels_section,
    "decode": decode_section,
  }
  unknown = sorted(set(_SECTIONS.value) - set(sections))
  if unknown:
    raise app.UsageError(f"unknown section(s) {unknown}; choose from {sorted(sections)}")
  results = {
    "command": "python -m experiments.bench " + " ".join(sys.argv[1:]),
    "machine": machine(),
  }
  for name in _SECTIONS.value:
    print(f"{name} ...", file=sys.stderr)
    results[name] = sections[name]()
  text = markdown(results) + ("\n" + FINDINGS if "train" in results else "")
  print(text)
  if _MARKDOWN.value:
    with open(_MARKDOWN.value, "w", encoding="utf-8") as f:
      f.write(text + "\n")
  if _JSON.value:
    with open(_JSON.value, "w", encoding="utf-8") as f:
      json.dump(results, f, indent=1)


if __name__ == "__main__":
  app.run(main)
