"""Multi30k EN-DE at CPU scale: the default data, the README's main job.

    python -m experiments.compare --config experiments/configs/multi30k.py:quick
    python -m experiments.run --config experiments/configs/multi30k.py:small --workdir runs/x

Variants (the argument after the colon):
  quick  both models, one seed, a short budget: fits in 15 minutes on 2 CPU cores and shows
         the validation curves separating from noise, not converged BLEU.
  small  the honest comparison: 3 seeds, five times quick's steps, close to its plateau
         (its report: docs/results/multi30k-small).
  small256  `small` at twice the width, 8 heads/branches (d_model 256, d_ff 1024): a step
         closer to the papers' scale. A step has about 3x small's FLOPs (wt/flops.py), which
         makes a run about an hour on 2 CPU cores, so 2 seeds.
         Its study: `experiments.ablate --config ...:small256 --sweep scale` (the
         Transformer, today's Weighted Transformer and the `sublayers` residual reading).
  tiny   a toy size for tests and smoke runs (seconds).
"""

from experiments.configs.base import get_base_config

PRESETS = {
  # model size, steps, warm-up, batch (token slots per side), seeds, log/eval/ckpt cadence
  "quick": dict(
    model=dict(num_layers=2, d_model=128, d_ff=512, num_heads=4, num_branches=4),
    vocab_size=8000,
    num_steps=600,
    warmup_steps=200,
    tokens_per_batch=2048,
    seeds=(0,),
    log_every=25,
    eval_every=100,
    checkpoint_every=200,
  ),
  "small": dict(
    model=dict(num_layers=2, d_model=128, d_ff=512, num_heads=4, num_branches=4),
    vocab_size=8000,
    num_steps=3000,
    warmup_steps=400,
    tokens_per_batch=2048,
    seeds=(0, 1, 2),
    log_every=50,
    eval_every=250,
    checkpoint_every=500,
  ),
  "small256": dict(
    model=dict(num_layers=2, d_model=256, d_ff=1024, num_heads=8, num_branches=8),
    vocab_size=8000,
    num_steps=3000,
    warmup_steps=400,
    tokens_per_batch=2048,
    seeds=(0, 1),
    log_every=50,
    eval_every=250,
    checkpoint_every=500,
  ),
  "tiny": dict(
    model=dict(num_layers=1, d_model=32, d_ff=64, num_heads=4, num_branches=4),
    vocab_size=500,
    num_steps=20,
    warmup_steps=10,
    tokens_per_batch=512,
    seeds=(0,),
    log_every=5,
    eval_every=10,
    checkpoint_every=10,
  ),
}


def get_config(variant: str = "quick"):
  if variant not in PRESETS:
    raise ValueError(f"unknown multi30k variant {variant!r}; choose one of {sorted(PRESETS)}")
  preset = PRESETS[variant]
  config = get_base_config()
  config.data.vocab_size = preset["vocab_size"]
  config.data.tokens_per_batch = preset["tokens_per_batch"]
  config.model.update(preset["model"])
  config.model.max_len = 256
  config.train.num_steps = preset["num_steps"]
  config.train.warmup_steps = preset["warmup_steps"]
  config.train.branch_warmup_steps = max(preset["warmup_steps"] // 10, 1)
  for field in ("log_every", "eval_every", "checkpoint_every"):
    config.train[field] = preset[field]
  config.compare.seeds = preset["seeds"]
  # Every Multi30k test set; test2018 flickr is the one nothing here is tuned on.
  config.compare.splits = ("test", "test2017_flickr", "test2017_mscoco", "test2018_flickr")
  return config
