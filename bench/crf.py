"""Benchmark fer_jax.crf against pytorch-crf and python-crfsuite (CPU, warm timings).

Run: `python -m bench.crf` (or `python bench/crf.py`). Each timed side runs in its own subprocess so
that its peak memory (ru_maxrss) is its own; the parent checks that both sides compute the same
numbers (log-likelihood to 1e-4; both fitted models scored by the same objective code).

  1. log-likelihood + gradient, B=64, T=100, K=7: fer_jax vs torchcrf.CRF with the same values.
  2. full-batch fit at the DEFAULT settings of both sides (ours: crf.fit's tol and max_iter; CRFsuite:
     its own stopping rule), N = 200 and 2,000, T<=30, D=32, K=7, sigma2 = 1 and 10: fer_jax
     (jaxopt and optax L-BFGS) vs CRFsuite L-BFGS (c2 = 1/(2 sigma2), real-valued attributes +
     constant bias attribute, all states/transitions, feature.minfreq = -1e30 so that no
     (attribute, label) feature is dropped).
     CRFsuite has no start/end features: its model is scored with start = end = 0 (a special case of
     ours, so our optimum can only be lower or equal).
  3. log Z time vs T (100, 1000, 10000), sequential vs parallel.
"""
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags
from absl import logging
import numpy as np

if __package__ in (None, ""):  # run as `python bench/crf.py`
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_CASE = flags.DEFINE_string("case", None, "Internal: run one timed case in this process.")
_OUT = flags.DEFINE_string("out", None, "Internal: where the case writes its arrays (npz).")
_REPEATS = flags.DEFINE_integer("repeats", 20, "Timed repetitions (the minimum is reported).")
_SECTIONS = flags.DEFINE_list("sections", ["1", "2", "3"], "Which parts to run (1: LL, 2: fit, 3: log Z).")

LL = dict(b=64, t=100, k=7)
FIT = dict(t=30, d=32, k=7)
FIT_N = (200, 2000)
FIT_SIGMA2 = (1.0, 10.0)
# Timed fits per side: ours after one untimed (compiling) call, CRFsuite's train() on a fresh
# Trainer each time (its append is timed apart); the minimum is reported.
FIT_REPEATS = {200: 5, 2000: 2}
SCALING_T = (100, 1000, 10_000)
SCALING_B = 8


def _peak_mib() -> float:
  """Peak resident memory of this process in MiB.

  Linux's ru_maxrss survives fork and exec, so a case process would report at least its parent's
  peak; VmHWM in /proc/self/status starts afresh at exec. ru_maxrss elsewhere.
  """
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("VmHWM:"):
          return int(line.split()[1]) / 1024.0  # kB
  except OSError:
    pass
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _timeit(fn, repeats):
  """Minimum and median wall time in seconds of fn() over repeats (after one warm-up call)."""
  fn()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return float(np.min(times)), float(np.median(times))


# ----------------------------------------------------------------------------- data


def ll_data():
  rng = np.random.default_rng(0)
  b, t, k = LL["b"], LL["t"], LL["k"]
  lengths = rng.integers(t // 2, t + 1, size=b)
  lengths[0] = t
  return dict(
      unaries=rng.normal(size=(b, t, k)).astype(np.float32),
      transitions=rng.normal(size=(k, k)).astype(np.float32),
      start=rng.normal(size=k).astype(np.float32),
      end=rng.normal(size=k).astype(np.float32),
      tags=rng.integers(0, k, size=(b, t)).astype(np.int64),
      mask=np.arange(t)[None] < lengths[:, None])


def _logsumexp(x, axis):
  m = np.max(x, axis=axis, keepdims=True)
  return np.squeeze(m, axis) + np.log(np.sum(np.exp(x - m), axis=axis))


def fit_data(n=200):
  """Features, and tags sampled exactly from a known CRF (forward filter, backward sample)."""
  rng = np.random.default_rng(1)
  t, d, k = FIT["t"], FIT["d"], FIT["k"]
  w = rng.normal(size=(d, k)) * 0.3
  tr = np.eye(k) * 2.0 + rng.normal(size=(k, k)) * 0.5
  lengths = rng.integers(20, t + 1, size=n)
  mask = np.arange(t)[None] < lengths[:, None]
  feats = rng.normal(size=(n, t, d)).astype(np.float32) * mask[..., None]
  u = feats.astype(np.float64) @ w
  alpha = np.zeros((n, t, k))
  alpha[:, 0] = u[:, 0]
  for s in range(1, t):
    new = _logsumexp(alpha[:, s - 1, :, None] + tr, axis=1) + u[:, s]
    alpha[:, s] = np.where(mask[:, s, None], new, alpha[:, s - 1])
  tags = np.zeros((n, t), np.int64)
  gumbel = lambda: rng.gumbel(size=(n, k))
  y = np.argmax(alpha[np.arange(n), lengths - 1] + gumbel(), axis=-1)
  tags[np.arange(n), lengths - 1] = y
  for s in range(t - 2, -1, -1):
    nxt = tags[:, s + 1]
    cand = np.argmax(alpha[:, s] + tr[:, nxt].T + gumbel(), axis=-1)
    tags[:, s] = np.where(mask[:, s + 1], cand, tags[:, s])  # s = L-1 keeps y; padding stays 0
  return feats, tags, mask


# ----------------------------------------------------------------------------- cases (subprocess)


def case_ll_jax(method="sequential"):
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from fer_jax import crf  # pylint: disable=g-import-not-at-top
  d = ll_data()
  mask, tags = jnp.asarray(d["mask"]), jnp.asarray(d["tags"], jnp.int32)
  f = jax.jit(jax.value_and_grad(
      lambda u, tr, s, e: jnp.sum(crf.log_likelihood(u, tags, tr, mask, start=s, end=e,
                                                     method=method)), argnums=(0, 1, 2, 3)))
  args = [jnp.asarray(d[k]) for k in ("unaries", "transitions", "start", "end")]
  value, grads = f(*args)
  best, med = _timeit(lambda: jax.block_until_ready(f(*args)), _REPEATS.value)
  return dict(time_s=best, median_s=med, value=float(value), grad_unaries_abs_sum=float(
      jnp.sum(jnp.abs(grads[0]))))


def case_ll_torch(threads=None):
  import torch  # pylint: disable=g-import-not-at-top
  import torchcrf  # pylint: disable=g-import-not-at-top
  if threads:
    torch.set_num_threads(threads)
  d = ll_data()
  k = LL["k"]
  model = torchcrf.CRF(k, batch_first=True)  # transitions[i, j]: i -> j, as ours
  with torch.no_grad():
    model.transitions.copy_(torch.from_numpy(d["transitions"]))
    model.start_transitions.copy_(torch.from_numpy(d["start"]))
    model.end_transitions.copy_(torch.from_numpy(d["end"]))
  emissions = torch.from_numpy(d["unaries"]).requires_grad_(True)
  tags, mask = torch.from_numpy(d["tags"]), torch.from_numpy(d["mask"])

  def run():
    model.zero_grad()
    emissions.grad = None
    ll = model(emissions, tags, mask, reduction="sum")
    ll.backward()
    return ll

  value = run()
  best, med = _timeit(run, _REPEATS.value)
  return dict(time_s=best, median_s=med, value=float(value.detach()),
              grad_unaries_abs_sum=float(emissions.grad.abs().sum()),
              torch_threads=torch.get_num_threads())


def case_fit_jax(n, sigma2, solver="jaxopt"):
  from fer_jax import crf  # pylint: disable=g-import-not-at-top
  feats, tags, mask = fit_data(n)
  kw = dict(sigma2=sigma2, solver=solver, num_classes=FIT["k"])  # default tol and max_iter
  t0 = time.perf_counter()
  crf.fit(feats, tags, mask, **kw)
  first = time.perf_counter() - t0
  times = []
  for _ in range(FIT_REPEATS[n]):
    t0 = time.perf_counter()
    params, info = crf.fit(feats, tags, mask, **kw)
    times.append(time.perf_counter() - t0)
  np.savez(_OUT.value, **{f: np.asarray(getattr(params, f)) for f in
                          ("weights", "bias", "transitions", "start", "end")})
  return dict(time_s=min(times), compile_s=first - min(times), iterations=info.iterations,
              converged=info.converged, objective=info.objective, gap_bound=info.gap_bound,
              precision=info.precision)


def case_fit_crfsuite(n, sigma2):
  import pycrfsuite  # pylint: disable=g-import-not-at-top
  feats, tags, mask = fit_data(n)
  d, k = FIT["d"], FIT["k"]
  names = [f"f{i}" for i in range(d)]
  with tempfile.TemporaryDirectory() as tmp:
    times, append_times = [], []
    for _ in range(FIT_REPEATS[n]):
      trainer = pycrfsuite.Trainer(verbose=False)
      t0 = time.perf_counter()
      for x, y, m in zip(feats, tags, mask):
        items = [{**dict(zip(names, map(float, row))), "bias": 1.0} for row in x[m]]
        trainer.append(pycrfsuite.ItemSequence(items), [str(v) for v in y[m]])
      append_times.append(time.perf_counter() - t0)
      trainer.select("lbfgs")
      # feature.minfreq must be very negative: CRFsuite keeps a feature only when the sum of its
      # attribute's values over the training items is >= minfreq (default 0), which silently drops
      # about 100 of the 231 (attribute, label) pairs of real-valued features even with
      # possible_states (its objective then stalls ~400 above the full model's optimum).
      trainer.set_params({"c1": 0.0, "c2": 1.0 / (2.0 * sigma2),
                          "feature.possible_states": True, "feature.possible_transitions": True,
                          "feature.minfreq": -1e30})  # its default stopping rule
      path = os.path.join(tmp, "model.crfsuite")
      t0 = time.perf_counter()
      trainer.train(path)
      times.append(time.perf_counter() - t0)
    last = trainer.logparser.last_iteration
    tagger = pycrfsuite.Tagger()
    tagger.open(path)
    info = tagger.info()
  w, b, tr = np.zeros((d, k), np.float32), np.zeros(k, np.float32), np.zeros((k, k), np.float32)
  for (attr, label), value in info.state_features.items():
    if attr == "bias":
      b[int(label)] = value
    else:
      w[names.index(attr), int(label)] = value
  for (src, dst), value in info.transitions.items():
    tr[int(src), int(dst)] = value
  np.savez(_OUT.value, weights=w, bias=b, transitions=tr, start=np.zeros(k, np.float32),
           end=np.zeros(k, np.float32))
  return dict(time_s=min(times), append_s=min(append_times), iterations=int(last["num"]),
              crfsuite_loss=float(last["loss"]), num_features=int(last["active_features"]))


def case_logz(method, t):
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from fer_jax import crf  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(2)
  k = LL["k"]
  u = jnp.asarray(rng.uniform(-50, 50, size=(SCALING_B, t, k)).astype(np.float32))
  tr = jnp.asarray(rng.normal(size=(k, k)).astype(np.float32))
  mask = jnp.ones((SCALING_B, t), bool)
  f = jax.jit(lambda u, tr: crf.log_partition(u, tr, mask, method=method))
  t0 = time.perf_counter()
  value = jax.block_until_ready(f(u, tr))
  first = time.perf_counter() - t0
  best, med = _timeit(lambda: jax.block_until_ready(f(u, tr)), max(3, _REPEATS.value // 4))
  return dict(time_s=best, median_s=med, compile_s=first - best, finite=bool(
      np.all(np.isfinite(np.asarray(value)))), value0=float(value[0]))


CASES = {
    "ll_jax": case_ll_jax,
    "ll_jax_parallel": lambda: case_ll_jax("parallel"),
    "ll_torch": case_ll_torch,
    "ll_torch_1thread": lambda: case_ll_torch(1),
    **{f"fit_jax_{n}_{s}": (lambda n=n, s=s: case_fit_jax(n, s)) for n in FIT_N for s in FIT_SIGMA2},
    **{f"fit_jax_optax_{n}_{s}": (lambda n=n, s=s: case_fit_jax(n, s, "optax")) for n in FIT_N
       for s in FIT_SIGMA2},
    **{f"fit_crfsuite_{n}_{s}": (lambda n=n, s=s: case_fit_crfsuite(n, s)) for n in FIT_N
       for s in FIT_SIGMA2},
    **{f"logz_{m}_{t}": (lambda m=m, t=t: case_logz(m, t)) for m in ("sequential", "parallel")
       for t in SCALING_T},
}


# ----------------------------------------------------------------------------- driver


def run_case(name, out=None):
  """Runs one case in a fresh subprocess; returns its JSON result (with peak_mib)."""
  cmd = [sys.executable, "-m", "bench.crf", f"--case={name}", f"--repeats={_REPEATS.value}"]
  if out:
    cmd.append(f"--out={out}")
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, check=False)
  lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
  if proc.returncode or not lines:
    raise RuntimeError(f"bench case {name} failed:\n{proc.stderr[-3000:]}")
  result = json.loads(lines[-1][len("RESULT "):])
  logging.info("%s: %s", name, result)
  return result


def _objective(npz_path, feats, tags, mask, sigma2):
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from fer_jax import crf  # pylint: disable=g-import-not-at-top
  with np.load(npz_path) as z:
    params = crf.CRFParams(**{f: jnp.asarray(z[f]) for f in z.files})
  return float(crf.objective(params, feats, tags, mask, sigma2))


def check_same_log_likelihood():
  """Parent-side check: fer_jax and torchcrf give the same log-likelihood (1e-4 relative)."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  import torchcrf  # pylint: disable=g-import-not-at-top
  from fer_jax import crf  # pylint: disable=g-import-not-at-top
  d = ll_data()
  ours = np.asarray(crf.log_likelihood(d["unaries"], d["tags"].astype(np.int32), d["transitions"],
                                       d["mask"], start=d["start"], end=d["end"]))
  model = torchcrf.CRF(LL["k"], batch_first=True)
  with torch.no_grad():
    model.transitions.copy_(torch.from_numpy(d["transitions"]))
    model.start_transitions.copy_(torch.from_numpy(d["start"]))
    model.end_transitions.copy_(torch.from_numpy(d["end"]))
    theirs = model(torch.from_numpy(d["unaries"]), torch.from_numpy(d["tags"]),
                   torch.from_numpy(d["mask"]), reduction="none").numpy()
  np.testing.assert_allclose(ours, theirs, rtol=1e-4)
  return float(np.max(np.abs(ours - theirs) / np.abs(theirs)))


def main(argv):
  del argv
  if _CASE.value:
    result = CASES[_CASE.value]()
    result["peak_mib"] = _peak_mib()
    print("RESULT " + json.dumps(result), flush=True)
    return
  lines = []
  say = lambda s: (lines.append(s), print(s, flush=True))
  say(f"machine: {os.cpu_count()} CPU cores, load average (1, 5, 15 min) {os.getloadavg()}; times "
      "are warm minima over repeats; peak = VmHWM of the case's own process (includes the "
      "framework import).")

  if "1" in _SECTIONS.value:
    section_ll(say)
  if "2" in _SECTIONS.value:
    section_fit(say)
  if "3" in _SECTIONS.value:
    section_logz(say)
  say(f"\nload average (1, 5, 15 min) at the end: {os.getloadavg()}")


def section_ll(say):
  """Log-likelihood + gradient vs pytorch-crf."""
  rel = check_same_log_likelihood()
  say(f"\n1) log-likelihood + gradient, B={LL['b']} T={LL['t']} K={LL['k']} (same values; max "
      f"relative LL difference fer_jax vs torchcrf {rel:.1e})")
  jx, jp, tc = run_case("ll_jax"), run_case("ll_jax_parallel"), run_case("ll_torch")
  t1 = run_case("ll_torch_1thread")
  for name, r in (("fer_jax sequential", jx), ("fer_jax parallel", jp),
                  (f"pytorch-crf ({tc['torch_threads']} threads)", tc), ("pytorch-crf (1 thread)", t1)):
    say(f"  {name:28s} {r['time_s'] * 1e3:8.2f} ms (median {r['median_s'] * 1e3:.2f})  "
        f"peak {r['peak_mib']:.0f} MiB")
  best_torch = min(tc["time_s"], t1["time_s"])
  say(f"  speed-up vs pytorch-crf's faster setting: {best_torch / jx['time_s']:.1f}x (sequential), "
      f"{best_torch / jp['time_s']:.1f}x (parallel)")



def section_fit(say):
  """Fit at the defaults vs CRFsuite."""
  say(f"\n2) fit at DEFAULT settings, T<={FIT['t']} D={FIT['d']} K={FIT['k']} (ours: crf.fit defaults; "
      "CRFsuite: its default stopping, c2=1/(2 sigma2); both warm, min over repeats; objectives "
      "scored by fer_jax.crf.objective)")
  for n in FIT_N:
    feats, tags, mask = fit_data(n)
    for sigma2 in FIT_SIGMA2:
      say(f"  N={n} sigma2={sigma2:g} ({int(mask.sum())} frames)")
      with tempfile.TemporaryDirectory() as tmp:
        res = {}
        for side in ("fit_jax", "fit_jax_optax", "fit_crfsuite"):
          name = f"{side}_{n}_{sigma2}"
          res[side] = run_case(name, os.path.join(tmp, name + ".npz"))
          res[side]["obj"] = _objective(os.path.join(tmp, name + ".npz"), feats, tags, mask, sigma2)
      cs = res["fit_crfsuite"]
      for side, label in (("fit_jax", "fer_jax jaxopt.LBFGS"), ("fit_jax_optax", "fer_jax optax.lbfgs"),
                          ("fit_crfsuite", "CRFsuite lbfgs (start=end=0)")):
        r = res[side]
        extra = (f"compile {r['compile_s']:.1f} s, converged {r['converged']}, relative gap <= "
                 f"{r['gap_bound']:.1e}, {r['precision']}" if "compile_s" in r
                 else f"+ append {r['append_s']:.3f} s, its own loss {r['crfsuite_loss']:.3f}")
        say(f"    {label:30s} objective {r['obj']:.3f}  train {r['time_s']:.3f} s  "
            f"{r['iterations']} it  peak {r['peak_mib']:.0f} MiB  ({extra})")
      for side in ("fit_jax", "fit_jax_optax"):
        say(f"    {side}: objective - CRFsuite's = {res[side]['obj'] - cs['obj']:+.3f}; speed-up "
            f"{cs['time_s'] / res[side]['time_s']:.1f}x on train, "
            f"{(cs['time_s'] + cs['append_s']) / res[side]['time_s']:.1f}x incl. CRFsuite's append")



def section_logz(say):
  """log Z time vs T."""
  say(f"\n3) log Z scaling, B={SCALING_B} K={LL['k']}, |unaries| <= 50")
  for t in SCALING_T:
    row = []
    for m in ("sequential", "parallel"):
      r = run_case(f"logz_{m}_{t}")
      row.append(f"{m} {r['time_s'] * 1e3:9.2f} ms (compile {r['compile_s']:.1f} s, peak "
                 f"{r['peak_mib']:.0f} MiB, finite {r['finite']})")
    say(f"  T={t:6d}: " + ";  ".join(row))


if __name__ == "__main__":
  app.run(main)
