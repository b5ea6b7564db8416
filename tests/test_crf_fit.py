"""crf.fit at its DEFAULT settings against a float64 optimum (NumPy forward-backward + SciPy L-BFGS).

The reference objective and gradient below are written from the CRF's definition in float64 NumPy,
independently of fer_jax.crf; they are themselves checked against brute-force enumeration.
"""
import itertools

import numpy as np
import pytest
import scipy.optimize
import scipy.special

from fer_jax import crf

_lse = scipy.special.logsumexp


def unpack(theta, d, k):
  sizes = [d * k, k, k * k, k, k]
  w, b, tr, s, e = np.split(theta, np.cumsum(sizes)[:-1])
  return w.reshape(d, k), b, tr.reshape(k, k), s, e


def np_objective(theta, x, tags, mask, k, sigma2):
  """Float64 objective (sum form) and its gradient by forward-backward. x [N, T, D] float64."""
  n, t, d = x.shape
  w, b, tr, start, end = unpack(theta, d, k)
  u = x @ w + b  # [N, T, K]
  m = mask.astype(np.float64)
  last = mask.sum(1) - 1
  rows = np.arange(n)
  alpha = np.zeros((n, t, k))
  alpha[:, 0] = start + u[:, 0]
  for s in range(1, t):
    new = _lse(alpha[:, s - 1, :, None] + tr, axis=1) + u[:, s]
    alpha[:, s] = np.where(mask[:, s, None], new, alpha[:, s - 1])
  log_z = _lse(alpha[:, -1] + end, axis=1)
  beta = np.zeros((n, t, k))
  beta[:, -1] = end
  for s in range(t - 2, -1, -1):
    new = _lse(tr[None] + (u[:, s + 1] + beta[:, s + 1])[:, None, :], axis=2)
    beta[:, s] = np.where(mask[:, s + 1, None], new, end)
  p = np.exp(alpha + beta - log_z[:, None, None]) * m[..., None]  # [N, T, K]
  xi = np.exp(alpha[:, :-1, :, None] + tr + (u[:, 1:] + beta[:, 1:])[:, :, None, :]
              - log_z[:, None, None, None]) * m[:, 1:, None, None]  # [N, T-1, K, K]
  y = np.eye(k)[tags] * m[..., None]
  y_last = y[rows, last]
  score = (np.sum(u * y) + np.einsum("nsi,ij,nsj->", y[:, :-1], tr, y[:, 1:])
           + np.sum(y[:, 0] @ start) + np.sum(y_last @ end))
  value = np.sum(log_z) - score + np.sum(theta ** 2) / (2 * sigma2)
  grad = np.concatenate([
      np.einsum("ntd,ntk->dk", x, p - y).ravel(), np.sum(p - y, axis=(0, 1)),
      (xi.sum((0, 1)) - np.einsum("nsi,nsj->ij", y[:, :-1], y[:, 1:])).ravel(),
      np.sum(p[:, 0] - y[:, 0], 0), np.sum(p[rows, last] - y_last, 0)]) + theta / sigma2
  return value, grad


def float64_optimum(x, tags, mask, k, sigma2, theta0):
  """min of the float64 objective by SciPy L-BFGS-B from theta0 (strictly convex: one optimum
  whatever the start; starting near it only saves time). Returns (value, theta)."""
  x = x.astype(np.float64) * mask[..., None]
  res = scipy.optimize.minimize(np_objective, theta0, args=(
      x, tags, mask, k, sigma2), jac=True, method="L-BFGS-B",
                                options=dict(maxiter=5000, maxcor=30, ftol=1e-14, gtol=1e-8))
  return res.fun, res.x


def theta_of(params):
  return np.concatenate([np.ravel(np.asarray(getattr(params, f), np.float64))
                         for f in ("weights", "bias", "transitions", "start", "end")])


def sample_problem(seed, n, k, d=8, t=30, min_len=5, logit_like=False):
  """Features and tags drawn from a random CRF (forward filter, backward sample), float32.

  logit_like: features with offsets and scales like a trained CNN's logits and labels they nearly
  separate (the demo's case: large optimal weights, ill-conditioned).
  """
  rng = np.random.default_rng(seed)
  w = rng.normal(size=(d, k)) * (2.0 if logit_like else 0.5)
  tr = np.eye(k) * 1.5 + rng.normal(size=(k, k)) * 0.5
  lengths = rng.integers(min_len, t + 1, size=n)
  mask = np.arange(t)[None] < lengths[:, None]
  x = (rng.normal(size=(n, t, d)) * mask[..., None]).astype(np.float32)
  u = x.astype(np.float64) @ w
  alpha = np.zeros((n, t, k))
  alpha[:, 0] = u[:, 0]
  for s in range(1, t):
    alpha[:, s] = np.where(mask[:, s, None], _lse(alpha[:, s - 1, :, None] + tr, axis=1) + u[:, s],
                           alpha[:, s - 1])
  tags = np.zeros((n, t), np.int64)
  rows = np.arange(n)
  tags[rows, lengths - 1] = np.argmax(alpha[rows, lengths - 1] + rng.gumbel(size=(n, k)), -1)
  for s in range(t - 2, -1, -1):
    cand = np.argmax(alpha[:, s] + tr[:, tags[:, s + 1]].T + rng.gumbel(size=(n, k)), -1)
    tags[:, s] = np.where(mask[:, s + 1], cand, tags[:, s])
  if logit_like:
    x = (x * 4.0 + rng.normal(size=d).astype(np.float32) * 5.0) * mask[..., None]
  return x, np.where(mask, tags, 0), mask


def test_reference_objective_against_brute_force_and_finite_differences():
  x, tags, mask = sample_problem(0, n=3, k=3, d=2, t=4, min_len=1)
  rng = np.random.default_rng(1)
  theta = rng.normal(size=2 * 3 + 9 + 9)
  value, grad = np_objective(theta, x.astype(np.float64), tags, mask, 3, 2.0)
  w, b, tr, s, e = unpack(theta, 2, 3)
  want = np.sum(theta ** 2) / 4.0
  for i in range(3):
    n = mask[i].sum()
    u = x[i, :n].astype(np.float64) @ w + b
    paths = list(itertools.product(range(3), repeat=n))
    score = lambda y: u[np.arange(n), y].sum() + tr[y[:-1], y[1:]].sum() + s[y[0]] + e[y[-1]]
    want += _lse([score(np.array(y)) for y in paths]) - score(tags[i, :n])
  np.testing.assert_allclose(value, want, rtol=1e-12)
  eps = 1e-6
  fd = [(np_objective(theta + eps * v, x.astype(np.float64), tags, mask, 3, 2.0)[0]
         - np_objective(theta - eps * v, x.astype(np.float64), tags, mask, 3, 2.0)[0]) / (2 * eps)
        for v in np.eye(len(theta))]
  np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-7)


def landmark_problem(subjects=10, size=32):
  """The demo's geometry input, small: synthetic.generate's landmarks of `subjects` subjects (6
  sequences of 12-24 frames each), geometry.features(reference="none") (D = 136 collinear
  coordinates), standardised. Collinear and nearly separable: the kind of input whose sigma2 = 10
  fits stalled in float32 in the demo (there D = 272 and 126 sequences; old stopping rule)."""
  from fer_jax import geometry  # pylint: disable=g-import-not-at-top
  from fer_jax.data import synthetic  # pylint: disable=g-import-not-at-top
  recs = list(synthetic.generate(subjects, 6, 12, 24, size, seed=0))
  lengths = np.array([len(r["labels"]) for r in recs])
  mask = np.arange(lengths.max())[None] < lengths[:, None]
  tags = np.zeros(mask.shape, np.int64)
  x = np.zeros(mask.shape + (geometry.num_features("none"),), np.float32)
  for i, r in enumerate(recs):
    tags[i, :lengths[i]] = r["labels"]
    x[i, :lengths[i]] = geometry.features(r["landmarks"], "none")
  frames = x[mask]
  x = np.where(mask[..., None], (x - frames.mean(0)) / frames.std(0), 0).astype(np.float32)
  return x, tags, mask


def check_fit(x, tags, mask, k, sigma2):
  """Fits with both solvers at the defaults; checks convergence, the objective against the float64
  optimum (one SciPy run, from the better fit) and the gap bound against the true gap.

  Returns:
    ({solver: FitInfo}, float64 optimum).
  """
  fits = {s: crf.fit(x, tags, mask, sigma2=sigma2, solver=s, num_classes=k)
          for s in ("jaxopt", "optax")}
  values = {s: np_objective(theta_of(p), x.astype(np.float64), tags, mask, k, sigma2)[0]
            for s, (p, _) in fits.items()}
  best = min(values, key=values.get)
  ref, _ = float64_optimum(x, tags, mask, k, sigma2, theta_of(fits[best][0]))
  for solver, (_, info) in fits.items():
    gap = (values[solver] - ref) / abs(ref)
    assert info.converged and info.stop == "gap", (solver, info)
    assert gap <= 1e-5, (solver, gap, info)
    assert gap <= info.gap_bound * (1 + 1e-3) + 1e-9, (solver, gap, info)  # the bound is a bound
    np.testing.assert_allclose(info.objective, values[solver], rtol=1e-5)  # the sum form
  iterations = {s: i.iterations for s, (_, i) in fits.items()}
  assert iterations["optax"] <= 1.5 * iterations["jaxopt"] + 3, iterations
  return {s: i for s, (_, i) in fits.items()}, ref


# (N, K, sigma2, logit_like, T, precision): few and many sequences, 2..10 labels, sigma2 0.01..100,
# nearly separable logit-like features; N = 5,000 with short sequences. precision "float64": float32
# stalls before the bound is met there (few frames and a weak prior: the bound asks |grad| ~ 1e-6
# per frame), so that path is tested; None: either. bench/crf.py fits N = 200 and 2,000 (T <= 30,
# D = 32, sigma2 1 and 10) at the defaults.
CASES = [(20, 10, 100.0, False, 30, "float64"), (150, 7, 10.0, True, 30, None),
         (5000, 2, 0.01, False, 4, None)]


@pytest.mark.parametrize("n,k,sigma2,logit_like,t,precision", CASES)
def test_defaults_converge_to_the_float64_optimum(n, k, sigma2, logit_like, t, precision):
  x, tags, mask = sample_problem(n * 100 + k, n, k, t=t, min_len=min(5, t), logit_like=logit_like)
  infos, ref = check_fit(x, tags, mask, k, sigma2)
  if precision:
    assert all(i.precision == precision for i in infos.values()), infos
  if logit_like:
    # Stopped early on the same problem (compiled already): not converged, and the bound holds.
    params, info = crf.fit(x, tags, mask, sigma2=sigma2, num_classes=k, max_iter=5)
    value, _ = np_objective(theta_of(params), x.astype(np.float64), tags, mask, k, sigma2)
    assert not info.converged and info.stop == "max_iter" and info.iterations == 5, info
    assert 1e-5 < (value - ref) / ref <= info.gap_bound, (value, ref, info)


def test_demo_geometry_converges():
  x, tags, mask = landmark_problem()
  check_fit(x, tags, mask, 7, 10.0)
