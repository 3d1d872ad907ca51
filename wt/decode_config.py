"""The decode section (`config.decode`): `DecodeConfig`, its fields, defaults and checks.

wt/evaluation.py and wt/decode.py read it; the evaluation commands' flags override beam_size,
length_penalty and average_last.
"""

from __future__ import annotations

import dataclasses

from wt import config_checks as checks


@dataclasses.dataclass(frozen=True)
class DecodeConfig(checks.Section, section="decode"):
  """How a trained model translates for BLEU. Checked when built.

  Attributes:
    beam_size: hypotheses kept per sentence; 1 decodes greedily.
    length_penalty: GNMT's alpha, scores divided by ((5 + length) / 6)^alpha; 0 turns it off.
    max_extra_len: output tokens beyond the input's length (clipped to the model's max_len).
    average_last: parameters averaged over the last n checkpoints (Vaswani: 5 base, 20 big).
  """

  beam_size: int = 4
  length_penalty: float = 0.6
  max_extra_len: int = 50
  average_last: int = 1

  def __post_init__(self):
    checks.check_types(self)
    checks.positive_int(self, "beam_size", "average_last")
    checks.at_least(self, "length_penalty", 0)
    checks.at_least(self, "max_extra_len", 0)
