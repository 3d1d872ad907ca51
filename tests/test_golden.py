"""Golden values: the `tiny` config's training loss for its first steps and its validation loss,
for both models, against numbers recorded on CPU. The README claims the runs are deterministic;
this locks that claim against silent numerical change (initialisation, data order, dropout
RNG, the attention kernels, the loss, the optimizer, the branch-weight projection).

A change that is meant to change the numbers must regenerate them: run
  .venv/bin/python -m pytest tests/test_golden.py
and copy each failure's `got` dict over the entry of GOLDEN for that model (check first that
the difference is the one intended).
"""

import numpy as np
import pytest

from wt import metrics, train

STEPS = 5
# Recorded with the pins of requirements.txt, 8 simulated CPU devices (tests/conftest.py).
GOLDEN = {
  "multihead": {
    "train_loss": [
      4.438187210648148,
      3.722701761763909,
      3.3440229936079544,
      3.1083352830674915,
      3.0686386935229373,
    ],
    "eval_loss": 2.947642201857573,
  },
  "weighted": {
    "train_loss": [
      4.532406761532738,
      4.169039864071531,
      3.643436316287879,
      3.1748551262749567,
      3.03874830424492,
    ],
    "eval_loss": 2.8940312103929022,
  },
}
# Same program, same machine kind: bit-identical in practice; the slack absorbs XLA CPU code
# generation differing across processor features, far below any real change.
RTOL = 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("attention", ["multihead", "weighted"])
def test_tiny_losses_match_the_recorded_values(tiny_config, tmp_path, attention):
  tiny_config.model.attention = attention
  tiny_config.model.dropout_rate = 0.1  # the dropout RNG stream is part of the claim
  tiny_config.train.update(num_steps=STEPS, log_every=1, eval_every=STEPS, checkpoint_every=STEPS)
  summary = train.train_and_evaluate(tiny_config, str(tmp_path))
  records = metrics.read_jsonl(str(tmp_path / "metrics.jsonl"))
  got = {
    "train_loss": [r["train/loss"] for r in records if "train/loss" in r],
    "eval_loss": summary["eval_loss"],
  }
  expected = GOLDEN[attention]
  assert len(got["train_loss"]) == STEPS
  np.testing.assert_allclose(
    got["train_loss"], expected["train_loss"], rtol=RTOL, err_msg=f"got = {got!r}"
  )
  np.testing.assert_allclose(
    got["eval_loss"], expected["eval_loss"], rtol=RTOL, err_msg=f"got = {got!r}"
  )
