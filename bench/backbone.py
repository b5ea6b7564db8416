"""Train-step throughput of the Inception-ResNet: our jitted JAX step vs the same network in PyTorch.

  python -m bench.backbone                 # --mode=cpu: small config, ~1-2 minutes, prints ours/torch
  python -m bench.backbone --mode=gpu      # 299x299 bfloat16 batch 128, 1/1/1: images/s and MFU

One step = forward + backward + SGD-momentum update with BatchNorm in train mode. Each side runs in
its own subprocess, so each peak RSS (resource.getrusage maxrss) is its own.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

# Peak dense bfloat16 FLOP/s by jax device_kind (prefix match); override with --peak_flops.
PEAK_BF16_FLOPS = {"NVIDIA H100 PCIe": 756e12, "NVIDIA H100": 989e12, "NVIDIA H200": 989e12,
                   "NVIDIA GH200": 989e12, "NVIDIA A100": 312e12, "NVIDIA L4": 121e12,
                   "TPU v5 lite": 197e12, "TPU v4": 275e12}
MODES = {"cpu": dict(input_size=107, width=0.25, repeats=(1, 1, 1), batch=16, steps=10, warmup=2,
                     rounds=5,
                     dtype="float32"),
         "gpu": dict(input_size=299, width=1.0, repeats=(1, 1, 1), batch=128, steps=20, warmup=3,
                     rounds=3,
                     dtype="bfloat16")}
# XLA CPU: hand only reductions to YNNPACK (experimental in jax 0.10), not convolutions: its
# convolutions are slower than XLA's own (Eigen) on this network, ~15% of the step on 2 cores. The
# trainer can get the same per executable with jax.jit(..., compiler_options=
# {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_REDUCE"}).
YNN_FLAGS = "--xla_cpu_experimental_ynn_fusion_type=reduce"
NUM_CLASSES = 7
FC1_WIDTH = 1024


def _peak_rss_mb():
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB.


def run_jax(a):
  """Times fer_jax.train's own jitted train step (the trainer's Steps, optimizer and state)."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from configs import default  # pylint: disable=g-import-not-at-top
  from fer_jax import models  # pylint: disable=g-import-not-at-top
  from fer_jax import train  # pylint: disable=g-import-not-at-top

  config = default.get_base_config()
  config.model.update(input_size=a.input_size, width=a.width, repeats=a.repeats,
                      fc1_width=FC1_WIDTH, dropout=0.2, dtype=a.dtype)
  config.train.batch_size = a.batch
  model, steps, state = train.init_state(config, NUM_CLASSES)
  rng = np.random.default_rng(0)
  batch = steps.global_batch(
      {"image": rng.integers(0, 256, (a.batch, a.input_size, a.input_size, 3), dtype=np.uint8),
       "label": rng.integers(0, NUM_CLASSES, a.batch).astype(np.int32)}, ("image", "label"), "bench")
  t = time.perf_counter()
  compiled = steps.train.lower(state, batch).compile()
  compile_s = time.perf_counter() - t
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost.get("flops", 0.0)) if cost else 0.0
  for _ in range(a.warmup):
    state, metrics = compiled(state, batch)
  jax.block_until_ready(metrics)
  times = []
  for _ in range(a.rounds):
    t = time.perf_counter()
    for _ in range(a.steps):
      state, metrics = compiled(state, batch)
    jax.block_until_ready((state, metrics))
    times.append(time.perf_counter() - t)
  seconds = min(times)  # Best round: the machine may be shared.
  device = jax.devices()[0]
  out = dict(side="jax", images_per_s=a.batch * a.steps / seconds, step_s=seconds / a.steps,
             compile_s=compile_s, params=models.param_count(model), loss=float(metrics["loss"]),
             step_flops=flops, device=device.device_kind, peak_rss_mb=_peak_rss_mb())
  stats = getattr(device, "memory_stats", lambda: None)()
  if stats and "peak_bytes_in_use" in stats:
    out["device_peak_mb"] = stats["peak_bytes_in_use"] / 2**20
  return out


def run_torch(a):
  import torch  # pylint: disable=g-import-not-at-top
  from bench import torch_inception_resnet as tir  # pylint: disable=g-import-not-at-top

  torch.manual_seed(0)
  model = tir.InceptionResNet(NUM_CLASSES, width=a.width, repeats=a.repeats, fc1_width=FC1_WIDTH,
                              dropout=0.2)
  model.train()
  opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
  images = torch.empty(a.batch, 3, a.input_size, a.input_size).uniform_(-1, 1)
  if a.torch_channels_last:
    model = model.to(memory_format=torch.channels_last)
    images = images.contiguous(memory_format=torch.channels_last)
  labels = torch.randint(0, NUM_CLASSES, (a.batch,))

  def step():
    opt.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(model(images), labels)
    loss.backward()
    opt.step()
    return loss

  for _ in range(a.warmup):
    step()
  times = []
  for _ in range(a.rounds):
    t = time.perf_counter()
    for _ in range(a.steps):
      loss = step()
    times.append(time.perf_counter() - t)
  seconds = min(times)  # Best round: the machine may be shared.
  return dict(side="torch", images_per_s=a.batch * a.steps / seconds, step_s=seconds / a.steps,
              params=sum(p.numel() for p in model.parameters()), loss=float(loss.detach()),
              threads=torch.get_num_threads(), peak_rss_mb=_peak_rss_mb())


def _subprocess(side, argv, xla_flags=""):
  cmd = [sys.executable, "-m", "bench.backbone", f"--worker={side}"] + argv
  env = dict(os.environ)
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + xla_flags).strip()
  env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
  proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=root, check=False)
  if proc.returncode != 0:
    raise RuntimeError(f"{side} worker failed:\n{proc.stderr[-4000:]}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--mode", choices=sorted(MODES), default="cpu")
  p.add_argument("--input_size", type=int)
  p.add_argument("--width", type=float)
  p.add_argument("--repeats", type=lambda s: tuple(int(x) for x in s.split(",")), help="e.g. 1,1,1")
  p.add_argument("--batch", type=int)
  p.add_argument("--steps", type=int, help="timed steps (after --warmup steps)")
  p.add_argument("--warmup", type=int)
  p.add_argument("--rounds", type=int, help="timed rounds of --steps steps; the best is reported")
  p.add_argument("--xla_flags", default=None,
                 help=f"extra XLA_FLAGS for a second jax run (cpu mode default: {YNN_FLAGS})")
  p.add_argument("--dtype", choices=["float32", "bfloat16"])
  p.add_argument("--peak_flops", type=float, help="device peak FLOP/s for the MFU (gpu mode)")
  p.add_argument("--torch_channels_last", action="store_true", help="NHWC memory format in torch")
  p.add_argument("--worker", choices=["jax", "torch"], help=argparse.SUPPRESS)
  a = p.parse_args()
  for k, v in MODES[a.mode].items():
    if getattr(a, k) is None:
      setattr(a, k, v)
  if a.worker:
    print(json.dumps((run_jax if a.worker == "jax" else run_torch)(a)))
    return
  argv = [f"--mode={a.mode}", f"--input_size={a.input_size}", f"--width={a.width}",
          f"--repeats={','.join(map(str, a.repeats))}", f"--batch={a.batch}", f"--steps={a.steps}",
          f"--warmup={a.warmup}", f"--rounds={a.rounds}", f"--dtype={a.dtype}"]
  argv += ["--torch_channels_last"] if a.torch_channels_last else []
  print(f"config: mode={a.mode} input={a.input_size} width={a.width} repeats={a.repeats} "
        f"batch={a.batch} dtype={a.dtype}; best of {a.rounds} rounds of {a.steps} steps "
        f"(+{a.warmup} warm-up)", flush=True)
  ours = _subprocess("jax", argv)
  _print_jax("jax", ours)
  if a.mode == "gpu":
    peak = a.peak_flops or next((v for k, v in PEAK_BF16_FLOPS.items()
                                 if ours["device"].startswith(k)), None)
    achieved = ours["step_flops"] / ours["step_s"]
    mfu = f"{achieved / peak:.1%} of {peak:.3g}" if peak else "unknown peak: pass --peak_flops"
    print(f"step FLOPs {ours['step_flops']:.4g} (XLA cost_analysis), achieved "
          f"{achieved / 1e12:.1f} TFLOP/s, MFU {mfu}; device peak memory "
          f"{ours.get('device_peak_mb', float('nan')):.0f} MB")
    return
  flags = YNN_FLAGS if a.xla_flags is None else a.xla_flags
  tuned = _subprocess("jax", argv, flags) if flags else None
  if tuned:
    _print_jax("jax+flags", tuned)
    print(f"  (jax+flags: XLA_FLAGS={flags})")
  theirs = _subprocess("torch", argv)
  print(f"torch:     {theirs['images_per_s']:8.2f} images/s  step {theirs['step_s'] * 1e3:7.1f} ms  "
        f"peak RSS {theirs['peak_rss_mb']:.0f} MB  params {theirs['params']:,}  "
        f"({theirs['threads']} threads{', channels_last' if a.torch_channels_last else ''})")
  if ours["params"] != theirs["params"]:
    raise AssertionError(f"parameter counts differ: jax {ours['params']} torch {theirs['params']}")
  for name, result in (("jax", ours), ("jax+flags", tuned)):
    if result:
      print(f"ratio ours/torch images/s ({name}): "
            f"{result['images_per_s'] / theirs['images_per_s']:.2f}x")


def _print_jax(name, r):
  print(f"{name + ':':10s} {r['images_per_s']:8.2f} images/s  step {r['step_s'] * 1e3:7.1f} ms  "
        f"compile {r['compile_s']:.1f} s  peak RSS {r['peak_rss_mb']:.0f} MB  params "
        f"{r['params']:,}  ({r['device']})", flush=True)


if __name__ == "__main__":
  main()
