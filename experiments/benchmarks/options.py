"""What the flags of `python -m experiments.bench` set, as one value the sections take.

The flags, their defaults and their help are defined once, in experiments/bench.py; the
sections read their settings from an `Options` passed to them, so that they define no flags
and can be called directly (tests, other scripts).
"""

import dataclasses
from typing import Optional, Sequence


@dataclasses.dataclass(frozen=True)
class Options:
  """Every section's settings (the flags of experiments/bench.py of the same names)."""

  steps: int  # timed rounds per measurement
  warmup: int  # untimed rounds first (at least 2 for training)
  dtype: str  # model compute dtype
  skip_base: bool  # train section: bench-small only
  variants: Optional[Sequence[str]]  # bench-small variants (None: all)
  base_variants: Sequence[str]
  base_batch: int  # 0: the largest power of two up to max_base_batch that fits
  max_base_batch: Optional[int]  # None: 32 on CPU, 1024 elsewhere
  profile_variants: Sequence[str]
  attention_lengths: Sequence[int]
  attention_tokens: int  # kernels section: batch * length
  decode_batch: int
  decode_len: int
  decode_extra: int
  peers: Sequence[str]
  peer_variants: Sequence[str]
  checkpoint_configs: Sequence[str]  # FILE.py:VARIANT of experiments/configs/
  compile_rounds: int  # compile section: interleaved rounds (each compiles 8 shapes twice)
