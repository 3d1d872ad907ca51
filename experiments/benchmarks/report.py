"""The report of `python -m experiments.bench`: every section's Markdown table in a fixed
order (`document`), the notes on what was tried while tuning (`FINDINGS`, after the training
tables), and the checkpoint section's table and its explanation."""

from experiments.benchmarks import timing
from experiments.benchmarks.options import Options
from experiments.peers import compare

FINDINGS = """## Notes: where the rest of the time goes, and what was tried

Measured while tuning, on the 2-core CPU of docs/benchmarks.md, as same-round ratios of
interleaved runs (the machine was shared then: absolute times were 1.5-3x a quiet machine's),
and read from the tables above where they say so.

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
- bfloat16 matmuls, `model.matmul_dtype="bfloat16"` (wt/matmul.py; opt-in: it changes the
  numerics). On this AVX512-BF16 CPU a matmul with bf16 operands and an f32 result
  (`preferred_element_type`) takes 0.42x (2048 x 256 x 256), 0.58x (x 1024), 0.69x (x 8192)
  and 0.56x (4096^2) of the f32 one; with a bf16 result, as `model.dtype="bfloat16"`
  computes, 1.08-1.21x. So the option rounds only the dense layers' operands and keeps f32
  results, and its custom VJP keeps the backward products in bf16 too (autodiff turns them
  into f32 dots). On the quiet morning of 2026-11-26 (the same command): the Transformer step
  at 0.68x the f32 one, 0.70x PyTorch eager in f32 and 0.85x PyTorch eager under bf16
  autocast (0.564 against 0.662 s, same rounds); weighted-split at 0.78x the f32 Transformer
  but 1.15x the bf16 one. In the busier run of the tables above: 0.85x, 0.66x and 0.87x;
  weighted-split at 1.02x the f32 Transformer and 1.18x the bf16 one. The
  weighted model gains less because XLA:CPU's bf16 kernel contracts the minor dimension of
  both operands: for an unbatched weight gradient XLA copies one operand transposed and stays
  in bf16, but batched ones (the branch kernels' gradients, `[M, tokens, .]`) and the
  embedding's gradient it converts back to f32 first. Transposing them in the VJP does not
  help: XLA's simplifier folds the transpose back into the dot, which then fails at run time
  ("UNIMPLEMENTED: Unsupported element type for DotThunk::Execute: BF16 x BF16 = F32").
  While tuning (machine shared): bf16 forward and input-gradient products with f32 weight
  gradients, 0.83x the f32 step; all three products, 0.69-0.73x. Its MFU is still counted
  against the f32 probe (the same FLOPs on faster units): 0.92 in the peers table means matmul
  work at 92% of the f32 matmul's rate, not bf16 units 92% busy.
- Where float32 stands: in the tables above (2026-11-26, a busier afternoon: the probe at
  165-175 GFLOP/s) the Transformer step is at 0.94x PyTorch eager, MFU 0.64; the same command
  on a quiet morning gave 0.97x and 0.66. Matmuls are about three quarters of its op time
  (profile), and the Q/K/V/output projections (2048 x 256 x 256) run at about half the
  probe's rate: what is left of the f32 step is mostly XLA:CPU's own matmul speed at d_model
  256, which no rewrite of the model changes. Weighted / standard: 1.00 in the peers table and
  1.06 in the train table of the same run (its per-round ratios 0.99 to 1.27, while the
  Transformer's own step ranged from 0.83 to 0.96 s); the quiet morning's train table gave
  1.00.
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
  (10 s of the quick experiment's 8 shapes); not worth restructuring the model for. The 8
  shapes now compile side by side, one thread per core (`parallel.compile_each`): 0.78-0.84x
  one at a time on this 2-core CPU, quiet (docs/benchmarks-compile.md, the `compile`
  section), 0.25x on a 16-core GPU host (docs/benchmarks-gpu/README.md).
- Decoding batch width on CPU: beam 4 stops a batch when its last sentence ends, so a wide
  batch waits for its slowest sentence. test2016 by the quick Weighted Transformer,
  `python -m experiments.evaluate --workdir RUN --split test --average_last 1
  --eval_batch_size N` (machine shared, alternating 16, 64, 64, 16): 21.8 and 20.6 s in
  batches of 16, 36.3 and 32.4 s in batches of 64 (0.62x), the same BLEU. A one-off script
  over the quick Transformer gave 8: 15 s, 16: 17, 32: 21, 64: 28, 256: 39, with the same
  1000 translations at every width. So `data.eval_batch_size` now defaults to 16 on CPU
  (64 on accelerators, which need the width). Decoding two batches at once on two threads
  (a one-off script, quiet): 0.90x; not adopted, as XLA already spreads a batch over both
  cores.
- The decoder's self-attention cache (wt/modules.py) is stored heads-major, `[batch, heads,
  length, depth]`. Stored `[batch, length, heads, depth]`, XLA:CPU copied every cache tensor twice
  per decoding step: a whole-buffer copy at the one-position write and a transpose for the score
  product (a profile of beam 4 over 30 test2016 batches: about 40% of op time in cache handling,
  about a quarter in the vocabulary matmul). Heads-major, test2016 by the quick models in batches
  of 16 (`experiments.evaluate` as above, old and new checkouts alternating three times each,
  machine shared): 13.2-13.4 s against 16.9-17.2 s (Transformer, 0.78x) and 15.8-16.5 s against
  19.4-20.7 s (Weighted, 0.80x), the same translations; quiet, the same alternation: medians 9.5
  against 11.2 s (0.85x) and 11.0 against 14.3 s (0.77x). Tried with it, no change: the encoder's
  cross-attention keys/values stored heads-major or depth-major (XLA moves their transpose into
  the loop either way), clamped instead of filled indices in the beam gather, and XLA:CPU's
  YNNPACK fusion types (`--xla_cpu_experimental_ynn_fusion_type=dot`, `individual_dot`,
  `dot,eltwise`: 1.02-1.12x), which would keep the vocabulary matmul, now the largest op, out of
  the log-softmax's fused reduction.
- Beam search's top 2k of the k x vocab candidates (wt/decode.py `top_k`): XLA:CPU's TopK walks
  every entry through a heap, about 1 ms for 16 sentences x 4 x 8000 and a fifth of a beam step
  (a profile of the quick model's beam 4). A max per block of about sqrt(width / 2k) entries
  first, then TopK over the block maxima and over the entries of the 2k best blocks, gives the
  same values and indices, ties included (tests/test_decode.py checks it against
  `jax.lax.top_k`). Beam 4, the old and the new top-k compiled in one process and alternated
  (one-off scripts): random weights, 66 steps, 0.81x (vocab 8000, both models) and 0.67x
  (vocab 32768); test2016 by the quick models, 0.84x (Transformer) and 0.79x (Weighted), the
  same translations as before, file for file; a second alternation, 0.81x and 0.82x. Block
  maxima taken over TopK's integer keys (the float bits as sign-magnitude integers, which
  would rank -0.0 and NaN as TopK does, where XLA's max does not always): 1.06x and 1.02x,
  so the function takes float maxima and asks for inputs without -0.0 or NaN (beam scores
  never are -0.0).
- Validation compiled with training: a run compiles the eval step for every validation batch
  shape side by side with the train step's shapes, instead of one at a time at its first
  validation (about 10 s per quick run before).
- Compiling both models' 16 quick shapes in one pool instead of one model's 8 after the
  other: 1.07x and 0.83x in two rounds (one-off script), no gain: `compile_each` already keeps
  both cores busy (1.9 cores of CPU time per second of wall time). XLA:CPU's compile options,
  again at the quick size (3 shapes, 3 alternations): optimisation level 1, no expensive LLVM
  passes, and both: compile 0.90-1.10x, step 0.98-1.05x, inside the machine's noise.
"""


def table(header, rows) -> list[str]:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def markdown(results: dict, options: Options) -> str:
  """Every section's tables but the checkpoint's, in a fixed order."""
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
      + table(
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
      f"{first['source_len']} + {first['target_len']} tokens, {options.dtype})",
      "",
      f"MFU: the model's matmul FLOPs (closed form, wt/flops.py) per second against the "
      f"{timing.PROBE}^2 f32 matmul timed in the same rounds "
      f"({g(size['probe_flops_per_second'])} GFLOP/s, median), the median over rounds "
      f"(MFU XLA: with XLA's count, which also counts element-wise work, the dropout "
      f"hash's integer operations included); best MFU: fastest step against fastest "
      f"matmul (the machine unshared). x Transformer: median over rounds of the step-time "
      f"ratio.",
      "",
    ]
    on_chip = any(r.get("mfu_of_nominal_peak") for r in size["variants"])
    out += table(
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
      + table(
        ["kind of op (JAX name)", "s per step", "share"],
        [(r["kind"], f"{r['seconds']:.3f}", f"{r['share']:.0%}") for r in prof["kinds"]],
      )
      + [""]
    )
  if "kernels" in results:
    out += (
      ["## Attention kernels (8 heads x 64, key padding mask, f32)", ""]
      + table(
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
        f"## Decoding, bench-small, random weights ({options.decode_batch} sentences of "
        f"{options.decode_len} tokens, up to {options.decode_len + options.decode_extra} "
        f"output tokens each)",
        "",
      ]
      + table(
        ["model", "method", "s per batch", "sentences/s"],
        [
          (r["variant"], r["method"], f"{r['seconds']:.2f}", f"{r['sentences_per_second']:.1f}")
          for r in results["decode"]
        ],
      )
      + [""]
    )
  return "\n".join(out)


def checkpoint_markdown(rows: list) -> list[str]:
  """The checkpoint section: the table and what its columns measure."""
  saves = rows[0]["saves"] if rows else 0
  return (
    [
      "## Checkpoint integrity: what sealing a save costs",
      "",
      "Every saved step is sealed once orbax has finished writing it: a background thread hashes "
      "each file of the step (sha256) into `checkpoints/<step>/wt_integrity.json`, and a restore "
      "checks it before orbax reads the step (wt/checkpoint.py). Here the state of a run (params, "
      f"Adam moments, step, RNG), {saves} saves into a temporary folder, medians of saves "
      f'2-{saves}; "orbax save" is `save` + `wait` without the seal, "verify at restore" the '
      "check of the step's manifest a restore makes first. The seal runs beside training, not "
      "in the training thread; only `wait`/`close`/`restore` wait for it.",
      "",
    ]
    + table(
      ["config", "params", "state MiB", "orbax save s", "seal s", "verify at restore s"],
      [
        (
          r["config"],
          f"{r['params'] / 1e6:.1f}M",
          f"{r['state_mib']:.0f}",
          f"{r['orbax_save_seconds']:.3f}",
          f"{r['seal_seconds']:.3f}",
          f"{r['verify_seconds']:.3f}",
        )
        for r in rows
      ],
    )
    + [""]
  )


def compile_markdown(rows: list) -> list[str]:
  """The compile section: the table and what it measures."""
  return (
    [
      "## Compiling a run's training shapes: one at a time or side by side",
      "",
      "A run compiles its train step once per training batch shape before it trains "
      "(`data.num_buckets`, 8). Here the 8 shapes of the main job (multi30k.py:quick, "
      "Multi30k's bucket lengths), each compiled as a new program with the persistent "
      "compilation cache off: one after another, and with `wt.parallel.compile_each` (one "
      "thread per core, up to one per shape), which runs use. Medians over interleaved "
      "rounds; ratio: the median of the per-round ratios.",
      "",
    ]
    + table(
      ["model", "shapes", "threads", "one at a time s", "compile_each s", "ratio", "rounds"],
      [
        (
          r["model"],
          r["shapes"],
          r["threads"],
          f"{r['one_at_a_time_seconds']:.1f}",
          f"{r['compile_each_seconds']:.1f}",
          f"{r['ratio']:.2f}",
          r["rounds"],
        )
        for r in rows
      ],
    )
    + [""]
  )


def document(results: dict, options: Options) -> str:
  """The whole report: the tables, the notes after training tables, then the compile and
  checkpoint sections'."""
  text = markdown(results, options) + ("\n" + FINDINGS if "train" in results else "")
  if "compile" in results:
    text += "\n" + "\n".join(compile_markdown(results["compile"]))
  if "checkpoint" in results:
    text += "\n" + "\n".join(checkpoint_markdown(results["checkpoint"]))
  return text
