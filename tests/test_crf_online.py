"""FixedLagSmoother (fer_jax/crf/online.py) against brute-force enumeration of prefixes (float64)."""
import itertools

import numpy as np
import pytest
import scipy.special

from fer_jax import crf


def prefix_marginals(u, tr, start, length):
  """p(y_t | frames < length) for t < length, by enumerating all K^length paths (no end term)."""
  k = u.shape[-1]
  seqs = np.array(list(itertools.product(range(k), repeat=length)))  # [S, length]
  scores = u[np.arange(length), seqs].sum(1) + start[seqs[:, 0]]
  if length > 1:
    scores += tr[seqs[:, :-1], seqs[:, 1:]].sum(1)
  p = np.exp(scores - scipy.special.logsumexp(scores))
  marg = np.zeros((length, k))
  for t in range(length):
    np.add.at(marg[t], seqs[:, t], p)
  return marg


def random_params(rng, d, k):
  f = lambda *s: rng.normal(size=s).astype(np.float32)
  return crf.CRFParams(weights=f(d, k), bias=f(k), transitions=2 * f(k, k), start=f(k), end=f(k))


def run_stream(smoother, x, chunk):
  """Pushes x in chunks of `chunk` frames, then finishes. Returns (frames, marginals, labels, per
  call: number of frames decided)."""
  outs = [smoother.push(x[i:i + chunk]) for i in range(0, len(x), chunk)] + [smoother.finish()]
  cat = lambda j: np.concatenate([o[j] for o in outs])
  return cat(0), cat(1), cat(2), [len(o[0]) for o in outs]


@pytest.mark.parametrize("k,t,method", [(3, 7, "sequential"), (4, 5, "sequential"),
                                        (3, 5, "parallel")])
def test_fixed_lag_marginals_match_brute_force_prefixes(k, t, method):
  rng = np.random.default_rng(k * 10 + t)
  d = 3
  params = random_params(rng, d, k)
  x = rng.normal(size=(t, d)).astype(np.float32)
  u = x.astype(np.float64) @ np.asarray(params.weights, np.float64) + np.asarray(params.bias)
  tr, start = np.asarray(params.transitions, np.float64), np.asarray(params.start, np.float64)
  prefixes = {n: prefix_marginals(u, tr, start, n) for n in range(1, t + 1)}
  for lag in range(t + 2):
    want = np.stack([prefixes[min(s + lag + 1, t)][s] for s in range(t)])
    for chunk in (1, 3, t):
      smoother = crf.FixedLagSmoother(params, lag, method=method)
      frames, marg, labels, sizes = run_stream(smoother, x, chunk)
      np.testing.assert_array_equal(frames, np.arange(t))
      np.testing.assert_allclose(marg, want, atol=2e-6, err_msg=f"lag {lag} chunk {chunk}")
      np.testing.assert_array_equal(labels, np.argmax(marg, -1))
      # Frame s is decided by the push that brings frame s + lag (or by finish), not later.
      ends = np.cumsum([len(x[i:i + chunk]) for i in range(0, t, chunk)])
      decided = [max(0, min(e - lag, t)) for e in ends]
      assert np.cumsum(sizes[:-1]).tolist() == decided, (lag, chunk, sizes)


def test_lag_beyond_clip_equals_offline_marginals_without_end():
  rng = np.random.default_rng(3)
  params = random_params(rng, 5, 4)
  x = rng.normal(size=(40, 5)).astype(np.float32)
  no_end = params.replace(end=np.zeros(4, np.float32))
  offline = np.asarray(crf.predict_marginals(no_end, x[None], np.ones((1, 40), bool)))[0]
  for chunk in (1, 3, 40):
    _, marg, _, sizes = run_stream(crf.FixedLagSmoother(params, 40), x, chunk)
    assert sum(sizes[:-1]) == 0  # nothing decided before the end of the clip
    np.testing.assert_allclose(marg, offline, atol=1e-5)


def test_long_stream_state_is_fixed_size_and_compiled_once_per_chunk_shape():
  rng = np.random.default_rng(4)
  params = random_params(rng, 5, 3)
  params = params.replace(transitions=params.transitions * 20)  # sharp: log space must hold
  smoother = crf.FixedLagSmoother(params, 4)
  smoother.push(rng.normal(size=(8, 5)))  # compiles the 8-frame push
  before = dict(crf.online.TRACE_COUNT)
  total = 8
  for _ in range(200):
    frames, marg, _ = smoother.push(rng.normal(size=(8, 5)) * 10)
    total += 8
    assert frames.tolist() == list(range(total - 4 - 8, total - 4))
    assert np.all(np.isfinite(marg)) and np.allclose(marg.sum(-1), 1, atol=1e-5)
  assert crf.online.TRACE_COUNT == before
  assert smoother._buf_u.shape == (4, 3)  # pylint: disable=protected-access


def test_bad_inputs_raise_clear_errors():
  params = random_params(np.random.default_rng(0), 5, 3)
  with pytest.raises(ValueError, match="lag"):
    crf.FixedLagSmoother(params, -1)
  with pytest.raises(ValueError, match="method"):
    crf.FixedLagSmoother(params, 2, method="fast")
  smoother = crf.FixedLagSmoother(params, 2)
  with pytest.raises(ValueError, match="D = 5"):
    smoother.push(np.zeros((3, 4)))
  with pytest.raises(ValueError, match="non-finite"):
    smoother.push(np.full((3, 5), np.nan))
  frames, marg, labels = smoother.push(np.zeros((0, 5)))
  assert frames.shape == (0,) and marg.shape == (0, 3) and labels.shape == (0,)
