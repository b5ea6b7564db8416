"""Per-frame geometry features from the 68 facial landmarks (dlib / iBUG-300W index scheme).

`normalise` maps every frame's points onto a pose-free frame of reference fixed by its rigid points
(the eye corners 36, 39, 42, 45 and the nose 27-35, which expressions barely move): their centroid goes
to the origin, the line from the left to the right eye's corner midpoint becomes horizontal, and their
RMS distance from the centroid becomes 1 (a similarity transform, so head position, in-plane rotation
and scale drop out). `features` flattens the normalised points and, with reference "first", adds their
displacement from the sequence's first frame, which removes the subject's own face shape (CK+ and MMI
sequences start neutral).

Missing points (NaN) stay NaN in the output; a frame whose rigid points are not all finite has NaN
features throughout (crf_inputs imputes NaN as the training mean).
"""
import numpy as np

NUM_LANDMARKS = 68
RIGID = (27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 39, 42, 45)  # Nose, eye corners.
LEFT_EYE_CORNERS, RIGHT_EYE_CORNERS = (36, 39), (42, 45)  # Image left and right.
REFERENCES = ("first", "none")


def _check(landmarks, name="landmarks") -> np.ndarray:
  p = np.asarray(landmarks, np.float64)
  if p.ndim != 3 or p.shape[1:] != (NUM_LANDMARKS, 2):
    raise ValueError(f"{name} must be float [T, {NUM_LANDMARKS}, 2] (x, y), got shape {p.shape}.")
  return p


def normalise(landmarks) -> np.ndarray:
  """Similarity-normalises each frame on its rigid points.

  Args:
    landmarks: float [T, 68, 2] (x, y), any pixel frame.

  Returns:
    float32 [T, 68, 2]: rigid points centred, eye line horizontal (left eye at negative x), RMS radius
    of the rigid points 1. Rows of frames whose rigid points are not all finite are NaN.
  """
  p = _check(landmarks)
  rigid = p[:, RIGID]
  ok = np.isfinite(rigid).all((1, 2))
  centred = p - rigid.mean(1, keepdims=True)
  eye_line = p[:, RIGHT_EYE_CORNERS].mean(1) - p[:, LEFT_EYE_CORNERS].mean(1)  # [T, 2]
  angle = np.arctan2(eye_line[:, 1], eye_line[:, 0])
  c, s = np.cos(-angle)[:, None], np.sin(-angle)[:, None]
  rotated = np.stack([c * centred[..., 0] - s * centred[..., 1],
                      s * centred[..., 0] + c * centred[..., 1]], -1)
  radius = np.sqrt((centred[:, RIGID] ** 2).sum(-1).mean(-1))  # [T]
  ok &= radius > 0
  out = rotated / np.where(ok, radius, 1.0)[:, None, None]
  out[~ok] = np.nan
  return out.astype(np.float32)


def num_features(reference: str) -> int:
  """G: 136 normalised coordinates, plus 136 displacements with reference "first"."""
  _check_reference(reference)
  return NUM_LANDMARKS * 2 * (2 if reference == "first" else 1)


def _check_reference(reference):
  if reference not in REFERENCES:
    raise ValueError(f"geometry reference {reference!r} is not one of {REFERENCES}: set "
                     "crf.geometry_reference.")


def features(landmarks, reference: str = "first", reference_landmarks=None) -> np.ndarray:
  """Geometry features of one sequence.

  Args:
    landmarks: float [T, 68, 2] (x, y) of consecutive frames.
    reference: "first": append each point's displacement from the reference frame (the sequence's
      first frame whose rigid points are all finite); "none": the normalised points only.
    reference_landmarks: optional float [68, 2]: the reference frame's points, for a sequence seen in
      chunks (predict's stream passes the first chunk's reference); None: taken from `landmarks`.

  Returns:
    float32 [T, G], G = num_features(reference): the normalised (x, y) of points 0..67, then (with
    "first") their displacements. NaN where a point or the frame's rigid points are missing, and in
    every displacement when no frame has finite rigid points.
  """
  _check_reference(reference)
  norm = normalise(landmarks)
  t = len(norm)
  flat = norm.reshape(t, -1)
  if reference == "none":
    return flat
  if reference_landmarks is not None:
    ref = normalise(_check(np.asarray(reference_landmarks)[None], "reference_landmarks"))[0]
  else:
    ok = np.flatnonzero(np.isfinite(norm[:, RIGID]).all((1, 2)))
    ref = norm[ok[0]] if ok.size else np.full((NUM_LANDMARKS, 2), np.nan, np.float32)
  return np.concatenate([flat, (norm - ref[None]).reshape(t, -1)], 1).astype(np.float32)
