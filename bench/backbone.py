"""Train-step throughput of the Inception-ResNet: our jitted JAX step vs the same network in PyTorch.

  python -m bench.backbone                 # --mode=cpu: input 107, width 0.25; prints ours/torch
  python -m bench.backbone --input_size=75 --width=0.125 --batch=32   # the demo's network
  python -m bench.backbone --glibc_malloc  # + both sides under glibc's default malloc settings
  python -m bench.backbone --mode=gpu      # 299x299 bfloat16 batch 128, 1/1/1: images/s and MFU
  python -m bench.backbone --mode=gpu --max_batch   # + the largest batch that fits, and its images/s

One step = forward + backward + SGD-momentum update with BatchNorm in train mode. Each side is its
own long-lived worker process (its peak RSS is its own) that compiles and warms up, then times one
round of --steps steps whenever the parent asks. The parent interleaves the sides round by round
(A B C, C B A, ...), never two at once, and reports per side the median images/s with its min-max
spread, and the median over rounds of the per-round ratio ours/torch: on a shared machine the load
drifts, and rounds timed back to back see about the same load. CPU time per step (all threads)
is printed beside: on an oversubscribed machine PyTorch's OpenMP threads spin at barriers, so its
wall time collapses first. Both sides run --threads threads
(XLA's CPU thread pool is sized by the CPUs the process may use: set by sched_setaffinity; torch:
set_num_threads) and flush denormals (XLA CPU does by default; torch.set_flush_denormal). Both sides
import fer_jax, so both run under its glibc malloc settings (fer_jax/malloc_settings.py: freed
buffers are reused, not unmapped and faulted in again every step); --glibc_malloc adds a jax and a
torch side with glibc's own settings, each jax side's ratio taken against the torch side under the
same malloc.

--mode=gpu: the same step on one GPU in bfloat16 (ours: model.dtype bfloat16, float32 parameters;
PyTorch: autocast to bfloat16, channels_last, cudnn.benchmark), both sides timed the same way (the
round ends when the device is done). --max_batch then estimates the largest batch from our side's
peak device memory (peak = state + batch x per-image activations, fitted at --batch) and runs a
jax worker at 95 % of that estimate, then smaller (x0.8) until one runs: the largest batch that ran
and its images/s are printed.
"""
import argparse
import collections
import glob
import gzip
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time

import fer_jax
from fer_jax import malloc_settings

# Peak dense bfloat16 FLOP/s by jax device_kind (prefix match); override with --peak_flops.
PEAK_BF16_FLOPS = {"NVIDIA H100 PCIe": 756e12, "NVIDIA H100": 989e12, "NVIDIA H200": 989e12,
                   "NVIDIA GH200": 989e12, "NVIDIA A100": 312e12, "NVIDIA L4": 121e12,
                   "TPU v5 lite": 197e12, "TPU v4": 275e12}
MODES = {"cpu": dict(input_size=107, width=0.25, repeats=(1, 1, 1), batch=16, steps=5, warmup=2,
                     rounds=9, dtype="float32", threads=2),
         "gpu": dict(input_size=299, width=1.0, repeats=(1, 1, 1), batch=128, steps=20, warmup=3,
                     rounds=3, dtype="bfloat16", threads=0)}
# Our side runs with the XLA CPU flag fer_jax sets at import (fer_jax/__init__.py); by default a
# second jax side of the cpu mode runs with XLA's default (YNNPACK convolutions too), for comparison.
COMPARE_FLAGS = fer_jax.YNN_DEFAULT
NUM_CLASSES = 7
FC1_WIDTH = 1024


def _peak_rss_mb():
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB.


def _limit_cpus(threads):
  cpus = sorted(os.sched_getaffinity(0))
  if threads and threads < len(cpus):
    os.sched_setaffinity(0, cpus[:threads])
  return len(os.sched_getaffinity(0))


def _op_kind(name):
  name = re.sub(r"\.\d+$", "", name)
  for pattern, kind in ((r"^(convolution|conv_general|dot)", "conv / dot (Eigen)"),
                        (r"^ynn_fusion", "YNNPACK fusions (reductions)"),
                        (r"transpose|^copy", "transpose / copy"), (r"concatenate", "concatenate"),
                        (r"select|pad|slice", "max pool / select / pad / slice"),
                        (r"reduce", "XLA reductions")):
    if re.search(pattern, name):
      return kind
  return "other elementwise fusions"


def _print_profile(trace_dir):
  """Per-op totals (XLA CPU thunks, summed over threads) of the perfetto trace, to stderr."""
  path = sorted(glob.glob(os.path.join(trace_dir, "plugins/profile/*/perfetto_trace.json.gz")))[-1]
  with gzip.open(path) as f:
    events = json.load(f)
  events = events["traceEvents"] if isinstance(events, dict) else events
  skip = re.compile(r"^\$|ThunkExecutor|PjitFunction|PjRt|block_until|stop_trace|ExecuteHelper")
  ops, kinds = collections.Counter(), collections.Counter()
  for e in events:
    if e.get("ph") == "X" and not skip.search(e["name"]):
      ops[e["name"]] += e["dur"]
      kinds[_op_kind(e["name"])] += e["dur"]
  total = sum(ops.values())
  lines = [f"profile {path}: XLA thunks {total / 1e3:.1f} ms (summed over threads)"]
  lines += [f"  {k:32s} {v / total:6.1%}" for k, v in kinds.most_common()]
  lines += [f"  top op {k:40s} {v / total:6.1%}" for k, v in ops.most_common(10)]
  print("\n".join(lines), file=sys.stderr, flush=True)


def _serve(a, step, info):
  """Worker loop: prints `info` (ready), then times one round of a.steps steps per "run" line."""
  print(json.dumps(info), flush=True)
  for line in sys.stdin:
    if line.strip() != "run":
      break
    t, cpu = time.perf_counter(), time.process_time()
    step(a.steps)
    print(json.dumps({"seconds": time.perf_counter() - t, "cpu_seconds": time.process_time() - cpu}),
          flush=True)
  print(json.dumps({"peak_rss_mb": _peak_rss_mb()}), flush=True)


def run_jax(a):
  """Times fer_jax.train's own jitted train step (the trainer's Steps, optimizer and state)."""
  cpus = _limit_cpus(a.threads)  # Before JAX creates its CPU client (thread pool).
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
  lowered = steps.train.lower(state, batch)
  compiled = lowered.compile()
  compile_s = time.perf_counter() - t
  # FLOPs of the lowered (device-independent) step: a compiled GPU module hides its convolutions in
  # cuDNN custom calls, which XLA's cost analysis does not count.
  cost = lowered.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost.get("flops", 0.0)) if cost else 0.0
  box = {"state": state}

  def step(n):
    for _ in range(n):
      box["state"], metrics = compiled(box["state"], batch)
    jax.block_until_ready((box["state"], metrics))
    box["loss"] = float(metrics["loss"])

  step(a.warmup)
  if a.profile:
    jax.profiler.start_trace(a.profile, create_perfetto_trace=True)
    step(a.steps)
    jax.profiler.stop_trace()
    _print_profile(a.profile)
  device = jax.devices()[0]
  info = dict(compile_s=compile_s, params=models.param_count(model), step_flops=flops,
              device=device.device_kind, cpus=cpus, xla_flags=os.environ.get("XLA_FLAGS", ""))
  stats = getattr(device, "memory_stats", lambda: None)()
  if stats and "peak_bytes_in_use" in stats:
    info["device_peak_mb"] = stats["peak_bytes_in_use"] / 2**20
    info["device_limit_mb"] = stats.get("bytes_limit", 0) / 2**20
    info["state_mb"] = sum(x.nbytes for x in jax.tree.leaves(box["state"])) / 2**20
  _serve(a, step, info)


def run_torch(a):
  cpus = _limit_cpus(a.threads)
  import torch  # pylint: disable=g-import-not-at-top
  from bench import torch_inception_resnet as tir  # pylint: disable=g-import-not-at-top

  torch.set_num_threads(a.threads or cpus)
  torch.set_flush_denormal(True)
  torch.manual_seed(0)
  model = tir.InceptionResNet(NUM_CLASSES, width=a.width, repeats=a.repeats, fc1_width=FC1_WIDTH,
                              dropout=0.2)
  gpu = a.mode == "gpu"
  device = torch.device("cuda" if gpu else "cpu")
  if gpu:
    torch.backends.cudnn.benchmark = True
  model = model.to(device)
  model.train()
  opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
  images = torch.empty(a.batch, 3, a.input_size, a.input_size, device=device).uniform_(-1, 1)
  if a.torch_channels_last or gpu:
    model = model.to(memory_format=torch.channels_last)
    images = images.contiguous(memory_format=torch.channels_last)
  labels = torch.randint(0, NUM_CLASSES, (a.batch,), device=device)
  dtype = torch.bfloat16 if a.dtype == "bfloat16" else torch.float32

  def step(n):
    for _ in range(n):
      opt.zero_grad(set_to_none=True)
      with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        loss = torch.nn.functional.cross_entropy(model(images), labels)
      loss.backward()
      opt.step()
    if gpu:
      torch.cuda.synchronize()

  step(a.warmup)
  info = dict(params=sum(p.numel() for p in model.parameters()), cpus=cpus,
              threads=torch.get_num_threads(), version=torch.__version__)
  if gpu:
    info["device_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
  _serve(a, step, info)


class _Worker:
  """A side in its own process: ready info, then one timed round per run()."""

  def __init__(self, name, side, argv, xla_flags=None, omp_passive=False, glibc_malloc=False):
    self.name, self.side, self.seconds, self.cpu_seconds = name, side, [], []
    self.glibc_malloc = glibc_malloc
    env = dict(os.environ)
    if glibc_malloc:  # fer_jax's import leaves glibc's malloc settings as they are.
      env[malloc_settings.OPT_OUT] = "0"
    if omp_passive:  # OpenMP threads sleep at barriers instead of spinning.
      env["OMP_WAIT_POLICY"] = "PASSIVE"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if xla_flags is not None:  # Replaces any setting of the same flags (e.g. fer_jax's own).
      names = {f.split("=")[0] for f in xla_flags.split()}
      kept = [f for f in env.get("XLA_FLAGS", "").split() if f.split("=")[0] not in names]
      env["XLA_FLAGS"] = " ".join(kept + [xla_flags])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    self.proc = subprocess.Popen([sys.executable, "-m", "bench.backbone", f"--worker={side}"] + argv,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                                 cwd=root)
    self.info = self._read()

  def _read(self):
    line = self.proc.stdout.readline()
    if not line:
      raise RuntimeError(f"{self.name} worker failed (exit {self.proc.wait()}); see stderr above.")
    return json.loads(line)

  def run(self):
    self.proc.stdin.write("run\n")
    self.proc.stdin.flush()
    r = self._read()
    self.seconds.append(r["seconds"])
    self.cpu_seconds.append(r["cpu_seconds"])

  def stop(self):
    self.proc.stdin.write("stop\n")
    self.proc.stdin.flush()
    self.info.update(self._read())
    self.proc.wait()


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--mode", choices=sorted(MODES), default="cpu")
  p.add_argument("--input_size", type=int)
  p.add_argument("--width", type=float)
  p.add_argument("--repeats", type=lambda s: tuple(int(x) for x in s.split(",")), help="e.g. 1,1,1")
  p.add_argument("--batch", type=int)
  p.add_argument("--steps", type=int, help="steps per timed round (after --warmup steps)")
  p.add_argument("--warmup", type=int)
  p.add_argument("--rounds", type=int, help="timed rounds per side, interleaved; medians reported")
  p.add_argument("--threads", type=int, help="threads (CPUs) of each side; 0: all (gpu mode: "
                 "XLA compiles with them)")
  p.add_argument("--compare_flags", default=COMPARE_FLAGS,
                 help="XLA_FLAGS of more jax sides, ';'-separated (cpu mode; '' for none)")
  p.add_argument("--dtype", choices=["float32", "bfloat16"])
  p.add_argument("--peak_flops", type=float, help="device peak FLOP/s for the MFU (gpu mode)")
  p.add_argument("--no_torch", action="store_true", help="time our side only")
  p.add_argument("--max_batch", action="store_true",
                 help="gpu mode: also find the largest batch that fits (see above)")
  p.add_argument("--torch_channels_last", action="store_true", help="NHWC memory format in torch")
  p.add_argument("--torch_passive", action="store_true",
                 help="OMP_WAIT_POLICY=PASSIVE for torch (a shared, oversubscribed machine)")
  p.add_argument("--glibc_malloc", action="store_true",
                 help="also a jax and a torch side with glibc's own malloc settings (fer_jax's "
                 "import sets its own, fer_jax/malloc_settings.py; cpu mode)")
  p.add_argument("--profile", default="", help="jax side: write a jax.profiler trace here and "
                 "print its per-op summary")
  p.add_argument("--worker", choices=["jax", "torch"], help=argparse.SUPPRESS)
  a = p.parse_args()
  for k, v in MODES[a.mode].items():
    if getattr(a, k) is None:
      setattr(a, k, v)
  if a.worker:
    (run_jax if a.worker == "jax" else run_torch)(a)
    return
  argv = [f"--mode={a.mode}", f"--input_size={a.input_size}", f"--width={a.width}",
          f"--repeats={','.join(map(str, a.repeats))}", f"--batch={a.batch}", f"--steps={a.steps}",
          f"--warmup={a.warmup}", f"--dtype={a.dtype}", f"--threads={a.threads}"]
  argv += ["--torch_channels_last"] if a.torch_channels_last else []
  argv += [f"--profile={a.profile}"] if a.profile else []
  print(f"config: mode={a.mode} input={a.input_size} width={a.width} repeats={a.repeats} "
        f"batch={a.batch} dtype={a.dtype} threads={a.threads}; {a.rounds} interleaved rounds of "
        f"{a.steps} steps per side (+{a.warmup} warm-up)", flush=True)
  workers = [_Worker("jax", "jax", argv)]
  if a.mode == "cpu":
    for flags in filter(None, a.compare_flags.split(";")):
      name = "XLA's default" if flags == fer_jax.YNN_DEFAULT else flags.replace("--xla_cpu_", "")
      workers.append(_Worker(f"jax {name}", "jax", argv, flags))
  if a.glibc_malloc and a.mode == "cpu":
    workers.append(_Worker("jax, glibc malloc", "jax", argv, glibc_malloc=True))
  if not a.no_torch:
    torch_name = "torch" + " OMP_WAIT_POLICY=PASSIVE" * a.torch_passive
    if a.glibc_malloc:
      workers.append(_Worker(torch_name + ", glibc malloc", "torch", argv,
                             omp_passive=a.torch_passive, glibc_malloc=True))
    workers.append(_Worker(torch_name, "torch", argv, omp_passive=a.torch_passive))
  for r in range(a.rounds):
    for w in (workers if r % 2 == 0 else workers[::-1]):
      w.run()
  for w in workers:
    w.stop()
  ours, theirs = workers[0], workers[-1]
  for w in workers:
    ips = sorted(a.batch * a.steps / s for s in w.seconds)
    extra = (f"compile {w.info['compile_s']:.1f} s" if "compile_s" in w.info
             else f"torch {w.info['version']}, {w.info['threads']} threads")
    if "device_peak_mb" in w.info:
      extra += f", device peak {w.info['device_peak_mb']:.0f} MB"
    if "xla_flags" in w.info:
      extra += f", XLA_FLAGS '{w.info['xla_flags']}'"
    print(f"{w.name:30s} {statistics.median(ips):8.1f} images/s (min {ips[0]:.1f}, max "
          f"{ips[-1]:.1f})  step {statistics.median(w.seconds) / a.steps * 1e3:7.1f} ms (CPU "
          f"{statistics.median(w.cpu_seconds) / a.steps * 1e3:.0f} ms)  peak RSS "
          f"{w.info['peak_rss_mb']:.0f} MB  params {w.info['params']:,}  {w.info['cpus']} CPUs, "
          f"{extra}")
  if a.mode == "gpu":
    step_s = statistics.median(ours.seconds) / a.steps
    peak = a.peak_flops or next((v for k, v in PEAK_BF16_FLOPS.items()
                                 if ours.info["device"].startswith(k)), None)
    achieved = ours.info["step_flops"] / step_s
    mfu = f"{achieved / peak:.1%} of {peak:.3g}" if peak else "unknown peak: pass --peak_flops"
    print(f"{ours.info['device']}: step FLOPs {ours.info['step_flops']:.4g} (XLA cost_analysis of the lowered step), "
          f"achieved {achieved / 1e12:.1f} TFLOP/s, MFU {mfu}; device peak memory "
          f"{ours.info.get('device_peak_mb', float('nan')):.0f} MB")
    if theirs is not ours:
      _print_ratios(workers, theirs)
    if a.max_batch:
      _find_max_batch(a, argv, ours.info)
    return
  if any(w.info["params"] != theirs.info["params"] for w in workers):
    raise AssertionError(f"parameter counts differ: {[w.info['params'] for w in workers]}")
  _print_ratios(workers, theirs)


def _print_ratios(workers, theirs):
  """Each jax side against the torch side under the same malloc settings."""
  torch_sides = {w.glibc_malloc: w for w in workers if w.side == "torch"}
  for w in workers:
    if w.side == "torch" or w is theirs:
      continue
    peer = torch_sides.get(w.glibc_malloc, theirs)
    ratios = sorted(t / o for o, t in zip(w.seconds, peer.seconds))
    print(f"ratio {w.name} / {peer.name} images/s: median {statistics.median(ratios):.2f}x over "
          f"{len(ratios)} rounds (min {ratios[0]:.2f}x, max {ratios[-1]:.2f}x); CPU time per step "
          f"{peer.name} / {w.name}: "
          f"{statistics.median(peer.cpu_seconds) / statistics.median(w.cpu_seconds):.2f}x")


def _find_max_batch(a, argv, info):
  """Largest batch that runs: estimated from the peak at a.batch, tried at 95 %, then x0.8."""
  if "device_peak_mb" not in info:
    print("max batch: the device reports no memory statistics", flush=True)
    return
  per_image = (info["device_peak_mb"] - info["state_mb"]) / a.batch
  estimate = int((info["device_limit_mb"] - info["state_mb"]) / per_image)
  print(f"max batch: {per_image:.1f} MB per image at batch {a.batch}, state "
        f"{info['state_mb']:.0f} MB, device limit {info['device_limit_mb']:.0f} MB -> estimate "
        f"{estimate}", flush=True)
  batch = estimate * 95 // 100 // 8 * 8
  while batch > a.batch:
    args = [x for x in argv if not x.startswith(("--batch=", "--steps="))]
    try:
      w = _Worker(f"jax batch {batch}", "jax", args + [f"--batch={batch}", "--steps=5"])
    except RuntimeError as e:  # Out of memory at compile or warm-up: the worker exited.
      print(f"max batch: {batch} failed ({e})", flush=True)
      batch = int(batch * 0.8) // 8 * 8
      continue
    w.run()
    w.stop()
    print(f"max batch: {batch} ran, {batch * 5 / w.seconds[0]:.1f} images/s, device peak "
          f"{w.info['device_peak_mb']:.0f} MB", flush=True)
    return
  print("max batch: no batch above --batch ran", flush=True)


if __name__ == "__main__":
  main()
