"""Frames from video files, frame folders, images, webcams and streams: the one reader of the project.

Builders and predict read every input through `open_source` (lazy) or `read_frames` (eager), so a clip
that builds also predicts, with the same frames and the same errors. What a source is, in this order:

  int or digit string ("0")      a webcam index, read by ffmpeg (Linux: v4l2 /dev/video<N>; macOS:
                                 avfoundation device <N>).
  "<scheme>://..."               a URL ffmpeg reads (rtsp://, http://, udp://, file://, ...).
  an existing folder             its image files (IMAGE_EXTENSIONS, dot files ignored, not recursive)
                                 in natural order (frame_2 before frame_10); fps None.
  a file with an image extension one frame; fps None.
  any other existing path        ffmpeg (video files of any extension ffmpeg reads; a named pipe
                                 (mkfifo) or device carrying a stream).
  anything else                  MissingInputError.

Videos, webcams and streams are decoded by the ffmpeg binary imageio-ffmpeg ships (raw RGB24 through a
pipe; the first video stream; ffmpeg's own rotation metadata applied). Errors (all fer_jax.errors.FerError,
naming the source and the fix): UnreadableVideoError (ffmpeg cannot open a source; a file whose decoding
reports errors or corrupt packets, e.g. truncated), UnreadableImageError (a frame image),
EmptySequenceError (no frame at all), MissingInputError (the path does not exist).
"""
import collections
import os
import re
import stat
import subprocess
import sys
import threading
from typing import Iterator, Optional, Union

from absl import logging
import numpy as np
from PIL import Image

from fer_jax import errors

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
# Extensions builders look for when scanning a download for videos (open_source reads any file
# without an image extension through ffmpeg).
VIDEO_EXTENSIONS = (".avi", ".mp4", ".mov", ".mpg", ".mpeg", ".wmv", ".mkv", ".m4v", ".webm", ".flv")
_FIX_VIDEO = ("Check it plays (ffmpeg -i {src}); re-encode it (ffmpeg -i IN -c:v libx264 OUT.mp4), "
              "replace it, or pass a folder of frame images (builders: or set data.skip_unreadable=True).")

Source = Union[str, int, os.PathLike]


def natural_key(name: str) -> list:
  """Sort key ordering embedded numbers by value: frame_2 < frame_10."""
  return [(0, int(p), "") if p.isdigit() else (1, 0, p.lower()) for p in re.split(r"(\d+)", name)]


def is_image_file(path: str) -> bool:
  """True when `path`'s extension is one of IMAGE_EXTENSIONS (case-insensitive)."""
  return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def is_video_file(path: str) -> bool:
  """True when `path`'s extension is one of VIDEO_EXTENSIONS (case-insensitive)."""
  return os.path.splitext(path)[1].lower() in VIDEO_EXTENSIONS


def frame_files(folder: str) -> list[str]:
  """Image files of `folder` (IMAGE_EXTENSIONS; dot files ignored; not recursive), natural order."""
  names = [n for n in os.listdir(folder) if not n.startswith(".") and is_image_file(n)
           and os.path.isfile(os.path.join(folder, n))]
  return [os.path.join(folder, n) for n in sorted(names, key=natural_key)]


def as_rgb(image: np.ndarray, source: str = "image") -> np.ndarray:
  """uint8 [H, W], [H, W, 1], [H, W, 3] or [H, W, 4] -> uint8 [H, W, 3] (alpha dropped)."""
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
    raise errors.UnreadableImageError(
        f"Cannot read image {path}: {e}. Replace the file with a valid image (builders: or set "
        "data.skip_unreadable=True to skip its sequence).") from e


class FrameSource:
  """Frames of one source, read lazily; a context manager (closing stops ffmpeg).

  Iterate once: each item is uint8 [H, W, 3] RGB.

  Attributes:
    name: the source as given (path, URL or "webcam <N>"), used in messages.
    kind: "video" (a file), "stream" (webcam, URL, named pipe or device), "folder" or "image".
    fps: frames per second from the container or stream, or None (folders, images, unknown rate).
    num_frames: the frame count when known before reading (folders, images), else None.
  """

  def __init__(self, name: str, kind: str, frames: Iterator[np.ndarray], fps: Optional[float] = None,
               num_frames: Optional[int] = None, close=None):
    self.name, self.kind, self.fps, self.num_frames = name, kind, fps, num_frames
    self._frames = frames
    self._close = close

  def __iter__(self) -> "FrameSource":
    return self

  def __next__(self) -> np.ndarray:
    return next(self._frames)

  def close(self) -> None:
    """Stops reading (ffmpeg ends); later next() raises StopIteration."""
    if hasattr(self._frames, "close"):
      self._frames.close()
    if self._close is not None:
      self._close()
      self._close = None

  def __enter__(self) -> "FrameSource":
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def __repr__(self) -> str:
    return f"FrameSource({self.name!r}, kind={self.kind!r}, fps={self.fps})"


def webcam_input(index: int, platform: str = sys.platform) -> tuple[str, list[str]]:
  """(ffmpeg input, input options) of webcam `index` on `platform` (sys.platform)."""
  if platform.startswith("linux"):
    return f"/dev/video{index}", ["-f", "v4l2"]
  if platform == "darwin":
    return str(index), ["-f", "avfoundation", "-framerate", "30"]
  raise errors.UnreadableVideoError(
      f"Webcam {index}: webcam indices are supported on Linux (v4l2) and macOS (avfoundation), not "
      f"{platform}; stream the camera with ffmpeg to a URL (e.g. udp://127.0.0.1:5000) and pass that.")


class _FfmpegLog(threading.Thread):
  """Reads ffmpeg's stderr (-loglevel level+info); `ready` is set once the output is described.

  Keeps the last lines and the last problems only (a long live stream may log without end).
  """

  def __init__(self, pipe):
    super().__init__(daemon=True)
    self._pipe = pipe
    self.lines = collections.deque(maxlen=50)
    self.problems = collections.deque(maxlen=10)  # Error lines and corrupt-packet warnings.
    self.num_problems = 0
    self.input_video: Optional[str] = None  # The input's "Stream #..: Video: ..." line.
    self.output_video: Optional[str] = None  # The rawvideo output's stream line.
    self.ready = threading.Event()

  def run(self):
    section = None
    for raw in iter(self._pipe.readline, b""):
      line = raw.decode("utf-8", "replace").rstrip()
      self.lines.append(line)
      if re.search(r"\[(error|fatal|panic)\]", line) or ("[warning]" in line
                                                          and "corrupt" in line.lower()):
        self.problems.append(line)
        self.num_problems += 1
      if "] Input #" in line or line.startswith("Input #"):
        section = "input"
      elif "] Output #" in line or line.startswith("Output #"):
        section = "output"
      elif "Video:" in line and "Stream #" in line:
        if section == "input" and self.input_video is None:
          self.input_video = line
        elif section == "output" and self.output_video is None:
          self.output_video = line
          self.ready.set()
    self.ready.set()

  def summary(self, limit: int = 2) -> str:
    bad = list(self.problems) or [ln for ln in self.lines if ln.strip()]
    return "; ".join(re.sub(r"^(\[[^]]*\] )+", "", ln).strip() for ln in bad[-limit:]) or "no output"


def _ffmpeg_source(name: str, path: str, kind: str, input_params: list[str]) -> FrameSource:
  """A FrameSource decoding the first video stream of `path` with imageio-ffmpeg's ffmpeg binary.

  ffmpeg writes raw RGB24 frames to a pipe; its log (read on a thread) gives the frame size and rate
  and, at the end, whether decoding failed (exit status, error lines, corrupt packets: a file then
  raises UnreadableVideoError; a live stream only logs a warning).
  """
  import imageio_ffmpeg  # pylint: disable=g-import-not-at-top
  fix = _FIX_VIDEO.format(src=name)
  cmd = ([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-loglevel",
          "level+info"] + input_params + ["-i", path, "-map", "0:v:0", "-f", "rawvideo", "-pix_fmt",
                                          "rgb24", "-"])
  # Own session: Ctrl-C reaches Python (KeyboardInterrupt, then close() ends ffmpeg), not ffmpeg.
  proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, start_new_session=True)
  log = _FfmpegLog(proc.stderr)
  log.start()

  def close():
    if proc.poll() is None:
      proc.kill()
    proc.wait()
    proc.stdout.close()
    log.join(timeout=5)
    proc.stderr.close()

  log.ready.wait()
  if log.output_video is None:  # ffmpeg ended before describing its output.
    close()
    if log.input_video is not None:
      raise errors.EmptySequenceError(f"Video {name} has no decodable frames ({log.summary()}). "
                                      "Replace it or remove it (builders: or set "
                                      "data.skip_unreadable=True).")
    raise errors.UnreadableVideoError(f"Cannot open video {name}: {log.summary()}. {fix}")
  width, height = map(int, re.search(r", (\d+)x(\d+)", log.output_video).groups())
  rate = re.search(r"([\d.]+) (?:fps|tbr)", log.input_video or log.output_video)
  fps = float(rate.group(1)) if rate and float(rate.group(1)) > 0 else None
  frame_bytes = width * height * 3

  def frames() -> Iterator[np.ndarray]:
    t, partial = 0, False
    try:
      while True:
        data = proc.stdout.read(frame_bytes)
        if len(data) < frame_bytes:
          partial = len(data) > 0
          break
        yield np.frombuffer(data, np.uint8).reshape(height, width, 3)
        t += 1
      returncode = proc.wait()
      log.join(timeout=5)
    finally:
      close()
    if t == 0:
      raise errors.EmptySequenceError(f"Video {name} has no frames ({log.summary()}). Replace it or "
                                      "remove it (builders: or set data.skip_unreadable=True).")
    if returncode != 0 or partial or log.num_problems:
      what = f"{name}: ffmpeg reported {log.summary()} ({log.num_problems} problems) after frame {t}"
      if kind == "video":
        raise errors.UnreadableVideoError(f"Cannot decode video {what} (truncated or corrupt). {fix}")
      logging.warning("Stream %s.", what)

  return FrameSource(name, kind, frames(), fps=fps, close=close)


def _files_source(name: str, kind: str, paths: list[str]) -> FrameSource:
  return FrameSource(name, kind, (read_image(p) for p in paths), num_frames=len(paths))


def open_source(source: Source) -> FrameSource:
  """Opens a video file, frame folder, image, webcam index or URL / named pipe (see module doc).

  Args:
    source: a path (str or os.PathLike), a URL, or a webcam index (int or digit string).

  Returns:
    A FrameSource (iterate it for uint8 [H, W, 3] frames; use it as a context manager).

  Raises:
    MissingInputError when a path does not exist; EmptySequenceError for a folder without images;
    UnreadableVideoError when ffmpeg cannot open the source. Reading may raise UnreadableVideoError
    (decoding fails, a file is truncated), UnreadableImageError (a frame image) and
    EmptySequenceError (a video without frames).
  """
  if isinstance(source, bool):
    raise TypeError(f"source must be a path, URL or webcam index, got {source!r}.")
  if isinstance(source, int) or (isinstance(source, str) and source.strip().isdigit()):
    index = int(source)
    path, params = webcam_input(index)
    return _ffmpeg_source(f"webcam {index} ({path})", path, "stream", params)
  name = os.fspath(source)
  if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", name):
    return _ffmpeg_source(name, name, "stream", [])
  if os.path.isdir(name):
    paths = frame_files(name)
    if not paths:
      raise errors.EmptySequenceError(
          f"Frame folder {name} has no image files ({', '.join(IMAGE_EXTENSIONS)}); add its frames, "
          "pass a video file instead, or remove the folder.")
    return _files_source(name, "folder", paths)
  if not os.path.exists(name):
    raise errors.MissingInputError(f"{name} does not exist; pass a video file, a folder of frame "
                                   "images, an image, a webcam index or a stream URL.")
  if is_image_file(name):
    return _files_source(name, "image", [name])
  mode = os.stat(name).st_mode
  kind = "video" if stat.S_ISREG(mode) else "stream"  # A named pipe or a device streams.
  return _ffmpeg_source(name, name, kind, [])


def read_frames(source: Source) -> list[np.ndarray]:
  """Every frame of `source` (see open_source) as uint8 [H, W, 3], eagerly; same errors."""
  with open_source(source) as frames:
    return list(frames)
