"""Does an XLA flag change what training reaches? Stage 1 of the demo, paired with and without it.

  python -m bench.flag_training                      # =reduce vs XLA's default, fold 1, seeds 0-3
  python -m bench.flag_training --fold=0 --seeds=0,1 --flags=--xla_cpu_experimental_ynn_fusion_type=reduce

For each training seed s: configs/demo.py's stage-1 CNN of fold --fold (the demo's splits; the
trainer's batches and dropout from seed config.seed + 1000 * fold + s), trained once with --flags
and once with --off_flags in XLA_FLAGS, each in its own process (XLA reads XLA_FLAGS at backend
init), then the best-validation checkpoint's test frame accuracy. Prints each pair and the mean
difference. One-step numerics cannot show this (tests/test_numerics.py does that); 2,000 SGD steps
amplify any change of summation order, so compare several seeds, never one. About 3 CPU-minutes per
training on 2 cores (8 trainings by default).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import fer_jax

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def train_one(fold: int, seed: int, workdir: str):
  """Worker: trains the demo's fold-`fold` CNN with training seed `seed`; prints a JSON line."""
  from configs import demo  # pylint: disable=g-import-not-at-top
  from fer_jax import evaluate  # pylint: disable=g-import-not-at-top
  from fer_jax import experiment  # pylint: disable=g-import-not-at-top
  config = demo.get_config()
  seqs, folds, _, _ = experiment.load_data(config)
  f = folds[fold]
  t = time.perf_counter()
  model = experiment.train_cnn(config, workdir, seqs.subset(f.train), seqs.subset(f.val),
                               len(seqs.class_names), config.seed + 1000 * fold + seed)
  outs, tags, mask = experiment.model_outputs(model, config, seqs.subset(f.test))
  acc = evaluate.frame_metrics(evaluate.masked_frames(outs["logits"].argmax(-1), mask),
                               evaluate.masked_frames(tags, mask), len(seqs.class_names))["accuracy"]
  print(json.dumps({"test_accuracy": acc, "seconds": time.perf_counter() - t}), flush=True)


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--flags", default=fer_jax.YNN_REDUCE)
  p.add_argument("--off_flags", default="", help="XLA_FLAGS of the other side ('': XLA's default)")
  p.add_argument("--fold", type=int, default=1)
  p.add_argument("--seeds", default="0,1,2,3")
  p.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
  a = p.parse_args()
  if a.worker:
    train_one(int(a.worker[0]), int(a.worker[1]), a.worker[2])
    return
  diffs = []
  with tempfile.TemporaryDirectory() as tmp:
    for seed in (int(s) for s in a.seeds.split(",")):
      acc = {}
      for name, flags in (("on", a.flags), ("off", a.off_flags)):
        env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu",
                   PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        out = subprocess.run([sys.executable, "-m", "bench.flag_training", "--worker", str(a.fold),
                              str(seed), os.path.join(tmp, f"{name}_{seed}")], env=env, cwd=ROOT,
                             capture_output=True, text=True, check=True)
        acc[name] = json.loads(out.stdout.strip().splitlines()[-1])["test_accuracy"]
      diffs.append(acc["on"] - acc["off"])
      print(f"fold {a.fold} seed {seed}: test frame accuracy {100 * acc['on']:.2f} % with "
            f"{a.flags}, {100 * acc['off']:.2f} % with {a.off_flags or '(none)'}", flush=True)
  print(f"mean difference (with - without) over {len(diffs)} seeds: "
        f"{100 * sum(diffs) / len(diffs):+.2f} points; with better in "
        f"{sum(d > 0 for d in diffs)}, worse in {sum(d < 0 for d in diffs)}")


if __name__ == "__main__":
  main()
