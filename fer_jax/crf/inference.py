"""Linear-chain CRF inference kernels: log Z, marginals, Viterbi, sequence scores (custom VJP).

Conventions (DESIGN.md):
  unaries [B, T, K] float32; transitions [K, K] with transitions[i, j] the score of label i at step
  t-1 followed by label j at step t; mask [B, T] bool, each row a prefix of True of length >= 1;
  optional start [K] and end [K] (None means zero).

  score(y) = sum_t unaries[t, y_t] + sum_{t>=1} transitions[y_{t-1}, y_t] + start[y_0] + end[y_{L-1}]

over the unmasked steps only. Everything is batched, jit- and grad-traceable. The forward recursion
keeps a max-normalised message plus a running (compensated) log-offset, so T = 10,000 with unaries
of magnitude 50 stays finite and float32-exact; the sequential forward-backward runs in rescaled
probability space (one lax.scan advancing both directions) unless the transitions or `end` span more
than 60, where it falls back to log space (see _SCALED_SPREAD). `method="sequential"` runs a
lax.scan (O(T) depth); `method="parallel"` runs jax.lax.associative_scan over log-semiring [K, K]
matrix products (O(log T) depth, for long videos on accelerators). Values at masked steps are
replaced by zero before use, so they have no effect and get zero gradient. The sequential log Z has
a custom VJP: its gradient is the explicit forward-backward (marginals, pairwise marginals), so it
supports reverse-mode (grad, also nested) but not forward-mode (jvp, jacfwd); method="parallel"
supports both.

Input checks (shapes always; mask prefix, tag range, finiteness only for concrete arrays) raise
ValueError naming the argument; they are skipped for tracers so every function stays jit-able.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

_METHODS = ("sequential", "parallel")
# Log-semiring "zero" for the identity matrix at masked steps; finite so no inf - inf appears.
_NEG = -1e30


# ----------------------------------------------------------------------------- input checks


def _is_concrete(*xs) -> bool:
  return not any(isinstance(x, jax.core.Tracer) for x in xs if x is not None)


def _check_inputs(unaries, transitions, mask, start=None, end=None, tags=None, method=None):
  """Checks shapes (always) and values (concrete inputs only); returns (B, T, K)."""
  if method is not None and method not in _METHODS:
    raise ValueError(f"method must be one of {_METHODS}, got {method!r}.")
  if jnp.ndim(unaries) != 3:
    raise ValueError(f"unaries must be [B, T, K], got shape {jnp.shape(unaries)}.")
  b, t, k = jnp.shape(unaries)
  if t < 1 or k < 1:
    raise ValueError(f"unaries must have T >= 1 and K >= 1, got shape {jnp.shape(unaries)}.")
  if jnp.shape(transitions) != (k, k):
    raise ValueError(
        f"transitions must be [K, K] = {(k, k)} to match unaries {jnp.shape(unaries)}, "
        f"got {jnp.shape(transitions)}.")
  if jnp.shape(mask) != (b, t):
    raise ValueError(f"mask must be [B, T] = {(b, t)} to match unaries, got {jnp.shape(mask)}.")
  for name, v in (("start", start), ("end", end)):
    if v is not None and jnp.shape(v) != (k,):
      raise ValueError(f"{name} must be [K] = {(k,)} or None, got {jnp.shape(v)}.")
  if tags is not None:
    if jnp.shape(tags) != (b, t):
      raise ValueError(f"tags must be [B, T] = {(b, t)} to match unaries, got {jnp.shape(tags)}.")
    if not jnp.issubdtype(jnp.result_type(tags), jnp.integer):
      raise ValueError(f"tags must be an integer array, got dtype {jnp.result_type(tags)}.")
  if _is_concrete(mask):
    _check_mask(np.asarray(mask))
    if tags is not None and _is_concrete(tags):
      _check_tags(np.asarray(tags), np.asarray(mask, bool), k)
  return b, t, k


def _check_mask(mask: np.ndarray, name: str = "mask"):
  m = mask.astype(bool)
  if mask.dtype != bool and not np.all((mask == 0) | (mask == 1)):
    raise ValueError(f"{name} must be boolean (or 0/1), got values other than 0 and 1.")
  empty = np.flatnonzero(~m[:, 0])
  if empty.size:
    raise ValueError(
        f"{name} row(s) {empty[:5].tolist()} are empty or do not start with True; every row must be "
        "a prefix of True of length >= 1 (drop empty sequences).")
  bad = np.flatnonzero(np.any(m[:, 1:] & ~m[:, :-1], axis=1))
  if bad.size:
    raise ValueError(
        f"{name} row(s) {bad[:5].tolist()} are not a prefix of True (a True after a False); put the "
        "valid steps first and pad at the end.")


def _check_tags(tags: np.ndarray, mask: np.ndarray, k: int, name: str = "tags"):
  valid = tags[mask]
  if valid.size and (valid.min() < 0 or valid.max() >= k):
    raise ValueError(
        f"{name} must lie in [0, K) = [0, {k}) at unmasked steps, got range "
        f"[{valid.min()}, {valid.max()}]; pass num_classes or fix the labels.")


def _prepare(unaries, transitions, mask, start, end):
  """Casts, zeroes masked unaries (no effect, zero gradient) and fills missing start/end."""
  mask = jnp.asarray(mask).astype(bool)
  unaries = jnp.asarray(unaries)
  dtype = jnp.result_type(unaries, jnp.float32)
  unaries = jnp.where(mask[..., None], unaries.astype(dtype), 0)
  transitions = jnp.asarray(transitions, dtype)
  k = unaries.shape[-1]
  start = jnp.zeros((k,), dtype) if start is None else jnp.asarray(start, dtype)
  end = jnp.zeros((k,), dtype) if end is None else jnp.asarray(end, dtype)
  return unaries, transitions, mask, start, end


# ----------------------------------------------------------------------------- log-space inference


def _lse(x, axis):
  """logsumexp of finite x (messages here are always finite): max + log(sum(exp(x - max)))."""
  m = jnp.max(x, axis=axis, keepdims=True)
  return jnp.squeeze(m, axis) + jnp.log(jnp.sum(jnp.exp(x - m), axis=axis))


# Below this spread (max - min) of the transition scores and of `end`, the sequential
# forward-backward runs in rescaled probability space (Rabiner's scaling) instead of log space:
# messages are kept as exp(log-message - max), so a step is one [2K, 2K] @ [2K, B] product (both
# directions), a multiply and a max, with no [K, B] exp or log inside the loop (the emissions
# exp(unaries - max) are taken once, outside it). Every entry of E = exp(transitions - max) is then
# > exp(-60), so each product below keeps a term > exp(-60), far above float32 underflow: the result
# is as exact as the log-space form (terms that do underflow are < exp(-87) of the largest one and
# cannot change a float32 sum). Wider spreads (e.g. hard constraints) take the per-entry log-space
# form; lax.cond picks once per call. Internally both work on [T, K, B] unaries (time major, batch
# minor: a max over labels is then a cheap row-wise op) and a [T, B] mask.
_SCALED_SPREAD = 60.0
_HI = jax.lax.Precision.HIGHEST


def _use_scaled(transitions, end):
  spread = lambda x: jnp.max(x) - jnp.min(x)
  return (spread(transitions) < _SCALED_SPREAD) & (spread(end) < _SCALED_SPREAD)


def _to_tkb(unaries, mask):
  """[B, T, K] unaries, [B, T] mask -> [T, K, B], [T, B]."""
  return jnp.transpose(unaries, (1, 2, 0)), jnp.swapaxes(mask, 0, 1)


def _scaled_pass(u, transitions, m, start, end, backward):
  """Forward (and, if `backward`, fused backward) pass in rescaled probability space.

  Args:
    u: [T, K, B] unaries (finite; values at masked steps have no effect); transitions [K, K];
      m: [T, B] bool mask; start, end: [K].
    backward: also run the backward recursion (in the same lax.scan, from the other end).

  Returns:
    log Z [B]; with `backward` also, as [T, K, B] arrays: alphas (forward messages with max 1, held
    at masked steps), betas (backward messages times exp(-max transitions), every entry > exp(-60);
    exp(end - max end) at each last step) and q (q[t] = exp(u_t) * betas[t] / max, what step t
    passes back through the transitions; row 0 unused).
  """
  tr_max = jnp.max(transitions)
  e = jnp.exp(transitions - tr_max)  # [K, K], every entry > exp(-60)
  u_max = jnp.max(u, axis=1)  # [T, B]
  em = jnp.exp(u - u_max[:, None])  # [T, K, B], max 1 per step
  alpha = start[:, None] + u[0]
  offset = jnp.max(alpha, axis=0)
  alpha = jnp.exp(alpha - offset)
  end_max = jnp.max(end)
  end_exp = jnp.exp(end - end_max)[:, None]  # [K, 1], entries > exp(-60)
  log_scale = jnp.where(m[1:], u_max[1:] + tr_max, 0)
  init = (alpha, offset, jnp.zeros_like(offset))

  if not backward:
    def step(carry, xs):
      alpha, offset, comp = carry
      em_t, log_scale, m_t = xs
      # alpha_t ~ (E^T alpha_{t-1}) * em_t; alpha_{t-1} has max 1, so the max is > exp(-60).
      s = jnp.matmul(e.T, alpha, precision=_HI) * em_t
      c = jnp.max(s, axis=0)
      alpha = jnp.where(m_t, s / c, alpha)
      offset, comp = _kahan_add(offset, comp, jnp.where(m_t, jnp.log(c), 0) + log_scale)
      return (alpha, offset, comp), None

    (alpha, offset, comp), _ = jax.lax.scan(step, init, (em[1:], log_scale, m[1:]))
    return (offset - comp) + jnp.log(jnp.sum(alpha * end_exp, axis=0)) + end_max

  # Fused: the forward message alpha_t and the backward message q_{t'} (t' = T-1-t, q_t ~ em_t *
  # beta_t, max 1, so beta_{t-1} = E q_t > exp(-60)) are stacked as one [2K, B] carry and advanced
  # by one product with blockdiag(E^T, E); q restarts from `last` at each sequence's last step.
  k = e.shape[0]
  last = em * end_exp  # q at a sequence's last step; its max is > exp(-60)
  last = last / jnp.max(last, axis=1, keepdims=True)
  zeros = jnp.zeros_like(e)
  mat = jnp.block([[e.T, zeros], [zeros, e]])  # [2K, 2K]
  xs = (jnp.concatenate([em[1:], em[-2::-1]], axis=1),  # [T-1, 2K, B]
        last[-2::-1], jnp.stack([m[1:], m[:0:-1]], axis=1), log_scale)

  def step(carry, xs):
    msg, offset, comp = carry  # msg [2K, B] = (alpha_{t-1}, q_{t'})
    em_t, last_t, m_t, log_scale = xs
    prod = jnp.matmul(mat, msg, precision=_HI)  # (E^T alpha_{t-1}, beta_{t'-1})
    s = jnp.reshape(prod * em_t, (2, k, -1))
    c = jnp.max(s, axis=1)  # [2, B]
    held = jnp.stack([msg[:k], last_t])
    msg = jnp.reshape(jnp.where(m_t[:, None], s / c[:, None], held), (2 * k, -1))
    offset, comp = _kahan_add(offset, comp, jnp.where(m_t[0], jnp.log(c[0]), 0) + log_scale)
    return (msg, offset, comp), (msg, jnp.where(m_t[1], prod[k:], end_exp))

  init = (jnp.concatenate([alpha, last[-1]]), offset, jnp.zeros_like(offset))
  (msg, offset, comp), (msgs, betas) = jax.lax.scan(step, init, xs)
  log_z = (offset - comp) + jnp.log(jnp.sum(msg[:k] * end_exp, axis=0)) + end_max
  alphas = jnp.concatenate([alpha[None], msgs[:, :k]], axis=0)
  betas = jnp.concatenate([betas[::-1], jnp.broadcast_to(end_exp, alpha.shape)[None]], axis=0)
  q = jnp.concatenate([msgs[::-1, k:], last[-1][None]], axis=0)
  return log_z, alphas, betas, q


def _forward_backward_scaled(u, transitions, m, start, end):
  log_z, alphas, betas, q = _scaled_pass(u, transitions, m, start, end, backward=True)
  # sum_i alphas[t, i] betas[t, i] > exp(-60): alphas has max 1 and betas entries > exp(-60).
  post = alphas * betas
  norm = jnp.sum(post, axis=1)  # [T, B]
  probs = post * jnp.where(m, 1 / norm, 0)[:, None]
  # xi_t[i, j] = alphas[t-1, i] E_ij q[t, j] / norm[t-1] with E = exp(tr - max tr), since
  # betas[t-1] = E q[t]. Summing over t (and b, in the backward pass) is one contraction.
  left = alphas[:-1] * jnp.where(m[1:], 1 / norm[:-1], 0)[:, None]
  e = jnp.exp(transitions - jnp.max(transitions))
  b, k = u.shape[-1], u.shape[1]
  return log_z, probs, (left, q[1:], e, jnp.zeros((b, k, k), u.dtype))


def _alphas_log(unaries, transitions, mask, start):
  """Log-space forward pass. Returns max-normalised log alphas [T, B, K] and log-offsets [B]."""
  alpha = start + unaries[:, 0]  # [B, K]
  offset = jnp.max(alpha, axis=-1)
  alpha = alpha - offset[:, None]

  def step(carry, xs):
    alpha, offset, comp = carry  # alpha <= 0 with max 0
    u_t, m_t = xs  # [B, K], [B]
    scores = _lse(alpha[:, :, None] + transitions[None], axis=1) + u_t
    c = jnp.max(scores, axis=-1)
    alpha = jnp.where(m_t[:, None], scores - c[:, None], alpha)
    offset, comp = _kahan_add(offset, comp, jnp.where(m_t, c, 0))
    return (alpha, offset, comp), alpha

  xs = (jnp.swapaxes(unaries[:, 1:], 0, 1), jnp.swapaxes(mask[:, 1:], 0, 1))
  init = (alpha, offset, jnp.zeros_like(offset))
  (_, offset, comp), alphas = jax.lax.scan(step, init, xs)
  return jnp.concatenate([alpha[None], alphas], axis=0), offset - comp


def _betas_log(unaries, transitions, mask, end):
  """Log-space backward pass. Returns max-normalised log betas [T, B, K] (end at each last step)."""
  beta = jnp.broadcast_to(end - jnp.max(end), unaries[:, 0].shape)

  def step(beta, xs):
    u_t, m_t = xs  # step t's unaries and mask; produces beta_{t-1}
    scores = _lse(transitions[None] + (u_t + beta)[:, None, :], axis=2)
    new = jnp.where(m_t[:, None], scores - jnp.max(scores, axis=-1, keepdims=True), beta)
    return new, new

  xs = (jnp.swapaxes(unaries[:, 1:], 0, 1), jnp.swapaxes(mask[:, 1:], 0, 1))
  _, betas = jax.lax.scan(step, beta, xs, reverse=True)
  return jnp.concatenate([betas, beta[None]], axis=0)


def _log_z_log(u, transitions, m, start, end):
  unaries, mask = jnp.transpose(u, (2, 0, 1)), jnp.swapaxes(m, 0, 1)
  alphas, offset = _alphas_log(unaries, transitions, mask, start)
  return offset + _lse(alphas[-1] + end, axis=-1)


def _forward_backward_log(u, transitions, m, start, end):
  unaries, mask = jnp.transpose(u, (2, 0, 1)), jnp.swapaxes(m, 0, 1)
  alphas, offset = _alphas_log(unaries, transitions, mask, start)
  betas = _betas_log(unaries, transitions, mask, end)
  log_z = offset + _lse(alphas[-1] + end, axis=-1)
  post = alphas + betas  # [T, B, K], log p(y_t) up to a per-step constant
  probs = jnp.exp(post - _lse(post, axis=-1)[..., None])
  probs = jnp.swapaxes(jnp.where(m[..., None], probs, 0), 1, 2)  # [T, K, B]
  v = jnp.swapaxes(unaries[:, 1:], 0, 1) + betas[1:]  # [T-1, B, K]
  lw = alphas[:-1, :, :, None] + transitions + v[:, :, None, :]  # [T-1, B, K, K]
  ex = jnp.exp(lw - jnp.max(lw, axis=(-2, -1), keepdims=True))
  xi = ex / jnp.sum(ex, axis=(-2, -1), keepdims=True)
  dense = jnp.einsum("tbij,tb->bij", xi, m[1:].astype(u.dtype), precision=_HI)
  zeros = jnp.zeros_like(u[1:])  # the scaled form's factors, unused here
  return log_z, probs, (zeros, zeros, jnp.zeros_like(transitions), dense)


def _forward_backward(u, transitions, m, start, end):
  """Sequential forward-backward on [T, K, B] unaries and a [T, B] mask.

  Returns:
    log Z [B]; marginals [T, K, B] (zero at masked steps); pairwise marginals summed over steps in a
    factored form (left [T-1, K, B], right [T-1, K, B], scale [K, K], dense [B, K, K]) meaning
    pair_b[i, j] = scale[i, j] * sum_t left[t, i, b] * right[t, j, b] + dense[b, i, j].
  """
  return jax.lax.cond(_use_scaled(transitions, end), _forward_backward_scaled,
                      _forward_backward_log, u, transitions, m, start, end)


@jax.custom_vjp
def _log_z_tkb(u, transitions, m, start, end):
  """log Z [B] of [T, K, B] unaries u (finite) and a [T, B] mask m; reverse-mode differentiable."""
  return jax.lax.cond(_use_scaled(transitions, end),
                      functools.partial(_scaled_pass, backward=False), _log_z_log,
                      u, transitions, m, start, end)


def _log_z_tkb_fwd(u, transitions, m, start, end):
  log_z, probs, pair = _forward_backward(u, transitions, m, start, end)
  is_last = m & ~jnp.concatenate([m[1:], jnp.zeros_like(m[:1])], axis=0)  # [T, B]
  return log_z, (probs, pair, is_last)


def _log_z_tkb_bwd(res, g):
  """d log Z / d unaries = marginals; / d transitions = pairwise marginals; start, end likewise."""
  probs, (left, right, scale, dense), is_last = res
  g_tr = (scale * jnp.sum(jnp.einsum("tib,tjb->tij", left * g, right, precision=_HI), axis=0)
          + jnp.einsum("bij,b->ij", dense, g, precision=_HI))
  g_end = jnp.einsum("tkb,tb->k", probs, jnp.where(is_last, g, 0), precision=_HI)
  return (probs * g, g_tr, None, jnp.matmul(probs[0], g, precision=_HI), g_end)


_log_z_tkb.defvjp(_log_z_tkb_fwd, _log_z_tkb_bwd)


def _forward_sequential(unaries, transitions, mask, start, end):
  """log Z by lax.scan forward (and, under grad, backward) passes. Returns [B]."""
  u, m = _to_tkb(unaries, mask)
  return _log_z_tkb(u, transitions, m, start, end)


def _kahan_add(total, comp, x):
  """Compensated summation: total + x with the rounding error carried in comp (float32-exact)."""
  y = x - comp
  new = total + y
  return new, (new - total) - y


def _log_matmul(x, y):
  """Log-semiring product of normalised matrices: (x, cx) (y, cy) -> (x (*) y, offset)."""
  a, ca = x
  b, cb = y
  c = jax.nn.logsumexp(a[..., :, :, None] + b[..., None, :, :], axis=-2)
  m = jnp.max(c, axis=(-2, -1))
  return c - m[..., None, None], ca + cb + m


def _forward_parallel(unaries, transitions, mask, start, end):
  """log Z by jax.lax.associative_scan over [K, K] log-semiring products. Returns [B]."""
  b, t, k = unaries.shape
  alpha0 = start + unaries[:, 0]  # [B, K]
  if t == 1:
    return jax.nn.logsumexp(alpha0 + end, axis=-1)
  mats = transitions[None, None] + unaries[:, 1:, None, :]  # [B, T-1, K, K]
  eye = jnp.where(jnp.eye(k, dtype=bool), 0.0, _NEG).astype(mats.dtype)
  mats = jnp.where(mask[:, 1:, None, None], mats, eye)  # masked steps: identity
  c = jnp.max(mats, axis=(-2, -1))
  prods, offs = jax.lax.associative_scan(_log_matmul, (mats - c[..., None, None], c), axis=1)
  total = alpha0[:, :, None] + prods[:, -1] + end[None, None, :]
  return offs[:, -1] + jax.nn.logsumexp(total, axis=(-2, -1))


def log_partition(unaries, transitions, mask, *, start=None, end=None, method="sequential"):
  """Log partition function log Z.

  Args:
    unaries: [B, T, K] float32.
    transitions: [K, K] float32, transitions[i, j] scores i at t-1 -> j at t.
    mask: [B, T] bool, rows are prefixes of True (length >= 1).
    start, end: optional [K] float32 (None means zero).
    method: "sequential" (lax.scan) or "parallel" (associative_scan, O(log T) depth).

  Returns:
    [B] float32.
  """
  _check_inputs(unaries, transitions, mask, start, end, method=method)
  return _log_partition(unaries, transitions, mask, start, end, method)


@functools.partial(jax.jit, static_argnums=5)
def _log_partition(unaries, transitions, mask, start, end, method):
  args = _prepare(unaries, transitions, mask, start, end)
  fwd = _forward_sequential if method == "sequential" else _forward_parallel
  return fwd(*args)


def sequence_score(unaries, tags, transitions, mask, *, start=None, end=None):
  """Score of the given label sequences over the unmasked steps.

  Args:
    unaries: [B, T, K] float32.
    tags: [B, T] int, in [0, K) at unmasked steps (anything at masked steps).
    transitions: [K, K]; mask: [B, T] bool; start, end: optional [K].

  Returns:
    [B] float32.
  """
  _check_inputs(unaries, transitions, mask, start, end, tags=tags)
  return _sequence_score(unaries, tags, transitions, mask, start, end)


@jax.jit
def _sequence_score(unaries, tags, transitions, mask, start, end):
  unaries, transitions, mask, start, end = _prepare(unaries, transitions, mask, start, end)
  # One-hot contractions instead of gathers: their gradients are dense matmuls, not scatters.
  k = unaries.shape[-1]
  onehot = jax.nn.one_hot(jnp.asarray(tags), k, dtype=unaries.dtype) * mask[..., None]  # [B, T, K]
  score = jnp.einsum("btk,btk->b", unaries, onehot, precision=_HI)
  score += jnp.einsum("bti,ij,btj->b", onehot[:, :-1], transitions, onehot[:, 1:], precision=_HI)
  last = jnp.sum(mask, axis=-1) - 1
  last_onehot = jnp.take_along_axis(onehot, last[:, None, None], axis=1)[:, 0]
  return (score + jnp.matmul(onehot[:, 0], start, precision=_HI)
          + jnp.matmul(last_onehot, end, precision=_HI))


def log_likelihood(unaries, tags, transitions, mask, *, start=None, end=None, method="sequential"):
  """log p(tags | unaries) = score(tags) - log Z. Shapes as sequence_score; returns [B] float32."""
  _check_inputs(unaries, transitions, mask, start, end, tags=tags, method=method)
  return _log_likelihood(unaries, tags, transitions, mask, start, end, method)


@functools.partial(jax.jit, static_argnums=6)
def _log_likelihood(unaries, tags, transitions, mask, start, end, method):
  return (_sequence_score(unaries, tags, transitions, mask, start, end)
          - _log_partition(unaries, transitions, mask, start, end, method))


def marginals(unaries, transitions, mask, *, start=None, end=None, method="sequential"):
  """Per-step label marginals p(y_t = k), exact (forward-backward; parallel: grad of log Z).

  Returns:
    [B, T, K] float32; rows at masked steps are zero.
  """
  _check_inputs(unaries, transitions, mask, start, end, method=method)
  return _marginals(unaries, transitions, mask, start, end, method)


@functools.partial(jax.jit, static_argnums=5)
def _marginals(unaries, transitions, mask, start, end, method):
  unaries, transitions, mask, start, end = _prepare(unaries, transitions, mask, start, end)
  if method == "sequential":
    u, m = _to_tkb(unaries, mask)
    return jnp.transpose(_forward_backward(u, transitions, m, start, end)[1], (2, 0, 1))
  f = lambda u: jnp.sum(_forward_parallel(u, transitions, mask, start, end))
  # Masked unaries enter only through a where in _prepare, so their gradient (marginal) is zero.
  return jnp.where(mask[..., None], jax.grad(f)(unaries), 0)


def viterbi_decode(unaries, transitions, mask, *, start=None, end=None):
  """Most likely label sequence (max-sum with back-pointers, lax.scan both ways).

  Returns:
    tags: [B, T] int32, 0 at masked steps (any optimal path on ties).
    best_score: [B] float32, the score of the returned path.
  """
  _check_inputs(unaries, transitions, mask, start, end)
  return _viterbi_decode(unaries, transitions, mask, start, end)


@jax.jit
def _viterbi_decode(unaries, transitions, mask, start, end):
  unaries, transitions, mask, start, end = _prepare(unaries, transitions, mask, start, end)
  b, _, k = unaries.shape
  delta = start + unaries[:, 0]
  offset = jnp.max(delta, axis=-1)
  delta = delta - offset[:, None]
  ident = jnp.broadcast_to(jnp.arange(k, dtype=jnp.int32), (b, k))

  def fwd(carry, xs):
    delta, offset, comp = carry
    u_t, m_t = xs
    cand = delta[:, :, None] + transitions[None]  # [B, K_prev, K]
    bp = jnp.argmax(cand, axis=1).astype(jnp.int32)
    scores = jnp.max(cand, axis=1) + u_t
    c = jnp.max(scores, axis=-1)
    delta = jnp.where(m_t[:, None], scores - c[:, None], delta)
    offset, comp = _kahan_add(offset, comp, jnp.where(m_t, c, 0))
    return (delta, offset, comp), jnp.where(m_t[:, None], bp, ident)

  xs = (jnp.swapaxes(unaries[:, 1:], 0, 1), jnp.swapaxes(mask[:, 1:], 0, 1))
  init = (delta, offset, jnp.zeros_like(offset))
  (delta, offset, comp), bps = jax.lax.scan(fwd, init, xs)  # bps [T-1, B, K]
  final = delta + end
  last = jnp.argmax(final, axis=-1).astype(jnp.int32)
  best = offset + (jnp.max(final, axis=-1) - comp)

  def bwd(y, bp):
    prev = jnp.take_along_axis(bp, y[:, None], axis=-1)[:, 0]
    return prev, prev

  _, prevs = jax.lax.scan(bwd, last, bps, reverse=True)  # prevs[t] = y_t for t < T-1
  tags = jnp.concatenate([jnp.swapaxes(prevs, 0, 1), last[:, None]], axis=1)
  return jnp.where(mask, tags, 0).astype(jnp.int32), best
