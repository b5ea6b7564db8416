"""Full-batch CRF fitting (L-BFGS, Gaussian prior) and selection of the prior variance sigma^2.

fit: one jitted L-BFGS run (jaxopt or optax) of the objective per unmasked frame, stopping when the
objective is certified within `tol` (relative) of the optimum; float32, continued in float64 where
float32 stalls first. fit_path: a sigma^2 grid, warm-started from the smallest sigma^2.
select_sigma2 (validation set) and select_sigma2_inner_cv (folds of the training set) choose
sigma^2 and return the chosen fit, reusing a fit_path when given one.
"""
import functools
from typing import NamedTuple

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from fer_jax.crf.inference import (_check_tags, _HI, _log_likelihood, _log_partition, _log_z_tkb,
                                   _METHODS, log_likelihood)
from fer_jax.crf.params import _check_features, _check_params, CRFParams, predict

_SOLVERS = ("jaxopt", "optax")


class FitInfo(NamedTuple):
  """Result of `fit`, read by attribute."""
  objective: float  # Final value of the regularised negative log-likelihood (a sum).
  iterations: int
  converged: bool  # gap_bound <= tol.
  grad_norm: float  # l2 norm of the gradient of objective / (number of unmasked frames), in
  # model coordinates.
  gap_bound: float  # Upper bound on (objective - optimum) / optimum from grad_norm (see `fit`).
  stop: str  # Why the solver stopped: "gap" (gap_bound <= tol), "max_iter", or "stalled" (no
  # progress over _STALL_ITERS iterations, even in float64; not converged).
  precision: str  # "float32", or "float64" when the fit went on in float64 after a float32 stall.


def objective(params: CRFParams, features, tags, mask, sigma2, *, method="sequential"):
  """-sum_n log p(tags_n | features_n) + (sum of squares of all CRFParams fields) / (2 sigma2).

  Args:
    params: CRFParams.
    features: [N, T, D] float32; tags [N, T] int; mask [N, T] bool.
    sigma2: Gaussian prior variance (> 0).

  Returns:
    scalar float32.
  """
  ll = log_likelihood(params.unaries(features), tags, params.transitions, mask,
                      start=params.start, end=params.end, method=method)
  sq = sum(jnp.sum(jnp.square(x)) for x in jax.tree_util.tree_leaves(params))
  return -jnp.sum(ll) + sq / (2.0 * sigma2)


# L-BFGS memory (pairs kept). The parameters are few (D K + K^2 + 3 K), so a long memory is cheap
# and cuts iterations (bench N=200, D=32, K=7: 63 instead of 81 with 10). Both solvers try the unit
# step first (the natural quasi-Newton step): jaxopt with linesearch_init="max", optax with the zoom
# line search's initial_guess_strategy="one" (its default "keep" restarts from the last accepted
# step, which near the optimum is often far below 1 and stalls the search: 237+ iterations where
# jaxopt needs ~50 on the bench problem).
_LBFGS_MEMORY = 30

# Stall: the solver stops, without claiming convergence, after _STALL_ITERS consecutive iterations
# in which the per-frame objective did not drop below its best value by more than _STALL_EPS
# epsilons (relative) and the gradient norm did not fall below _STALL_GRAD times its best: float32
# can no longer rank the points it compares, and further iterations (line searches that cannot
# succeed, ~10x the cost of normal ones) only waste time.
_STALL_ITERS = 10
_STALL_EPS = 4.0
_STALL_GRAD = 0.9

# Number of times the fit body was traced (compiled); tests pin it to check that a second fit with
# same-shaped inputs (any sigma2, tol, init) reuses the compiled solver.
TRACE_COUNT = {"fit": 0}


@functools.partial(jax.jit, static_argnames=("solver", "method"))
def _fit_jit(init, features, tags, mask, sigma2, tol, max_iter, *, solver, method):
  """The whole fit as one compiled call.

  Returns:
    (params, objective (the sum), per-frame |grad| in model coordinates, relative gap bound,
    iterations, stalled (bool)).
  """
  import optax  # pylint: disable=g-import-not-at-top
  import optax.tree_utils as otu  # pylint: disable=g-import-not-at-top
  TRACE_COUNT["fit"] += 1
  dtype = features.dtype  # float32, or float64 for the polish (see `fit`)
  frames = jnp.sum(mask).astype(dtype)
  total = _fit_objective(features, tags, mask, sigma2, method, init.bias.shape[0])
  to_params, from_params = _standardising_map(features, mask)
  fun = lambda q: total(to_params(q)) / frames
  # The solver's gradient (standardised coordinates q, params = A q) back in model coordinates:
  # grad_params = A^-T grad_q, with A^-1 = from_params (linear).
  to_model_grad = jax.linear_transpose(from_params, init)
  model_grad_norm = lambda g: otu.tree_norm(to_model_grad(g)[0])
  # Per-frame objective: strongly convex with modulus 1 / (sigma2 F) in model coordinates (the
  # prior alone), so value - optimum <= |grad|^2 sigma2 F / 2 =: b and, as optimum >= value - b > 0,
  # (value - optimum) / optimum <= b / (value - b).
  def gap_bound(value, grad_norm):
    b = jnp.square(grad_norm) * sigma2 * frames / 2
    return jnp.where(value > b, b / jnp.maximum(value - b, jnp.finfo(dtype).tiny), jnp.inf)

  q0 = from_params(init)
  if solver == "jaxopt":
    import jaxopt  # pylint: disable=g-import-not-at-top
    opt = jaxopt.LBFGS(fun=fun, tol=0.0, implicit_diff=False,
                       history_size=_LBFGS_MEMORY, linesearch_init="max")
    state0 = opt.init_state(q0)
    value0, grad0 = state0.value, state0.grad

    def update(q, state, value, grad):
      del value, grad  # held by the state
      q, state = opt.update(q, state)
      return q, state, state.value, state.grad
  else:
    opt = optax.lbfgs(memory_size=_LBFGS_MEMORY, linesearch=optax.scale_by_zoom_linesearch(
        max_linesearch_steps=30, initial_guess_strategy="one"))
    state0 = opt.init(q0)
    value0, grad0 = jax.value_and_grad(fun)(q0)

    def update(q, state, value, grad):
      updates, state = opt.update(grad, state, q, value=value, grad=grad, value_fn=fun)
      # The zoom line search keeps the value and gradient at the accepted point.
      return (optax.apply_updates(q, updates), state, otu.tree_get(state, "value"),
              otu.tree_get(state, "grad"))

  def cond(carry):
    _, _, value, grad, it, _, _, flat = carry
    return (it < max_iter) & (gap_bound(value, model_grad_norm(grad)) > tol) & (flat < _STALL_ITERS)

  def body(carry):
    q, state, value, grad, it, best_value, best_grad, flat = carry
    q, state, value, grad = update(q, state, value, grad)
    grad_norm = model_grad_norm(grad)
    # Progress: a value decrease float32 resolves, or a gradient norm well below the best so far
    # (near the optimum the line searches accept steps on the gradient alone: optax's approximate
    # Wolfe test, jaxopt's curvature test, and the gradient still shrinks).
    progress = ((value < best_value - _STALL_EPS * jnp.finfo(dtype).eps * jnp.abs(best_value))
                | (grad_norm < _STALL_GRAD * best_grad))
    return (q, state, value, grad, it + 1, jnp.minimum(best_value, value),
            jnp.where(progress, jnp.minimum(best_grad, grad_norm), best_grad),
            jnp.where(progress, 0, flat + 1))

  g0 = model_grad_norm(grad0)
  q, _, value, grad, iters, _, _, flat = jax.lax.while_loop(
      cond, body, (q0, state0, value0, grad0, jnp.int32(0), value0, g0, jnp.int32(0)))
  grad_norm = model_grad_norm(grad)
  return (to_params(q), value * frames, grad_norm, gap_bound(value, grad_norm), iters,
          flat >= _STALL_ITERS)


def _standardising_map(features, mask):
  """The solver's coordinates: weights and bias of standardised features (per-dimension mean 0 and
  standard deviation 1 over the unmasked frames), an exact linear change of variables.

  features @ W + b = ((features - mean) / std) @ W' + b' with W = W' / std, b = b' - (mean / std) @
  W'; the objective (prior included) is evaluated on (W, b), so its optimum is unchanged, but the
  problem the solver sees no longer depends on the features' offsets and scales (e.g. CNN logits
  with large means: their bias/weight coupling made the sum form ill-conditioned).

  Returns:
    (to_params, from_params): CRFParams maps solver -> model coordinates and back.
  """
  m = mask[..., None].astype(features.dtype)
  count = jnp.maximum(jnp.sum(m), 1.0)
  mean = jnp.sum(features * m, axis=(0, 1)) / count
  var = jnp.sum(jnp.square(features - mean) * m, axis=(0, 1)) / count
  std = jnp.where(var > 1e-12, jnp.sqrt(var), 1.0)
  shift = mean / std

  def to_params(q):
    return q.replace(weights=q.weights / std[:, None],
                     bias=q.bias - jnp.matmul(shift, q.weights, precision=_HI))

  def from_params(p):
    return p.replace(weights=p.weights * std[:, None],
                     bias=p.bias + jnp.matmul(mean, p.weights, precision=_HI))

  return to_params, from_params


def _fit_objective(features, tags, mask, sigma2, method, num_classes):
  """`objective` (the sum) as a function of params, accurate in float32 near the optimum.

  Each step's unaries are shifted, for every label alike, by the gold path's score at that step
  (its unary, the transition into it, start at the first step, end at the last): log Z drops by
  exactly the gold score, so the forward pass yields -log p(tags | features) per sequence directly.
  The objective then sums per-sequence losses, instead of subtracting two sums of the size of the
  scores (CNN logits: ~1e4 apart for a loss of ~1e2, which left float32 4-5 correct digits and
  stalled the line searches), and the gradient reaches the unaries as marginals - one_hot(gold) per
  frame, before any sum over frames. What rounding remains is ~eps |transitions| per frame, in the
  forward pass's per-step normalisers.
  """
  y = jax.nn.one_hot(tags, num_classes, dtype=features.dtype) * mask[..., None]  # [N, T, K]
  is_last = mask & ~jnp.concatenate([mask[:, 1:], jnp.zeros_like(mask[:, :1])], axis=1)
  first = jnp.zeros_like(mask).at[:, 0].set(True)
  # Sequential: [T, D, N] features (zero at padding), so the unaries come out of T batched [K, D] @
  # [D, N] products (and their gradient out of T [K, N] @ [N, D] ones) in the [T, K, N] layout of
  # the forward-backward; values at masked steps have no effect (all finite here).
  x_tdn = jnp.transpose(jnp.where(mask[..., None], features, 0), (1, 2, 0))
  y_tkn = jnp.transpose(y, (1, 2, 0))
  first_tn, last_tn = (jnp.swapaxes(v, 0, 1).astype(features.dtype) for v in (first, is_last))
  m = jnp.swapaxes(mask, 0, 1)

  def fun(params):
    if method == "sequential":
      w = jnp.broadcast_to(params.weights.T, (x_tdn.shape[0],) + params.weights.T.shape)
      u = jnp.matmul(w, x_tdn, precision=_HI) + params.bias[:, None]  # [T, K, N]
    else:
      u = jnp.transpose(params.unaries(features), (1, 2, 0))
    # Gold unary and the gold path's other terms are subtracted apart: the gold label's shifted
    # unary is then exactly -(its transition, start, end terms), which the forward pass adds back
    # with rounding on the scale of those terms, not of the unaries (CNN logits, nearly separable
    # features: |u| ~ 50, whose float32 rounding made the objective noisier than its last 1e-5).
    rest = (first_tn * jnp.matmul(params.start, y_tkn[0], precision=_HI)
            + last_tn * jnp.einsum("k,tkn->tn", params.end, y_tkn, precision=_HI))  # [T, N]
    rest = rest.at[1:].add(jnp.einsum("tin,ij,tjn->tn", y_tkn[:-1], params.transitions, y_tkn[1:],
                                      precision=_HI))
    u = (u - jnp.sum(u * y_tkn, axis=1)[:, None, :]) - rest[:, None, :]
    if method == "sequential":
      nll = _log_z_tkb(u, params.transitions, m, params.start, params.end)
    else:
      nll = _log_partition(jnp.transpose(u, (2, 0, 1)), params.transitions, mask, params.start,
                           params.end, method)
    sq = sum(jnp.sum(jnp.square(x)) for x in jax.tree_util.tree_leaves(params))
    return jnp.sum(nll) + sq / (2.0 * sigma2)

  return fun


def fit(features, tags, mask, *, sigma2, solver="jaxopt", max_iter=500, tol=1e-5,
        num_classes=None, init=None, method="sequential"):
  """Fits the CRF on the whole training set at once (full batch, L-BFGS, Gaussian prior).

  Minimises `objective` (a sum over sequences, prior on all five fields) in float32, divided by the
  number F of unmasked frames (the same optimum; value and gradient of order 1 whatever N). Stops
  when the objective is certified within `tol` (relative) of the optimum: the prior makes the
  per-frame objective strongly convex with modulus 1 / (sigma2 F), so value - optimum <= b =
  |grad|^2 sigma2 F / 2 and (value - optimum) / optimum <= b / (value - b) =: gap_bound, a bound
  that holds for any data, N, K and sigma2 (a scale-free rule stated in the quantity a user asks
  for; on the demo's and the tests' problems the true gap is 5-20x below the bound, up to ~5000x on
  nearly separable logit-like features). Two exact rewrites keep float32 accurate: each sequence's
  loss comes straight out of the forward pass (see _fit_objective: within ~1e-6 relative of float64
  on nearly separable features with unaries ~50), and the solver works on the weights of
  standardised features (see _standardising_map). Where float32 still stalls before the bound is
  met (weak prior and few frames, or very large weights: the remaining rounding, ~eps |transitions|
  per frame, exceeds the gap left), the fit goes on in float64 from there (info.precision). The
  float32 run is one jitted call (static: solver, method): a second call with same-shaped inputs
  (any sigma2, tol, max_iter, init) does not recompile; the float64 continuation compiles once
  more per input shape.

  Args:
    features: [N, T, D] float (cast to float32), finite everywhere.
    tags: [N, T] int in [0, num_classes) at unmasked steps.
    mask: [N, T] bool, rows prefixes of True.
    sigma2: prior variance > 0.
    solver: "jaxopt" (jaxopt.LBFGS, default) or "optax" (optax.lbfgs, zoom line search starting
      at the unit step). Both take the same number of iterations to within a few (tests and
      bench); optax's default zoom guess "keep" (the last step size) needed 4-6x more.
    max_iter: maximum L-BFGS iterations.
    tol: stop when gap_bound, the certified bound on (objective - optimum) / optimum, is <= tol.
      The default 1e-5 is the accuracy the tests ask of a fit against a float64 optimum; with it
      the demo's and the bench's fits stop after 30-200 iterations.
    num_classes: K; None means max(tags over unmasked steps) + 1.
    init: optional CRFParams to start from (zeros by default), e.g. a fit at a nearby sigma2.
    method: forward pass, "sequential" or "parallel".

  Returns:
    (CRFParams, FitInfo): info.objective is the SUM form of `objective` at the returned params,
    info.gap_bound the bound above, info.converged = gap_bound <= tol, info.stop why it stopped
    ("gap", "max_iter", or "stalled": float32 could no longer decrease the objective, before the
    bound was met).
  """
  if solver not in _SOLVERS:
    raise ValueError(f"solver must be one of {_SOLVERS}, got {solver!r}.")
  if method not in _METHODS:
    raise ValueError(f"method must be one of {_METHODS}, got {method!r}.")
  if not np.isscalar(sigma2) and np.ndim(sigma2) != 0:
    raise ValueError(f"sigma2 must be a positive scalar, got shape {np.shape(sigma2)}.")
  if not float(sigma2) > 0 or not np.isfinite(float(sigma2)):
    raise ValueError(f"sigma2 must be a finite number > 0 (prior variance), got {sigma2}.")
  if int(max_iter) < 1:
    raise ValueError(f"max_iter must be >= 1, got {max_iter}.")
  if not float(tol) >= 0:
    raise ValueError(f"tol must be >= 0, got {tol}.")
  _check_features(features, mask)
  n, t, d = jnp.shape(features)
  if jnp.shape(tags) != (n, t):
    raise ValueError(f"tags must be [N, T] = {(n, t)} to match features, got {jnp.shape(tags)}.")
  tags_np, mask_np = np.asarray(tags), np.asarray(mask, bool)
  if not np.issubdtype(tags_np.dtype, np.integer):
    raise ValueError(f"tags must be integers, got dtype {tags_np.dtype}.")
  if num_classes is None:
    num_classes = int(tags_np[mask_np].max()) + 1
  num_classes = int(num_classes)
  if num_classes < 1:
    raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
  _check_tags(tags_np, mask_np, num_classes)
  if init is None:
    init = CRFParams.zeros(d, num_classes)
  else:
    _check_params(init, d)
    if init.weights.shape != (d, num_classes):
      raise ValueError(f"init.weights must be {(d, num_classes)}, got {init.weights.shape}.")
    init = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32), init)

  args = (jnp.asarray(features, jnp.float32), jnp.where(mask_np, tags_np, 0).astype(np.int32),
          jnp.asarray(mask_np))
  params, value, grad_norm, gap, iters, stalled = _fit_jit(
      init, *args, jnp.float32(sigma2), jnp.float32(tol), jnp.int32(max_iter), solver=solver,
      method=method)
  precision = "float32"
  if bool(stalled) and not float(gap) <= float(tol):
    # float32 can no longer rank the points the line search compares (the objective's rounding,
    # ~eps |transitions| per frame, exceeds the remaining gap): go on in float64 from there, with
    # the iterations left. Only such fits pay for it (a second compilation per input shape).
    with jax.enable_x64(True):
      as64 = lambda x: jnp.asarray(x, jnp.float64)
      p64, value, grad_norm, gap, more, stalled = _fit_jit(
          jax.tree_util.tree_map(as64, params), as64(args[0]), *args[1:], jnp.float64(sigma2),
          jnp.float64(tol), jnp.int32(int(max_iter) - int(iters)), solver=solver, method=method)
      # The float32 params returned, scored in float64 (max_iter 0: no step), so that objective
      # and gap_bound describe them and not their float64 originals.
      params = jax.tree_util.tree_map(lambda x: jnp.asarray(np.asarray(x, np.float32)), p64)
      _, value, grad_norm, gap, _, _ = _fit_jit(
          jax.tree_util.tree_map(as64, params), as64(args[0]), *args[1:], jnp.float64(sigma2),
          jnp.float64(tol), jnp.int32(0), solver=solver, method=method)
      iters = int(iters) + int(more)
    precision = "float64"
  converged = bool(float(gap) <= float(tol))
  stop = "gap" if converged else "stalled" if bool(stalled) else "max_iter"
  info = FitInfo(objective=float(value), iterations=int(iters), converged=converged,
                 grad_norm=float(grad_norm), gap_bound=float(gap), stop=stop, precision=precision)
  logging.info("CRF fit (%s, %s, sigma2=%g): objective %.6g after %d iterations, relative gap <= "
               "%.3g (|grad|/frame %.3g)%s.", solver, precision, float(sigma2), info.objective,
               info.iterations, info.gap_bound, info.grad_norm,
               "" if converged else f" (not converged: {stop})")
  return params, info


class SelectionRow(NamedTuple):
  """One row of select_sigma2's table."""
  val_accuracy: float  # Viterbi frame accuracy on the validation set.
  val_log_likelihood: float  # Sum over validation sequences of log p(tags | features).
  train_objective: float
  converged: bool


def fit_path(features, tags, mask, grid, **fit_kwargs):
  """Fits every sigma2 of `grid`, smallest first, each warm-started from the previous solution.

  Smallest sigma2 (largest prior) first: that problem is the best conditioned (curvature >=
  1/sigma2 everywhere) and its optimum lies closest to the zero start, so it is cheap from scratch;
  each larger sigma2 then starts from the optimum of a slightly stronger prior, which is close to
  its own (the regularisation path is smooth), instead of a weakly regularised fit starting cold.
  The objective is strictly convex, so the optimum does not depend on the start.

  Args:
    features, tags, mask: as `fit`.
    grid: iterable of sigma2 > 0 (any order; duplicates fitted once).
    **fit_kwargs: passed to `fit` (solver, max_iter, tol, num_classes, method); not init.

  Returns:
    {sigma2 (float): (CRFParams, FitInfo)} for every grid value.
  """
  grid = _check_grid(grid)
  if "init" in fit_kwargs:
    raise ValueError("fit_path warm-starts each fit itself; do not pass init.")
  out, init = {}, None
  for s in sorted(set(grid)):
    params, info = fit(features, tags, mask, sigma2=s, init=init, **fit_kwargs)
    out[s], init = (params, info), params
  return out


def _check_grid(grid):
  grid = [float(s) for s in grid]
  if not grid:
    raise ValueError("grid must contain at least one sigma2 value.")
  for s in grid:
    if not s > 0 or not np.isfinite(s):
      raise ValueError(f"grid values (sigma2) must be finite and > 0, got {s}.")
  return grid


def _num_classes(fit_kwargs, *labelled):
  """num_classes from fit_kwargs, else max over the (tags, mask) pairs + 1."""
  if fit_kwargs.get("num_classes") is not None:
    return int(fit_kwargs["num_classes"])
  return max(int(np.asarray(t)[np.asarray(m, bool)].max()) for t, m in labelled) + 1


def select_sigma2(train, val, grid, *, fits=None, **fit_kwargs):
  """Chooses the prior variance on the validation set (never sees test data).

  Args:
    train: (features [N, T, D], tags [N, T], mask [N, T]) for fitting.
    val: (features [M, T', D], tags [M, T'], mask [M, T']) for selection.
    grid: iterable of sigma2 > 0.
    fits: optional fit_path(*train, grid, ...) result to score instead of fitting again.
    **fit_kwargs: passed to `fit` (solver, max_iter, tol, num_classes, method).

  Returns:
    (best_sigma2, params fitted with it, {sigma2: SelectionRow}); best by validation frame accuracy,
    ties broken by validation log-likelihood. The fits run along fit_path (warm-started).
  """
  grid = _check_grid(grid)
  vf, vt, vm = val
  _check_features(vf, vm, name="val features")
  vt_np, vm_np = np.asarray(vt), np.asarray(vm, bool)
  fit_kwargs["num_classes"] = _num_classes(fit_kwargs, train[1:], (vt_np, vm_np))
  _check_tags(vt_np, vm_np, fit_kwargs["num_classes"], name="val tags")
  if fits is None:
    fits = fit_path(*train, grid, **fit_kwargs)
  missing = [s for s in grid if s not in fits]
  if missing:
    raise ValueError(f"fits lacks sigma2 {missing}; pass fit_path(..., grid) of the same grid.")
  table = {}
  for s in grid:
    params, info = fits[s]
    pred = np.asarray(predict(params, vf, vm))
    acc = float(np.mean(pred[vm_np] == vt_np[vm_np]))
    ll = float(jnp.sum(_val_log_likelihood(params, jnp.asarray(vf, jnp.float32),
                                           jnp.where(vm_np, vt_np, 0), jnp.asarray(vm_np))))
    table[s] = SelectionRow(acc, ll, info.objective, info.converged)
    logging.info("sigma2=%g: val accuracy %.4f, val log-likelihood %.4f", s, acc, ll)
  best = max(grid, key=lambda s: (table[s].val_accuracy, table[s].val_log_likelihood))
  return best, fits[best][0], table


def select_sigma2_inner_cv(train, folds, grid, *, fits=None, **fit_kwargs):
  """Chooses the prior variance by cross-validation inside the training set.

  For each fold, the CRF is fitted on the fold's fitting sequences along the grid (fit_path) and
  decodes its held-out ones; a sigma2's score is the frame accuracy pooled over all held-out frames.
  Ties go to the sigma2 closest to 1 in log scale. The chosen sigma2 is then fitted on all of
  `train` (or taken from `fits`).

  Args:
    train: (features [N, T, D], tags [N, T], mask [N, T]).
    folds: iterable of (fit_indices, held_out_indices) int arrays into the N sequences, e.g. subject-
      disjoint groups (fer_jax.data.splits.subject_independent_folds(..., test_fraction=None)).
    grid: iterable of sigma2 > 0.
    fits: optional fit_path(*train, grid, ...) result (fits on all of train) to reuse.
    **fit_kwargs: passed to `fit` (solver, max_iter, tol, num_classes, method).

  Returns:
    (best_sigma2, params fitted on all of train with it, {sigma2: pooled held-out accuracy}).
  """
  grid = _check_grid(grid)
  x, tags, mask = train
  tags, mask = np.asarray(tags), np.asarray(mask, bool)
  fit_kwargs["num_classes"] = _num_classes(fit_kwargs, (tags, mask))
  folds = [(np.asarray(a, int), np.asarray(b, int)) for a, b in folds]
  if not folds:
    raise ValueError("folds must contain at least one (fit_indices, held_out_indices) pair.")
  correct = {s: 0 for s in grid}
  total = 0
  for fit_idx, held_idx in folds:
    if not len(fit_idx) or not len(held_idx):
      raise ValueError("every fold needs at least one fitting and one held-out sequence; use fewer "
                       "inner folds (crf.inner_cv_folds) or more training subjects.")
    path = fit_path(x[fit_idx], tags[fit_idx], mask[fit_idx], grid, **fit_kwargs)
    m = mask[held_idx]
    total += int(m.sum())
    for s in grid:
      pred = np.asarray(predict(path[s][0], x[held_idx], m))
      correct[s] += int((pred == tags[held_idx])[m].sum())
  scores = {s: correct[s] / total for s in grid}
  best = max(grid, key=lambda s: (scores[s], -abs(np.log10(s))))
  if fits is not None and best in fits:
    params = fits[best][0]
  else:
    params, _ = fit(x, tags, mask, sigma2=best, **fit_kwargs)
  return best, params, scores


@jax.jit
def _val_log_likelihood(params, features, tags, mask):
  return _log_likelihood(params.unaries(features), tags, params.transitions, mask, params.start,
                         params.end, "sequential")
