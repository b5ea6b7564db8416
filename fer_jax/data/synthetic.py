"""Procedural facial-expression sequences: the embedded default data set (no download).

Faces are drawn with NumPy from signed-distance shapes on coordinate grids, a whole sequence at once.
Each subject has its own face shape, skin and hair tone, feature spacing and sizes. Each emotion is a
pattern of facial-part deformations (brows lowered/raised/inner-raised, eyes widened/narrowed, mouth
corners up/down, mouth open/stretched/pressed, nose wrinkle) scaled by an intensity in [0, 1]. Emotions
share parts (fear and surprise both raise brows and widen eyes; anger and disgust both lower brows and
narrow eyes; sadness and disgust both turn the mouth down), frames carry pixel noise, pose jitter and
occasional occlusion, so a single low-intensity or occluded frame is ambiguous while a sequence is not.

Per-frame labels: a frame whose expression intensity is below `NEUTRAL_THRESHOLD` (0.3, on the absolute
intensity scale where 1 is the strongest expression) is labelled neutral (0), the rest the sequence's
emotion. The onset of every sequence starts at intensity 0, so the first frame is always neutral; the
offset of an "onset_apex_offset" (MMI-like) sequence ends at 0, so its last frame is neutral too. Apex
intensities are drawn in [0.6, 1.0], so every sequence has at least one emotion frame.

Landmarks: every frame carries the 68 points of the dlib / iBUG-300W scheme, float32 [68, 2] (x, y) in
the frame's pixel coordinates (pixel centres at integers), taken from the drawing geometry itself: jaw
0-16 on the face outline from eye level round the chin, brows 17-26 along the drawn brow centre lines
(outer to inner, inner to outer), nose 27-30 down the drawn bridge and 31-35 across the nostrils, eyes
36-47 at the corners and at a third of the width on the drawn lids, outer lips 48-59 and inner lips 60-67
on the drawn lip edges; image left is dlib's point 0 side. Like a landmark detector's output they carry
localisation noise: Gaussian, `landmark_noise` times the inter-ocular distance per coordinate, three
times that on occluded frames.
"""
import dataclasses
from typing import Iterator

import numpy as np

BASIC7 = ("neutral", "anger", "disgust", "fear", "happiness", "sadness", "surprise")
NEUTRAL_THRESHOLD = 0.3  # Frames with intensity below this are labelled neutral.
KINDS = ("onset_apex", "onset_apex_offset")

# Deformation at full intensity, per emotion (rows in BASIC7 order). Columns:
#   brow_raise (+ up, - lowered), brow_inner (+ inner ends up, - inner ends down: the frown "V"),
#   eye_open (+ wide, - narrowed), mouth_curve (+ corners up, - down), mouth_open (0..1),
#   mouth_width (+ stretched, - pressed), nose_wrinkle (0..1).
PARTS = ("brow_raise", "brow_inner", "eye_open", "mouth_curve", "mouth_open", "mouth_width",
          "nose_wrinkle")
EXPRESSIONS = np.array([
    # raise inner  eye   curve  open  width wrinkle
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # neutral
    [-0.7, -1.0, -0.5, -0.2, 0.0, -0.4, 0.2],  # anger
    [-0.4, -0.4, -0.6, -0.6, 0.25, -0.1, 1.0],  # disgust
    [0.6, 0.9, 0.8, -0.3, 0.45, 0.5, 0.0],  # fear
    [0.0, 0.0, -0.3, 1.0, 0.3, 0.45, 0.0],  # happiness
    [0.0, 1.0, -0.3, -0.9, 0.0, 0.0, 0.0],  # sadness
    [1.0, 0.3, 1.0, 0.0, 1.0, -0.2, 0.0],  # surprise
], np.float32)


@dataclasses.dataclass(frozen=True)
class Subject:
  """A subject's look; lengths in face units (the image spans [-1, 1]), colours RGB in [0, 1]."""
  face_w: float  # Face ellipse half-width.
  face_h: float  # Face ellipse half-height.
  face_y: float  # Face centre, down from the image centre.
  skin: tuple[float, float, float]
  hair: tuple[float, float, float]
  background: tuple[float, float, float]
  iris: tuple[float, float, float]
  lips: tuple[float, float, float]
  hairline: float  # Hair covers the face above this y.
  eye_dist: float  # Half the distance between eye centres.
  eye_y: float
  eye_w: float
  eye_h: float
  brow_gap: float  # Brow height above the eye centre.
  brow_len: float
  brow_thick: float
  nose_len: float
  mouth_y: float
  mouth_w: float  # Half-width.
  lip_thick: float


def _colour(rng, base, spread):
  return tuple(float(v) for v in np.clip(np.asarray(base) + rng.uniform(-spread, spread, 3), 0, 1))


def make_subject(rng: np.random.Generator) -> Subject:
  """Draws a subject's face parameters."""
  tone = rng.uniform(0.25, 0.95)
  skin = np.clip(np.array([0.95, 0.75, 0.6]) * tone + rng.uniform(-0.05, 0.05, 3), 0, 1)
  face_h = rng.uniform(0.7, 0.85)
  eye_y = rng.uniform(-0.22, -0.1)
  return Subject(
      face_w=float(rng.uniform(0.5, 0.68)), face_h=float(face_h), face_y=float(rng.uniform(0.0, 0.08)),
      skin=tuple(float(v) for v in skin),
      hair=_colour(rng, [rng.uniform(0.05, 0.6)] * 3, 0.1),
      background=_colour(rng, [0.5, 0.5, 0.5], 0.35),
      iris=_colour(rng, [0.25, 0.2, 0.15], 0.15),
      lips=_colour(rng, skin * np.array([0.8, 0.45, 0.45]), 0.05),
      hairline=float(rng.uniform(-0.65, -0.45)),
      eye_dist=float(rng.uniform(0.2, 0.3)), eye_y=float(eye_y),
      eye_w=float(rng.uniform(0.11, 0.15)), eye_h=float(rng.uniform(0.055, 0.075)),
      brow_gap=float(rng.uniform(0.11, 0.16)), brow_len=float(rng.uniform(0.1, 0.15)),
      brow_thick=float(rng.uniform(0.025, 0.038)),
      nose_len=float(rng.uniform(0.2, 0.28)),
      mouth_y=float(rng.uniform(0.28, 0.4)), mouth_w=float(rng.uniform(0.18, 0.25)),
      lip_thick=float(rng.uniform(0.03, 0.045)))


def _fill(dist, px):
  """Anti-aliased coverage in [0, 1] of a shape with signed distance `dist` (< 0 inside)."""
  return np.clip(0.5 - dist / px, 0.0, 1.0)


def _ellipse(x, y, cx, cy, rx, ry):
  """Approximate signed distance to an axis-aligned ellipse (broadcasting)."""
  r = np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2)
  return (r - 1.0) * np.minimum(rx, ry)


def _segment(x, y, ax, ay, bx, by):
  """Distance to the segment a-b (broadcasting)."""
  dx, dy = bx - ax, by - ay
  t = np.clip(((x - ax) * dx + (y - ay) * dy) / (dx * dx + dy * dy + 1e-9), 0.0, 1.0)
  return np.sqrt((x - ax - t * dx) ** 2 + (y - ay - t * dy) ** 2)


def _blend(img, alpha, colour):
  """img [T, h, w, 3] <- img * (1 - alpha) + colour * alpha (in place); alpha [T, h, w]."""
  img += alpha[..., None] * (np.asarray(colour, np.float32) - img)


class _Canvas:
  """A sequence's frames [T, S, S, 3] float32 and, per frame, pixel -> face-coordinate grids.

  Shapes are drawn only inside the pixel window covering their face-coordinate box in every frame,
  so small parts (eyes, brows, mouth) cost a fraction of the image.
  """

  def __init__(self, size, t_len, rng):
    self.size = size
    # Pose jitter: rotation, scale, shift; pixel = scale * R(rot) @ face + shift.
    self.rot = rng.normal(0.0, 0.03, t_len)
    self.scale = 1.0 + rng.normal(0.0, 0.02, t_len)
    self.shift = rng.normal(0.0, 0.02, (t_len, 2))
    g = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
    self.gy, gx = np.meshgrid(g, g, indexing="ij")
    c, s = np.cos(self.rot)[:, None, None], np.sin(self.rot)[:, None, None]
    sc = self.scale[:, None, None]
    px, py = gx[None] - self.shift[:, 0, None, None], self.gy[None] - self.shift[:, 1, None, None]
    self.x = ((c * px + s * py) / sc).astype(np.float32)
    self.y = ((-s * px + c * py) / sc).astype(np.float32)
    self.px = 2.0 / size  # One pixel in face units.
    self.img = np.empty((t_len, size, size, 3), np.float32)

  def window(self, x0, x1, y0, y1):
    """(row slice, col slice) of the pixels that the face box [x0, x1] x [y0, y1] covers in any frame."""
    fx = np.array([x0, x1, x0, x1])[None]
    fy = np.array([y0, y0, y1, y1])[None]
    c, s, sc = np.cos(self.rot)[:, None], np.sin(self.rot)[:, None], self.scale[:, None]
    px = sc * (c * fx - s * fy) + self.shift[:, :1]
    py = sc * (s * fx + c * fy) + self.shift[:, 1:]
    to_pix = lambda v: (v + 1.0) / 2.0 * self.size - 0.5
    lo = lambda v: int(np.clip(np.floor(to_pix(v.min())) - 2, 0, self.size))
    hi = lambda v: int(np.clip(np.ceil(to_pix(v.max())) + 3, 0, self.size))
    return slice(lo(py), hi(py)), slice(lo(px), hi(px))

  def part(self, box):
    """(x, y, img) views [T, h, w](, 3) restricted to the window of `box` = (x0, x1, y0, y1)."""
    r, c = self.window(*box)
    return self.x[:, r, c], self.y[:, r, c], self.img[:, r, c]


# Defaults of the appearance difficulty (generate's noise, occlusion_prob, landmark_noise).
NOISE = 0.07  # Pixel noise std, as a fraction of 255.
OCCLUSION_PROB = 0.12  # Chance that a frame has a bar or blob over part of the face.
LANDMARK_NOISE = 0.03  # Landmark noise std, as a fraction of the inter-ocular distance.
NUM_LANDMARKS = 68


def _landmarks_face(s: Subject, eye_h, brow, mouth) -> np.ndarray:
  """The 68 points in face units, float64 [T, 68, 2], from the per-frame part geometry.

  Args:
    s: the subject.
    eye_h: [T] drawn eye half-heights.
    brow: (iy, oy) [T] each: y of the brows' inner and outer ends.
    mouth: (mw, centre, top, bot): mw [T] half-width; centre, top, bot callables u [T, n] -> y [T, n]
      of the lip centre line and the upper and lower inner lip edges at u = x / mw.
  """
  t_len = len(eye_h)
  pts = np.zeros((t_len, NUM_LANDMARKS, 2))
  # Jaw 0-16: the face ellipse from the image-left side at eye level, round the chin, to the right.
  a0 = np.arcsin(np.clip((s.eye_y - s.face_y) / s.face_h, -1.0, 1.0))
  a = np.pi - a0 - np.arange(17) * (np.pi - 2 * a0) / 16
  pts[:, 0:17] = np.stack([s.face_w * np.cos(a), s.face_y + s.face_h * np.sin(a)], -1)
  # Brows 17-21 (image left: outer -> inner), 22-26 (image right: inner -> outer).
  iy, oy = brow
  f = np.linspace(0.0, 1.0, 5)
  for first, side in ((17, -1.0), (22, 1.0)):
    ix, ox = side * (s.eye_dist - s.brow_len * 0.9), side * (s.eye_dist + s.brow_len)
    w = 1.0 - f if side < 0 else f  # Weight of the outer end.
    pts[:, first:first + 5, 0] = w * ox + (1 - w) * ix
    pts[:, first:first + 5, 1] = w * oy[:, None] + (1 - w) * iy[:, None]
  # Nose: bridge 27-30 top to tip along the drawn line; 31-35 across the nostrils, left to right.
  nose_top, nose_bot = s.eye_y + 0.05, s.eye_y + 0.05 + s.nose_len
  f = np.linspace(0.0, 1.0, 4) * (s.nose_len - 0.03) / s.nose_len
  pts[:, 27:31] = np.stack([0.02 + 0.015 * f, nose_top + f * s.nose_len], -1)
  pts[:, 31:36] = [[-0.062, nose_bot], [-0.04, nose_bot + 0.013], [0.0, nose_bot + 0.008],
                   [0.04, nose_bot + 0.013], [0.062, nose_bot]]
  # Eyes 36-41, 42-47: left corner, upper lid at -1/3 and +1/3 of the width, right corner, lower lid
  # at +1/3 and -1/3 (image coordinates, as dlib orders both eyes).
  du = np.array([-1.0, -1 / 3, 1 / 3, 1.0, 1 / 3, -1 / 3])
  lid = np.array([0.0, -1.0, -1.0, 0.0, 1.0, 1.0]) * np.sqrt(1.0 - du ** 2)
  for first, side in ((36, -1.0), (42, 1.0)):
    pts[:, first:first + 6, 0] = side * s.eye_dist + du * s.eye_w
    pts[:, first:first + 6, 1] = s.eye_y + lid * eye_h[:, None]
  # Lips: outer 48-59 (left corner, upper edge left to right, right corner, lower edge right to left),
  # inner 60-67 (the same round the mouth opening).
  mw, centre, top, bot = mouth
  u_up, u_low = np.array([-2 / 3, -1 / 3, 0.0, 1 / 3, 2 / 3]), np.array([2 / 3, 1 / 3, 0.0, -1 / 3, -2 / 3])
  ones = np.ones((t_len, 1))
  corner = centre(ones)[:, 0]
  pts[:, 48] = np.stack([-mw, corner], -1)
  pts[:, 54] = np.stack([mw, corner], -1)
  pts[:, 49:54, 0], pts[:, 49:54, 1] = mw[:, None] * u_up, top(ones * u_up) - s.lip_thick
  pts[:, 55:60, 0], pts[:, 55:60, 1] = mw[:, None] * u_low, bot(ones * u_low) + s.lip_thick
  inner = (mw - 0.01) / mw  # The opening ends 0.01 inside the lips' corners.
  pts[:, 60] = np.stack([-(mw - 0.01), centre(-ones * inner)[:, 0]], -1)
  pts[:, 64] = np.stack([mw - 0.01, centre(ones * inner)[:, 0]], -1)
  u_up, u_low = np.array([-0.5, 0.0, 0.5]), np.array([0.5, 0.0, -0.5])
  pts[:, 61:64, 0], pts[:, 61:64, 1] = mw[:, None] * u_up, top(ones * u_up)
  pts[:, 65:68, 0], pts[:, 65:68, 1] = mw[:, None] * u_low, bot(ones * u_low)
  return pts


def _render(subject: Subject, emotion: np.ndarray, intensity: np.ndarray, size: int,
            rng: np.random.Generator, occlusion_prob: float = OCCLUSION_PROB, noise: float = NOISE,
            landmark_noise: float = LANDMARK_NOISE) -> tuple[np.ndarray, np.ndarray]:
  """Draws frames for per-frame emotion [T] and intensity [T] in [0, 1].

  Returns:
    frames [T, S, S, 3] uint8 and landmarks [T, 68, 2] float32 ((x, y) pixel coordinates).
  """
  s = subject
  t_len = len(intensity)
  deform = EXPRESSIONS[emotion] * np.asarray(intensity, np.float32)[:, None]  # [T, 7]
  deform += rng.normal(0.0, 0.04, deform.shape).astype(np.float32)  # Frame-to-frame wobble.
  raise_, inner, eye_open, curve, open_, width, wrinkle = [
      d.reshape(t_len, 1, 1) for d in deform.T]
  cv = _Canvas(size, t_len, rng)
  px, x, y, img = cv.px, cv.x, cv.y, cv.img
  # Background with a light gradient, hair behind the head, face with cheek shading: one matmul of
  # per-pixel weights [T, S, S, 4] by colours [4, 3].
  hair = _fill(_ellipse(x, y, 0.0, s.face_y - 0.05, s.face_w + 0.08, s.face_h + 0.06), px)
  face = _fill(_ellipse(x, y, 0.0, s.face_y, s.face_w, s.face_h), px)
  shade = np.clip(1.0 - 0.25 * (x / s.face_w) ** 2, 0.6, 1.0)
  bg = (1.0 - hair) * (1.0 - face)
  weights = np.stack([bg, hair * (1.0 - face), face * shade, 0.15 * cv.gy * bg], axis=-1)
  colours = np.array([s.background, s.hair, s.skin, (1.0, 1.0, 1.0)], np.float32)
  np.matmul(weights, colours, out=img)
  top = s.face_y - s.face_h - 0.02
  xs, ys, im = cv.part((-s.face_w - 0.02, s.face_w + 0.02, top, s.hairline + 0.06))
  fringe = _fill(_ellipse(xs, ys, 0.0, s.face_y, s.face_w, s.face_h), px)
  fringe *= _fill(ys - (s.hairline + 0.05 * np.cos(6.0 * xs)), px)
  _blend(im, fringe, s.hair)

  # Eyes: sclera ellipses whose height follows eye_open; irises clipped to them; lids as outlines.
  eye_h = s.eye_h * np.clip(1.0 + 0.8 * eye_open, 0.25, 2.0)
  for side in (-1.0, 1.0):
    ex = side * s.eye_dist
    reach = s.eye_w + 0.02
    xs, ys, im = cv.part((ex - reach, ex + reach, s.eye_y - 2.1 * s.eye_h, s.eye_y + 2.1 * s.eye_h))
    sclera = _ellipse(xs, ys, ex, s.eye_y, s.eye_w, eye_h)
    _blend(im, _fill(np.abs(sclera) - 0.012, px), (0.15, 0.1, 0.1))
    inside = _fill(sclera, px)
    _blend(im, inside, (0.95, 0.95, 0.95))
    _blend(im, _fill(_ellipse(xs, ys, ex, s.eye_y, 0.045, 0.045), px) * inside, s.iris)
    _blend(im, _fill(_ellipse(xs, ys, ex, s.eye_y, 0.02, 0.02), px) * inside, (0.02, 0.02, 0.02))

  # Brows: thick segments; raise_ moves both ends, inner tilts the inner end (+ up, - down).
  brow_y = s.eye_y - s.brow_gap - 0.12 * raise_
  for side in (-1.0, 1.0):
    ix, ox = side * (s.eye_dist - s.brow_len * 0.9), side * (s.eye_dist + s.brow_len)
    iy, oy = brow_y - 0.09 * inner, brow_y + 0.025 * inner  # [T, 1, 1] each.
    reach = s.brow_thick + 0.01
    box_y = s.eye_y - s.brow_gap
    xs, ys, im = cv.part((min(ix, ox) - reach, max(ix, ox) + reach, box_y - 0.25, box_y + 0.15))
    _blend(im, _fill(_segment(xs, ys, ix, iy, ox, oy) - s.brow_thick, px), s.hair)

  # Nose: bridge line and nostrils; wrinkle: short horizontal creases on the bridge.
  nose_top, nose_bot = s.eye_y + 0.05, s.eye_y + 0.05 + s.nose_len
  dark = tuple(v * 0.55 for v in s.skin)
  xs, ys, im = cv.part((-0.08, 0.08, nose_top - 0.02, nose_bot + 0.03))
  _blend(im, 0.7 * _fill(_segment(xs, ys, 0.02, nose_top, 0.035, nose_bot) - 0.008, px), dark)
  for side in (-1.0, 1.0):
    _blend(im, _fill(_ellipse(xs, ys, side * 0.04, nose_bot, 0.022, 0.013), px), dark)
  for k in range(3):
    cy = nose_top + 0.03 + 0.035 * k
    crease = _fill(_segment(xs, ys, -0.06, cy, 0.06, cy) - 0.008, px)
    _blend(im, np.clip(wrinkle, 0.0, 1.0) * crease, tuple(v * 0.4 for v in s.skin))

  # Mouth: lip centre line bends with curve (corners up for +), opens by open_, widens with width.
  xs, ys, im = cv.part((-1.7 * s.mouth_w, 1.7 * s.mouth_w, s.mouth_y - 0.15, s.mouth_y + 0.2))
  mw = s.mouth_w * np.clip(1.0 + 0.4 * width, 0.5, 1.6)
  u = np.clip(xs / mw, -1.0, 1.0)
  centre = s.mouth_y - 0.16 * curve * u ** 2
  gap = 0.16 * np.clip(open_, 0.0, 1.2) * (1.0 - u ** 2)
  top, bot = centre - gap / 2, centre + gap / 2
  horiz = np.abs(xs) - mw  # < 0 within the mouth's width.
  lips = np.maximum(horiz, np.maximum(top - s.lip_thick - ys, ys - bot - s.lip_thick))
  _blend(im, _fill(lips, px), s.lips)
  hole = np.maximum(horiz + 0.01, np.maximum(top - ys, ys - bot))
  _blend(im, _fill(hole, px), (0.15, 0.02, 0.05))
  teeth = np.maximum(hole, ys - (top + 0.3 * gap))  # Upper part of an open mouth.
  _blend(im, _fill(teeth, px), (0.9, 0.9, 0.85))

  landmarks = _landmarks_face(
      s, eye_h.reshape(t_len), (iy.reshape(t_len), oy.reshape(t_len)),
      (mw.reshape(t_len),
       lambda u: s.mouth_y - 0.16 * curve.reshape(t_len, 1) * u ** 2,
       lambda u: (s.mouth_y - 0.16 * curve.reshape(t_len, 1) * u ** 2
                  - 0.08 * np.clip(open_.reshape(t_len, 1), 0.0, 1.2) * (1.0 - u ** 2)),
       lambda u: (s.mouth_y - 0.16 * curve.reshape(t_len, 1) * u ** 2
                  + 0.08 * np.clip(open_.reshape(t_len, 1), 0.0, 1.2) * (1.0 - u ** 2))))

  # Occlusion: on a random subset of frames a bar or blob over part of the face.
  occluded = np.flatnonzero(rng.random(t_len) < occlusion_prob)
  for t in occluded:
    colour = rng.uniform(0.0, 1.0, 3)
    cy, cx = rng.uniform(-0.3, 0.45), rng.uniform(-0.3, 0.3)
    if rng.random() < 0.5:  # A horizontal bar.
      d = np.maximum(np.abs(y[t] - cy) - rng.uniform(0.07, 0.14), np.abs(x[t] - cx) - rng.uniform(0.3, 0.7))
    else:  # A blob.
      d = _ellipse(x[t], y[t], cx, cy, rng.uniform(0.15, 0.3), rng.uniform(0.12, 0.25))
    _blend(img[t:t + 1], _fill(d, px)[None], colour)

  img *= rng.uniform(0.85, 1.15, (t_len, 1, 1, 1)).astype(np.float32)  # Per-frame exposure.
  img *= 255.0
  img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(255.0 * noise)
  # Landmark localisation noise (drawn last, so the frames do not depend on it).
  spread = np.full((t_len, 1, 1), landmark_noise * 2.0 * s.eye_dist)
  spread[occluded] *= 3.0
  landmarks = landmarks + rng.standard_normal(landmarks.shape) * spread
  # Face units -> pixels: the canvas's pose (pixel = scale * R(rot) @ face + shift), then [-1, 1] ->
  # pixel index (the grid samples pixel centres at (i + 0.5) / S * 2 - 1).
  c, sn, sc = np.cos(cv.rot)[:, None], np.sin(cv.rot)[:, None], cv.scale[:, None]
  fx, fy = landmarks[..., 0], landmarks[..., 1]
  px = sc * (c * fx - sn * fy) + cv.shift[:, :1]
  py = sc * (sn * fx + c * fy) + cv.shift[:, 1:]
  pixels = (np.stack([px, py], -1) + 1.0) / 2.0 * size - 0.5
  return np.clip(img, 0, 255).astype(np.uint8), pixels.astype(np.float32)


def _check_emotion(emotion, allow_neutral):
  if not 0 <= int(emotion) < len(BASIC7) or (not allow_neutral and int(emotion) == 0):
    valid = "0..6" if allow_neutral else "1..6 (0 = neutral has no sequences)"
    raise ValueError(f"emotion={emotion} is not a BASIC7 index {valid}; BASIC7 = {BASIC7}.")


def draw_frame(subject: Subject, emotion: int, intensity: float, size: int,
               rng: np.random.Generator) -> np.ndarray:
  """One frame [S, S, 3] uint8 of `subject` showing BASIC7 `emotion` at `intensity` in [0, 1]."""
  _check_emotion(emotion, allow_neutral=True)
  if not 0.0 <= intensity <= 1.0:
    raise ValueError(f"intensity={intensity} must lie in [0, 1].")
  return _render(subject, np.array([int(emotion)]), np.array([intensity], np.float32), size, rng)[0][0]


def intensity_profile(length: int, kind: str, rng: np.random.Generator) -> np.ndarray:
  """Expression intensity [T] float32: 0 at the start, apex in [0.6, 1] (and 0 at the end if offset)."""
  if kind not in KINDS:
    raise ValueError(f"kind={kind!r}; use one of {KINDS}.")
  min_len = 2 if kind == "onset_apex" else 3
  if length < min_len:
    raise ValueError(f"length={length} is too short for kind={kind!r}: use at least {min_len} frames.")
  apex = rng.uniform(0.6, 1.0)
  t = np.arange(length, dtype=np.float64)
  if kind == "onset_apex":
    # Rise over a random share of the sequence, then hold the apex (CK+ ends at the peak).
    rise_end = max(1, int(round((length - 1) * rng.uniform(0.6, 1.0))))
    ramp = np.clip(t / rise_end, 0.0, 1.0)
  else:
    peak = int(rng.integers(1, length - 1))  # Apex strictly inside.
    hold = int(rng.integers(0, max(1, (length - 1 - peak) // 3) + 1))
    ramp = np.where(t <= peak, t / peak, 1.0)
    fall_start = peak + hold
    fall = np.clip((t - fall_start) / max(1, length - 1 - fall_start), 0.0, 1.0)
    ramp = np.minimum(ramp, 1.0 - fall)
    ramp[-1] = 0.0
  smooth = ramp * ramp * (3.0 - 2.0 * ramp)  # Smoothstep: slow onset, as in real videos.
  return (apex * smooth).astype(np.float32)


def draw_sequence(subject: Subject, emotion: int, length: int, kind: str, size: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """A neutral -> apex (kind "onset_apex") or neutral -> apex -> neutral ("onset_apex_offset") sequence.

  Returns:
    frames [T, S, S, 3] uint8 and labels [T] int32 (0 where intensity < NEUTRAL_THRESHOLD, else emotion).
  """
  return _draw_sequence(subject, emotion, length, kind, size, rng)[:2]


def _draw_sequence(subject, emotion, length, kind, size, rng, **difficulty):
  """draw_sequence's frames and labels, and landmarks [T, 68, 2] float32; difficulty: _render's."""
  _check_emotion(emotion, allow_neutral=False)
  intensity = intensity_profile(length, kind, rng)
  frames, landmarks = _render(subject, np.full(length, int(emotion)), intensity, size, rng,
                              **difficulty)
  labels = np.where(intensity < NEUTRAL_THRESHOLD, 0, int(emotion)).astype(np.int32)
  return frames, labels, landmarks


def generate(num_subjects: int, sequences_per_subject: int, min_length: int, max_length: int,
             size: int, seed: int, *, noise: float = NOISE, occlusion_prob: float = OCCLUSION_PROB,
             landmark_noise: float = LANDMARK_NOISE) -> Iterator[dict]:
  """Yields records {"frames": [T, S, S, 3] uint8, "labels": [T] int32, "landmarks": [T, 68, 2]
  float32 (x, y pixels), "subject": str, "sequence": str}.

  noise (pixel noise std / 255), occlusion_prob (per frame) and landmark_noise (std / inter-ocular
  distance) set how hard single frames are; the defaults are the demo's setting.

  Subjects are "S001"...; sequence names "S001_002". A subject's emotions cycle through a random
  permutation of the six (balanced); kinds alternate onset_apex / onset_apex_offset. Lengths are
  uniform in [min_length, max_length]. Every subject and sequence has its own RNG stream derived from
  `seed`, so the output is deterministic and a subject's data does not depend on `num_subjects`.
  """
  if num_subjects < 1 or sequences_per_subject < 1:
    raise ValueError(f"num_subjects={num_subjects} and sequences_per_subject={sequences_per_subject} "
                     "must be >= 1.")
  if not 3 <= min_length <= max_length:
    raise ValueError(f"min_length={min_length}, max_length={max_length}: need 3 <= min_length <= "
                     "max_length.")
  if size < 16:
    raise ValueError(f"size={size} is too small to draw a face; use at least 16 pixels.")
  if noise < 0 or not 0 <= occlusion_prob <= 1 or landmark_noise < 0:
    raise ValueError(f"noise={noise}, occlusion_prob={occlusion_prob}, landmark_noise={landmark_noise}: "
                     "need noise >= 0, 0 <= occlusion_prob <= 1 and landmark_noise >= 0.")
  for i in range(num_subjects):
    subject_rng = np.random.default_rng([seed, i])
    subject = make_subject(subject_rng)
    order = 1 + subject_rng.permutation(len(BASIC7) - 1)
    first_kind = int(subject_rng.integers(2))
    for j in range(sequences_per_subject):
      rng = np.random.default_rng([seed, i, j + 1])
      emotion = int(order[j % len(order)])
      kind = KINDS[(first_kind + j) % 2]
      length = int(rng.integers(min_length, max_length + 1))
      frames, labels, landmarks = _draw_sequence(
          subject, emotion, length, kind, size, rng, noise=noise, occlusion_prob=occlusion_prob,
          landmark_noise=landmark_noise)
      yield {"frames": frames, "labels": labels, "landmarks": landmarks, "subject": f"S{i + 1:03d}",
             "sequence": f"S{i + 1:03d}_{j + 1:03d}"}
