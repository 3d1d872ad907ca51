"""Parameter counts of the papers' configurations, both models side by side.

    python -m experiments.params [--vocab_size 37000] [--markdown docs/params.md]

Counts come from the parameter shapes (jax.eval_shape: nothing is allocated), next to the
numbers the papers report. The Weighted Transformer is counted in split-FFN mode (M FFNs of
d_ff/M), which is how its parameter count can equal the Transformer's.
"""

import jax
from absl import app, flags

from experiments.configs import wmt14
from wt import models

_VOCAB = flags.DEFINE_integer("vocab_size", 37000, "shared vocabulary size (Vaswani: 37000)")
_MARKDOWN = flags.DEFINE_string("markdown", None, "also write the table to this file")

# (row label, layers N, size, paper's count for both models)
ROWS = [("Table 2, N=2", 2, "small", "36M"), ("Table 2, N=4", 4, "small", "50M"),
        ("base / small (N=6)", 6, "small", "65M"), ("Table 2, N=8", 8, "small", "80M"),
        ("big / large (N=6)", 6, "large", "213M")]


def count(model_config: models.ModelConfig) -> int:
  shapes = jax.eval_shape(lambda: models.init_params(model_config, jax.random.key(0)))
  return models.count_params(shapes)


def table(vocab_size: int) -> str:
  lines = ["| configuration | N | d_model | d_ff | h = M | Transformer | Weighted Transformer "
           "| difference | paper (both) |", "|---|---|---|---|---|---|---|---|---|"]
  for label, layers, size, paper in ROWS:
    sizes = dict(wmt14.SIZES[size], num_layers=layers)
    sizes.pop("dropout_rate")
    transformer = models.ModelConfig(vocab_size=vocab_size, attention="multihead", **sizes)
    standard, weighted = count(transformer), count(transformer.replace(attention="weighted"))
    lines.append(f"| {label} | {layers} | {sizes['d_model']} | {sizes['d_ff']} | "
                 f"{sizes['num_heads']} | {standard:,} | {weighted:,} | "
                 f"{weighted - standard:+,} | {paper} |")
  return "\n".join(lines)


def main(argv):
  del argv
  text = table(_VOCAB.value)
  print(text)
  print("\nThe difference per branched sublayer is +2M (kappa, alpha) - 2 d_model (the "
        "LayerNorm of the FFN sublayer that the branched block replaces).")
  if _MARKDOWN.value:
    with open(_MARKDOWN.value, "w", encoding="utf-8") as f:
      f.write(text + "\n")


if __name__ == "__main__":
  app.run(main)
