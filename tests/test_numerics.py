"""Numerics of one train step of the tiny CNN on XLA CPU: float32 under three settings of
`--xla_cpu_experimental_ynn_fusion_type` against float64 runs of the same step. "fer_jax"
(fer_jax.CPU_XLA_FLAG, what fer_jax sets at import: `=-individual_convolution`, convolutions on
Eigen, dots and reductions on YNNPACK); "xla_default" (fer_jax.YNN_DEFAULT: YNNPACK convolutions,
dots and reductions); "ynn_reduce_only" (fer_jax.YNN_REDUCE, `=reduce`: YNNPACK reductions only, the
flag issue 12 first asked about).

Each float32 run is its own process (XLA reads XLA_FLAGS at backend init): the same initial weights
(seed; checked equal), the same uint8 batch, one forward (train mode: BatchNorm batch statistics)
and backward of the mean cross-entropy. It also records its discrete decisions: the sign of every
ReLU input and the chosen tap of every max-pool window. A float64 process replays each float32 run
with that run's decisions (ReLU as a mask, max pool as the recorded tap). Without the replay, a
pre-activation within rounding of 0 or a near-tie in a max-pool window can go the other way in
float64 and route a gradient elsewhere: an O(1) change at one position, ~1e-3 to 1e-2 of a whole
gradient tensor below it, in any float32 run under any setting (measured). The replay leaves
summation as the only difference (measured: 1 or 2 flips per run). Compared per tensor, norm-wise:
rel = ||a - a64|| / ||a64||, for the loss, every parameter gradient and every BN batch mean and
variance.

Tolerance, from float32 summation. A float32 sum of n terms is off by ~sqrt(n) u (u = 2^-24 = 6e-8;
worst case n u) times its condition number sum|x| / |sum x|; reordering a sum only changes which
roundings happen. The largest sums here (BN statistics and weight gradients of the first conv) have
n = 16 * 37 * 37 = 21,904: sqrt(n) u = 9e-6, and ~30 layers chain them: 1e-4 (measured 2026-12-04,
worst tensor / median: fer_jax 9.8e-6 / 2.4e-6, xla_default 1.1e-5 / 2.2e-6, ynn_reduce_only 1.0e-5
/ 2.4e-6; XLA's own reductions, `=-reduce`, were less accurate: 1.1e-4 / 2e-5, in the BN gradients
of IR-C, whose 1x1 maps give BN sums of 16 terms with heavy cancellation). A wrong kernel (a dropped
or doubled block of a reduction, a bad accumulator, a race) is off by the block's share of the sum,
>= 1e-2 for one 256-term block of 21,904 (test_tolerance_catches_a_dropped_block).

test_reductions_match_numpy checks the reduce kernels themselves, YNNPACK's (`=reduce`) and XLA's
own (`=-reduce`), against numpy: sums within the worst-case bound of any summation order, max / min
/ argmax / any / all exact.
"""
import sys

import numpy as np
import pytest

import fer_jax
import fresh_python

YNN_REDUCE, YNN_NO_REDUCE = fer_jax.YNN_REDUCE, fer_jax.YNN_NO_REDUCE
SETTINGS = {"fer_jax": fer_jax.CPU_XLA_FLAG, "xla_default": fer_jax.YNN_DEFAULT,
            "ynn_reduce_only": YNN_REDUCE}
# Norm-wise relative error per tensor vs float64; see the module docstring.
TOLERANCE = 1e-4
BATCH, NUM_CLASSES = 16, 7
MODEL = dict(input_size=75, width=0.125, repeats=(1, 1, 1), fc1_width=32, dropout=0.0)


def _worker(dtype: str, out_path: str, replay_paths: list[str]):
  """float32: one step, results and decisions -> out_path (.npz, float64 results).

  float64: the step once per float32 run in replay_paths, following its decisions; results ->
  out_path with keys "{i}/..." for replay_paths[i], plus "{i}/flips" (decisions float64 alone
  would take otherwise).
  """
  import jax  # pylint: disable=g-import-not-at-top
  if dtype == "float64":
    jax.config.update("jax_enable_x64", True)
  from flax import nnx  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from ml_collections import config_dict  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top

  from fer_jax import models  # pylint: disable=g-import-not-at-top
  from fer_jax.models import inception_resnet as ir  # pylint: disable=g-import-not-at-top

  # Decisions: recorded by the float32 step (the model's own relu and max pool compute its
  # outputs), replayed in float64; `tape` holds them in call order during one trace.
  tape = {"record": [], "replay": None, "flips": []}
  real_relu, real_pool = nnx.relu, ir._max_pool  # pylint: disable=protected-access

  def pool_choice(x):  # First maximum of each window, as _max_pool's backward.
    taps = [t for _, _, t in ir._pool_windows(x)]  # pylint: disable=protected-access
    best, arg = taps[0], jnp.zeros(taps[0].shape, jnp.int8)
    for k, t in enumerate(taps[1:], 1):
      best, arg = jnp.where(t > best, t, best), jnp.where(t > best, jnp.int8(k), arg)
    return taps, arg

  def relu(x):
    if tape["replay"] is None:
      tape["record"].append(x > 0)
      return real_relu(x)
    mask = tape["replay"].pop(0)
    tape["flips"].append(jnp.sum(mask != (x > 0)))
    return jnp.where(mask, x, 0)

  def max_pool(x):
    if tape["replay"] is None:
      if tape.get("in_pool"):  # _max_pool's forward rule calls _max_pool again.
        return real_pool(x)
      tape["record"].append(pool_choice(x)[1])
      tape["in_pool"] = True
      try:
        return real_pool(x)
      finally:
        tape["in_pool"] = False
    arg = tape["replay"].pop(0)
    taps, own = pool_choice(x)
    tape["flips"].append(jnp.sum(arg != own))
    return sum(jnp.where(arg == k, t, 0) for k, t in enumerate(taps))

  nnx.relu, ir._max_pool = relu, max_pool  # pylint: disable=protected-access

  # float32 weights from the seed in every process (saved, so the test checks they agree), then
  # merged into a graph whose layers compute in `dtype`.
  config = config_dict.ConfigDict(dict(MODEL, dtype="float32"))
  weights = nnx.state(models.create_model(config, NUM_CLASSES, nnx.Rngs(0)))
  config.dtype = dtype
  graphdef = nnx.graphdef(nnx.eval_shape(
      lambda: models.create_model(config, NUM_CLASSES, nnx.Rngs(0))))
  initial = {"init/" + jax.tree_util.keystr(p): np.asarray(x)
             for p, x in jax.tree_util.tree_leaves_with_path(nnx.to_pure_dict(weights))
             if jnp.issubdtype(x.dtype, jnp.floating)}
  weights = jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x,
                         weights)
  graphdef, params, stats, rest = nnx.split(nnx.merge(graphdef, weights), nnx.Param, nnx.BatchStat,
                                            ...)
  params = nnx.to_pure_dict(params)
  # Zero running statistics: after one step they hold exactly 0.1 x the batch statistics.
  stats = jax.tree.map(jnp.zeros_like, nnx.to_pure_dict(stats))
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (BATCH, 75, 75, 3), dtype=np.uint8) / 127.5 - 1.0  # Exact in f32.
  labels = rng.integers(0, NUM_CLASSES, BATCH)

  def step(params, decisions):
    def loss_fn(params):  # Decisions leave through aux (tracers of this trace).
      tape.update(record=[], flips=[], replay=None if decisions is None else list(decisions))
      m = nnx.merge(graphdef, nnx.State(params), nnx.State(stats), rest)
      logits = m(jnp.asarray(images, dtype), train=True)["logits"]
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.asarray(labels)).mean()
      assert not tape["replay"], "unused decisions: the replay does not match the recording"
      return loss, (nnx.to_pure_dict(nnx.state(m, nnx.BatchStat)), tape["record"],
                    sum(tape["flips"]))

    (loss, (new_stats, record, flips)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    return loss, new_stats, grads, record, flips

  def results(loss, new_stats, grads):
    out = {"loss": np.asarray(loss, np.float64)}
    for prefix, tree in (("grad/", grads), ("batch_stat/", new_stats)):
      for path, x in jax.tree_util.tree_leaves_with_path(tree):
        out[prefix + jax.tree_util.keystr(path)] = np.asarray(x, np.float64) * (
            10.0 if prefix == "batch_stat/" else 1.0)  # Running stat 0.1 x batch stat.
    return out

  if dtype == "float32":
    loss, new_stats, grads, decisions, _ = jax.jit(lambda p: step(p, None))(params)
    out = dict(initial, **results(loss, new_stats, grads))
    out.update({f"decision/{i:03d}": np.asarray(d) for i, d in enumerate(decisions)})
  else:
    replay = jax.jit(step)
    out = dict(initial)
    for i, path in enumerate(replay_paths):
      with np.load(path) as f:
        decisions = [f[k] for k in sorted(k for k in f if k.startswith("decision/"))]
      loss, new_stats, grads, _, flips = replay(params, decisions)
      out.update({f"{i}/{k}": v for k, v in results(loss, new_stats, grads).items()})
      out[f"{i}/flips"] = np.asarray(flips)
  np.savez(out_path, **out)


# Reductions of the train and eval steps (BN statistics, bias and weight-gradient sums, losses,
# accuracies), over the axis patterns they use, on float32 inputs with ties and -inf.
REDUCTION_CASES = [((16, 37, 37, 8), (0, 1, 2)), ((32, 5, 5, 96), (0, 1, 2)), ((32, 7), 1),
                   ((32, 7), 0), ((32, 64), 1), ((8, 9, 7), 2), ((8, 9, 7), (1, 2)), ((4096,), 0)]
REDUCTIONS = ("sum", "max", "min", "argmax", "argmin", "any", "all", "logsumexp")


def _reduction_inputs():
  rng = np.random.default_rng(0)
  out = []
  for shape, axes in REDUCTION_CASES:
    x = rng.normal(1.0, 1.0, shape).astype(np.float32)
    ties = rng.integers(0, 4, shape).astype(np.float32)
    ninf = x.copy()
    ninf.flat[::5] = -np.inf
    out += [(f"{shape}{axes}{kind}", a, axes) for kind, a in (("", x), ("ties", ties),
                                                               ("-inf", ninf))]
  return out


def _reductions_worker(out_path: str):
  """Every REDUCTIONS of every _reduction_inputs() case, each jitted alone -> out_path (.npz)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  fns = {"sum": jnp.sum, "max": jnp.max, "min": jnp.min, "logsumexp": jax.nn.logsumexp,
         "any": lambda a, axis: jnp.any(a > 1.5, axis), "all": lambda a, axis: jnp.all(a > -1.0, axis),
         "argmax": jnp.argmax, "argmin": jnp.argmin}
  cases = _reduction_inputs()

  @jax.jit  # One program (one compile); every reduction is still its own reduce op.
  def run(arrays):
    out = {}
    for (name, _, axes), a in zip(cases, arrays):
      for op in REDUCTIONS:
        if op.startswith("arg") and not isinstance(axes, int):
          continue
        if op in ("sum", "logsumexp") and "-inf" in name:
          continue  # -inf sums are -inf either way; covered by max/min.
        out[f"{op} {name}"] = fns[op](a, axis=axes)
    return out

  np.savez(out_path, **jax.tree.map(np.asarray, run([a for _, a, _ in cases])))


@pytest.mark.parametrize("flags", [YNN_REDUCE, YNN_NO_REDUCE])
def test_reductions_match_numpy(tmp_path, flags):
  # Sums: within the worst-case bound of any summation order, (n - 1) u sum|x| (u = 2^-24), which a
  # kernel that drops or doubles more than (n - 1) u of the terms' mass (one 256-term block of 4,096:
  # 6e-2 vs 2e-4) exceeds; max, min, argmax (first maximum on ties), any, all: exact.
  out = tmp_path / "reductions.npz"
  fresh_python.run([__file__, "reductions", str(out)], env={"XLA_FLAGS": flags})
  with np.load(out) as f:
    got = dict(f)
  u = 2.0**-24
  checked = 0
  for name, a, axes in _reduction_inputs():
    a64 = a.astype(np.float64)
    n = a.size // np.sum(a, axis=axes).size
    want = {"sum": np.sum(a64, axes), "max": np.max(a, axes), "min": np.min(a, axes),
            "any": np.any(a > 1.5, axes), "all": np.all(a > -1.0, axes),
            "logsumexp": np.log(np.sum(np.exp(a64 - np.max(a64, axes, keepdims=True)), axes))
                         + np.max(a64, axes)}
    if isinstance(axes, int):
      want.update(argmax=np.argmax(a, axes), argmin=np.argmin(a, axes))
    for op, expected in want.items():
      key = f"{op} {name}"
      if key not in got:
        continue
      checked += 1
      if op == "sum":
        bound = (n - 1) * u * np.sum(np.abs(a64), axes)
        assert np.all(np.abs(got[key] - expected) <= bound), key
      elif op == "logsumexp":  # The sum of positive exp terms is within (n - 1) u relative (each
        # term rounds by u too), which log turns into an absolute error; log rounds by u relative.
        np.testing.assert_allclose(got[key], expected, rtol=2 * u, atol=(n + 1) * u, err_msg=key)
      else:
        np.testing.assert_array_equal(got[key], expected, err_msg=key)
  assert checked > 100


def _run(dtype, xla_flags, out, replay_paths=()):
  fresh_python.run([__file__, dtype, str(out), *replay_paths], env={"XLA_FLAGS": xla_flags})
  with np.load(out) as f:
    return dict(f)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """{name: (float32 results, float64 results with its decisions, flips)}."""
  tmp = tmp_path_factory.mktemp("numerics")
  f32 = {name: _run("float32", flags, tmp / f"{i}.npz") for i, (name, flags) in
         enumerate(SETTINGS.items())}
  f64 = _run("float64", fer_jax.CPU_XLA_FLAG, tmp / "float64.npz",
             [tmp / f"{i}.npz" for i in range(len(SETTINGS))])
  out = {}
  for i, name in enumerate(SETTINGS):
    ref = {k.split("/", 1)[1]: v for k, v in f64.items() if k.startswith(f"{i}/")}
    out[name] = (f32[name], ref, int(ref.pop("flips")))
  inits = {k for k in f64 if k.startswith("init/")}
  assert len(inits) > 100
  for name, (run, _, _) in out.items():  # Every run starts from the same weights.
    assert {k for k in run if k.startswith("init/")} == inits, name
    for k in inits:
      np.testing.assert_array_equal(run[k], f64[k], err_msg=f"{name}: {k}")
  return out


@pytest.mark.parametrize("name", list(SETTINGS))
def test_float32_step_within_summation_error_of_float64(runs, name):
  run, ref, flips = runs[name]
  keys = [k for k in ref if k != "loss"]
  assert sum(k.startswith("batch_stat/") for k in keys) > 70  # Mean and variance of every BN.
  assert sum(k.startswith("grad/") for k in keys) > 100  # Every parameter.
  assert len([k for k in run if k.startswith("decision/")]) > 40  # Every ReLU and max pool.
  errors = {k: float(np.linalg.norm(run[k] - ref[k]) / np.linalg.norm(ref[k])) for k in ref
            if np.linalg.norm(ref[k]) > 0}
  assert len(errors) >= len(ref) - 2  # Only exactly-zero references are skipped.
  worst = sorted(errors.items(), key=lambda kv: -kv[1])[:3]
  print(f"{name}: {flips} decisions float64 alone would flip; {len(errors)} tensors, median "
        f"relative error {np.median(list(errors.values())):.1e}, worst {worst}")
  assert worst[0][1] < TOLERANCE, f"{name}: largest relative errors vs float64: {worst}"
  assert worst[0][1] > 1e-9  # float32 is compared, not float64: rounding is visible at all.


def test_tolerance_catches_a_dropped_block():
  # A reduction kernel that loses one 256-term block of the largest BN sum (the first conv's batch
  # mean over 16 x 37 x 37 = 21,904 values) is off by ~1e-2: far above either tolerance...
  rng = np.random.default_rng(0)
  terms = rng.normal(1.0, 1.0, 21904)
  right, wrong = terms.sum(), terms[256:].sum()
  assert abs(wrong - right) / abs(right) > 10 * TOLERANCE
  # ...while the same float32 sum in any order stays far inside it.
  f32 = terms.astype(np.float32)
  for order in (np.arange(f32.size), rng.permutation(f32.size), np.argsort(f32)):
    s = np.float32(0)
    for chunk in np.array_split(f32[order], 64):
      s = np.float32(s + np.add.reduce(chunk, dtype=np.float32))
    assert abs(float(s) - right) / abs(right) < TOLERANCE / 10


if __name__ == "__main__":
  if sys.argv[1] == "reductions":
    _reductions_worker(sys.argv[2])
  else:
    _worker(sys.argv[1], sys.argv[2], sys.argv[3:])
