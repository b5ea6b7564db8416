"""Tests for the fer_jax/crf package against independent float64 NumPy truth (brute force, hand numbers)."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
import scipy.special

from fer_jax import crf

METHODS = ("sequential", "parallel")


# ----------------------------------------------------------------------------- float64 references


def brute_force(u, tr, length, start, end):
  """Enumerates all K^L label sequences of one sequence. Returns a dict of float64 truths."""
  u, tr, start, end = (np.asarray(x, np.float64) for x in (u, tr, start, end))
  k = u.shape[-1]
  seqs = np.array(list(itertools.product(range(k), repeat=length)))  # [S, L]
  scores = u[np.arange(length), seqs].sum(1) + start[seqs[:, 0]] + end[seqs[:, -1]]
  if length > 1:
    scores += tr[seqs[:, :-1], seqs[:, 1:]].sum(1)
  log_z = scipy.special.logsumexp(scores)
  p = np.exp(scores - log_z)
  marg = np.zeros((length, k))
  for t in range(length):
    np.add.at(marg[t], seqs[:, t], p)
  pair = np.zeros((k, k))
  for t in range(1, length):
    np.add.at(pair, (seqs[:, t - 1], seqs[:, t]), p)
  return dict(log_z=log_z, marg=marg, pair=pair, start=marg[0], end=marg[-1],
              best=scores.max(), scores=dict(zip(map(tuple, seqs), scores)))


def np_forward(u, tr, start, end, length):
  """Float64 NumPy log-space forward pass for one sequence."""
  a = start + u[0]
  for t in range(1, length):
    z = a[:, None] + tr
    m = z.max(0)
    a = m + np.log(np.exp(z - m).sum(0)) + u[t]
  return scipy.special.logsumexp(a + end)


def np_viterbi_score(u, tr, start, end, length):
  d = start + u[0]
  for t in range(1, length):
    d = np.max(d[:, None] + tr, axis=0) + u[t]
  return np.max(d + end)


def random_problem(seed, k, with_ends, b=4, t=6, wide=False):
  rng = np.random.default_rng(seed)
  lengths = rng.integers(1, t + 1, size=b)
  lengths[0], lengths[-1] = 1, t
  mask = np.arange(t)[None] < lengths[:, None]
  u = rng.normal(size=(b, t, k)).astype(np.float32) * 2
  u[~mask] = 1e3 * rng.normal(size=(~mask).sum())[:, None]  # garbage at padding
  tr = rng.normal(size=(k, k)).astype(np.float32)
  if wide:  # spread > 60: a near-forbidden move 0 -> 1 that the unaries force anyway
    tr[0, 1], tr[2, 0] = -90.0, 12.0
    u[:, 0, 0] += 100.0
    u[:, 1, 1] += 200.0 * mask[:, 1]
  tags = rng.integers(0, k, size=(b, t)).astype(np.int32)
  start = end = None
  if with_ends:
    start, end = (rng.normal(size=k).astype(np.float32) for _ in range(2))
  return u, tr, mask, tags, start, end, lengths


# ----------------------------------------------------------------------------- brute force


@pytest.mark.parametrize("k,with_ends,wide", [(3, True, False), (4, False, False), (5, True, False),
                                              (3, False, True)])
def test_every_function_against_brute_force(k, with_ends, wide):
  u, tr, mask, tags, start, end, lengths = random_problem(k * 10 + with_ends, k, with_ends,
                                                          wide=wide)
  kw = dict(start=start, end=end)
  s0 = np.zeros(k) if start is None else start
  e0 = np.zeros(k) if end is None else end
  truth = [brute_force(u[i, :n], tr, n, s0, e0) for i, n in enumerate(lengths)]
  log_z = np.array([r["log_z"] for r in truth])
  scores = np.array([r["scores"][tuple(tags[i, :n])] for i, (r, n) in enumerate(zip(truth, lengths))])
  for method in METHODS:
    np.testing.assert_allclose(crf.log_partition(u, tr, mask, method=method, **kw), log_z,
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        crf.log_likelihood(u, tags, tr, mask, method=method, **kw), scores - log_z, atol=1e-4)
    marg = np.asarray(crf.marginals(u, tr, mask, method=method, **kw))
    for i, n in enumerate(lengths):
      np.testing.assert_allclose(marg[i, :n], truth[i]["marg"], atol=1e-5)
      np.testing.assert_array_equal(marg[i, n:], 0)
  np.testing.assert_allclose(crf.sequence_score(u, tags, tr, mask, **kw), scores, rtol=1e-5,
                             atol=1e-5)
  vtags, best = crf.viterbi_decode(u, tr, mask, **kw)
  assert vtags.dtype == jnp.int32
  vtags = np.asarray(vtags)
  for i, n in enumerate(lengths):
    np.testing.assert_allclose(best[i], truth[i]["best"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(truth[i]["scores"][tuple(vtags[i, :n])], truth[i]["best"],
                               rtol=1e-5)  # any optimal path
    np.testing.assert_array_equal(vtags[i, n:], 0)


def test_jit_matches_eager_and_brute_force():
  u, tr, mask, tags, start, end, lengths = random_problem(7, 3, True)
  truth = [brute_force(u[i, :n], tr, n, start, end) for i, n in enumerate(lengths)]
  f = jax.jit(lambda u, tr, m, s, e: (crf.log_partition(u, tr, m, start=s, end=e, method="parallel"),
                                      crf.viterbi_decode(u, tr, m, start=s, end=e)[1]))
  log_z, best = f(u, tr, mask, start, end)
  np.testing.assert_allclose(log_z, [r["log_z"] for r in truth], rtol=1e-5)
  np.testing.assert_allclose(best, [r["best"] for r in truth], rtol=1e-5)


def test_tensorflow_addons_case():
  """TFA's crf test: inputs/transitions below, tags [0, 2, 1, 0], length 3 (last step padding)."""
  u = np.array([[4, 5, -3], [3, -1, 3], [-1, 2, 1], [0, 0, 0]], np.float32)
  tr = np.array([[-3, 5, -2], [3, 4, 1], [1, 2, 1]], np.float32)
  tags = np.array([0, 2, 1, 0], np.int32)
  mask = np.array([[True, True, True, False]])
  scores = {}
  for y in itertools.product(range(3), repeat=3):  # the 3 real steps
    scores[y] = sum(u[t, y[t]] for t in range(3)) + tr[y[0], y[1]] + tr[y[1], y[2]]
  expected_norm = scipy.special.logsumexp(list(scores.values()))
  best_path = max(scores, key=scores.get)
  assert scores[(0, 2, 1)] == 9.0  # 4 + 3 + 2 + tr[0, 2] + tr[2, 1] = 9 - 2 + 2, by hand
  np.testing.assert_allclose(crf.sequence_score(u[None], tags[None], tr, mask), [9.0], rtol=1e-6)
  for method in METHODS:
    np.testing.assert_allclose(crf.log_partition(u[None], tr, mask, method=method),
                               [expected_norm], rtol=1e-6)
  vtags, best = crf.viterbi_decode(u[None], tr, mask)
  np.testing.assert_array_equal(vtags[0], list(best_path) + [0])
  np.testing.assert_allclose(best, [scores[best_path]], rtol=1e-6)


# ----------------------------------------------------------------------------- gradients, masking


@pytest.mark.parametrize("method,wide", [("sequential", False), ("sequential", True),
                                         ("parallel", True)])
def test_gradient_is_empirical_minus_expected_counts(method, wide):
  k = 4
  u, tr, mask, tags, start, end, lengths = random_problem(3, k, True, wide=wide)
  grads = jax.grad(
      lambda u, tr, s, e: jnp.sum(crf.log_likelihood(u, tags, tr, mask, start=s, end=e,
                                                     method=method)), argnums=(0, 1, 2, 3))(
                                                         u, tr, start, end)
  g_u, g_tr, g_s, g_e = map(np.asarray, grads)
  exp_tr, exp_s, exp_e = np.zeros((k, k)), np.zeros(k), np.zeros(k)
  for i, n in enumerate(lengths):
    r = brute_force(u[i, :n], tr, n, start, end)
    onehot = np.eye(k)[tags[i, :n]]
    np.testing.assert_allclose(g_u[i, :n], onehot - r["marg"], atol=1e-5)
    np.testing.assert_array_equal(g_u[i, n:], 0)
    exp_tr += r["pair"]
    np.add.at(exp_tr, (tags[i, :n - 1], tags[i, 1:n]), -1.0)
    exp_s += r["start"] - np.eye(k)[tags[i, 0]]
    exp_e += r["end"] - np.eye(k)[tags[i, n - 1]]
  np.testing.assert_allclose(g_tr, -exp_tr, atol=1e-5)
  np.testing.assert_allclose(g_s, -exp_s, atol=1e-5)
  np.testing.assert_allclose(g_e, -exp_e, atol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_masked_steps_have_no_effect_and_zero_gradient(method):
  u, tr, mask, tags, start, end, _ = random_problem(5, 3, True, b=3, t=9)
  u2, tags2 = u.copy(), tags.copy()
  u2[~mask] = np.nan  # even NaN padding is ignored
  tags2[~mask] = 2

  def outputs(u, tags):
    ll, vjp = jax.vjp(lambda u, tr: crf.log_likelihood(u, tags, tr, mask, start=start, end=end,
                                                       method=method), u, tr)
    g_u, g_tr = vjp(jnp.ones_like(ll))
    return (ll, g_u, g_tr, crf.marginals(u, tr, mask, start=start, end=end, method=method),
            crf.viterbi_decode(u, tr, mask, start=start, end=end)[0])

  for a, b in zip(outputs(u, tags), outputs(u2, tags2)):
    np.testing.assert_array_equal(a, b)
  g_u = outputs(u2, tags2)[1]
  assert np.all(np.asarray(g_u)[~mask] == 0)


def test_sequential_and_parallel_agree_with_gradients():
  rng = np.random.default_rng(11)
  b, t, k = 3, 37, 5
  u = rng.normal(size=(b, t, k)).astype(np.float32) * 3
  tr, s, e = rng.normal(size=(k, k)), rng.normal(size=k), rng.normal(size=k)
  mask = np.arange(t)[None] < np.array([[37], [20], [1]])
  f = {m: jax.value_and_grad(lambda u, tr, s, e, m=m: jnp.sum(
      crf.log_partition(u, tr, mask, start=s, end=e, method=m) * jnp.arange(1.0, b + 1)),
                             argnums=(0, 1, 2, 3)) for m in METHODS}
  (v1, g1), (v2, g2) = (f[m](u, tr, s, e) for m in METHODS)
  np.testing.assert_allclose(v1, v2, rtol=1e-6)
  for a, c in zip(g1, g2):
    np.testing.assert_allclose(a, c, atol=2e-5)


def test_long_sequence_against_float64_forward():
  rng = np.random.default_rng(0)
  t, k = 10_000, 5
  u = rng.uniform(-50, 50, size=(2, t, k)).astype(np.float32)
  tr = rng.normal(size=(k, k)).astype(np.float32) * 3
  s, e = rng.normal(size=k).astype(np.float32), rng.normal(size=k).astype(np.float32)
  lengths = [t, 7_001]
  mask = np.arange(t)[None] < np.array(lengths)[:, None]
  u64, tr64 = u.astype(np.float64), tr.astype(np.float64)
  ref = [np_forward(u64[i], tr64, s, e, n) for i, n in enumerate(lengths)]
  ref_best = [np_viterbi_score(u64[i], tr64, s, e, n) for i, n in enumerate(lengths)]
  for method in METHODS:
    log_z = np.asarray(crf.log_partition(u, tr, mask, start=s, end=e, method=method))
    np.testing.assert_allclose(log_z, ref, rtol=1e-6)  # a few float32 ulps of ~3e5
  marg = np.asarray(crf.marginals(u, tr, mask, start=s, end=e))
  assert np.all(np.isfinite(marg))
  np.testing.assert_allclose(marg.sum(-1), mask.astype(np.float32), atol=1e-4)
  _, best = crf.viterbi_decode(u, tr, mask, start=s, end=e)
  np.testing.assert_allclose(best, ref_best, rtol=1e-6)
  g = jax.grad(lambda tr: jnp.sum(crf.log_partition(u, tr, mask)))(tr)
  np.testing.assert_allclose(np.sum(g), np.sum(mask) - 2, rtol=1e-4)  # expected transition count


# ----------------------------------------------------------------------------- fit


def sample_crf(params, features, lengths, rng):
  """Exact samples from p(y | x) by forward filtering, backward sampling (float64 NumPy)."""
  w, b, tr, s, e = (np.asarray(x, np.float64) for x in (params.weights, params.bias,
                                                        params.transitions, params.start,
                                                        params.end))
  u = features.astype(np.float64) @ w + b
  n, t, k = u.shape
  tags = np.zeros((n, t), np.int32)
  for i, length in enumerate(lengths):
    alpha = np.zeros((length, k))
    alpha[0] = s + u[i, 0]
    for j in range(1, length):
      alpha[j] = scipy.special.logsumexp(alpha[j - 1][:, None] + tr, axis=0) + u[i, j]
    logits = alpha[-1] + e
    for j in range(length - 1, -1, -1):
      p = np.exp(logits - scipy.special.logsumexp(logits))
      tags[i, j] = rng.choice(k, p=p)
      if j:
        logits = alpha[j - 1] + tr[:, tags[i, j]]
  return tags


def make_true_crf(rng, d=5, k=4):
  return crf.CRFParams(
      weights=jnp.asarray(rng.normal(size=(d, k)), jnp.float32),
      bias=jnp.asarray(rng.normal(size=k) * 0.5, jnp.float32),
      transitions=jnp.asarray(np.eye(k) * 2.0 + rng.normal(size=(k, k)) * 0.5, jnp.float32),
      start=jnp.asarray(rng.normal(size=k), jnp.float32),
      end=jnp.asarray(rng.normal(size=k), jnp.float32))


def sampled_data(rng, params, n, t, d):
  lengths = rng.integers(t // 2, t + 1, size=n)
  feats = rng.normal(size=(n, t, d)).astype(np.float32)
  mask = np.arange(t)[None] < lengths[:, None]
  feats[~mask] = 0.0
  return feats, sample_crf(params, feats, lengths, rng), mask


def test_fit_recovers_decoding_accuracy_of_true_crf():
  rng = np.random.default_rng(0)
  true = make_true_crf(rng)
  train = sampled_data(rng, true, 120, 16, 5)
  feats, tags, mask = sampled_data(rng, true, 200, 16, 5)
  params, info = crf.fit(*train, sigma2=10.0, max_iter=300, tol=1e-3, num_classes=4)
  assert info.converged, info
  acc = lambda p: np.mean(np.asarray(crf.predict(p, feats, mask))[mask] == tags[mask])
  acc_true, acc_fit = acc(true), acc(params)
  assert acc_true > 0.5  # far above chance (0.25): the test can fail
  assert abs(acc_fit - acc_true) < 0.03, (acc_fit, acc_true)


def test_predict_and_predict_marginals_against_brute_force():
  rng = np.random.default_rng(6)
  params = make_true_crf(rng, d=3, k=3)
  feats, _, mask = sampled_data(rng, params, 5, 5, 3)
  pred = np.asarray(crf.predict(params, feats, mask))
  marg = np.asarray(crf.predict_marginals(params, feats, mask))
  u = feats.astype(np.float64) @ np.asarray(params.weights, np.float64) + np.asarray(params.bias)
  for i, n in enumerate(mask.sum(1)):
    r = brute_force(u[i, :n], params.transitions, n, params.start, params.end)
    np.testing.assert_allclose(marg[i, :n], r["marg"], atol=1e-5)
    np.testing.assert_allclose(r["scores"][tuple(pred[i, :n])], r["best"], rtol=1e-5)
    np.testing.assert_array_equal(pred[i, n:], 0)


def _np_objective(theta, feats, tags, lengths, d, k, sigma2):
  """Float64 objective by brute-force enumeration (independent of the library)."""
  w = theta[:d * k].reshape(d, k)
  b = theta[d * k:d * k + k]
  tr = theta[d * k + k:d * k + k + k * k].reshape(k, k)
  s, e = theta[-2 * k:-k], theta[-k:]
  total = 0.0
  for i, n in enumerate(lengths):
    r = brute_force(feats[i, :n] @ w + b, tr, n, s, e)
    total -= r["scores"][tuple(tags[i, :n])] - r["log_z"]
  return total + np.sum(theta ** 2) / (2 * sigma2)


def test_both_solvers_reach_the_brute_force_optimum():
  rng = np.random.default_rng(1)
  d, k, n, t, sigma2 = 2, 3, 8, 4, 2.0
  true = make_true_crf(rng, d, k)
  feats, tags, mask = sampled_data(rng, true, n, t, d)
  lengths = mask.sum(1)
  x0 = np.zeros(d * k + k + k * k + 2 * k)
  ref = scipy.optimize.minimize(_np_objective, x0, args=(feats.astype(np.float64), tags, lengths,
                                                         d, k, sigma2), method="BFGS",
                                options=dict(gtol=1e-7))
  values = {}
  for solver in ("jaxopt", "optax"):
    params, info = crf.fit(feats, tags, mask, sigma2=sigma2, solver=solver, num_classes=k)  # defaults
    assert info.converged, info
    theta = np.concatenate([np.ravel(getattr(params, f)) for f in
                            ("weights", "bias", "transitions", "start", "end")])
    values[solver] = _np_objective(theta.astype(np.float64), feats.astype(np.float64), tags,
                                   lengths, d, k, sigma2)
    np.testing.assert_allclose(info.objective, values[solver], rtol=1e-5)
    assert info.iterations >= 1
  for v in values.values():
    np.testing.assert_allclose(v, ref.fun, rtol=1e-5)
  np.testing.assert_allclose(values["jaxopt"], values["optax"], rtol=1e-5)


def test_second_fit_does_not_recompile():
  rng = np.random.default_rng(2)
  feats = rng.normal(size=(6, 5, 3)).astype(np.float32)
  tags = rng.integers(0, 3, size=(6, 5))
  mask = np.ones((6, 5), bool)
  before = crf.TRACE_COUNT["fit"]
  crf.fit(feats, tags, mask, sigma2=1.0, max_iter=7, tol=1e-3, num_classes=3)  # first: compiles
  assert crf.TRACE_COUNT["fit"] == before + 1
  params, info = crf.fit(feats * 2, tags[::-1], mask, sigma2=3.0, max_iter=7, tol=1e-3,
                         num_classes=3)
  assert crf.TRACE_COUNT["fit"] == before + 1
  assert info.iterations <= 7
  crf.fit(feats, tags, mask, sigma2=0.5, max_iter=7, tol=1e-6, num_classes=3, init=params)
  assert crf.TRACE_COUNT["fit"] == before + 1  # tol and init are not compile-time constants


def test_select_sigma2_picks_by_validation_accuracy():
  rng = np.random.default_rng(4)
  true = make_true_crf(rng)  # shapes as the recovery test
  train = sampled_data(rng, true, 120, 16, 5)
  val = sampled_data(rng, true, 200, 16, 5)
  grid = (1e-3, 1.0, 100.0)
  best, params, table = crf.select_sigma2(train, val, grid)
  assert set(table) == set(grid)
  feats, tags, mask = val
  cold = {}
  for s, row in table.items():
    cold[s] = crf.fit(*train, sigma2=s, num_classes=4)  # from zeros, not warm-started
    acc = np.mean(np.asarray(crf.predict(cold[s][0], feats, mask))[mask] == tags[mask])
    np.testing.assert_allclose(row.val_accuracy, acc, atol=1.5 / mask.sum())
    np.testing.assert_allclose(row.train_objective, cold[s][1].objective, rtol=1e-5)
    assert row.converged
  key = lambda s: (table[s].val_accuracy, table[s].val_log_likelihood)
  assert key(best) == max(key(s) for s in grid)
  # sigma2 = 1e-3 shrinks everything to ~0: uniform, so a worse validation likelihood.
  assert table[1e-3].val_log_likelihood < table[best].val_log_likelihood
  # The returned params are the chosen fit (no refit): its objective is the table's.
  obj = float(crf.objective(params, *train, best))
  np.testing.assert_allclose(obj, table[best].train_objective, rtol=1e-5)
  # Warm starts along the path (smallest sigma2 first) save iterations over cold starts.
  path = crf.fit_path(*train, grid, num_classes=4)
  assert sum(i.iterations for _, i in path.values()) < sum(i.iterations for _, i in cold.values())


def test_select_sigma2_inner_cv_pools_held_out_accuracy():
  rng = np.random.default_rng(5)
  true = make_true_crf(rng)
  x, tags, mask = sampled_data(rng, true, 120, 16, 5)
  idx = np.arange(120)
  folds = [(idx[idx % 3 != j], idx[idx % 3 == j]) for j in range(3)]
  grid = (1e-3, 1.0)
  best, params, scores = crf.select_sigma2_inner_cv((x, tags, mask), folds, grid)
  for s in grid:  # pooled accuracy, computed by hand from cold fits on each fold
    correct = 0
    for fit_idx, held in folds:
      p, _ = crf.fit(x[fit_idx], tags[fit_idx], mask[fit_idx], sigma2=s, num_classes=4)
      pred = np.asarray(crf.predict(p, x[held], mask[held]))
      correct += np.sum((pred == tags[held])[mask[held]])
    np.testing.assert_allclose(scores[s], correct / mask.sum(), atol=1.5 / mask.sum())
  assert scores[best] == max(scores.values()) and best == 1.0
  full, _ = crf.fit(x, tags, mask, sigma2=best, num_classes=4)
  np.testing.assert_allclose(float(crf.objective(params, x, tags, mask, best)),
                             float(crf.objective(full, x, tags, mask, best)), rtol=1e-5)


def test_save_and_load_crf_round_trip_with_extras(tmp_path):
  params = make_true_crf(np.random.default_rng(7), d=3, k=4)
  extras = {"mean": np.arange(3, dtype=np.float32), "std": np.full(3, 2.0, np.float32)}
  path = str(tmp_path / "crf.npz")
  crf.save_crf(path, params, 0.5, extras=extras)
  loaded, sigma2, got = crf.load_crf(path)
  assert sigma2 == 0.5 and set(got) == {"mean", "std"}
  for name in extras:
    np.testing.assert_array_equal(got[name], extras[name])
  for f in ("weights", "bias", "transitions", "start", "end"):
    np.testing.assert_array_equal(np.asarray(getattr(loaded, f)), np.asarray(getattr(params, f)))
  crf.save_crf(path, params, 2.0)
  assert crf.load_crf(path)[2] == {}
  with pytest.raises(FileNotFoundError, match="stage 2"):
    crf.load_crf(str(tmp_path / "missing.npz"))


# ----------------------------------------------------------------------------- bad input


def test_bad_inputs_raise_clear_errors():
  u = np.zeros((2, 4, 3), np.float32)
  tr = np.zeros((3, 3), np.float32)
  mask = np.ones((2, 4), bool)
  tags = np.zeros((2, 4), np.int32)
  with pytest.raises(ValueError, match="transitions"):
    crf.log_partition(u, np.zeros((3, 4)), mask)
  with pytest.raises(ValueError, match="mask"):
    crf.log_partition(u, tr, np.ones((2, 5), bool))
  with pytest.raises(ValueError, match="unaries"):
    crf.marginals(u[0], tr, mask)
  with pytest.raises(ValueError, match="start"):
    crf.log_partition(u, tr, mask, start=np.zeros(4))
  with pytest.raises(ValueError, match="tags"):
    crf.sequence_score(u, tags[:, :3], tr, mask)
  not_prefix = mask.copy()
  not_prefix[1, 1] = False
  with pytest.raises(ValueError, match="mask.*prefix"):
    crf.viterbi_decode(u, tr, not_prefix)
  empty = mask.copy()
  empty[0] = False
  with pytest.raises(ValueError, match="mask.*empty"):
    crf.log_likelihood(u, tags, tr, empty)
  bad_tags = tags.copy()
  bad_tags[0, 1] = 3
  with pytest.raises(ValueError, match=r"tags.*\[0, 3\)"):
    crf.log_likelihood(u, bad_tags, tr, mask)
  with pytest.raises(ValueError, match="method"):
    crf.log_partition(u, tr, mask, method="fast")
  feats = np.zeros((2, 4, 5), np.float32)
  with pytest.raises(ValueError, match="sigma2"):
    crf.fit(feats, tags, mask, sigma2=0.0)
  with pytest.raises(ValueError, match="sigma2"):
    crf.fit(feats, tags, mask, sigma2=-1.0)
  nan_feats = feats.copy()
  nan_feats[1, 2, 0] = np.nan
  with pytest.raises(ValueError, match="features.*non-finite"):
    crf.fit(nan_feats, tags, mask, sigma2=1.0)
  with pytest.raises(ValueError, match=r"tags.*\[0, 2\)"):
    crf.fit(feats, bad_tags, mask, sigma2=1.0, num_classes=2)
  with pytest.raises(ValueError, match="tags"):
    crf.fit(feats, tags[:1], mask, sigma2=1.0)
  with pytest.raises(ValueError, match="mask.*prefix"):
    crf.fit(feats, tags, not_prefix, sigma2=1.0)
  with pytest.raises(ValueError, match="solver"):
    crf.fit(feats, tags, mask, sigma2=1.0, solver="adam")
  params = crf.CRFParams.zeros(5, 3)
  with pytest.raises(ValueError, match="D = 4"):
    crf.predict(params, feats[..., :4], mask)
  with pytest.raises(ValueError, match="grid"):
    crf.select_sigma2((feats, tags, mask), (feats, tags, mask), [1.0, 0.0])
