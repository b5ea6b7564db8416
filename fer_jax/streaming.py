"""Live prediction: each frame's row as soon as it is decided, from a webcam, a stream or a file.

    python -m fer_jax.predict --workdir=W --video=0                   # webcam 0
    python -m fer_jax.predict --workdir=W --video=rtsp://host/cam --lag_seconds=1
    python -m fer_jax.predict --workdir=W --video=clip.mp4 --stream --lag=15

The path: a reader thread pulls frames from media.open_source (or any iterable of uint8 [H, W, 3]
frames) and registers them online (Registrar.stream: no look-ahead, so frames before the first
detection have no face). The caller's thread takes every frame that has arrived (up to max_chunk;
it never waits for more), runs the CNN on their faces as one batch (padded to a power of two; each
size compiled once by warm_up), pushes the CRF inputs into crf.FixedLagSmoother and hands out each
frame's FrameRow as soon as it is decided: a face frame once `lag` more face frames have arrived
(its CRF marginals and label given every face frame up to then, no `end` term), a frame without a
face as soon as every earlier frame is decided. At the end of the input, or after stop() (the CLI's
Ctrl-C), the smoother decides the remaining frames from what it has, so every frame read gets a row.
The cost per frame does not grow with time: the smoother carries a forward state and looks back
`lag` frames only.
"""
import collections
import csv
import dataclasses
import math
import os
import queue
import signal
import threading
import time
from typing import Callable, Iterable, Iterator, Optional

from absl import logging
from flax import nnx
import numpy as np

from fer_jax import crf
from fer_jax import errors
from fer_jax import predict
from fer_jax import train
from fer_jax.data import media
from fer_jax.data import registration

DEFAULT_LAG_SECONDS = 0.5  # The lag when neither lag nor lag_seconds is given.
MAX_CHUNK = 8  # Most frames the CNN takes at once; chunks are padded to 1, 2, 4, ... MAX_CHUNK.
_POLL_S = 0.05  # How often a waiting consumer checks for stop().


def lag_frames(lag: Optional[int], lag_seconds: Optional[float], fps: float) -> int:
  """The lag in frames: `lag` + ceil(`lag_seconds` * fps) (at least that many seconds of frames);
  DEFAULT_LAG_SECONDS when both are None."""
  if lag is None and lag_seconds is None:
    lag_seconds = DEFAULT_LAG_SECONDS
  if lag is not None and lag < 0:
    raise errors.ConfigError(f"--lag={lag} must be >= 0 (frames; 0 decides each frame on arrival).")
  if lag_seconds is not None and not lag_seconds >= 0:
    raise errors.ConfigError(f"--lag_seconds={lag_seconds} must be >= 0.")
  return int(lag or 0) + math.ceil((lag_seconds or 0.0) * fps - 1e-9)


@dataclasses.dataclass
class _Arrived:
  """A registered frame waiting for its row."""
  index: int
  arrival: float  # time.perf_counter() when the frame left the source.
  frame: Optional[np.ndarray]  # uint8 [H, W, 3], kept only when rendering.
  registered: object  # registration.RegisteredFrame.


class _Reader(threading.Thread):
  """Pulls frames from a source, registers them online and queues ("frame", _Arrived) items, then
  ("end", None); an exception is queued as ("error", exc). Stops between frames on `stopping`."""

  def __init__(self, frames: Iterable[np.ndarray], registrar, name: str, keep_frames: bool,
               maxsize: int):
    super().__init__(daemon=True, name="fer_jax-stream-reader")
    self.items = queue.Queue(maxsize)
    self.stopping = threading.Event()
    self._frames, self._registrar, self._name = frames, registrar, name
    self._keep = keep_frames

  def run(self):
    arrivals = collections.deque()  # (arrival time, frame) of frames handed to the registrar.

    def timed():
      for frame in self._frames:
        arrivals.append((time.perf_counter(), frame))
        yield frame
        if self.stopping.is_set():
          return

    try:
      for t, reg in enumerate(self._registrar.stream(timed(), source=self._name)):
        arrival, frame = arrivals.popleft()
        if not self._put(("frame", _Arrived(t, arrival, frame if self._keep else None, reg))):
          return
      self._put(("end", None))
    except BaseException as e:  # pylint: disable=broad-except  (KeyboardInterrupt too: a stop.)
      self._put(("error", e))

  def _put(self, item) -> bool:
    while not self.stopping.is_set():
      try:
        self.items.put(item, timeout=_POLL_S)
        return True
      except queue.Full:
        pass
    return False


class LivePredictor:
  """One fold's CNN, CRF and registrar, ready for live frames.

  Attributes:
    fold: predict.Fold (config, model, CRF params, CRF inputs, class names).
    registrar: registration.Registrar of the fold's face size.
    chunk_sizes: the batch sizes the CNN runs at (1, 2, 4, ... max_chunk).
  """

  def __init__(self, workdir: str, fold: int = 0, *, redetect_every: int = 1,
               max_chunk: int = MAX_CHUNK, stage: str = "crf"):
    if max_chunk < 1:
      raise ValueError(f"max_chunk={max_chunk} must be >= 1.")
    self.fold = predict.load_fold(workdir, fold, stage)
    self.class_names = self.fold.class_names
    # The jitted predict step (train's cache: one compile per process) and the replicated weights,
    # taken once: predict_batches redoes both per call (~200 ms for the demo network vs ~2 ms for
    # the step itself).
    model = self.fold.model
    self._steps = train._inference_steps(  # pylint: disable=protected-access
        model, train.make_mesh(), self.fold.config.model.input_size)
    self._weights = self._steps.replicate((nnx.to_pure_dict(nnx.state(model, nnx.Param)),
                                           nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))))
    self.registrar = registration.Registrar(self.fold.config.data.image_size,
                                            redetect_every=redetect_every)
    self.chunk_sizes = [1 << i for i in range(max_chunk.bit_length()) if 1 << i <= max_chunk]
    self._warm = set()

  @property
  def max_chunk(self) -> int:
    return self.chunk_sizes[-1]

  def cnn(self, faces: np.ndarray) -> dict:
    """uint8 [n, S, S, 3] (n <= max_chunk) -> {"logits": [n, C], "features": [n, F]} float32."""
    n = len(faces)
    size = next(b for b in self.chunk_sizes if b >= n)
    images = np.zeros((size,) + faces.shape[1:], np.uint8)
    images[:n] = faces
    return train.predict_with(self._steps, *self._weights,
                              [{"image": images, "mask": np.arange(size) < n}])

  def crf_input(self, out: dict, landmarks: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """The CRF's input of n frames, float32 [n, D], as offline prediction builds it (the fold's
    crf_inputs.CrfInputs): from the CNN outputs, the crop landmarks [n, 68, 2] and the stream's
    geometry reference [68, 2] (its first face frame's landmarks)."""
    return self.fold.inputs(out, landmarks, reference_landmarks=reference)

  def smoother(self, lag: int) -> crf.FixedLagSmoother:
    return crf.FixedLagSmoother(self.fold.params, lag)

  def push(self, smoother, x: np.ndarray):
    """Pushes x [n, D] in pieces of the chunk sizes (few shapes to compile); the decided frames."""
    idx, marg, lab = [], [], []
    start = 0
    for size in reversed(self.chunk_sizes):
      while len(x) - start >= size:
        i, m, y = smoother.push(x[start:start + size])
        idx.append(i)
        marg.append(m)
        lab.append(y)
        start += size
    return _concat(idx, marg, lab, len(self.class_names))

  def warm_up(self, lag: int):
    """Compiles the CNN and the CRF smoother for every chunk size (so no frame waits for XLA)."""
    if lag in self._warm:
      return
    s = self.fold.config.data.image_size
    d = self.fold.params.weights.shape[0]
    smoother = self.smoother(lag)
    for size in self.chunk_sizes:
      self.cnn(np.zeros((size, s, s, 3), np.uint8))
      smoother.push(np.zeros((size, d), np.float32))
    smoother.finish()
    self._warm.add(lag)

  def stream(self, frames: Iterable[np.ndarray], *, fps: Optional[float] = None,
             lag: Optional[int] = None, lag_seconds: Optional[float] = None,
             keep_frames: bool = False, name: Optional[str] = None) -> "LiveStream":
    """A LiveStream over `frames` (see LiveStream)."""
    return LiveStream(self, frames, fps=fps, lag=lag, lag_seconds=lag_seconds,
                      keep_frames=keep_frames, name=name)


def _concat(idx, marg, lab, k):
  if not idx:
    return np.zeros(0, np.int64), np.zeros((0, k), np.float32), np.zeros(0, np.int32)
  return np.concatenate(idx), np.concatenate(marg), np.concatenate(lab)


class LiveStream:
  """The FrameRows of a live source in frame order, each as soon as it is decided.

  `frames`: an iterable of uint8 [H, W, 3] frames, e.g. a media.FrameSource (its `fps` and `name`
  are used when present; else `fps` or predict.FOLDER_FPS gives the rate). Iterate once. stop()
  (from any thread or a signal handler) ends the stream early: the frames already taken are decided
  and handed out, no more are read.

  Attributes: name; fps and lag (frames) once iteration started; stopped (True when stop() or a
  KeyboardInterrupt raised by the source ended it); frame(row) -> the input frame of a row just
  handed out, when keep_frames.
  """

  def __init__(self, predictor: LivePredictor, frames: Iterable[np.ndarray], *, fps=None, lag=None,
               lag_seconds=None, keep_frames=False, name=None):
    if fps is not None and not fps > 0:
      raise errors.ConfigError(f"--fps={fps} must be > 0.")
    lag_frames(lag, lag_seconds, 1.0)  # Checks the values before any work.
    self.predictor = predictor
    self._source = frames
    self._fps_flag, self._lag_flag, self._lag_seconds = fps, lag, lag_seconds
    self._keep = keep_frames
    self.name = name or getattr(frames, "name", "frames")
    self.fps = None
    self.lag = None
    self.stopped = False
    self._stop = threading.Event()
    self._frames = {}

  def stop(self):
    """Ends the stream after the current chunk (thread- and signal-safe)."""
    self._stop.set()

  def frame(self, row: predict.FrameRow) -> np.ndarray:
    """The input frame of a row just handed out (keep_frames=True)."""
    return self._frames.pop(row.index)

  def __iter__(self) -> Iterator[predict.FrameRow]:
    return self._rows(self._source, lambda: getattr(self._source, "fps", None))

  def _rows(self, frames, source_fps: Callable[[], Optional[float]]):
    p = self.predictor
    self.fps = float(self._fps_flag or source_fps() or predict.FOLDER_FPS)
    self.lag = lag_frames(self._lag_flag, self._lag_seconds, self.fps)
    p.warm_up(self.lag)  # Before the first frame is read: no frame waits for XLA.
    smoother = p.smoother(self.lag)
    logging.info("%s: streaming at %.3g fps with a lag of %d frames.", self.name, self.fps,
                 self.lag)
    reader = _Reader(frames, p.registrar, self.name, self._keep, maxsize=4 * p.max_chunk)
    reader.start()
    waiting = {}  # frame index -> [FrameRow, decided]
    face_frames = []  # smoother step -> frame index.
    next_row = 0
    reference = None  # The geometry reference: the first face frame's crop landmarks.
    error = None
    try:
      while True:
        items, end = self._take(reader)
        if isinstance(end, BaseException):
          if isinstance(end, KeyboardInterrupt):
            self.stopped = True
          else:
            error = end
        faces = [a for a in items if a.registered.status != predict.NO_FACE]
        for a in items:
          reg = a.registered
          k = len(p.class_names)
          row = predict.FrameRow(
              index=a.index, time_s=a.index / self.fps, face=str(reg.status), label=-1,
              crf_probs=np.full(k, np.nan, np.float32),
              softmax_probs=np.full(k, np.nan, np.float32),
              box=None if reg.box is None else tuple(float(v) for v in reg.box),
              points=None if reg.image_landmarks is None else np.asarray(reg.image_landmarks,
                                                                          np.float32),
              arrival=a.arrival)
          waiting[a.index] = [row, reg.status == predict.NO_FACE]
          if self._keep:
            self._frames[a.index] = a.frame
        for i in range(0, len(faces), p.max_chunk):
          chunk = faces[i:i + p.max_chunk]
          out = p.cnn(np.stack([a.registered.face for a in chunk]))
          for a, probs in zip(chunk, predict.softmax(out["logits"])):
            waiting[a.index][0].softmax_probs = probs
            face_frames.append(a.index)
          landmarks = np.stack([a.registered.landmarks for a in chunk])
          if reference is None:
            reference = landmarks[0]
          x = p.crf_input(out, landmarks, reference)
          self._decide(waiting, face_frames, p.push(smoother, x))
        if end is not None:
          break
        while next_row in waiting and waiting[next_row][1]:
          yield waiting.pop(next_row)[0]
          next_row += 1
      self._decide(waiting, face_frames, smoother.finish())
      while next_row in waiting:
        row, decided = waiting.pop(next_row)
        assert decided, f"frame {next_row} undecided after finish()"
        yield row
        next_row += 1
    finally:
      reader.stopping.set()
      reader.join(timeout=1.0)  # A source stuck in a read is left to its daemon thread.
    if error is not None and not self._stop.is_set():  # After Ctrl-C a dying source is expected.
      raise error

  def _take(self, reader: _Reader):
    """(items, end): the frames that have arrived (at least one unless the stream ends, at most
    max_chunk; after stop() all those queued); end is None, True (input over or stop()) or the
    reader's exception."""
    items = []
    while not items:
      if self._stop.is_set():  # Decide the frames already read (and registered), read no more.
        self.stopped = True
        reader.stopping.set()
        while True:
          try:
            kind, item = reader.items.get_nowait()
          except queue.Empty:
            return items, True
          if kind == "frame":
            items.append(item)
      try:
        kind, item = reader.items.get(timeout=_POLL_S)
      except queue.Empty:
        continue
      if kind != "frame":
        return items, item if kind == "error" else True
      items.append(item)
    while len(items) < self.predictor.max_chunk:
      try:
        kind, item = reader.items.get_nowait()
      except queue.Empty:
        break
      if kind != "frame":
        return items, item if kind == "error" else True
      items.append(item)
    return items, None

  @staticmethod
  def _decide(waiting, face_frames, decided):
    for i, m, y in zip(*decided):
      row = waiting[face_frames[int(i)]]
      row[0].crf_probs = np.asarray(m, np.float32)
      row[0].label = int(y)
      row[1] = True


def run(workdir: str, video, paths: dict, *, fold: int = 0, redetect_every: int = 1,
        fps: Optional[float] = None, lag: Optional[int] = None,
        lag_seconds: Optional[float] = None, draw_points: bool = False,
        max_chunk: int = MAX_CHUNK,
        on_row: Optional[Callable[[predict.FrameRow], None]] = None,
        stage: str = "crf") -> predict.PredictionResult:
  """The CLI's streaming work: rows to paths["csv"] as decided (flushed), the annotated video to
  paths["render"] as it goes; JSON and plot at the end. Ctrl-C stops cleanly: every frame read
  gets its row.

  Args:
    workdir, fold, redetect_every, fps, lag, lag_seconds, stage: as predict.run and LiveStream.
    video: a webcam index, URL, pipe, video file or frame folder (media.open_source), or an
      iterable of uint8 [H, W, 3] frames (the bench's paced source; tests).
    paths: predict.output_paths(...).
    draw_points: draw the 68 landmarks in the annotated video.
    max_chunk: most frames per CNN call.
    on_row: called with each FrameRow after it is written and flushed (the bench times it).

  Returns:
    The PredictionResult of every row written (timings: "load", seconds to load the fold).
  """
  if isinstance(video, (str, int, os.PathLike)):
    with media.open_source(video) as source:  # Opened first: a bad source fails before the load.
      return _run(workdir, source, paths, fold, redetect_every, fps, lag, lag_seconds,
                  draw_points, max_chunk, on_row, stage)
  return _run(workdir, video, paths, fold, redetect_every, fps, lag, lag_seconds, draw_points,
              max_chunk, on_row, stage)


def _run(workdir, frames, paths, fold, redetect_every, fps, lag, lag_seconds, draw_points,
         max_chunk, on_row, stage):
  start = time.perf_counter()
  predictor = LivePredictor(workdir, fold, redetect_every=redetect_every, max_chunk=max_chunk,
                            stage=stage)
  live = predictor.stream(frames, fps=fps, lag=lag, lag_seconds=lag_seconds,
                          keep_frames="render" in paths)
  load_s = time.perf_counter() - start
  names = predictor.class_names
  rows = []
  f = writer = video = None
  handle_sigint = threading.current_thread() is threading.main_thread()
  if handle_sigint:
    previous = signal.getsignal(signal.SIGINT)

    def on_sigint(signum, frame):  # First Ctrl-C: stop cleanly; a second one interrupts.
      del frame
      signal.signal(signum, signal.default_int_handler)
      logging.warning("Ctrl-C: stopping after the frames read so far (Ctrl-C again to abort).")
      live.stop()
    signal.signal(signal.SIGINT, on_sigint)
  try:
    for row in live:
      if f is None:  # Created with the first row: a source that fails leaves no file behind.
        f = open(paths["csv"], "w", newline="")  # pylint: disable=consider-using-with
        writer = csv.writer(f)
        writer.writerow(predict.csv_header(names))
      if "render" in paths:
        if video is None:
          video = predict.VideoWriter(paths["render"], live.fps)
        video.write(predict.annotate(live.frame(row), row, names, draw_points))
      writer.writerow(predict.csv_row(row, names))
      f.flush()
      rows.append(row)
      if on_row is not None:
        on_row(row)
  finally:
    if handle_sigint:
      signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)
    if f is not None:
      f.close()
    if video is not None:
      video.close()
  if not rows:
    raise errors.EmptySequenceError(f"{live.name} gave no frames; check the source plays "
                                    f"(ffmpeg -i {live.name}).")
  result = predict.PredictionResult.from_rows(rows, names, live.fps, live.name,
                                              timings={"load": load_s})
  if "json" in paths:
    predict.write_json(result, paths["json"])
  if "plot" in paths:
    predict.plot_probabilities(result, paths["plot"])
  logging.info("%s: %d rows%s; wrote %s", live.name, len(rows),
               " (stopped by Ctrl-C)" if live.stopped else "", ", ".join(paths.values()))
  return result
