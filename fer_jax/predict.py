"""Per-frame expressions for a user's video: `python -m fer_jax.predict --workdir=DIR --video=PATH`.

A video file or a folder of frame images (natural sort: frame_2 before frame_10), read by
fer_jax.data.media, -> dlib face registration (data/registration.py, online: no look-ahead) -> the
fold's trained CNN (train.load_model on <workdir>/fold_<k>/cnn) -> the CRF input of
config.crf.features (crf_inputs.CrfInputs with the training statistics saved in crf.npz) -> the
fold's CRF (<workdir>/fold_<k>/crf.npz) -> per-frame label, CRF marginals, CNN softmax. --stage=joint
uses stage 3's jointly fine-tuned CNN and CRF instead (fold_<k>/joint/best, fold_<k>/joint/crf.npz).

Every input frame gets a row. Its `face` column is the registration's status: "detected" (the
detector found a face), "tracked" (between detections when --redetect_every > 1: the previous
box moved with the landmarks), "fallback" (detection failed: the previous frame's box) or "none"
(no face detected yet: frames before the first detection). "none" frames have label -1 (an empty
label) and NaN (empty) probabilities; the CRF runs over the other frames, in order, as one sequence.

Offline (the default for a file or folder) reads the whole clip, then runs the CRF over it (Viterbi
labels, marginals given the whole clip). Streaming (a webcam index, a URL or a pipe, or --stream;
fer_jax/streaming.py) writes each row as soon as it is decided, after --lag / --lag_seconds more
frames (max-marginal labels, marginals given the frames so far).

Outputs (CLI): a CSV (default <workdir>/predictions/<video stem>_fold<k>.csv; header frame, time_s,
face, label, crf_<class>..., softmax_<class>...), optionally JSON (--json), an annotated video
(--render=PATH: face box coloured by status, --landmarks: the 68 points, label, probability bars)
and a plot of the probabilities over time (--plot=PATH). Existing files are never overwritten
without --overwrite.
"""
import csv
import dataclasses
import json
import math
import os
import re
import stat
import sys
import time
from typing import Optional

from absl import app
from absl import flags
from absl import logging
import ml_collections
import numpy as np

from fer_jax import crf
from fer_jax import crf_inputs
from fer_jax import errors
from fer_jax import tf_devices
from fer_jax import train
from fer_jax.data import media
from fer_jax.data import registration

FOLDER_FPS = 30.0  # Frame rate assumed for a folder of frames unless `fps` is given.
NO_FACE = "none"
_CREATE = ("python -m fer_jax.main --config=configs/<experiment>.py --workdir={workdir} "
           "(e.g. configs/demo.py)")


UnreadableVideoError = errors.UnreadableVideoError


@dataclasses.dataclass
class FrameRow:
  """One frame's prediction (one CSV row) for K classes; offline and streaming produce the same.

  Attributes:
    index: the frame's index in the input (0-based).
    time_s: index / fps.
    face: "detected" | "tracked" | "fallback" | "none" (see the module docstring).
    label: the CRF's label, -1 where no face.
    crf_probs: float32 [K], CRF marginals; NaN where no face.
    softmax_probs: float32 [K], the CNN's softmax; NaN where no face.
    box: the face box (left, top, right, bottom) in the input frame's pixels, or None.
    points: float32 [68, 2], the 68 landmarks (x, y) in the input frame's pixels, or None.
    arrival: time.perf_counter() when the frame arrived (streaming only), else None.
  """
  index: int
  time_s: float
  face: str
  label: int
  crf_probs: np.ndarray
  softmax_probs: np.ndarray
  box: Optional[tuple] = None
  points: Optional[np.ndarray] = None
  arrival: Optional[float] = None


@dataclasses.dataclass
class PredictionResult:
  """Per-frame predictions for T input frames and K classes.

  Attributes:
    class_names: K names.
    labels: int32 [T], the CRF's Viterbi label; -1 where no face.
    crf_probs: float32 [T, K], CRF marginals p(y_t = k | video); NaN rows where no face.
    softmax_probs: float32 [T, K], the CNN's softmax per frame; NaN rows where no face.
    face_status: T strings: "detected" | "tracked" | "fallback" | "none" (see the module docstring).
    fps: frames per second (the video's, or FOLDER_FPS / the given one for a folder).
    source: the video file or frame folder.
    timings: seconds per stage: "load" (model, CRF), "decode", "registration", "cnn" (includes the
      jit compile), "crf".
    boxes: float32 [T, 4], the face box (left, top, right, bottom) in input pixels; NaN rows where
      no face.
    points: float32 [T, 68, 2], the 68 landmarks (x, y) in input pixels; NaN where no face.
  """
  class_names: list
  labels: np.ndarray
  crf_probs: np.ndarray
  softmax_probs: np.ndarray
  face_status: list
  fps: float
  source: str
  timings: dict = dataclasses.field(default_factory=dict)
  boxes: Optional[np.ndarray] = None
  points: Optional[np.ndarray] = None

  def __post_init__(self):
    t = len(self.labels)
    if self.boxes is None:
      self.boxes = np.full((t, 4), np.nan, np.float32)
    if self.points is None:
      self.points = np.full((t, 68, 2), np.nan, np.float32)

  @property
  def num_frames(self) -> int:
    return len(self.labels)

  def row(self, t: int) -> FrameRow:
    """Frame t as a FrameRow."""
    box = None if np.isnan(self.boxes[t]).any() else tuple(float(v) for v in self.boxes[t])
    points = None if np.isnan(self.points[t]).all() else self.points[t]
    return FrameRow(index=t, time_s=float(self.times[t]), face=self.face_status[t],
                    label=int(self.labels[t]), crf_probs=self.crf_probs[t],
                    softmax_probs=self.softmax_probs[t], box=box, points=points)

  @classmethod
  def from_rows(cls, rows, class_names, fps: float, source: str, timings=None):
    """The result holding `rows` (FrameRows of frames 0..T-1, in order)."""
    if [r.index for r in rows] != list(range(len(rows))):
      raise ValueError("from_rows needs the rows of frames 0..T-1 in order.")
    k = len(class_names)
    t = len(rows)
    result = cls(class_names=list(class_names), labels=np.array([r.label for r in rows], np.int32),
                 crf_probs=np.array([r.crf_probs for r in rows], np.float32).reshape(t, k),
                 softmax_probs=np.array([r.softmax_probs for r in rows], np.float32).reshape(t, k),
                 face_status=[r.face for r in rows], fps=fps, source=source,
                 timings=dict(timings or {}))
    for i, r in enumerate(rows):
      if r.box is not None:
        result.boxes[i] = r.box
      if r.points is not None:
        result.points[i] = r.points
    return result

  @property
  def times(self) -> np.ndarray:
    """float64 [T]: each frame's time in seconds."""
    return np.arange(self.num_frames) / self.fps


# ----------------------------------------------------------------------------- frames


class _Timed:
  """Wraps an iterator, summing the seconds spent inside next()."""

  def __init__(self, iterable):
    self._it = iter(iterable)
    self.seconds = 0.0

  def __iter__(self):
    return self

  def __next__(self):
    start = time.perf_counter()
    try:
      return next(self._it)
    finally:
      self.seconds += time.perf_counter() - start


# ----------------------------------------------------------------------------- workdir


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The experiment's config from <workdir>/config.json."""
  if not os.path.isdir(workdir):
    raise FileNotFoundError(f"Workdir {workdir} does not exist; train a model into it first: "
                            + _CREATE.format(workdir=workdir))
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: {workdir} is not an experiment workdir (the "
                            "experiment writes it when it starts): "
                            + _CREATE.format(workdir=workdir))
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def class_names(workdir: str, num_classes: int) -> list[str]:
  """Class names from <workdir>/results.json; class_<k> (with a warning) before it is written."""
  path = os.path.join(workdir, "results.json")
  if os.path.exists(path):
    with open(path) as f:
      names = [str(n) for n in json.load(f).get("class_names", [])]
    if len(names) != num_classes:
      raise ValueError(f"{path} lists {len(names)} class names but the CRF has {num_classes} "
                       "classes; the workdir mixes two experiments: rerun it in a fresh workdir.")
    return names
  logging.warning("%s not found (the experiment writes it after its last fold): classes are "
                  "named class_0..class_%d.", path, num_classes - 1)
  return [f"class_{k}" for k in range(num_classes)]


@dataclasses.dataclass
class Fold:
  """What prediction reads from one fold of an experiment workdir.

  Attributes:
    config: the experiment's config.
    model: the fold's best CNN (flax.nnx, eval mode).
    params: its crf.CRFParams ([D, K] weights).
    inputs: crf_inputs.CrfInputs: the CRF's input per frame (feature set, training statistics).
    class_names: K names.
  """
  config: ml_collections.ConfigDict
  model: object
  params: crf.CRFParams
  inputs: crf_inputs.CrfInputs
  class_names: list


# Which trained CNN and CRF of a fold predict uses: stage 2 (stage 1's CNN, the CRF fitted on its
# outputs) or stage 3 (the jointly fine-tuned CNN, its parameters under "cnn" of the joint
# checkpoint, and the CRF stage 3 saved). {stage: (checkpoint folder, params_key, CRF file)}.
STAGES = {"crf": ("cnn", None, "crf.npz"), "joint": ("joint", "cnn", os.path.join("joint", "crf.npz"))}


def load_fold(workdir: str, fold: int = 0, stage: str = "crf") -> Fold:
  """The Fold (config, CNN, CRF and its input builder, class names) of an experiment workdir.

  stage: "crf" (stage 1's CNN + stage 2's CRF: fold_<k>/cnn, fold_<k>/crf.npz) or "joint" (stage 3's
  fine-tuned CNN and CRF: fold_<k>/joint/best, fold_<k>/joint/crf.npz).
  """
  if stage not in STAGES:
    raise ValueError(f"stage={stage!r}: use one of {sorted(STAGES)}.")
  folder, params_key, crf_file = STAGES[stage]
  config = load_config(workdir)
  fold_dir = os.path.join(workdir, f"fold_{fold}")
  cnn_dir = os.path.join(fold_dir, folder)
  if not os.path.isdir(cnn_dir):
    have = sorted(n for n in os.listdir(workdir) if n.startswith("fold_"))
    if stage == "joint" and os.path.isdir(os.path.join(fold_dir, "cnn")):
      raise FileNotFoundError(f"{cnn_dir} not found: fold {fold} ran without stage 3 "
                              "(config.joint.steps = 0); pass --stage=crf, or rerun the experiment "
                              "with joint.steps > 0 (it resumes: stages 1 and 2 are kept).")
    raise FileNotFoundError(f"{cnn_dir} not found: fold {fold} has no trained CNN (folds here: "
                            f"{have or 'none'}); pass --fold or run "
                            + _CREATE.format(workdir=workdir))
  params, _, extras = crf.load_crf(os.path.join(fold_dir, crf_file))
  inputs = crf_inputs.CrfInputs.from_extras(extras)
  num_classes = int(np.shape(params.weights)[1])
  names = class_names(workdir, num_classes)
  model = train.load_model(config, cnn_dir, num_classes, which="best", params_key=params_key)
  return Fold(config, model, params, inputs, names)


# ----------------------------------------------------------------------------- prediction


def _batches(faces: np.ndarray, batch_size: int):
  """uint8 [N, S, S, 3] -> host batches {"image", "label", "mask"} of one size (last one padded)."""
  for i in range(0, len(faces), batch_size):
    chunk = faces[i:i + batch_size]
    n = len(chunk)
    pad = np.zeros((batch_size - n,) + chunk.shape[1:], np.uint8)
    yield {"image": np.concatenate([chunk, pad]), "label": np.zeros(batch_size, np.int32),
           "mask": np.arange(batch_size) < n}


def softmax(logits: np.ndarray) -> np.ndarray:
  """float [..., K] -> float32 [..., K] probabilities."""
  z = np.asarray(logits, np.float64)
  z = np.exp(z - z.max(-1, keepdims=True))
  return (z / z.sum(-1, keepdims=True)).astype(np.float32)


def predict_video(workdir: str, video: str, fold: int = 0, *, redetect_every: int = 1,
                  fps: Optional[float] = None, stage: str = "crf") -> PredictionResult:
  """Predicts every frame of a video file or frame folder with fold `fold` of an experiment.

  Args:
    workdir: the experiment workdir (config.json, fold_<k>/cnn, fold_<k>/crf.npz, results.json).
    video: a video file (anything ffmpeg reads) or a folder of frame images.
    fold: which fold's CNN and CRF to use.
    redetect_every: run the face detector every N-th frame and track in between (faster; 1: detect
      on every frame).
    fps: the frame rate for time_s; default the video's own (FOLDER_FPS for a folder).
    stage: which CNN and CRF of the fold (load_fold): "crf" (stages 1 + 2) or "joint" (stage 3).

  Returns:
    PredictionResult with T = the number of input frames.

  Raises:
    FileNotFoundError naming a missing workdir, checkpoint, crf.npz or video (and how to create it);
    UnreadableVideoError / registration.UnreadableImageError naming a bad file;
    registration.NoFaceError naming the video when no frame has a face.
  """
  video = os.fspath(video)
  if fps is not None and not fps > 0:
    raise ValueError(f"fps={fps} must be > 0.")
  timings = {}
  start = time.perf_counter()
  with media.open_source(video) as source:
    rate = float(fps or source.fps or FOLDER_FPS)
    f = load_fold(workdir, fold, stage)
    timings["load"] = time.perf_counter() - start

    start = time.perf_counter()
    frames = _Timed(source)
    registrar = registration.Registrar(f.config.data.image_size, redetect_every=redetect_every)
    # Online registration: frames before the first detection get no face (no box from the future).
    regs = list(registrar.stream(frames, source=video))
  timings["decode"] = frames.seconds
  timings["registration"] = time.perf_counter() - start - frames.seconds
  status = face_status([r.status for r in regs])
  has_face = np.array([s != NO_FACE for s in status])
  if not has_face.any():
    raise registration.NoFaceError(
        f"No face found in any of the {len(regs)} frames of {video}. Check the video shows a "
        "frontal face (turned or side-by-side views are searched in its first frames).")
  found = [r for r, ok in zip(regs, has_face) if ok]
  logging.info("%s: %d frames, %d with a face (%s).", video, len(status), has_face.sum(),
               {s: status.count(s) for s in sorted(set(status))})

  out, marginals, tags = classify(f, np.stack([r.face for r in found]),
                                  np.stack([r.landmarks for r in found]), timings)

  t, k = len(status), len(f.class_names)
  result = PredictionResult(
      class_names=f.class_names, labels=np.full(t, -1, np.int32),
      crf_probs=np.full((t, k), np.nan, np.float32),
      softmax_probs=np.full((t, k), np.nan, np.float32),
      face_status=status, fps=rate, source=video, timings=timings)
  result.labels[has_face] = tags
  result.crf_probs[has_face] = marginals
  result.softmax_probs[has_face] = softmax(out["logits"])
  for i in np.flatnonzero(has_face):
    if regs[i].box is not None:
      result.boxes[i] = regs[i].box
    result.points[i] = regs[i].image_landmarks
  return result


def classify(f: Fold, faces: np.ndarray, landmarks: np.ndarray, timings: dict):
  """The CNN and the CRF over one sequence of registered faces.

  Args:
    f: the fold (load_fold).
    faces: uint8 [N, S, S, 3] registered crops, in time order.
    landmarks: float32 [N, 68, 2] their landmarks in the crop (used if the CRF's input has geometry).
    timings: gets "cnn" and "crf" seconds.

  Returns:
    (CNN outputs {"logits": [N, K], "features": [N, F]}, CRF marginals float32 [N, K], Viterbi
    labels int32 [N]).
  """
  start = time.perf_counter()
  batch_size = max(1, min(int(f.config.train.eval_batch_size), len(faces)))
  out = train.predict_batches(f.model, f.config, _batches(faces, batch_size))
  timings["cnn"] = time.perf_counter() - start

  start = time.perf_counter()
  x = f.inputs(out, landmarks)[None]  # [1, N, D]
  mask = np.ones(x.shape[:2], bool)
  marginals = np.asarray(crf.predict_marginals(f.params, x, mask))[0]
  tags = np.asarray(crf.predict(f.params, x, mask))[0]
  timings["crf"] = time.perf_counter() - start
  return out, marginals, tags


def face_status(status) -> list[str]:
  """Registration statuses -> per-frame face status; frames before the first detection are "none".

  Registrar.register_sequence aligns frames before the first detection with the first detected box
  (a box from the future) and calls them "fallback"; for prediction they have no face yet.
  """
  status = [NO_FACE if s in (None, "missing", NO_FACE) else str(s) for s in status]
  seen = False
  for t, s in enumerate(status):
    seen = seen or s in ("detected", "database")
    if not seen:
      status[t] = NO_FACE
  return status


# ----------------------------------------------------------------------------- outputs


def csv_header(names) -> list[str]:
  return (["frame", "time_s", "face", "label"] + [f"crf_{n}" for n in names]
          + [f"softmax_{n}" for n in names])


def _prob(p: float) -> str:
  return "" if math.isnan(p) else f"{p:.6f}"


def csv_row(row: FrameRow, names) -> list:
  """A FrameRow as CSV cells (csv_header's columns); empty label and probabilities where no face."""
  return ([row.index, f"{row.time_s:.4f}", row.face, names[row.label] if row.label >= 0 else ""]
          + [_prob(p) for p in row.crf_probs] + [_prob(p) for p in row.softmax_probs])


def write_csv(result: PredictionResult, path: str):
  """One row per input frame; empty label and probabilities where no face."""
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(csv_header(result.class_names))
    for t in range(result.num_frames):
      w.writerow(csv_row(result.row(t), result.class_names))


def write_json(result: PredictionResult, path: str):
  """{"source", "fps", "class_names", "frames": [{frame, time_s, face, label, crf, softmax}]}."""
  def probs(row):
    return None if np.isnan(row).any() else {n: float(p) for n, p in zip(result.class_names, row)}
  frames = [{"frame": t, "time_s": float(result.times[t]), "face": result.face_status[t],
             "label": result.class_names[result.labels[t]] if result.labels[t] >= 0 else None,
             "crf": probs(result.crf_probs[t]), "softmax": probs(result.softmax_probs[t])}
            for t in range(result.num_frames)]
  with open(path, "w") as f:
    json.dump({"source": result.source, "fps": result.fps, "class_names": result.class_names,
               "timings_s": result.timings, "frames": frames}, f, indent=1)


BOX_COLOURS = {"detected": (0, 220, 0), "tracked": (255, 220, 0), "fallback": (255, 120, 0)}


def annotate(frame: np.ndarray, row: FrameRow, class_names,
             draw_points: bool = False) -> np.ndarray:
  """uint8 [H, W, 3] -> the frame with the face read (box, status, optionally the 68 points), its
  label and a CRF probability bar per class."""
  from PIL import Image, ImageDraw, ImageFont  # pylint: disable=g-import-not-at-top
  img = Image.fromarray(frame)
  h, w = frame.shape[:2]
  k = len(class_names)
  line = max(10, min(h // (k + 3), 22))
  font = ImageFont.load_default(size=max(8, line - 4))
  draw = ImageDraw.Draw(img, "RGBA")
  label = row.label
  if row.box is not None:
    colour = BOX_COLOURS.get(row.face, (255, 255, 255))
    left, top, right, bottom = row.box
    draw.rectangle([left, top, right, bottom], outline=colour, width=max(1, min(h, w) // 200 + 1))
    draw.text((left + 2, max(line + 6, top - line)), row.face, fill=colour, font=font)
  if draw_points and row.points is not None:
    r = max(1.0, min(h, w) / 300)
    for x, y in row.points:
      if np.isfinite(x) and np.isfinite(y):
        draw.ellipse([x - r, y - r, x + r, y + r], fill=(0, 255, 255))
  title = (f"{class_names[label]} {row.crf_probs[label]:.2f} ({row.face})" if label >= 0
           else "no face")
  draw.rectangle([0, 0, w, line + 4], fill=(0, 0, 0, 160))
  draw.text((4, 2), title, fill=(255, 255, 255), font=font)
  panel_w = max(60, w // 3)
  top = h - k * line - 4
  draw.rectangle([0, top, panel_w, h], fill=(0, 0, 0, 140))
  for c, name in enumerate(class_names):
    y = top + 2 + c * line
    p = 0.0 if label < 0 else float(row.crf_probs[c])
    colour = (255, 200, 0) if c == label else (80, 170, 255)
    draw.rectangle([2, y + 1, 2 + int(p * (panel_w - 4)), y + line - 2], fill=colour + (200,))
    draw.text((4, y), name, fill=(255, 255, 255), font=font)
  return np.asarray(img)


class VideoWriter:
  """Writes uint8 [H, W, 3] frames to an H.264 file at `fps` (frames padded to even sides)."""

  def __init__(self, path: str, fps: float):
    self.path, self.fps = path, fps
    self._writer = None

  def write(self, frame: np.ndarray):
    import imageio_ffmpeg  # pylint: disable=g-import-not-at-top
    h, w = frame.shape[:2]
    frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)))  # yuv420p needs even sides.
    if self._writer is None:
      self._writer = imageio_ffmpeg.write_frames(
          self.path, (frame.shape[1], frame.shape[0]), fps=self.fps, macro_block_size=1,
          ffmpeg_log_level="error")
      self._writer.send(None)
    self._writer.send(np.ascontiguousarray(frame))

  def close(self):
    if self._writer is not None:
      self._writer.close()
      self._writer = None


def render_video(result: PredictionResult, path: str, draw_points: bool = False):
  """Writes the input frames, annotated (see annotate), as a video at the input frame rate."""
  writer = VideoWriter(path, result.fps)
  try:
    with media.open_source(result.source) as frames:
      for t, frame in enumerate(frames):
        if t >= result.num_frames:
          break
        writer.write(annotate(frame, result.row(t), result.class_names, draw_points))
  finally:
    writer.close()


def plot_probabilities(result: PredictionResult, path: str):
  """PNG: CRF marginals and CNN softmax per class over time; frames without a face shaded."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(2, 1, figsize=(10, 5.5), sharex=True)
  times = result.times
  none = np.array([s == NO_FACE for s in result.face_status])
  for ax, probs, title in ((axes[0], result.crf_probs, "CRF marginals"),
                           (axes[1], result.softmax_probs, "CNN softmax")):
    for c, name in enumerate(result.class_names):
      ax.plot(times, probs[:, c], label=name, lw=1.2)
    if none.any():
      ax.fill_between(times, 0, 1, where=none, color="grey", alpha=0.25, step="mid",
                      label="no face")
    ax.set_ylim(0, 1)
    ax.set_ylabel("probability")
    ax.set_title(title, fontsize=10)
  axes[1].set_xlabel("time (s)")
  axes[0].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
  fig.suptitle(os.path.basename(result.source))
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


# ----------------------------------------------------------------------------- CLI

def define_flags(flag_values=flags.FLAGS):
  """Defines the CLI flags (only when run as a script: fer_jax.main also has --workdir)."""
  fv = {"flag_values": flag_values}
  flags.DEFINE_string("workdir", None, "Experiment workdir (from python -m fer_jax.main).", **fv)
  flags.DEFINE_string("video", None, "A video file, a folder of frame images, a webcam index (0), "
                      "or a stream URL / pipe that ffmpeg reads (the last three stream).", **fv)
  flags.DEFINE_integer("fold", 0, "Which fold's CNN and CRF to use.", **fv)
  flags.DEFINE_enum("stage", "crf", sorted(STAGES), "Which CNN and CRF of the fold: crf (stage 1's "
                    "CNN, stage 2's CRF) or joint (stage 3's jointly fine-tuned CNN and CRF).", **fv)
  flags.DEFINE_string("output", None, "CSV path; default "
                      "<workdir>/predictions/<video stem>_fold<k>.csv.", **fv)
  flags.DEFINE_bool("json", False, "Also write JSON next to the CSV (same name, .json).", **fv)
  flags.DEFINE_string("render", None, "Also write an annotated video (face box and status, label, "
                      "probability bars) to this path.", **fv)
  flags.DEFINE_bool("landmarks", False, "Draw the 68 landmarks in the --render video.", **fv)
  flags.DEFINE_string("plot", None, "Also write a PNG of the probabilities over time here.", **fv)
  flags.DEFINE_bool("overwrite", False, "Replace existing output files.", **fv)
  flags.DEFINE_integer("redetect_every", 1, "Detect faces every N-th frame, track between.", **fv)
  flags.DEFINE_float("fps", None, "Frame rate for time_s (default: the video's; 30 for a "
                     "folder).", **fv)
  flags.DEFINE_bool("stream", False, "Stream a video file or folder: write each frame's row as "
                    "soon as it is decided (a webcam, URL or pipe always streams).", **fv)
  flags.DEFINE_integer("lag", None, "Streaming: decide each frame's label after this many more "
                       "face frames (0: filtering). Adds to --lag_seconds.", **fv)
  flags.DEFINE_float("lag_seconds", None, "Streaming: the lag in seconds, converted to frames with "
                     "the frame rate. Adds to --lag; default 0.5 when neither is given.", **fv)
  flags.mark_flags_as_required(["workdir", "video"], flag_values=flag_values)


FLAGS = flags.FLAGS

USER_ERRORS = (errors.FerError, FileNotFoundError, FileExistsError)
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_live(video) -> bool:
  """True for a source read as it arrives: a webcam index ("0"), a URL (scheme://...), a pipe."""
  video = os.fspath(video) if not isinstance(video, int) else str(video)
  if video.isdigit() and not os.path.exists(video):
    return True
  if _URL.match(video):
    return True
  try:
    mode = os.stat(video).st_mode
  except OSError:
    return False
  return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode)


def default_output(workdir: str, video: str, fold: int, stage: str = "crf") -> str:
  """<workdir>/predictions/<stem>_fold<k>.csv (stage "joint": <stem>_fold<k>_joint.csv); the stem of
  a webcam index n is webcam<n>."""
  video = str(video)
  if video.isdigit() and not os.path.exists(video):
    stem = f"webcam{video}"
  else:
    path = video.split("://", 1)[-1].split("?", 1)[0]
    stem = os.path.splitext(os.path.basename(os.path.normpath(path)))[0] or "stream"
  suffix = "" if stage == "crf" else f"_{stage}"
  return os.path.join(workdir, "predictions", f"{stem}_fold{fold}{suffix}.csv")


def _check_new(path: str, overwrite: bool, flag: str) -> str:
  if os.path.exists(path) and not overwrite:
    raise FileExistsError(f"{path} exists; pass --overwrite to replace it or {flag} to write "
                          "elsewhere.")
  return path


def output_paths(workdir, video, fold=0, output=None, write_json_file=False, render=None,
                 plot=None, overwrite=False, stage="crf") -> dict:
  """{"csv", and "json" / "render" / "plot" when asked}: checked (none exists unless `overwrite`),
  their folders created."""
  output = _check_new(output or default_output(workdir, video, fold, stage), overwrite, "--output")
  paths = {"csv": output}
  if write_json_file:
    paths["json"] = _check_new(os.path.splitext(output)[0] + ".json", overwrite, "--output")
  if render:
    paths["render"] = _check_new(render, overwrite, "--render")
  if plot:
    paths["plot"] = _check_new(plot, overwrite, "--plot")
  for path in paths.values():
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  return paths


def run(workdir, video, fold=0, output=None, write_json_file=False, render=None, plot=None,
        overwrite=False, redetect_every=1, fps=None, *, stream=False, lag=None, lag_seconds=None,
        draw_points=False, stage="crf") -> PredictionResult:
  """The CLI's work: predict, then write the CSV (and JSON, video, plot). Returns the result.

  A webcam index, URL or pipe, or any `video` with stream=True, goes through fer_jax.streaming
  (rows written as decided); a video file or folder is predicted offline (the whole clip at once).
  """
  if not workdir or video is None or video == "":
    raise ValueError("Both --workdir and --video are required.")
  video = str(video)
  live = stream or is_live(video)
  if not live and (lag is not None or lag_seconds is not None):
    raise errors.ConfigError(f"--lag / --lag_seconds apply to streaming; {video} is a file: add "
                             "--stream, or drop --lag and --lag_seconds for offline prediction.")
  if not live and not os.path.exists(video):  # Before touching any output.
    raise FileNotFoundError(f"--video {video} does not exist; pass a video file, a folder of frame "
                            "images, a webcam index or a stream URL.")
  paths = output_paths(workdir, video, fold, output, write_json_file, render, plot, overwrite,
                       stage)
  if live:
    from fer_jax import streaming  # pylint: disable=g-import-not-at-top
    return streaming.run(workdir, video, paths, fold=fold, redetect_every=redetect_every, fps=fps,
                         lag=lag, lag_seconds=lag_seconds, draw_points=draw_points, stage=stage)
  result = predict_video(workdir, video, fold, redetect_every=redetect_every, fps=fps, stage=stage)
  write_outputs(result, paths, draw_points)
  return result


def write_outputs(result: PredictionResult, paths: dict, draw_points: bool = False):
  """Writes the CSV, and the JSON, annotated video and plot where `paths` has them."""
  write_csv(result, paths["csv"])
  if "json" in paths:
    write_json(result, paths["json"])
  if "render" in paths:
    render_video(result, paths["render"], draw_points)
  if "plot" in paths:
    plot_probabilities(result, paths["plot"])
  for kind, path in paths.items():
    logging.info("Wrote %s: %s", kind, path)


def main(argv, flag_values=FLAGS):
  """The CLI: predict with the flags, write the files; a user error exits 2 with its message."""
  f = flag_values
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  tf_devices.hide_gpus_from_tensorflow()
  try:
    result = run(f.workdir, f.video, f.fold, f.output, f.json, f.render, f.plot, f.overwrite,
                 f.redetect_every, f.fps, stream=f.stream, lag=f.lag, lag_seconds=f.lag_seconds,
                 draw_points=f.landmarks, stage=f.stage)
  except USER_ERRORS as e:  # A mistake the user can fix: say what and how, no traceback.
    logging.error("%s: %s", type(e).__name__, e)
    print(f"\nERROR ({type(e).__name__}): {e}", file=sys.stderr)
    sys.exit(2)
  print(f"{result.num_frames} frames, {sum(s != NO_FACE for s in result.face_status)} with a face; "
        f"wrote {f.output or default_output(f.workdir, f.video, f.fold, f.stage)}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
