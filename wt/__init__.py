"""wt: the Transformer and the Weighted Transformer in JAX/Flax, compared on machine translation.

Layout (see docs/architecture.md):
  wt/kernels.py   pure jax.numpy attention kernels and masks
  wt/modules.py   Linen blocks: MultiHeadAttention, FeedForward, BranchedAttention, layers
  wt/models.py    ModelConfig and the Transformer encoder-decoder
  wt/data/        Multi30k / WMT14, SentencePiece, bucketed batches
  wt/train.py     the train step and train_and_evaluate(config, workdir)
  wt/decode.py    cached beam search
"""
