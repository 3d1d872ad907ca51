"""A PyTorch `nn.Transformer` training step of the wt Transformer's shapes, and its worker.

    python -m experiments.peers.torch_transformer [--compile] [--autocast_bf16] [--threads 2]
        [size flags]

The model is the wt Transformer (experiments/benchmarks/train.py `bench-small` by default) in
PyTorch: one embedding matrix shared by source, target and the pre-softmax projection
(scaled by sqrt(d_model), N(0, d_model^-0.5) init), sinusoidal positions, post-norm layers
(LayerNorm eps 1e-6, no final encoder/decoder norm: wt's post-norm model has none), ReLU,
causal and key-padding masks, `cross_entropy(label_smoothing=0.1)` summed over non-pad tokens
and divided by their count, Adam(0.9, 0.98, 1e-9) with the Vaswani schedule. Dropout 0.1 sits
where wt's config puts it: on the embeddings and on every residual branch; like wt's default
`attention_dropout_rate=0` and `relu_dropout_rate=0`, nn.Transformer's dropout on attention
weights and on the FFN's hidden layer is turned off, so both sides do the same work. The only
structural difference: nn.MultiheadAttention's projections have biases (wt's have none), 4 x
d_model parameters per attention block. `--autocast_bf16` runs the forward pass under
`torch.autocast("cpu", torch.bfloat16)`, PyTorch's counterpart of wt's
`model.matmul_dtype="bfloat16"` (its matmuls take bfloat16 operands; unlike wt's, they also
return bfloat16).

Worker protocol (one line in, one line out, on stdin/stdout; everything else goes to stderr):
after start-up (model built, one step run, which compiles under --compile) it prints
`ready <seconds of that first step>`; then
  step   -> seconds of one training step (zero_grad, forward, loss, backward, Adam)
  probe  -> seconds of one f32 matmul of --probe x --probe by --probe
  quit   -> exits (so does end of input)
An error prints `error <message>` and exits with status 1.
"""

from __future__ import annotations

import argparse
import math
import sys

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from experiments.peers import process
from wt.models import sinusoidal_table  # the same positions as the JAX model, from one place

# The bench-small shapes (SIZES of experiments/benchmarks/train.py): the worker flags defaults.
BENCH_SMALL = dict(
  vocab=8192, d_model=256, heads=8, d_ff=1024, layers=3, batch=32, source_len=64, target_len=64
)


class TorchTransformer(nn.Module):
  """Encoder-decoder with shared embeddings around `nn.Transformer`; returns the loss."""

  def __init__(
    self,
    vocab: int,
    d_model: int,
    heads: int,
    d_ff: int,
    layers: int,
    dropout: float = 0.1,
    label_smoothing: float = 0.1,
    max_len: int = 512,
  ):
    super().__init__()
    self.d_model, self.label_smoothing = d_model, label_smoothing
    self.embed = nn.Embedding(vocab, d_model)
    nn.init.normal_(self.embed.weight, std=d_model**-0.5)
    self.register_buffer("positions", torch.from_numpy(sinusoidal_table(max_len, d_model)))
    self.embedding_dropout = nn.Dropout(dropout)
    self.transformer = nn.Transformer(
      d_model,
      heads,
      layers,
      layers,
      d_ff,
      dropout,
      activation="relu",
      batch_first=True,
      norm_first=False,
      layer_norm_eps=1e-6,
    )
    self.transformer.encoder.norm = None
    self.transformer.decoder.norm = None
    for layer in [*self.transformer.encoder.layers, *self.transformer.decoder.layers]:
      layer.dropout = nn.Identity()  # the FFN's hidden-layer dropout (wt: relu_dropout_rate 0)
      for attention in (layer.self_attn, getattr(layer, "multihead_attn", None)):
        if attention is not None:
          attention.dropout = 0.0  # dropout on attention weights (wt: attention_dropout 0)

  def _embed(self, tokens: torch.Tensor) -> torch.Tensor:
    x = self.embed(tokens) * math.sqrt(self.d_model) + self.positions[: tokens.shape[1]]
    return self.embedding_dropout(x)

  def forward(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Label-smoothed cross entropy per non-pad target token (0 = pad and start symbol)."""
    decoder_inputs = F.pad(targets, (1, 0))[:, :-1]
    length = targets.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool).triu(1)  # True: may not attend
    source_pad, target_pad = inputs == 0, targets == 0
    hidden = self.transformer(
      self._embed(inputs),
      self._embed(decoder_inputs),
      tgt_mask=causal,
      src_key_padding_mask=source_pad,
      tgt_key_padding_mask=target_pad,
      memory_key_padding_mask=source_pad,
    )
    logits = hidden @ self.embed.weight.t()
    loss = F.cross_entropy(
      logits.reshape(-1, logits.shape[-1]),
      targets.reshape(-1),
      ignore_index=0,
      label_smoothing=self.label_smoothing,
      reduction="sum",
    )
    return loss / (~target_pad).sum().clamp(min=1)


def noam(d_model: int, warmup: int = 4000):
  """Vaswani et al.'s learning rate as a LambdaLR factor (the base lr is 1)."""
  return lambda step: d_model**-0.5 * min((step + 1) ** -0.5, (step + 1) * warmup**-1.5)


class TrainStep:
  """Model, Adam and a fixed batch of random full-length sentences (as the wt benchmark)."""

  def __init__(
    self,
    vocab: int,
    d_model: int,
    heads: int,
    d_ff: int,
    layers: int,
    batch: int,
    source_len: int,
    target_len: int,
    *,
    compile_model: bool = False,
    autocast_bf16: bool = False,
    seed: int = 0,
  ):
    torch.manual_seed(seed)
    self.model = TorchTransformer(vocab, d_model, heads, d_ff, layers)
    self.model.train()
    self.forward = torch.compile(self.model) if compile_model else self.model
    self.autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast_bf16)
    self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1.0, betas=(0.9, 0.98), eps=1e-9)
    self.schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, noam(d_model))
    rng = np.random.default_rng(seed)
    self.inputs = torch.from_numpy(rng.integers(2, vocab, (batch, source_len)).astype(np.int64))
    self.targets = torch.from_numpy(rng.integers(2, vocab, (batch, target_len)).astype(np.int64))

  def __call__(self) -> float:
    """One training step; returns its loss."""
    self.optimizer.zero_grad(set_to_none=True)
    with self.autocast:
      loss = self.forward(self.inputs, self.targets)
    loss.backward()
    self.optimizer.step()
    self.schedule.step()
    return float(loss.detach())


def matmul_probe(n: int):
  """A blocking n x n x n f32 matmul (torch on CPU is synchronous)."""
  a, b = torch.randn(n, n), torch.randn(n, n)
  return lambda: torch.mm(a, b)


def parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  for name, default in BENCH_SMALL.items():
    parser.add_argument(f"--{name}", type=int, default=default)
  parser.add_argument("--compile", action="store_true", help="torch.compile the model")
  parser.add_argument(
    "--autocast_bf16", action="store_true", help="forward pass under bfloat16 autocast"
  )
  parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
  parser.add_argument("--probe", type=int, default=4096, help="matmul probe size")
  return parser.parse_args(argv)


def main(argv=None) -> int:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  out = sys.stdout
  sys.stdout = sys.stderr  # stray prints (torch.compile's) must not break the protocol

  def reply(text: str):
    out.write(text + "\n")
    out.flush()

  try:
    torch.set_num_threads(args.threads)
    sizes = {name: getattr(args, name) for name in BENCH_SMALL}
    step = TrainStep(**sizes, compile_model=args.compile, autocast_bf16=args.autocast_bf16)
    reply(f"ready {process.seconds_of(step):.6f}")
    process.serve({"step": step, "probe": matmul_probe(args.probe)}, sys.stdin, reply)
  except Exception as error:  # pylint: disable=broad-except  (reported through the protocol)
    reply(f"error {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
