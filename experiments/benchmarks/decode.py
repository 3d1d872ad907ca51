"""The `decode` section: greedy and beam-4 decoding of the bench-small models, sentences per
second, interleaved (random weights: every sentence runs to its length limit, the slowest
case)."""

import jax

from experiments.benchmarks import timing
from experiments.benchmarks.options import Options
from experiments.benchmarks.train import SIZES, model_config, random_batch
from wt import decode, models


def decode_section(options: Options) -> list:
  """Greedy and beam-4 sentences/s of the bench-small models, random weights, interleaved."""
  inputs = random_batch(SIZES["bench-small"][0], options.decode_batch, options.decode_len, 1)[
    "inputs"
  ]
  inputs[:, -1] = decode.EOS
  calls = {}
  for variant in ("transformer", "weighted-split"):
    config = model_config("bench-small", variant, options.dtype)
    model, params = models.Transformer(config), models.init_params(config, jax.random.key(0))
    for method, beam in (("greedy", 1), ("beam", 4)):
      fn = decode.make_decode_fn(
        model, method=method, beam_size=beam, max_extra_len=options.decode_extra
      )
      calls[(variant, f"{method}-{beam}" if method == "beam" else method)] = (
        lambda fn=fn, params=params: jax.block_until_ready(fn(params, inputs))
      )
  times = timing.interleaved(calls, options.steps, 1)
  return [
    dict(
      variant=variant,
      method=method,
      seconds=timing.median(seconds),
      sentences_per_second=len(inputs) / timing.median(seconds),
      output_tokens=len(inputs) * (options.decode_len + options.decode_extra),
    )
    for (variant, method), seconds in times.items()
  ]
