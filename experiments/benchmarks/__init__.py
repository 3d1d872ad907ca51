"""The sections of `python -m experiments.bench` (experiments/bench.py: the flags and `main`),
one module per concern:

  options     what the command's flags set, as one value passed to every section
  timing      interleaved rounds and their medians, the matmul probe, the `peak` section, the
              machine's description
  train       model sizes and variants, one compiled training step (`StepRunner`), the
              `train` section and the largest base batch that fits
  profile     the `profile` section: a step's time by kind of operation, from a trace
  kernels     the `kernels` section: attention, `jax.nn` against the einsum path
  decode      the `decode` section: greedy and beam search sentences per second
  peers       the `peers` section: the wt steps against PyTorch's (experiments/peers/)
  checkpoint  the `checkpoint` section: what saving, sealing and verifying a run's state costs
  report      the Markdown document: every section's table and the notes

Sections take their settings as arguments and define no flags, so that tests may import any
of them beside other commands' modules.
"""

# Before any module of this package imports JAX: jax's import sets TF_CPP_MIN_LOG_LEVEL=1
# unless it is already set, and experiments.common sets it (quiet TensorFlow logs).
from experiments import common  # noqa: F401
