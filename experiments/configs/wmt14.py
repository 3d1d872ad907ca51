"""WMT14 EN-DE at paper scale (needs accelerators; docs/scaling.md has the launch recipes).

    python -m experiments.run --config experiments/configs/wmt14.py:transformer_base ...
    python -m experiments.compare --config experiments/configs/wmt14.py:base

Data: tensorflow-datasets wmt14_translate/de-en, or a local copy in plain-text files with
--config.data.data_dir=DIR holding {train,validation,test}.{en,de} (wt/data/wmt14.py).
Accelerator defaults: bfloat16 compute on GPU/TPU (float32 on CPU; parameters and optimizer
state float32 everywhere), cuDNN fused attention on GPUs where it applies (XLA elsewhere),
bucket lengths in multiples of 8 (TPU tiles, cuDNN's even lengths). The batch is the papers'
25k token slots per side in all, whatever the device count; --config.data.tokens_per_device=N
makes it N per device instead (docs/scaling.md: how the batch scales).

Variants (the argument after the colon):
  transformer_base, transformer_big   Vaswani et al. Table 3 (100K / 300K steps)
  weighted_small, weighted_large      Ahmed et al. Table 1 (60K / 250K steps)
  table2_n2, table2_n4, table2_n6, table2_n8
                                      Ahmed et al. Table 2 rows (weighted, N layers, 60K)
  base, big                           both models at one budget (for experiments.compare):
                                      small sizes at 100K steps, large sizes at 300K
"""

from experiments.configs.base import get_base_config

SIZES = {
  "small": dict(
    num_layers=6, d_model=512, d_ff=2048, num_heads=8, num_branches=8, dropout_rate=0.1
  ),
  "large": dict(
    num_layers=6, d_model=1024, d_ff=4096, num_heads=16, num_branches=16, dropout_rate=0.3
  ),
}
VARIANTS = {
  # name: (size, attention, steps, checkpoints averaged at test time)
  "transformer_base": ("small", "multihead", 100_000, 5),
  "transformer_big": ("large", "multihead", 300_000, 20),
  "weighted_small": ("small", "weighted", 60_000, 1),
  "weighted_large": ("large", "weighted", 250_000, 1),
  "base": ("small", "multihead", 100_000, 5),
  "big": ("large", "multihead", 300_000, 20),
}
TABLE2_LAYERS = {"table2_n2": 2, "table2_n4": 4, "table2_n6": 6, "table2_n8": 8}


def get_config(variant: str = "base"):
  config = get_base_config()
  config.data.dataset = "wmt14"
  config.data.vocab_size = 37000  # shared source-target vocabulary, as in Vaswani
  config.data.tokens_per_batch = 25000  # about 25k source and 25k target tokens per batch
  config.data.max_length = 256
  config.data.num_buckets = 16
  config.data.eval_batch_size = 256
  config.data.length_quantum = 8  # TPU tiles; cuDNN attention needs even lengths
  config.model.max_len = 512
  config.model.dtype = "auto"  # bfloat16 on GPU/TPU, float32 on CPU
  config.model.attention_implementation = "auto"  # cuDNN on GPU where it applies, else XLA
  if variant in TABLE2_LAYERS:
    size, attention, steps, average = "small", "weighted", 60_000, 1
    config.model.update(SIZES["small"])
    config.model.num_layers = TABLE2_LAYERS[variant]
  elif variant in VARIANTS:
    size, attention, steps, average = VARIANTS[variant]
    config.model.update(SIZES[size])
  else:
    raise ValueError(
      f"unknown wmt14 variant {variant!r}; choose one of {sorted(VARIANTS) + sorted(TABLE2_LAYERS)}"
    )
  config.model.attention = attention
  config.train.num_steps = steps
  config.decode.average_last = average
  # Averaging the last N checkpoints needs N of them kept (Vaswani: 20 for big).
  config.train.keep_checkpoints = max(config.train.keep_checkpoints, average)
  config.compare.seeds = (0,)
  return config
