"""The CRF's input per frame: any concatenation of CNN outputs and landmark geometry, standardised.

A feature-set spec joins part names with "+": "logits" (FC2, the paper's CRF input), "features" (FC1)
and "geometry" (fer_jax/geometry.py), e.g. "logits+geometry". Parts are concatenated in the order
written. Each dimension is standardised with the mean and standard deviation of the training frames
(NaN, e.g. a frame without landmarks, becomes 0: the training mean). The spec, the geometry reference
and the statistics travel with the CRF (crf.save_crf extras), so predict rebuilds the same input:

    params, sigma2, extras = crf.load_crf(path)
    inputs = crf_inputs.CrfInputs.from_extras(extras)
    x = inputs({"logits": logits, "features": features}, landmarks)  # [T, D] float32
"""
import dataclasses
from typing import Optional

import numpy as np

from fer_jax import errors
from fer_jax import geometry

PARTS = ("logits", "features", "geometry")
_EXTRAS = ("input_spec", "geometry_reference", "input_mean", "input_std")


def parse_spec(spec: str) -> tuple:
  """"logits+geometry" -> ("logits", "geometry"); raises ConfigError naming crf.features."""
  parts = tuple(str(spec).split("+"))
  bad = [p for p in parts if p not in PARTS]
  if not spec or bad or len(set(parts)) != len(parts):
    raise errors.ConfigError(
        f"crf.features={spec!r}: give one or more of {PARTS} joined by '+', each once, e.g. "
        "'logits' (the paper) or 'logits+geometry'.")
  return parts


def label(spec: str) -> str:
  """The report's name of a CRF on `spec`: "CNN + CRF", "geometry + CRF", "fused + CRF", ..."""
  known = {("logits",): "CNN + CRF", ("geometry",): "geometry + CRF",
           ("geometry", "logits"): "fused + CRF", ("features",): "CNN FC1 + CRF"}
  return known.get(tuple(sorted(parse_spec(spec))), f"CRF on {spec}")


@dataclasses.dataclass(frozen=True)
class CrfInputs:
  """Builds and standardises CRF inputs.

  Attributes:
    spec: the feature-set spec, e.g. "logits+geometry".
    reference: the geometry reference, "first" or "none" (fer_jax/geometry.py).
    mean, std: float32 [D] training statistics (None until `fit`).
  """
  spec: str
  reference: str = "first"
  mean: Optional[np.ndarray] = None
  std: Optional[np.ndarray] = None

  def __post_init__(self):
    parse_spec(self.spec)
    if self.reference not in geometry.REFERENCES:
      raise errors.ConfigError(f"crf.geometry_reference={self.reference!r}: use one of "
                               f"{geometry.REFERENCES}.")

  @property
  def parts(self) -> tuple:
    return parse_spec(self.spec)

  @property
  def uses_geometry(self) -> bool:
    return "geometry" in self.parts

  def raw(self, outputs: dict, landmarks=None, reference_landmarks=None) -> np.ndarray:
    """Unstandardised inputs of one sequence.

    Args:
      outputs: {"logits": [T, C], "features": [T, F]} model outputs (only the parts used are read).
      landmarks: float [T, 68, 2] (x, y); needed when the spec has "geometry".
      reference_landmarks: optional [68, 2], see geometry.features.

    Returns:
      float32 [T, D] (NaN where geometry is missing).
    """
    cols = []
    for part in self.parts:
      if part == "geometry":
        if landmarks is None:
          raise ValueError(f"crf.features={self.spec!r} uses geometry but no landmarks were given.")
        cols.append(geometry.features(landmarks, self.reference, reference_landmarks))
      else:
        cols.append(np.asarray(outputs[part], np.float32))
    lengths = {len(c) for c in cols}
    if len(lengths) != 1:
      raise ValueError(f"CRF input parts {self.parts} have different frame counts {sorted(lengths)}.")
    return np.concatenate(cols, 1).astype(np.float32)

  def raw_sequences(self, outputs: dict, landmarks: list, mask) -> np.ndarray:
    """Unstandardised inputs of padded sequences.

    Args:
      outputs: {"logits": [N, T, C], "features": [N, T, F]} padded per-sequence model outputs.
      landmarks: list of N float [T_i, 68, 2].
      mask: bool [N, T], row i True on its first T_i steps.

    Returns:
      float32 [N, T, D], 0 at padding (NaN kept at real frames without geometry).
    """
    mask = np.asarray(mask, bool)
    rows = []
    for i, length in enumerate(mask.sum(1)):
      rows.append(self.raw({k: np.asarray(v)[i, :length] for k, v in outputs.items()
                            if k in self.parts}, landmarks[i] if self.uses_geometry else None))
    x = np.zeros(mask.shape + (rows[0].shape[1],), np.float32)
    x[mask] = np.concatenate(rows)
    return x

  def fit(self, x, mask) -> "CrfInputs":
    """A copy with mean and std of the real frames of x [N, T, D] (mask [N, T]), NaN ignored.

    A dimension with no finite value gets mean 0, std 1; a constant one std 1.
    """
    frames = np.asarray(x, np.float64)[np.asarray(mask, bool)]
    finite = np.isfinite(frames)
    count = finite.sum(0)
    safe = np.where(finite, frames, 0.0)
    mean = safe.sum(0) / np.maximum(count, 1)
    var = (np.where(finite, frames - mean, 0.0) ** 2).sum(0) / np.maximum(count, 1)
    std = np.sqrt(var)
    std = np.where(std > 1e-6, std, 1.0)
    return dataclasses.replace(self, mean=mean.astype(np.float32), std=std.astype(np.float32))

  def standardise(self, x) -> np.ndarray:
    """(x - mean) / std, NaN -> 0; float32, any leading shape [..., D]."""
    if self.mean is None:
      raise ValueError("CrfInputs.standardise before fit: fit on the training frames first.")
    x = np.asarray(x, np.float32)
    if x.shape[-1] != self.mean.shape[0]:
      raise ValueError(f"CRF input has {x.shape[-1]} dimensions but the statistics {self.mean.shape[0]} "
                       f"(crf.features={self.spec!r}).")
    z = (x - self.mean) / self.std
    return np.where(np.isfinite(z), z, 0.0).astype(np.float32)

  def standardised_geometry(self, landmarks, reference_landmarks=None) -> np.ndarray:
    """The geometry part alone, standardised, NaN -> 0: float32 [T, G]. Needs geometry as the last
    part (stage 3 feeds it to the CRF as a constant input after the CNN outputs)."""
    if self.parts[-1] != "geometry":
      raise ValueError(f"crf.features={self.spec!r}: geometry is not the last part.")
    g = geometry.num_features(self.reference)
    z = (geometry.features(landmarks, self.reference, reference_landmarks) - self.mean[-g:]) / self.std[-g:]
    return np.where(np.isfinite(z), z, 0.0).astype(np.float32)

  def __call__(self, outputs: dict, landmarks=None, reference_landmarks=None) -> np.ndarray:
    """Standardised inputs of one sequence, float32 [T, D]: predict's call (see `raw`)."""
    return self.standardise(self.raw(outputs, landmarks, reference_landmarks))

  def to_extras(self) -> dict:
    """{name: np.ndarray} for crf.save_crf(..., extras=...)."""
    if self.mean is None:
      raise ValueError("CrfInputs.to_extras before fit.")
    return {"input_spec": np.array(self.spec), "geometry_reference": np.array(self.reference),
            "input_mean": self.mean, "input_std": self.std}

  @classmethod
  def from_extras(cls, extras: dict) -> "CrfInputs":
    """The inverse of to_extras (extras as crf.load_crf returns them)."""
    missing = [k for k in _EXTRAS if k not in extras]
    if missing:
      raise errors.MissingOutputError(
          f"The saved CRF lacks {missing}: it was written before CRF inputs were standardised; "
          "rerun stage 2 (`python -m fer_jax.main` with the same --config in a fresh --workdir).")
    return cls(spec=str(extras["input_spec"]), reference=str(extras["geometry_reference"]),
               mean=np.asarray(extras["input_mean"], np.float32),
               std=np.asarray(extras["input_std"], np.float32))
