"""WMT14 EN-DE at paper scale (tensorflow-datasets wmt14_translate/de-en; needs accelerators).

    python -m experiments.run --config experiments/configs/wmt14.py:transformer_base ...
    python -m experiments.compare --config experiments/configs/wmt14.py:base

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
    "small": dict(num_layers=6, d_model=512, d_ff=2048, num_heads=8, num_branches=8,
                  dropout_rate=0.1),
    "large": dict(num_layers=6, d_model=1024, d_ff=4096, num_heads=16, num_branches=16,
                  dropout_rate=0.3),
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
  config.data.vocab_size = 37000        # shared source-target vocabulary, as in Vaswani
  config.data.tokens_per_batch = 25000  # about 25k source and 25k target tokens per batch
  config.data.max_length = 256
  config.data.num_buckets = 16
  config.data.eval_batch_size = 256
  config.model.max_len = 512
  if variant in TABLE2_LAYERS:
    size, attention, steps, average = "small", "weighted", 60_000, 1
    config.model.update(SIZES["small"])
    config.model.num_layers = TABLE2_LAYERS[variant]
  elif variant in VARIANTS:
    size, attention, steps, average = VARIANTS[variant]
    config.model.update(SIZES[size])
  else:
    raise ValueError(f"unknown wmt14 variant {variant!r}; choose one of "
                     f"{sorted(VARIANTS) + sorted(TABLE2_LAYERS)}")
  config.model.attention = attention
  config.train.num_steps = steps
  config.decode.average_last = average
  config.compare.seeds = (0,)
  return config
