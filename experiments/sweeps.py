"""Named ablation grids for `experiments.ablate`: the papers' open points and their tables.

A sweep is a list of points. Each point has a label, the config fields it changes for training
(`train`), and the model fields it changes only at test time (`test`): points that differ only
in `test` share one trained model (the Weighted Transformer's Table 3 retrains nothing).
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
  return grid(model__attention=["weighted"], **axes)


SWEEPS = {
    # Ahmed et al.'s open points (PAPER.md's last table).
    "branch_weights": _weighted(model__branch_weights=["projection", "softmax", "uniform"]),
    "branch_schedule": _weighted(train__branch_schedule=["own", "shared"]),
    "num_branches": _weighted(model__num_branches=[2, 4, 8]),
    "branch_ffn": _weighted(model__branch_ffn=["split", "shared", "full"]),
    "branched_decoder": _weighted(model__branched_decoder=["encdec", "self", "both"]),
    "norm": grid(model__attention=["multihead", "weighted"], model__norm=["post", "pre"]),
    # Ahmed et al. Table 3: one trained model, kappa/alpha replaced at test time.
    "test_branch_weights": [
        Point(f"test_branch_weights={mode}", {"model.attention": "weighted"},
              {"test_branch_weights": mode}) for mode in ("learned", "uniform", "random")],
    # Vaswani et al. Table 3 rows, and the scaling argument of their section 3.2.1.
    "heads": grid(model__attention=["multihead"], model__num_heads=[1, 4, 8, 16]),
    "positional": grid(model__attention=["multihead", "weighted"],
                       model__positional=["sinusoidal", "learned"]),
    "label_smoothing": grid(model__attention=["multihead", "weighted"],
                            train__label_smoothing=[0.0, 0.1]),
    "attention_scaling": grid(model__attention=["multihead", "weighted"],
                              model__scale_attention=[True, False]),
}
