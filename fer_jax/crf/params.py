"""CRF parameters, unaries, Viterbi / marginal prediction from features, and save/load."""
import functools
import os

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from fer_jax import errors
from fer_jax.crf.inference import _check_mask, _is_concrete, _marginals, _METHODS, _viterbi_decode


@flax.struct.dataclass
class CRFParams:
  """CRF parameters (a pytree). unaries = features @ weights + bias.

  Attributes:
    weights: [D, K] float32.
    bias: [K] float32.
    transitions: [K, K] float32 (i at t-1 -> j at t).
    start: [K] float32.
    end: [K] float32.
  """
  weights: jax.Array
  bias: jax.Array
  transitions: jax.Array
  start: jax.Array
  end: jax.Array

  @classmethod
  def zeros(cls, num_features: int, num_classes: int) -> "CRFParams":
    k = num_classes
    z = lambda *s: jnp.zeros(s, jnp.float32)
    return cls(weights=z(num_features, k), bias=z(k), transitions=z(k, k), start=z(k), end=z(k))

  def unaries(self, features):
    """features [..., D] -> unaries [..., K] float32."""
    return jnp.matmul(jnp.asarray(features, jnp.float32), self.weights,
                      precision=jax.lax.Precision.HIGHEST) + self.bias


def unaries(params: CRFParams, features):  # pylint: disable=redefined-outer-name
  """features [N, T, D] float32 -> unaries [N, T, K] float32."""
  return params.unaries(features)


def _check_features(features, mask, name="features"):
  if jnp.ndim(features) != 3:
    raise ValueError(f"{name} must be [N, T, D], got shape {jnp.shape(features)}.")
  if jnp.shape(mask) != jnp.shape(features)[:2]:
    raise ValueError(
        f"mask must be [N, T] = {jnp.shape(features)[:2]} to match {name}, got {jnp.shape(mask)}.")
  if _is_concrete(features, mask):
    _check_mask(np.asarray(mask))
    f = np.asarray(features)
    if not np.all(np.isfinite(f)):
      n = np.flatnonzero(~np.all(np.isfinite(f.reshape(len(f), -1)), axis=1))
      raise ValueError(
          f"{name} contain non-finite values (NaN/inf) in sequence(s) {n[:5].tolist()}; clean or "
          "drop them (padded steps must be finite too, e.g. zeros).")


def _check_params(params, d):
  if not isinstance(params, CRFParams):
    raise ValueError(f"params must be a CRFParams, got {type(params).__name__}.")
  if params.weights.shape[0] != d:
    raise ValueError(
        f"features have D = {d} but params.weights is {params.weights.shape}; use the features the "
        "CRF was fitted on.")


def predict(params: CRFParams, features, mask):
  """Viterbi labels. features [N, T, D], mask [N, T] bool -> tags [N, T] int32 (0 at masked steps)."""
  _check_features(features, mask)
  _check_params(params, jnp.shape(features)[-1])
  return _predict(params, features, mask)


@jax.jit
def _predict(params, features, mask):
  return _viterbi_decode(params.unaries(features), params.transitions, mask, params.start,
                         params.end)[0]


def predict_marginals(params: CRFParams, features, mask, *, method="sequential"):
  """Per-frame posteriors. features [N, T, D], mask [N, T] -> [N, T, K] float32 (zero rows masked)."""
  _check_features(features, mask)
  _check_params(params, jnp.shape(features)[-1])
  if method not in _METHODS:
    raise ValueError(f"method must be one of {_METHODS}, got {method!r}.")
  return _predict_marginals(params, features, mask, method)


@functools.partial(jax.jit, static_argnums=3)
def _predict_marginals(params, features, mask, method):
  return _marginals(params.unaries(features), params.transitions, mask, params.start, params.end,
                    method)


_FIELDS = ("weights", "bias", "transitions", "start", "end")
_EXTRA_PREFIX = "extra/"


def save_crf(path: str, params: CRFParams, sigma2: float, extras=None):
  """Writes a fitted CRF (and optional named arrays) to one .npz file.

  Args:
    path: destination file (".npz" is appended by NumPy if missing).
    params: CRFParams.
    sigma2: the prior variance it was fitted with.
    extras: optional {str: array-like} saved beside it (e.g. feature standardisation "mean", "std").
  """
  if not isinstance(params, CRFParams):
    raise ValueError(f"params must be a CRFParams, got {type(params).__name__}.")
  arrays = {name: np.asarray(getattr(params, name)) for name in _FIELDS}
  for key, value in (extras or {}).items():
    if not isinstance(key, str) or not key:
      raise ValueError(f"extras keys must be non-empty strings, got {key!r}.")
    arrays[_EXTRA_PREFIX + key] = np.asarray(value)
  np.savez(path, sigma2=np.float64(sigma2), **arrays)


def load_crf(path: str):
  """Reads a CRF written by save_crf.

  Returns:
    (CRFParams, sigma2 float, extras {str: np.ndarray}; empty for files without extras).

  Raises:
    MissingOutputError if the file does not exist (the fold has not finished stage 2).
  """
  if not os.path.exists(path):
    raise errors.MissingOutputError(
        f"{path} not found: the fold has not finished stage 2; run `python -m fer_jax.main` with "
        "the same --config and --workdir first.")
  with np.load(path) as z:
    missing = [name for name in _FIELDS + ("sigma2",) if name not in z.files]
    if missing:
      raise ValueError(f"{path} is not a CRF written by crf.save_crf (missing {missing}); "
                       "rerun stage 2 to rewrite it.")
    params = CRFParams(**{name: jnp.asarray(z[name], jnp.float32) for name in _FIELDS})
    extras = {name[len(_EXTRA_PREFIX):]: z[name] for name in z.files
              if name.startswith(_EXTRA_PREFIX)}
    return params, float(z["sigma2"]), extras
