"""Face registration with dlib: find the upright face, 68 landmarks, rigid similarity to a template.

Per frame: dlib's frontal face detector (largest face if several) -> the 68-point shape predictor
(face_recognition_models' shape_predictor_68_face_landmarks.dat, loaded once per process) -> the
similarity transform (rotation, uniform scale, shift) taking the RIGID points (eye corners 36, 39, 42,
45; nose bridge 27-30; nose base 31-35: points that do not move with expressions) onto `template()` by
least squares -> an S x S RGB uint8 crop, and the 68 points mapped into it (crop pixels, (x, y)).

Template: dlib's mean face shape (the shape predictor's initial shape, read from the model file by
`mean_shape`) moved by the similarity that puts its eye centres at EYES = (0.30, 0.38) S and
(0.70, 0.38) S, where the former eyes+mouth template put them, so crops frame the face as before; the
mouth (0.82 S on the mean shape) no longer pulls the scale when it opens.

Orientation and dual view, decided once per sequence at its first face and then kept (logged, and
counted per sequence in `Registrar.view_counts`): upright by default; when the upright frame shows
faces in both halves of a frame at least as wide as high, each inside its half (dual view: two faces
side by side), the half with a frontal face (dlib's front-looking sub-detectors), the largest; when it
shows no face in one of the sequence's first SEARCH_FRAMES frames, the best frontal face (highest
detector score) over the two halves and the 90/180/270-degree turns of that frame. Later frames are
never searched.

Sequences: detect every `redetect_every` frames and track in between (the previous box moved with the
landmarks); a frame where detection fails reuses the previous box ("fallback"). `Registrar.stream` is
online (no look-ahead: frames before the first detection have status "none"); `register_sequence` is
offline and aligns those leading frames with the first detected box ("fallback"). Both run the same
per-frame code (`_Tracker.step`).
"""
import collections
import dataclasses
import functools
import importlib.util
import os
from typing import Iterable, Iterator, Optional, Sequence, Union

from absl import logging
import dlib
import numpy as np
import skimage.transform

from fer_jax import errors
from fer_jax.data import media

RIGID = (27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 39, 42, 45)  # dlib 68-point indices.
EYES = np.array([[0.30, 0.38], [0.70, 0.38]])  # Template eye centres (image-left, image-right) / S.
SEARCH_FRAMES = 3  # Frames (from the first) where a missing upright face triggers the view search.
ORIENTATIONS = (0, 90, 180, 270)
_LEFT_EYE = slice(36, 42)  # Image-left eye (the subject's right eye).
_RIGHT_EYE = slice(42, 48)
_FRONTAL = (0, 3, 4)  # dlib frontal detector sub-detectors: front looking (upright, tilted left/right).

NoFaceError = errors.NoFaceError
UnreadableImageError = errors.UnreadableImageError


def model_file(name: str) -> str:
  """Path of a dlib model file (e.g. shape_predictor_68_face_landmarks.dat) shipped in the
  face-recognition-models package (found without importing it: its __init__ needs pkg_resources,
  gone from setuptools >= 81)."""
  spec = importlib.util.find_spec("face_recognition_models")
  if spec is None or not spec.submodule_search_locations:
    raise ImportError(f"{name}: face registration needs the face-recognition-models package "
                      "(pip install face-recognition-models).")
  return os.path.join(list(spec.submodule_search_locations)[0], "models", name)


def predictor_path() -> str:
  """Path of dlib's 68-point model shipped by the face-recognition-models package."""
  return model_file("shape_predictor_68_face_landmarks.dat")


@functools.lru_cache(maxsize=None)
def _models():
  """(detector, predictor), loaded once per process."""
  path = predictor_path()
  logging.info("Loading dlib shape predictor %s", path)
  return dlib.get_frontal_face_detector(), dlib.shape_predictor(path)


def mean_shape(path: Optional[str] = None) -> np.ndarray:
  """dlib's mean face: the shape predictor's initial shape, float64 [68, 2] (x, y) in box units.

  dlib serialises a shape_predictor as int version (1), then the initial shape as a float column
  matrix (-rows, -cols, then each value as an int mantissa and an int exponent); ints are one byte
  (low nibble: byte count, bit 7: negative) followed by the magnitude, little-endian. Only the
  file's first ~2 KB are read.
  """
  with open(path or predictor_path(), "rb") as f:
    data = f.read(4096)
  pos = 0

  def read_int():
    nonlocal pos
    head = data[pos]
    size = head & 0x0F
    value = int.from_bytes(data[pos + 1:pos + 1 + size], "little")
    pos += 1 + size
    return -value if head & 0x80 else value

  version, rows, cols = read_int(), -read_int(), -read_int()
  if version != 1 or rows != 136 or cols != 1:
    raise ValueError(f"{path}: not a 68-point dlib shape predictor (version {version}, initial shape "
                     f"{rows}x{cols}).")
  values = []
  for _ in range(rows):
    mantissa = read_int()
    values.append(mantissa * 2.0 ** read_int())
  return np.array(values, np.float64).reshape(68, 2)


def eye_centres(landmarks: np.ndarray) -> np.ndarray:
  """68 landmarks [68, 2] (x, y) -> float64 [2, 2]: image-left and image-right eye centres."""
  landmarks = np.asarray(landmarks, np.float64)
  return np.stack([landmarks[_LEFT_EYE].mean(0), landmarks[_RIGHT_EYE].mean(0)])


@functools.lru_cache(maxsize=None)
def template() -> np.ndarray:
  """float64 [len(RIGID), 2]: where the RIGID points go, as fractions of S (see module doc)."""
  shape = mean_shape()
  tform = skimage.transform.SimilarityTransform.from_estimate(eye_centres(shape), EYES)
  return tform(shape)[list(RIGID)]


def _box_area(r) -> int:
  return max(r.width(), 0) * max(r.height(), 0)


@dataclasses.dataclass(frozen=True)
class View:
  """How a frame is cut and turned before detection.

  Attributes:
    orientation: degrees the frame (or half) is turned counterclockwise (np.rot90) to stand the face up.
    half: None (whole frame), "left" (columns [0, ceil(W/2))) or "right" (columns [floor(W/2), W)).
  """
  orientation: int = 0
  half: Optional[str] = None

  def describe(self) -> str:
    parts = ([f"{self.half} half"] if self.half else []) + (
        [f"turned {self.orientation} degrees"] if self.orientation else [])
    return ", ".join(parts) or "upright"

  def _offset_and_width(self, width: int) -> tuple[int, int]:
    if self.half == "left":
      return 0, (width + 1) // 2
    if self.half == "right":
      return width // 2, width - width // 2
    return 0, width

  def image(self, rgb: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] -> the view, C-contiguous."""
    x0, w = self._offset_and_width(rgb.shape[1])
    return np.ascontiguousarray(np.rot90(rgb[:, x0:x0 + w], self.orientation // 90))

  def to_frame(self, points: np.ndarray, frame_shape: Sequence[int]) -> np.ndarray:
    """(x, y) points [N, 2] in the view -> the same pixels in the input frame, float64 [N, 2]."""
    x0, w = self._offset_and_width(frame_shape[1])
    h = frame_shape[0]
    x, y = np.asarray(points, np.float64).T
    k = self.orientation // 90
    if k == 1:
      x, y = w - 1 - y, x
    elif k == 2:
      x, y = w - 1 - x, h - 1 - y
    elif k == 3:
      x, y = y, h - 1 - x
    return np.stack([x + x0, y], -1)

  def box_to_frame(self, box, frame_shape: Sequence[int]) -> tuple[int, int, int, int]:
    """dlib.rectangle in the view -> (left, top, right, bottom) in the input frame."""
    corners = self.to_frame([(box.left(), box.top()), (box.right(), box.bottom())], frame_shape)
    lo, hi = corners.min(0), corners.max(0)
    return int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1])


UPRIGHT = View()


@dataclasses.dataclass
class RegisteredFrame:
  """One frame's registration.

  Attributes:
    face: uint8 [S, S, 3] aligned crop, or None (status "none").
    landmarks: float32 [68, 2] (x, y) in the crop's pixels, or None.
    image_landmarks: float32 [68, 2] (x, y) in the input frame, or None.
    box: (left, top, right, bottom) face box in the input frame, or None (also for database landmarks).
    status: "detected" | "tracked" | "fallback" | "database" | "none".
    orientation, half: the sequence's View (see View).
  """
  face: Optional[np.ndarray]
  landmarks: Optional[np.ndarray]
  image_landmarks: Optional[np.ndarray]
  box: Optional[tuple]
  status: str
  orientation: int = 0
  half: Optional[str] = None


class Registrar:
  """Registers faces to S x S RGB uint8 crops.

  Attributes:
    size: S, the output side.
    redetect_every: in a sequence, run the detector on every N-th frame; track in between.
    upsample: detector upsampling levels tried in order until a face is found (1 finds faces down to
      ~40 px at twice the cost).
    search_frames: a sequence's first frames where a missing upright face starts the view search.
    view_counts: Counter of the view chosen per sequence ("upright", "turned 90 degrees", "left half",
      ...), for builders to log when done (`summary()`).
  """

  def __init__(self, size: int = 299, redetect_every: int = 5, upsample: Sequence[int] = (0, 1),
               search_frames: int = SEARCH_FRAMES):
    if size < 8:
      raise ValueError(f"size={size} is too small for a face crop (need >= 8).")
    if redetect_every < 1:
      raise ValueError(f"redetect_every={redetect_every} must be >= 1.")
    self.size = int(size)
    self.redetect_every = int(redetect_every)
    self.upsample = tuple(upsample)
    self.search_frames = int(search_frames)
    self.view_counts = collections.Counter()
    self._detector, self._predictor = _models()
    self._template = template() * self.size

  # ------------------------------------------------------------------------- single frames

  def faces(self, rgb: np.ndarray) -> list[tuple]:
    """(dlib.rectangle, score, sub-detector) of every face at the first upsampling level finding any."""
    for up in self.upsample:
      rects, scores, kinds = self._detector.run(rgb, up, 0.0)
      if len(rects):
        return list(zip(rects, scores, kinds))
    return []

  def detect(self, rgb: np.ndarray, source: str = "image"):
    """The largest face's dlib.rectangle in uint8 [H, W, 3], or None (several faces: logged)."""
    found = self.faces(rgb)
    if len(found) > 1:
      logging.info("%s: %d faces found, using the largest.", source, len(found))
    return max((f[0] for f in found), key=_box_area) if found else None

  def landmarks(self, rgb: np.ndarray, box) -> np.ndarray:
    """68 (x, y) landmarks float64 [68, 2] inside dlib.rectangle `box`."""
    shape = self._predictor(rgb, box)
    return np.array([(p.x, p.y) for p in shape.parts()], np.float64)

  def transform(self, landmarks: np.ndarray) -> skimage.transform.SimilarityTransform:
    """The least-squares similarity taking the RIGID landmarks onto the template (pixels of S)."""
    landmarks = np.asarray(landmarks, np.float64)
    if landmarks.shape != (68, 2):
      raise ValueError(f"expected 68 (x, y) landmarks [68, 2], got {landmarks.shape}.")
    tform = skimage.transform.SimilarityTransform.from_estimate(landmarks[list(RIGID)],
                                                                 self._template)
    if not tform:
      raise ValueError(f"Cannot fit a similarity transform to the landmarks: {tform}.")
    return tform

  def align(self, rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Warps uint8 [H, W, 3] so the landmarks' rigid points hit the template; uint8 [S, S, 3]."""
    return self._warp(rgb, self.transform(landmarks))

  def _warp(self, rgb, tform) -> np.ndarray:
    out = skimage.transform.warp(rgb, tform.inverse, output_shape=(self.size,) * 2, order=1,
                                 mode="constant", cval=0.0, preserve_range=True)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)

  def registered(self, rgb: np.ndarray, landmarks: np.ndarray, status: str, box=None,
                 view: View = UPRIGHT) -> RegisteredFrame:
    """A RegisteredFrame from uint8 [H, W, 3] and its 68 landmarks float [68, 2] in that frame."""
    tform = self.transform(landmarks)
    return RegisteredFrame(
        face=self._warp(rgb, tform), landmarks=tform(landmarks).astype(np.float32),
        image_landmarks=np.asarray(landmarks, np.float32), box=box, status=status,
        orientation=view.orientation, half=view.half)

  def register_image(self, image: np.ndarray, source: str = "image") -> np.ndarray:
    """One image (uint8 [H, W], [H, W, 3] ...) -> registered face uint8 [S, S, 3]; NoFaceError if none.

    A turned image, or one of two side by side, is found as in a sequence's first frame.
    """
    frame = _Tracker(self, source).step(media.as_rgb(image, source), source)
    if frame.face is None:
      raise NoFaceError(f"No face found in {source} (also tried turned and halved). Check the image "
                        "shows a frontal face, or set data.register=False if the frames are already "
                        "aligned faces.")
    return frame.face

  # ------------------------------------------------------------------------- sequences

  def stream(self, frames: Iterable[Union[np.ndarray, str]],
             landmarks: Optional[Sequence[np.ndarray]] = None,
             source: str = "sequence") -> Iterator[RegisteredFrame]:
    """Registers frames online, one RegisteredFrame per frame as it arrives (no look-ahead).

    Args:
      frames: uint8 images [H, W(, C)] (or image file paths), e.g. a media.FrameSource.
      landmarks: optional per-frame (x, y) landmarks [T, 68, 2] used instead of detection.
      source: name used in messages.

    Yields:
      RegisteredFrame; status "none" (face, landmarks, box None) until the first detection.
    """
    tracker = _Tracker(self, source)
    for t, frame in enumerate(frames):
      rgb, name = self._read(frame, source, t)
      yield tracker.step(rgb, name, self._database_points(landmarks, t, rgb, source))

  def register_sequence(self, frames: Union[np.ndarray, Iterable[np.ndarray], Iterable[str]],
                        landmarks: Optional[Sequence[np.ndarray]] = None,
                        source: str = "sequence") -> tuple[np.ndarray, dict]:
    """Registers a whole sequence (offline): as `stream`, then leading frames get the first face box.

    Args:
      frames: uint8 [T, H, W(, C)], or an iterable of uint8 images or of image file paths.
      landmarks: optional per-frame (x, y) landmarks [T, 68, 2] (e.g. CK+ Landmarks/); used instead
        of detection when given.
      source: name used in messages (the sequence's folder or file).

    Returns:
      (faces uint8 [T, S, S, 3], info) with info["status"] a list of "database" | "detected" |
      "tracked" | "fallback" per frame (frames before the first detection: "fallback", aligned with
      the first detected box), info["num_detected"], info["landmarks"] float32 [T, 68, 2] (crop
      pixels, (x, y)), info["image_landmarks"] float32 [T, 68, 2] (input frames),
      info["orientation"] (0/90/180/270) and info["half"] (None | "left" | "right").

    Raises:
      NoFaceError naming `source` when no frame has a face; UnreadableImageError naming a bad file;
      EmptySequenceError for an empty sequence; ManualDataError for database landmarks of the wrong
      shape or outside the frame.
    """
    tracker = _Tracker(self, source)
    out, pending = [], []
    for t, frame in enumerate(frames):
      rgb, name = self._read(frame, source, t)
      reg = tracker.step(rgb, name, self._database_points(landmarks, t, rgb, source))
      if reg.status == "none":  # No face yet: keep the frame until the first detection.
        pending.append((t, rgb))
        out.append(None)
        continue
      out.append(reg)
      for i, prgb in pending:
        out[i] = tracker.with_current_box(prgb, "fallback")
      pending = []
    if not out:
      raise errors.EmptySequenceError(f"{source}: empty sequence (no frames); remove it or add its "
                                      "frames.")
    if pending:
      raise NoFaceError(f"No face found in any of the {len(out)} frames of {source} (the first "
                        f"{min(self.search_frames, len(out))} also turned and halved). Check the "
                        "sequence shows a frontal face, or set data.register=False if its frames are "
                        "already aligned faces.")
    view = tracker.view or UPRIGHT
    status = [r.status for r in out]
    info = {"status": status, "num_detected": status.count("detected"),
            "landmarks": np.stack([r.landmarks for r in out]),
            "image_landmarks": np.stack([r.image_landmarks for r in out]),
            "orientation": view.orientation, "half": view.half}
    return np.stack([r.face for r in out]), info

  def summary(self) -> str:
    """The views chosen so far, e.g. "views per sequence: 40 upright, 2 turned 90 degrees"."""
    return "views per sequence: " + (", ".join(f"{n} {v}" for v, n in self.view_counts.most_common())
                                     or "none yet")

  @staticmethod
  def _read(frame, source: str, t: int) -> tuple[np.ndarray, str]:
    if isinstance(frame, (str, os.PathLike)):
      return media.read_image(frame), os.fspath(frame)
    name = f"{source} frame {t}"
    return media.as_rgb(frame, name), name

  @staticmethod
  def _database_points(landmarks, t: int, rgb: np.ndarray, source: str) -> Optional[np.ndarray]:
    if landmarks is None:
      return None
    if t >= len(landmarks):
      raise errors.ManualDataError(
          f"{source}: {len(landmarks)} landmark files for more frames than that; give one per frame "
          "(or set data.use_database_landmarks=False).")
    pts = np.asarray(landmarks[t], np.float64)
    if pts.shape != (68, 2):
      raise errors.ManualDataError(
          f"{source}: landmarks of frame {t} have shape {pts.shape}, expected [68, 2]; fix the file "
          "(or set data.use_database_landmarks=False).")
    h, w = rgb.shape[:2]
    if (pts < -0.1 * max(h, w)).any() or (pts[:, 0] > 1.1 * w).any() or (pts[:, 1] > 1.1 * h).any():
      raise errors.ManualDataError(
          f"{source}: landmarks of frame {t} lie outside the {w}x{h} image; each row must be (x, y). "
          "Fix the file, or set data.use_database_landmarks=False.")
    return pts


class _Tracker:
  """One sequence's registration state: the chosen View, the face box (in the view), the frame count."""

  def __init__(self, registrar: Registrar, source: str):
    self.reg = registrar
    self.source = source
    self.view: Optional[View] = None  # Decided at the first detection.
    self.box = None  # dlib.rectangle in view coordinates.
    self.offset = None  # Box centre minus landmark centroid at the last detection.
    self.t = 0

  def step(self, rgb: np.ndarray, name: str, points: Optional[np.ndarray] = None) -> RegisteredFrame:
    """Registers the next frame uint8 [H, W, 3] (or uses its database `points` [68, 2])."""
    t, reg = self.t, self.reg
    self.t += 1
    if points is not None:
      return reg.registered(rgb, points, "database")
    view = self.view or UPRIGHT
    found = None
    if self.view is None:
      view, found = self._choose_view(rgb, name, t)
    elif self.box is None or t % reg.redetect_every == 0:
      found = reg.detect(view.image(rgb), name)
    if found is not None:
      self.box, kind = found, "detected"
      if self.view is None:
        self.view = view
        reg.view_counts[view.describe()] += 1
    elif self.box is None:
      return RegisteredFrame(None, None, None, None, "none")
    else:
      kind = "tracked" if t % reg.redetect_every else "fallback"
    return self._register(rgb, kind)

  def with_current_box(self, rgb: np.ndarray, kind: str) -> RegisteredFrame:
    """Registers uint8 [H, W, 3] with the current view and box (no detection, box unchanged)."""
    view = self.view or UPRIGHT
    image = view.image(rgb)
    pts = view.to_frame(self.reg.landmarks(image, self.box), rgb.shape)
    return self.reg.registered(rgb, pts, kind, view.box_to_frame(self.box, rgb.shape), view)

  def _register(self, rgb: np.ndarray, kind: str) -> RegisteredFrame:
    view, box = self.view, self.box
    image = view.image(rgb)
    pts = self.reg.landmarks(image, box)
    centre = np.array([(box.left() + box.right()) / 2, (box.top() + box.bottom()) / 2])
    if kind == "detected":
      self.offset = centre - pts.mean(0)
    elif kind == "tracked":  # Move the box with the face for the next frame.
      dx, dy = np.rint(pts.mean(0) + self.offset - centre).astype(int)
      self.box = dlib.rectangle(box.left() + dx, box.top() + dy, box.right() + dx, box.bottom() + dy)
    return self.reg.registered(rgb, view.to_frame(pts, rgb.shape), kind,
                               view.box_to_frame(box, rgb.shape), view)

  def _choose_view(self, rgb: np.ndarray, name: str, t: int):
    """(View, dlib.rectangle or None) for a sequence whose view is not chosen yet (see module doc).

    Upright first. Faces in both halves of a frame at least as wide as high, each face inside its half
    (dual view): the half with the best frontal face. No upright face in one of the first search_frames frames: the best
    frontal face over the halves and the 90/180/270-degree turns.
    """
    h, w = rgb.shape[:2]
    halves = [View(0, "left"), View(0, "right")] if w >= h else []
    found = self.reg.faces(rgb)
    if found:
      sides = {-1 if f[0].right() < w // 2 else 1 if f[0].left() >= (w + 1) // 2 else 0
               for f in found}
      if halves and sides == {-1, 1}:  # Each face inside one half, both halves used.
        view, box, _ = self._best(halves, rgb, by_area=True)
        if box is not None:
          logging.info("%s: faces side by side; using the %s (frontal, largest) for the whole "
                       "sequence.", name, view.describe())
          return view, box
      if len(found) > 1:
        logging.info("%s: %d faces found, using the largest.", name, len(found))
      return UPRIGHT, max((f[0] for f in found), key=_box_area)
    if t >= self.reg.search_frames:
      return UPRIGHT, None
    view, box, key = self._best(halves + [View(o) for o in ORIENTATIONS[1:]], rgb)
    if box is not None:
      logging.info("%s: no upright face in frame %d; found one %s (score %.2f): using that view "
                   "for the whole sequence.", name, t, view.describe(), key[1])
    return view, box

  def _best(self, views: Sequence[View], rgb: np.ndarray, by_area: bool = False):
    """(View, dlib.rectangle, (frontal, score)) of the best face over `views`: frontal first, then
    the highest detector score (by_area: the largest box)."""
    best = (UPRIGHT, None, None)
    for view in views:
      found = self.reg.faces(view.image(rgb))
      if not found:
        continue
      box, score, kind = max(found, key=lambda f: _box_area(f[0]))
      key = (kind in _FRONTAL, _box_area(box) if by_area else score)
      if best[2] is None or key > best[2]:
        best = (view, box, key)
    return best
