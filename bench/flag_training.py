"""Does an XLA flag change what training reaches? Two measurements, each setting in its own process.

  python -m bench.flag_training                    # fer_jax's CPU flag vs XLA's default, seeds 0-3
  python -m bench.flag_training --fold=0 --seeds=0,1  # another fold, two seeds
  python -m bench.flag_training --mode=divergence  # each setting's trajectory vs float64

--mode=training (default): for each training seed s, configs/demo.py's stage-1 CNN of fold --fold
(the demo's splits; the trainer's batches and dropout from seed config.seed + 1000 * fold + s),
trained once with --flags and once with --off_flags in XLA_FLAGS (XLA reads XLA_FLAGS at backend
init; fer_jax adds its own flag only when XLA_FLAGS does not name it: pass fer_jax.YNN_DEFAULT, not
'', for XLA's default), then the best-validation checkpoint's test frame accuracy. Prints each pair
and the mean difference. About 3 CPU-minutes per training on 2 cores (8 trainings by default).
2,000 SGD steps amplify any change of summation order, so compare several seeds, never one.

--mode=divergence: the demo's network (dropout 0) from the same float32 initial weights, --steps SGD
steps (momentum 0.9, learning rate 0.01) on fixed random batches of the demo's size, once in float64
(jax x64) and once in float32 per setting (--flags, --off_flags, --more_flags); prints, at steps 1
to --steps, each float32 run's relative parameter distance to the float64 run and its loss. A
setting that computes worse than another drifts from float64 sooner; settings that only sum in
another order drift alike (tests/test_numerics.py checks one step against float64). About 3 CPU-minutes.
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


def trajectory(steps: int, dtype: str, out_path: str):
  """Worker: --mode=divergence's run; parameters (float64) and loss at CHECKPOINTS -> out_path."""
  import jax  # pylint: disable=g-import-not-at-top
  if dtype == "float64":
    jax.config.update("jax_enable_x64", True)
  from flax import nnx  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from configs import demo  # pylint: disable=g-import-not-at-top
  from fer_jax import models  # pylint: disable=g-import-not-at-top

  config = demo.get_config()
  model_config = config.model.copy_and_resolve_references()
  model_config.unlock()
  model_config.update(dropout=0.0, dtype="float32")
  classes, batch, side = 7, config.train.batch_size, config.model.input_size
  weights = nnx.state(models.create_model(model_config, classes, nnx.Rngs(0)))  # float32 init.
  model_config.dtype = dtype
  graphdef = nnx.graphdef(nnx.eval_shape(lambda: models.create_model(model_config, classes,
                                                                     nnx.Rngs(0))))
  weights = jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x,
                         weights)
  graphdef, params, stats, rest = nnx.split(nnx.merge(graphdef, weights), nnx.Param,
                                            nnx.BatchStat, ...)
  params, stats = nnx.to_pure_dict(params), nnx.to_pure_dict(stats)
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (16, batch, side, side, 3), dtype=np.uint8) / 127.5 - 1.0  # Exact.
  labels = rng.integers(0, classes, (16, batch))
  tx = optax.sgd(0.01, momentum=0.9)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, stats, opt_state, x, y):
    def loss_fn(p):
      m = nnx.merge(graphdef, nnx.State(p), nnx.State(stats), rest)
      logits = m(x.astype(dtype), train=True)["logits"]
      return (optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(),
              nnx.to_pure_dict(nnx.state(m, nnx.BatchStat)))
    (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), stats, opt_state, loss

  out = {}
  for t in range(1, steps + 1):
    params, stats, opt_state, loss = step(params, stats, opt_state, images[t % 16], labels[t % 16])
    if t in CHECKPOINTS or t == steps:
      out[f"params/{t}"] = np.concatenate([np.asarray(x, np.float64).ravel()
                                           for x in jax.tree.leaves(params)])
      out[f"loss/{t}"] = np.float64(loss)
  np.savez(out_path, **out)


CHECKPOINTS = (1, 2, 5, 10, 25, 50, 100, 200, 300, 500, 1000)


def _worker(args: list[str], xla_flags: str):
  env = dict(os.environ, XLA_FLAGS=xla_flags, JAX_PLATFORMS="cpu",
             PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  out = subprocess.run([sys.executable, "-m", "bench.flag_training", "--worker"] + args, env=env,
                       cwd=ROOT, capture_output=True, text=True, check=False)
  if out.returncode:
    raise RuntimeError(f"worker {args} with XLA_FLAGS={xla_flags!r} failed:\n{out.stderr[-3000:]}")
  return out.stdout


def divergence(a):
  import numpy as np  # pylint: disable=g-import-not-at-top
  settings = [a.flags, a.off_flags] + [f for f in a.more_flags.split(";") if f]
  with tempfile.TemporaryDirectory() as tmp:
    runs = {}
    for i, (dtype, flags) in enumerate([("float64", a.flags)] + [("float32", f) for f in settings]):
      path = os.path.join(tmp, f"{i}.npz")
      _worker(["trajectory", str(a.steps), dtype, path], flags)
      with np.load(path) as f:
        runs["float64" if dtype == "float64" else flags] = dict(f)
  ref = runs.pop("float64")
  steps = sorted(int(k.split("/")[1]) for k in ref if k.startswith("params/"))
  print(f"relative parameter distance of each float32 run to the float64 run, and its loss "
        f"(float64: {ref[f'loss/{steps[-1]}']:.3f} at step {steps[-1]}); the demo's network, "
        "dropout 0")
  names = "ABCDEFGH"[:len(settings)]
  for name, flags in zip(names, settings):
    print(f"  {name}: XLA_FLAGS={flags}")
  print("step " + "".join(f"{n:>22s}" for n in names))
  for t in steps:
    r = ref[f"params/{t}"]
    print(f"{t:4d} " + "".join(
        f"{np.linalg.norm(runs[s][f'params/{t}'] - r) / np.linalg.norm(r):9.1e} (loss "
        f"{float(runs[s][f'loss/{t}']):.3f})" for s in settings), flush=True)


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--mode", choices=["training", "divergence"], default="training")
  p.add_argument("--flags", default=fer_jax.CPU_XLA_FLAG)
  p.add_argument("--off_flags", default=fer_jax.YNN_DEFAULT,
                 help="XLA_FLAGS of the other side (default: XLA's default set, named)")
  p.add_argument("--more_flags", default=f"{fer_jax.YNN_REDUCE};{fer_jax.YNN_NO_REDUCE}",
                 help="divergence: more settings, ';'-separated")
  p.add_argument("--fold", type=int, default=1)
  p.add_argument("--seeds", default="0,1,2,3")
  p.add_argument("--steps", type=int, default=300, help="divergence: SGD steps")
  p.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
  a = p.parse_args()
  if a.worker:
    if a.worker[0] == "trajectory":
      trajectory(int(a.worker[1]), a.worker[2], a.worker[3])
    else:
      train_one(int(a.worker[0]), int(a.worker[1]), a.worker[2])
    return
  if a.mode == "divergence":
    divergence(a)
    return
  diffs = []
  with tempfile.TemporaryDirectory() as tmp:
    for seed in (int(s) for s in a.seeds.split(",")):
      acc = {name: json.loads(_worker([str(a.fold), str(seed), os.path.join(tmp, f"{name}_{seed}")],
                                      flags).strip().splitlines()[-1])["test_accuracy"]
             for name, flags in (("on", a.flags), ("off", a.off_flags))}
      diffs.append(acc["on"] - acc["off"])
      print(f"fold {a.fold} seed {seed}: test frame accuracy {100 * acc['on']:.2f} % with "
            f"{a.flags}, {100 * acc['off']:.2f} % with {a.off_flags}", flush=True)
  print(f"mean difference (with - without) over {len(diffs)} seeds: "
        f"{100 * sum(diffs) / len(diffs):+.2f} points; with better in "
        f"{sum(d > 0 for d in diffs)}, worse in {sum(d < 0 for d in diffs)}")


if __name__ == "__main__":
  main()
