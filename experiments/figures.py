"""The reports' PNG figures, and the attention weights they show.

  plot_validation_curves     validation loss against steps and against training seconds
  plot_branch_weights        every kappa and alpha of one run over training
  plot_final_branch_weights  heatmaps of the final kappa and alpha (branch x layer), one row
                             of panels per run
  attention_maps             the attention weights of a trained run for one sentence pair
                             (teacher-forced), every sublayer and head/branch
  plot_attention_maps        those weights as a grid (sublayer x head), tokens on the axes

Attention weights are recomputed from what the model computed: the projected queries and keys
of every `AttentionHeads` are captured with Flax's `capture_intermediates` and passed through
`wt.kernels.attention_weights` with the same mask and scale, so neither the kernels nor the
modules change.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after matplotlib.use)

from wt import evaluation, kernels, metrics, modules  # noqa: E402


def _save(fig, path: str, dpi: int = 110) -> str:
  fig.tight_layout()
  fig.savefig(path, dpi=dpi)
  plt.close(fig)
  return path


def plot_validation_curves(groups: dict[str, list[dict]], path: str, title: str) -> str:
  """Validation loss against steps and against training seconds, one colour per group."""
  fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
  colours = plt.cm.tab10.colors + plt.cm.Dark2.colors
  for colour, (label, results) in zip(colours, groups.items()):
    for i, result in enumerate(results):
      curve = result["eval_curve"]
      for ax, x in zip(axes, ("step", "seconds")):
        ax.plot(
          [p[x] for p in curve],
          [p["loss"] for p in curve],
          color=colour,
          alpha=0.85,
          marker="o",
          markersize=3,
          label=label if i == 0 else None,
        )
  axes[0].set_xlabel("training step")
  axes[1].set_xlabel("training seconds (compilation and evaluation excluded)")
  axes[0].set_ylabel("validation loss (label-smoothed)")
  for ax in axes:
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=8)
  fig.suptitle(title)
  return _save(fig, path)


def _branch_records(workdir: str) -> list[dict]:
  return [
    r
    for r in metrics.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    if any(k.startswith("branch/") for k in r)
  ]


def _vectors(record: dict) -> list[str]:
  """ "branch/encoder_layers_0/self_attention/kappa", ...: the logged kappa/alpha vectors."""
  return sorted({k.rsplit("/", 1)[0] for k in record if k.startswith("branch/")})


def plot_branch_weights(workdir: str, path: str, title: str) -> Optional[str]:
  """kappa and alpha of every branched sublayer over training (one panel per vector)."""
  records = _branch_records(workdir)
  if not records:
    return None
  vectors = _vectors(records[0])
  columns = 4 if len(vectors) >= 4 else len(vectors)
  rows = -(-len(vectors) // columns)
  fig, axes = plt.subplots(
    rows, columns, figsize=(3.2 * columns, 2.4 * rows), squeeze=False, sharex=True, sharey=True
  )
  steps = [r["step"] for r in records]
  for ax, vector in zip(axes.flat, vectors):
    size = sum(1 for k in records[0] if k.rsplit("/", 1)[0] == vector)
    for i in range(size):
      ax.plot(steps, [r[f"{vector}/{i}"] for r in records], linewidth=1)
    ax.set_title(vector.removeprefix("branch/").replace("/weights", ""), fontsize=7)
    ax.axhline(1.0 / size, color="black", linewidth=0.5, linestyle=":")
    ax.grid(alpha=0.3)
  for ax in list(axes.flat)[len(vectors) :]:
    ax.axis("off")
  fig.suptitle(title)
  return _save(fig, path, dpi=100)


def _sublayer_label(path: str) -> str:
  """ "encoder_layers_1/self_attention" -> "enc 1 self"."""
  layer, sublayer = path.split("/")[:2]
  side, index = layer.split("_layers_")
  return f"{side[:3]} {index} {sublayer.replace('_attention', '')}"


def final_branch_weights(workdir: str) -> Optional[tuple[int, dict[str, np.ndarray]]]:
  """(step, {"kappa"|"alpha": [branch, sublayer] array, "sublayers": labels}) of the last
  logged kappa and alpha, or None for a run without learned ones."""
  records = _branch_records(workdir)
  if not records:
    return None
  last = records[-1]
  matrices = {}
  # Encoder layers, then decoder layers, in depth order.
  order = lambda v: (
    not v.startswith("branch/encoder"),
    int(v.split("_layers_")[1].split("/")[0]),
    v,
  )
  for kind in ("kappa", "alpha"):
    vectors = sorted((v for v in _vectors(last) if v.rsplit("/", 1)[-1] == kind), key=order)
    size = sum(1 for k in last if k.rsplit("/", 1)[0] == vectors[0])
    matrices[kind] = np.array([[last[f"{v}/{i}"] for v in vectors] for i in range(size)])
    matrices["sublayers"] = [_sublayer_label(v.removeprefix("branch/")) for v in vectors]
  return last["step"], matrices


def plot_final_branch_weights(
  runs: Sequence[tuple[str, str]], path: str, title: str
) -> Optional[str]:
  """Heatmaps of the final kappa and alpha, branch x branched sublayer, for each
  (label, workdir) with learned weights; None when no run has any."""
  found = [(label, final_branch_weights(workdir)) for label, workdir in runs]
  found = [(label, weights) for label, weights in found if weights is not None]
  if not found:
    return None
  most_branches = max(w["kappa"].shape[0] for _, (_, w) in found)
  top = max(max(w["kappa"].max(), w["alpha"].max()) for _, (_, w) in found)  # one colour scale
  fig, axes = plt.subplots(
    len(found), 2, squeeze=False, figsize=(9, 0.9 + (0.35 * most_branches + 0.9) * len(found))
  )
  for row, (label, (step, weights)) in enumerate(found):
    for ax, kind in zip(axes[row], ("kappa", "alpha")):
      matrix = weights[kind]
      image = ax.imshow(matrix, cmap="viridis", vmin=0.0, vmax=max(top, 1e-6), aspect="auto")
      for (i, j), value in np.ndenumerate(matrix):
        ax.text(
          j,
          i,
          f"{value:.2f}",
          ha="center",
          va="center",
          fontsize=6,
          color="white" if value < 0.6 * top else "black",
        )
      ax.set_xticks(range(matrix.shape[1]), weights["sublayers"], fontsize=7)
      ax.set_yticks(
        range(matrix.shape[0]), [f"branch {i}" for i in range(matrix.shape[0])], fontsize=7
      )
      ax.set_title(
        f"{label}: {kind} at step {step} (uniform = {1 / matrix.shape[0]:.2f})", fontsize=8
      )
      fig.colorbar(image, ax=ax, fraction=0.04)
  fig.suptitle(title)
  return _save(fig, path)


def choose_sentence(sources: Sequence[str], min_words: int = 10, max_words: int = 14) -> int:
  """The first sentence of `min_words` to `max_words` words (a typical caption), else 0."""
  return next((i for i, s in enumerate(sources) if min_words <= len(s.split()) <= max_words), 0)


def attention_maps(model, params, tokenizer, source: str, target: str) -> dict:
  """The attention weights of `model` for one sentence pair, the target teacher-forced.

  Returns {"source": tokens, "target": tokens, "decoder_inputs": tokens (target shifted right),
  "maps": {"enc 0 self": [heads, q, k], "dec 0 self": ..., "dec 0 cross": ...}}: rows are
  queries (the token being read, or for the decoder the token being predicted), columns keys.
  """
  inputs = jnp.asarray([tokenizer.encode(source)], jnp.int32)
  targets = jnp.asarray([tokenizer.encode(target)], jnp.int32)
  wanted = lambda module, method: (
    method == "__call__"
    and len(module.scope.path) >= 2
    and module.scope.path[-2] == "heads"
    and module.scope.path[-1] in ("query", "key")
  )
  apply = jax.jit(
    lambda p, x, y: model.apply(
      {"params": p}, x, y, capture_intermediates=wanted, mutable=["intermediates"]
    )[1]
  )
  captured = apply(params, inputs, targets)["intermediates"]
  scale = None if model.config.scale_attention else 1.0
  causal = kernels.causal_mask(targets.shape[1])
  maps = {}
  for side in ("encoder", "decoder"):
    for index in range(model.config.num_layers):
      layer = captured[f"{side}_layers_{index}"]
      for sublayer in ("self_attention", "cross_attention"):
        if sublayer not in layer:
          continue
        heads = layer[sublayer]["heads"]
        query, key = heads["query"]["__call__"][0], heads["key"]["__call__"][0]
        # One unpadded sentence: only the decoder's self-attention is masked (causally).
        mask = causal if (side, sublayer) == ("decoder", "self_attention") else None
        weights = kernels.attention_weights(query, key, mask, scale=scale)
        maps[_sublayer_label(f"{side}_layers_{index}/{sublayer}")] = np.asarray(weights[0])
  piece = lambda i: "</s>" if i == tokenizer.eos_id else tokenizer.decode([i]) or "▁"
  source_tokens = [piece(int(i)) for i in inputs[0]]
  target_tokens = [piece(int(i)) for i in targets[0]]
  return {
    "source": source_tokens,
    "target": target_tokens,
    "decoder_inputs": ["<s>"] + target_tokens[:-1],
    "maps": maps,
  }


def plot_attention_maps(
  attention: dict, path: str, title: str, head_titles: Optional[dict[str, list[str]]] = None
) -> str:
  """A grid of attention maps: one row per sublayer, one column per head or branch; the
  tokens are written on the first panel of each row."""
  maps = attention["maps"]
  heads = max(m.shape[0] for m in maps.values())
  fig, axes = plt.subplots(len(maps), heads, squeeze=False, figsize=(2.6 * heads, 2.7 * len(maps)))
  for row, (name, weights) in enumerate(maps.items()):
    columns = (
      attention["source"]
      if name.startswith("enc") or name.endswith("cross")
      else attention["decoder_inputs"]
    )
    rows = attention["source"] if name.startswith("enc") else attention["target"]
    for head in range(heads):
      ax = axes[row, head]
      if head >= weights.shape[0]:
        ax.axis("off")
        continue
      ax.imshow(weights[head], cmap="Greys", vmin=0.0, vmax=1.0, aspect="auto")
      if head == 0:  # the heads of a row share their tokens: labelled once (drawing is slow)
        ax.set_xticks(range(len(columns)), columns, rotation=90, fontsize=4)
        ax.set_yticks(range(len(rows)), rows, fontsize=4)
      else:
        ax.set_xticks([])
        ax.set_yticks([])
      head_title = (head_titles or {}).get(name, [f"head {h}" for h in range(heads)])[head]
      ax.set_title(f"{name}: {head_title}", fontsize=6)
  fig.suptitle(title, fontsize=9)
  return _save(fig, path, dpi=120)


def attention_figure(workdir: str, source: str, target: str, path: str, title: str) -> str:
  """Loads a finished run (its last checkpoint), computes `attention_maps` and plots them;
  weighted models title each branch with its kappa and alpha."""
  trained = evaluation.load_trained(workdir, average_last=1)
  attention = attention_maps(trained.model, trained.params, trained.data.tokenizer, source, target)
  branch_values = modules.branch_weight_values(trained.params, trained.model.config.branch_weights)
  head_titles = {}
  for name, vector in branch_values.items():
    sublayer = _sublayer_label(name)
    kind = name.rsplit("/", 1)[-1]
    titles = head_titles.setdefault(sublayer, [f"branch {i}" for i in range(len(vector))])
    for i, value in enumerate(np.asarray(vector)):
      titles[i] += f" {'κ' if kind == 'kappa' else 'α'}{value:.2f}"
  return plot_attention_maps(attention, path, title, head_titles)
