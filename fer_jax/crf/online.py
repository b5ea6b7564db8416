"""Online CRF over a stream of frames: forward filtering and fixed-lag smoothing.

Frame t is decided once frame t + L has arrived (L = `lag`; L = 0 is filtering): its marginal is
p(y_t | frames 0..t+L) of the CRF of that prefix (start term, no `end` term: the stream has not
ended), and its label is the argmax of that marginal (per frame, not a Viterbi path). At the end of
the stream, `finish` decides the frames still pending given every frame received.

State between pushes: the forward message of the last frame and, for the last L frames, their
unaries and forward messages (fixed size, whatever the stream's length). A push of n frames costs
O((n + L) K^2) for the forward messages plus O(n L K^2) for the n backward windows of L frames, so
the cost per frame does not grow with time; no prefix is recomputed. Each push is one jitted call,
compiled once per (chunk length, D, K, L, method).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from fer_jax.crf.inference import _log_matmul, _lse, _METHODS, _NEG
from fer_jax.crf.params import CRFParams

# Number of times the push / finish bodies were traced; tests pin it to check one compile per shape.
TRACE_COUNT = {"push": 0, "finish": 0}


def _backward_sequential(window, transitions, lag):
  """beta of the first frame of each window, log space, no end term.

  window: [n, L, K] unaries of the L frames after each decided frame -> [n, K].
  """
  def one(u):  # [L, K]
    def step(beta, u_next):
      return _lse(transitions + (u_next + beta)[None, :], axis=1), None
    beta, _ = jax.lax.scan(step, jnp.zeros(u.shape[-1], u.dtype), u, reverse=True)
    return beta

  if lag == 0:
    return jnp.zeros((window.shape[0], window.shape[-1]), window.dtype)
  return jax.vmap(one)(window)


def _backward_parallel(window, transitions, lag):
  """As _backward_sequential, by an O(log L)-depth log-semiring product of the window's matrices."""
  n, _, k = window.shape
  if lag == 0:
    return jnp.zeros((n, k), window.dtype)
  mats = transitions[None, None] + window[:, :, None, :]  # [n, L, K, K]: (y_{s-1}, y_s)
  c = jnp.max(mats, axis=(-2, -1))
  prods, offs = jax.lax.associative_scan(_log_matmul, (mats - c[..., None, None], c), axis=1)
  return offs[:, -1, None] + _lse(prods[:, -1], axis=-1)


@functools.partial(jax.jit, static_argnames=("lag", "method"))
def _push(params, buf_u, buf_alpha, prev_alpha, count, features, *, lag, method):
  """One chunk: forward messages of the new frames, then the n fixed-lag marginals of the window.

  Window slots: the L buffered frames then the n new ones; slot i < n is decided now (slot i + L is
  received). Returns (marginals [n, K] of slots 0..n-1, new buffers, last forward message).
  """
  TRACE_COUNT["push"] += 1
  u_new = params.unaries(features)  # [n, K]
  tr = params.transitions

  def fwd(alpha, xs):
    u, j = xs
    nxt = _lse(alpha[:, None] + tr, axis=0) + u
    nxt = jnp.where(count + j == 0, params.start + u, nxt)  # the stream's first frame
    nxt = nxt - jnp.max(nxt)
    return nxt, nxt

  n = u_new.shape[0]
  prev_alpha, alphas = jax.lax.scan(fwd, prev_alpha, (u_new, jnp.arange(n)))
  window_u = jnp.concatenate([buf_u, u_new])  # [L + n, K]
  window_alpha = jnp.concatenate([buf_alpha, alphas])
  idx = jnp.arange(n)[:, None] + 1 + jnp.arange(lag)[None, :]  # [n, L]: slots after each decision
  ahead = window_u[idx]  # [n, L, K]
  backward = _backward_sequential if method == "sequential" else _backward_parallel
  beta = backward(ahead, tr, lag)
  marg = jax.nn.softmax(window_alpha[:n] + beta, axis=-1)
  return marg, window_u[n:], window_alpha[n:], prev_alpha


@jax.jit
def _finish(transitions, buf_u, buf_alpha):
  """Marginals of every buffered slot given all slots up to the last (no end term): [L, K]."""
  TRACE_COUNT["finish"] += 1

  def step(beta, u_next):
    new = _lse(transitions + (u_next + beta)[None, :], axis=1)
    return new, new

  k = buf_u.shape[-1]
  _, betas = jax.lax.scan(step, jnp.zeros(k, buf_u.dtype), buf_u[1:], reverse=True)
  betas = jnp.concatenate([betas, jnp.zeros((1, k), buf_u.dtype)])
  return jax.nn.softmax(buf_alpha + betas, axis=-1)


class FixedLagSmoother:
  """Fixed-lag CRF marginals and labels over a stream of per-frame features.

  Usage:
    smoother = crf.FixedLagSmoother(params, lag=5)
    for chunk in chunks:                       # [n, D] features, any n >= 0, in order
      frames, marginals, labels = smoother.push(chunk)
    frames, marginals, labels = smoother.finish()

  Each call returns the frames it decides, in order: frame_indices int64 [m] (0-based, counted from
  the first frame pushed), marginals float32 [m, K] = p(y_t | frames <= t + lag) (exact: the CRF of
  that prefix with its start term and no end term), labels int32 [m] = argmax of each marginal.
  Chunk sizes do not change the numbers. After `finish` (which decides the last min(lag, frames)
  frames given everything received) the smoother is empty and the next push starts a new stream.
  """

  def __init__(self, params: CRFParams, lag: int, *, method: str = "sequential"):
    """Args: params: a fitted CRFParams ([D, K] weights). lag: L >= 0 frames of look-ahead (0 =
    filtering). method: "sequential" (lax.scan over each look-ahead window) or "parallel"
    (associative log-semiring products, O(log L) depth, for long lags on accelerators)."""
    if not isinstance(params, CRFParams):
      raise ValueError(f"params must be a CRFParams, got {type(params).__name__}.")
    if isinstance(lag, bool) or not isinstance(lag, (int, np.integer)) or lag < 0:
      raise ValueError(f"lag must be an integer >= 0 (frames of look-ahead), got {lag!r}.")
    if method not in _METHODS:
      raise ValueError(f"method must be one of {_METHODS}, got {method!r}.")
    self.params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32), params)
    self.lag, self.method = int(lag), method
    self.num_features, self.num_classes = self.params.weights.shape
    self._reset()

  def _reset(self):
    k = self.num_classes
    self._buf_u = jnp.zeros((self.lag, k), jnp.float32)
    self._buf_alpha = jnp.full((self.lag, k), _NEG, jnp.float32)
    self._prev_alpha = jnp.zeros((k,), jnp.float32)
    self._count = 0  # frames received
    self._pending = 0  # received, not yet decided (<= lag)

  @property
  def frames_received(self) -> int:
    return self._count

  def push(self, features):
    """Adds frames. features: [n, D] float (n >= 0), finite. Returns the frames decided now."""
    x = np.asarray(features, np.float32)
    if x.ndim != 2 or x.shape[1] != self.num_features:
      raise ValueError(f"features must be [n, D] with D = {self.num_features} (the CRF's), got "
                       f"shape {x.shape}; pass one row of CRF input per frame.")
    if not np.all(np.isfinite(x)):
      raise ValueError("features contain non-finite values (NaN/inf); drop or repair those frames.")
    n = x.shape[0]
    if n == 0:
      return self._empty()
    marg, self._buf_u, self._buf_alpha, self._prev_alpha = _push(
        self.params, self._buf_u, self._buf_alpha, self._prev_alpha, jnp.int32(self._count),
        jnp.asarray(x), lag=self.lag, method=self.method)
    first = self.lag - self._pending  # slots before it were empty
    marg = np.asarray(marg)[max(first, 0):]
    frames = np.arange(self._count - self._pending, self._count - self._pending + len(marg))
    self._count += n
    self._pending = min(self.lag, self._pending + n)
    return frames, marg, np.argmax(marg, axis=-1).astype(np.int32)

  def finish(self):
    """Decides the pending frames given every frame received; then resets for a new stream."""
    if self._pending == 0:
      self._reset()
      return self._empty()
    marg = np.asarray(_finish(self.params.transitions, self._buf_u, self._buf_alpha))
    marg = marg[self.lag - self._pending:]
    frames = np.arange(self._count - self._pending, self._count)
    self._reset()
    return frames, marg, np.argmax(marg, axis=-1).astype(np.int32)

  def _empty(self):
    return (np.zeros((0,), np.int64), np.zeros((0, self.num_classes), np.float32),
            np.zeros((0,), np.int32))
