"""WMT14 at its real size, simulated: a synthetic parallel corpus of WMT14's size and shape,
and the whole input side of a training run on it, with wall time and peak memory per stage.

    python -m experiments.wmt14_scale --workdir /tmp/wmt14-scale             # 4.5M pairs
    python -m experiments.wmt14_scale --workdir /tmp/wmt14-1pct --num_pairs 45000
    ... --write docs/scaling.md     # replaces its <!-- wmt14_scale:begin/end --> section

The corpus (`generate`): `--num_pairs` sentence pairs in the local-file form wt/data/wmt14.py
reads (train.{en,de}, validation.{en,de} of 3,000 pairs, test.{en,de} of 3,003), UTF-8 text.
English sentences have log-normal word counts (mean 25 words, sigma 0.65: WMT14 EN-DE's
average, with a long tail to a few hundred words); German ones 0.95 times as many, with noise.
Words are drawn from a Zipfian distribution (exponent 1.0) over 200,000 pseudo-words per
language built from syllables (German ones with umlauts and ß), shorter words more frequent;
numbers are shared by both sides, sentences are capitalised and punctuated.

The input side, each in a child process so that its memory is its own:
  cold    a fresh cache, as a run's first start: hashing the training files, reading them,
          sampling data.spm_max_sentences for the vocabulary, SentencePiece training,
          tokenisation (in chunks), saving the token arrays, bucketing and the epoch plan
  warm    the same with everything cached: what every later start, and every process of a
          multi-process run whose cache is shared, pays
  batches (in both) the first 100 training batches and every validation batch
Each stage's figure is its wall time and the peak resident memory of the process while it ran
(Linux: /proc/self/clear_refs resets the peak between stages; elsewhere the peak so far).
The config is experiments/configs/wmt14.py:base (vocabulary 37,000, 25,000-token batches, 16
buckets) for 8 devices; the local path has no TFDS build to time.
"""

from __future__ import annotations

import collections
import functools
import json
import os
import pathlib
import resource
import subprocess
import sys
import time
from typing import Optional

import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command's flags (defined when it runs, not on import: other experiments define
  flags of the same names, e.g. vocab_size, and tests import this module beside them)."""
  flags.DEFINE_string("workdir", None, "corpus/ and cache/ go here")
  flags.DEFINE_integer("num_pairs", 4_500_000, "training pairs (WMT14: 4.5M)")
  flags.DEFINE_integer("vocab_size", 37000, "SentencePiece vocabulary (Vaswani: 37000)")
  flags.DEFINE_integer(
    "spm_max_sentences", None, "sentences sampled to train the vocabulary (default: the config's)"
  )
  flags.DEFINE_integer("seed", 0, "corpus seed")
  flags.DEFINE_string("write", None, "replace the wmt14_scale section of this file")
  flags.DEFINE_string("json", None, "also write the figures as JSON here")
  flags.DEFINE_enum(
    "child", None, ["generate", "cold", "warm"], "internal: run one stage and print its figures"
  )


EVAL_PAIRS = {"validation": 3000, "test": 3003}
WORDS = 200_000
_CHUNK = 50_000  # sentences generated at a time
_GIB = 2**30


# ------------------------------------------------------------------------------------------
# The corpus.

_SYLLABLES = {
  "en": (
    [
      "",
      "b",
      "c",
      "d",
      "f",
      "g",
      "h",
      "l",
      "m",
      "n",
      "p",
      "r",
      "s",
      "t",
      "th",
      "w",
      "st",
      "ch",
      "br",
      "tr",
    ],
    ["a", "e", "i", "o", "u", "ea", "ou", "ai", "y"],
    ["", "", "n", "r", "s", "t", "nd", "ng", "ll", "ck", "st"],
  ),
  "de": (
    [
      "",
      "b",
      "d",
      "f",
      "g",
      "h",
      "k",
      "l",
      "m",
      "n",
      "p",
      "r",
      "s",
      "t",
      "w",
      "z",
      "sch",
      "st",
      "br",
      "kr",
      "pf",
    ],
    ["a", "e", "i", "o", "u", "ä", "ö", "ü", "ei", "au", "ie", "eu"],
    ["", "", "n", "r", "s", "t", "ng", "ch", "ß", "tz", "nd", "ck"],
  ),
}


def pseudo_words(language: str, count: int, rng: np.random.Generator) -> list[str]:
  """`count` distinct pseudo-words, shortest first (the frequent ranks of a Zipfian law)."""
  onsets, vowels, codas = _SYLLABLES[language]
  words, seen = [], set()
  while len(words) < count:
    batch = 4 * (count - len(words))
    syllables = np.minimum(rng.geometric(0.45, batch), 6)
    parts = [rng.integers(0, len(p), (batch, 6)) for p in (onsets, vowels, codas)]
    for k in range(batch):
      word = "".join(
        onsets[parts[0][k, j]] + vowels[parts[1][k, j]] + codas[parts[2][k, j]]
        for j in range(syllables[k])
      )
      if word not in seen:
        seen.add(word)
        words.append(word)
  words = words[:count]
  return sorted(words, key=len)


def _sentences(
  lengths: np.ndarray,
  words: list[str],
  cdf: np.ndarray,
  rng: np.random.Generator,
  numbers: list[list[str]],
) -> list[str]:
  """Sentences of the given word counts: Zipfian words, a comma now and then, the numbers of
  each pair in place of some words, capitalised, ending in a full stop or a question mark."""
  ids = np.searchsorted(cdf, rng.random(int(lengths.sum())))
  tokens = [words[i] for i in ids.tolist()]
  commas = rng.random(len(tokens)) < 0.06
  for k in np.flatnonzero(commas).tolist():
    tokens[k] += ","
  ends = np.cumsum(lengths)
  out = []
  for k, end in enumerate(ends.tolist()):
    sentence = tokens[end - int(lengths[k]) : end]
    for position, number in zip(range(1, len(sentence), 7), numbers[k]):
      sentence[position] = number
    text = " ".join(sentence).rstrip(",")
    out.append(text[:1].upper() + text[1:] + ("?" if k % 17 == 0 else "."))
  return out


def generate(
  folder: pathlib.Path,
  num_pairs: int,
  seed: int,
  *,
  words: int = WORDS,
  eval_pairs: Optional[dict[str, int]] = None,
) -> dict[str, int]:
  """Writes the corpus (see the module docstring); returns the pairs of each split."""
  rng = np.random.default_rng(seed)
  folder.mkdir(parents=True, exist_ok=True)
  vocab = {lang: pseudo_words(lang, words, rng) for lang in ("en", "de")}
  weights = 1.0 / np.arange(1, words + 1)
  cdf = np.cumsum(weights) / weights.sum()
  sigma = 0.65
  mu = np.log(25.0) - sigma**2 / 2
  sizes = {"train": num_pairs, **(EVAL_PAIRS if eval_pairs is None else eval_pairs)}
  for split, pairs in sizes.items():
    files = {
      lang: open(folder / f"{split}.{lang}", "w", encoding="utf-8", newline="\n")
      for lang in ("en", "de")
    }
    with files["en"], files["de"]:
      for start in range(0, pairs, _CHUNK):
        n = min(_CHUNK, pairs - start)
        en = np.clip(np.rint(rng.lognormal(mu, sigma, n)), 1, 400).astype(np.int64)
        de = np.clip(np.rint(en * rng.lognormal(np.log(0.95), 0.15, n)), 1, 400).astype(np.int64)
        numbers = [[str(x) for x in rng.integers(1, 2000, rng.poisson(0.3))] for _ in range(n)]
        for lang, lengths in (("en", en), ("de", de)):
          lines = _sentences(lengths, vocab[lang], cdf, rng, numbers)
          files[lang].write("\n".join(lines) + "\n")
  return sizes


# ------------------------------------------------------------------------------------------
# Measuring stages inside a child process.


class Meter:
  """Wall time and peak resident memory per named stage: `stage(name)` switches the stage;
  time and the peak go to the stage that was running."""

  def __init__(self):
    self.seconds = collections.defaultdict(float)
    self.peak = collections.defaultdict(int)
    self.order: list[str] = []
    self.resettable = self._reset_peak()
    self.current, self.since = "other", time.perf_counter()

  @staticmethod
  def _reset_peak() -> bool:
    try:
      with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
      return True
    except OSError:
      return False

  @staticmethod
  def _peak_bytes() -> int:
    try:
      with open("/proc/self/status") as f:
        for line in f:
          if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    except OSError:
      pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB

  def stage(self, name: str) -> str:
    """Ends the running stage, starts `name`; returns the stage that was running."""
    now, previous = time.perf_counter(), self.current
    self.seconds[previous] += now - self.since
    self.peak[previous] = max(self.peak[previous], self._peak_bytes())
    if previous not in self.order:
      self.order.append(previous)
    if self.resettable:
      self._reset_peak()
    self.current, self.since = name, time.perf_counter()
    return previous

  def wrap(self, owner, attribute: str, name: str) -> None:
    """Counts every call of `owner.attribute` as stage `name` (calls inside it included)."""
    original = getattr(owner, attribute)

    @functools.wraps(original)
    def measured(*args, **kwargs):
      previous = self.stage(name)
      try:
        return original(*args, **kwargs)
      finally:
        self.stage(previous)

    setattr(owner, attribute, measured)

  def figures(self) -> list[dict]:
    self.stage(self.current)
    return [
      {"stage": name, "seconds": self.seconds[name], "peak_bytes": self.peak[name]}
      for name in self.order
      if self.seconds[name] > 0.0005 or name != "other"
    ]


def _instrument(meter: Meter) -> None:
  """Measures the input side's steps where they are called (see the module docstring)."""
  import sentencepiece as spm  # Not at the top: its import is timed (the imports stage).

  from wt.data import batching, pipeline, wmt14  # Timed too (the imports stage).

  for owner, attribute, name in [
    (wmt14.LocalSource, "open", "hash the training files"),
    (wmt14.LocalSource, "read", "read a split"),
    (pipeline, "_vocabulary_sample", "sample the vocabulary's sentences"),
    (spm.SentencePieceTrainer, "train", "train SentencePiece"),
    (pipeline, "_tokenize", "tokenise"),
    (pipeline, "publish", "save the token arrays"),
    (batching, "choose_bucket_lengths", "choose the buckets"),
    (batching, "assign_buckets", "assign buckets"),
    (batching, "TrainPlan", "plan the epochs"),
  ]:
    meter.wrap(owner, attribute, name)


def _data_config(corpus: pathlib.Path, cache: pathlib.Path, vocab_size: int, spm_sentences):
  from experiments.configs import wmt14 as wmt14_config  # Imports JAX: kept out of generate's peak.

  config = wmt14_config.get_config("base").data
  config.update(dict(data_dir=str(corpus), cache_dir=str(cache), vocab_size=vocab_size))
  if spm_sentences:
    config.spm_max_sentences = spm_sentences
  return config


def run_child(stage: str, workdir: pathlib.Path) -> dict:
  """One stage in this process (the parent starts it as a child); its figures."""
  meter = Meter()
  corpus, cache = workdir / "corpus", workdir / "cache"
  if stage == "generate":
    meter.stage("generate the corpus")
    sizes = generate(corpus, FLAGS.num_pairs, FLAGS.seed)
    meter.stage("other")
    return {
      "stages": meter.figures(),
      "sizes": sizes,
      "bytes": sum(p.stat().st_size for p in corpus.iterdir()),
    }
  meter.stage("imports (TensorFlow, SentencePiece)")
  _instrument(meter)
  # Not at the top: its import is timed (the imports stage).
  from wt.data import load_translation_data, multi30k  # noqa: F401  (multi30k: TensorFlow)

  meter.stage("other")
  data_config = _data_config(corpus, cache, FLAGS.vocab_size, FLAGS.spm_max_sentences)
  data = load_translation_data(data_config, row_multiple=8)
  meter.stage("100 training batches")
  batches = data.train_batches(0)
  padded = [next(batches) for _ in range(100)]
  meter.stage("every validation batch")
  validation = list(data.eval_batches("validation"))
  meter.stage("other")
  real = sum(int((b["inputs"] > 0).sum() + (b["targets"] > 0).sum()) for b in padded)
  slots = sum(b["inputs"].size + b["targets"].size for b in padded)
  return {
    "stages": meter.figures(),
    "batch_shapes": data.batch_shapes,
    "batches_per_epoch": data.batches_per_epoch,
    "padding_efficiency": real / slots,
    "validation_batches": len(validation),
    "vocab_size": data.tokenizer.vocab_size,
    "train_pairs_kept": data.num_examples("train"),
  }


# ------------------------------------------------------------------------------------------
# The parent: children, table.


def _child(stage: str) -> tuple[dict, float]:
  """Runs `stage` in a child process: (its figures, its wall seconds)."""
  command = [
    sys.executable,
    "-m",
    "experiments.wmt14_scale",
    f"--child={stage}",
    f"--workdir={FLAGS.workdir}",
    f"--num_pairs={FLAGS.num_pairs}",
    f"--vocab_size={FLAGS.vocab_size}",
    f"--seed={FLAGS.seed}",
  ]
  if FLAGS.spm_max_sentences:
    command.append(f"--spm_max_sentences={FLAGS.spm_max_sentences}")
  start = time.perf_counter()
  done = subprocess.run(
    command, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
  )
  if done.returncode:
    raise SystemExit(f"the {stage} stage failed:\n{done.stderr[-4000:]}")
  return json.loads(done.stdout.strip().splitlines()[-1]), time.perf_counter() - start


def report(results: dict, command: str) -> str:
  """The markdown section: command, per-stage table, summary."""
  lines = [
    f"    {command}",
    "",
    f"{results['num_pairs']:,} training pairs ({results['corpus_bytes'] / 2**20:,.0f} MiB "
    f"of text), vocabulary {results['vocab_size']:,}, "
    f"{results['spm_max_sentences']:,} sentences sampled to train it; "
    f"{results['cpus']} CPU cores.",
    "",
    "| run | stage | seconds | peak memory GiB |",
    "|---|---|---|---|",
  ]
  for run in ("generate", "cold", "warm"):
    for row in results[run]["stages"]:
      lines.append(
        f"| {run} | {row['stage']} | {row['seconds']:.1f} | {row['peak_bytes'] / _GIB:.2f} |"
      )
    lines.append(
      f"| {run} | **all (wall, peak)** | **{results[run]['wall_seconds']:.1f}** | "
      f"**{max(r['peak_bytes'] for r in results[run]['stages']) / _GIB:.2f}** |"
    )
  cold = results["cold"]
  lines += [
    "",
    f"Batches: {cold['batches_per_epoch']:,} per epoch in "
    f"{len(cold['batch_shapes'])} shapes (global rows, source, target) "
    f"{cold['batch_shapes'][:3]} ... {cold['batch_shapes'][-1:]}; padding efficiency "
    f"of the first 100: {cold['padding_efficiency']:.2f}; {cold['train_pairs_kept']:,} "
    f"pairs kept (at most data.max_length tokens a side). A stage's peak is the "
    f"process's peak resident memory while it ran; reading and tokenising the "
    f"validation split count in their own rows.",
  ]
  if not results["per_stage_peaks"]:
    lines.append(
      f"No /proc/self/clear_refs here: each peak is the process's peak so far; all "
      f"children: {results['children_peak_bytes'] / _GIB:.2f} GiB (getrusage "
      f"RUSAGE_CHILDREN)."
    )
  return "\n".join(lines)


def main(argv):
  del argv
  if not FLAGS.workdir:
    raise SystemExit("--workdir is required: the corpus and the cache go there")
  workdir = pathlib.Path(FLAGS.workdir).expanduser()
  if FLAGS.child:
    print(json.dumps(run_child(FLAGS.child, workdir)))
    return
  if (workdir / "cache").exists():
    raise SystemExit(
      f"{workdir / 'cache'} exists: the cold stage needs a fresh cache; use "
      f"another --workdir or delete it"
    )
  results = {
    "num_pairs": FLAGS.num_pairs,
    "cpus": os.cpu_count(),
    "per_stage_peaks": Meter._reset_peak(),
  }  # pylint: disable=protected-access
  for stage in ("generate", "cold", "warm"):
    figures, wall = _child(stage)
    results[stage] = {**figures, "wall_seconds": wall}
    print(f"{stage}: {wall:.1f} s", file=sys.stderr)
  results["corpus_bytes"] = results["generate"]["bytes"]
  results["vocab_size"] = results["cold"]["vocab_size"]
  results["spm_max_sentences"] = min(
    _data_config(
      pathlib.Path("."), pathlib.Path("."), FLAGS.vocab_size, FLAGS.spm_max_sentences
    ).spm_max_sentences,
    2 * FLAGS.num_pairs,
  )
  results["children_peak_bytes"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
  command = (
    "python -m experiments.wmt14_scale --workdir DIR"
    + (f" --num_pairs {FLAGS.num_pairs}" if FLAGS.num_pairs != 4_500_000 else "")
    + (f" --vocab_size {FLAGS.vocab_size}" if FLAGS.vocab_size != 37000 else "")
  )
  text = report(results, command)
  print(text)
  if FLAGS.json:
    pathlib.Path(FLAGS.json).write_text(json.dumps(results, indent=1), encoding="utf-8")
  if FLAGS.write:
    from experiments import common  # Imports wt.data and SentencePiece, which the children time.

    common.replace_section(FLAGS.write, "wmt14_scale", text)


if __name__ == "__main__":
  define_flags()
  app.run(main)
