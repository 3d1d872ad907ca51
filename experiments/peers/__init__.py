"""Peers of the wt training step, for the `peers` section of `python -m experiments.bench`.

  torch_transformer  a PyTorch `nn.Transformer` training step of the bench-small shapes, and
                     the worker that runs it as a second process
  process            the line protocol: the worker's loop, and the benchmark's side (start a
                     worker, ask it to step or probe, read the seconds back); says whether
                     torch is installed (it is optional: requirements-peers.txt)
  compare            the interleaved rounds of JAX steps and peer steps, each with a matmul
                     probe in its own process, and their same-round ratios and MFU

Only `torch_transformer` imports torch, and only in the worker process (or a test that has
torch): the benchmark process never loads both libraries' thread pools.
"""
