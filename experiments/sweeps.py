"""Named ablation grids for `experiments.ablate`: the papers' open points and their tables.

A sweep is a list of points. Each point has a label, the config fields it changes for training
(`train`), and the model fields it changes only at test time (`test`): points that differ only
in `test` share one trained model (the Weighted Transformer's Table 3 retrains nothing), and
so do points whose overrides give the same config (e.g. `num_branches=4` and the weighted
reference when the preset has 4 branches).

Studies of the Weighted Transformer's open points start with two baselines (`with_baselines`):
the Transformer and the weighted reference (today's defaults); the report tests every point
against both.
"""

import dataclasses
import itertools
from typing import Any, Mapping


@dataclasses.dataclass(frozen=True)
class Point:
  label: str
  train: Mapping[str, Any]
  test: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def grid(**axes) -> list[Point]:
  """The product of the given config fields (dotted names with '__' for '.') as points."""
  names = [name.replace("__", ".") for name in axes]
  points = []
  for values in itertools.product(*axes.values()):
    overrides = dict(zip(names, values))
    label = ", ".join(f"{name.rsplit('.', 1)[-1]}={value}" for name, value in overrides.items())
    points.append(Point(label, overrides))
  return points


def _weighted(**axes) -> list[Point]:
  """Weighted Transformer points, labelled by the other axes only."""
  return [
    Point(", ".join(part for part in p.label.split(", ") if part != "attention=weighted"), p.train)
    for p in grid(model__attention=["weighted"], **axes)
  ]


TRANSFORMER = Point("transformer", {"model.attention": "multihead"})
WEIGHTED_REFERENCE = Point("weighted (today's)", {"model.attention": "weighted"})
BASELINES = (TRANSFORMER.label, WEIGHTED_REFERENCE.label)


def with_baselines(points: list[Point]) -> list[Point]:
  """The Transformer and the weighted reference (the config's defaults), then `points`."""
  return [TRANSFORMER, WEIGHTED_REFERENCE, *points]


SWEEPS = {
  # Ahmed et al.'s open points (docs/paper.md's last table).
  "branch_weights": _weighted(model__branch_weights=["projection", "softmax", "uniform"]),
  "branch_schedule": _weighted(train__branch_schedule=["own", "shared"]),
  "num_branches": with_baselines(_weighted(model__num_branches=[2, 4, 8])),
  "branch_ffn": with_baselines(_weighted(model__branch_ffn=["split", "shared", "full"])),
  # Does a weighting that never reaches 0 rescue 8 branches, some of which the projection
  # switches off? (docs/results/ablate-num_branches-multi30k-small; the M = 8 runs are reused.)
  "softmax_at_8_branches": with_baselines(
    _weighted(model__num_branches=[8])
    + _weighted(model__num_branches=[8], model__branch_weights=["softmax"])
  ),
  "branched_decoder": with_baselines(_weighted(model__branched_decoder=["encdec", "self", "both"])),
  "branch_residual": with_baselines(
    _weighted(model__branch_residual=["block", "ffn", "sublayers"])
  ),
  # The scale study (multi30k.py:small256): today's reading, the Transformer, and the residual
  # placement that came closest at `small` (docs/results/ablate-branch_residual-multi30k-small).
  "scale": with_baselines(_weighted(model__branch_residual=["sublayers"])),
  "branch_output_bias": with_baselines(
    _weighted(model__branch_output_bias=["shared", "per_branch"])
  ),
  "norm": grid(model__attention=["multihead", "weighted"], model__norm=["post", "pre"]),
  # Ahmed et al. Table 3: one trained model, kappa/alpha replaced at test time.
  "test_branch_weights": [
    Point(
      f"test_branch_weights={mode}", {"model.attention": "weighted"}, {"test_branch_weights": mode}
    )
    for mode in ("learned", "uniform", "random")
  ],
  # Vaswani et al. Table 3 rows, and the scaling argument of their section 3.2.1.
  "heads": grid(model__attention=["multihead"], model__num_heads=[1, 4, 8, 16]),
  "positional": grid(
    model__attention=["multihead", "weighted"], model__positional=["sinusoidal", "learned"]
  ),
  "label_smoothing": grid(
    model__attention=["multihead", "weighted"], train__label_smoothing=[0.0, 0.1]
  ),
  "attention_scaling": grid(
    model__attention=["multihead", "weighted"], model__scale_attention=[True, False]
  ),
}
