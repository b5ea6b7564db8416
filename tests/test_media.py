"""The one media reader: video files, truncated/empty videos, frame folders, images, pipes, URLs."""
import logging
import os
import threading

import imageio_ffmpeg
import numpy as np
from PIL import Image
import pytest

from fer_jax import errors
from fer_jax.data import media
from fer_jax.data.builders import common

H, W, T = 48, 64, 12


def _frames(n=T, seed=0):
  """n uint8 [H, W, 3] frames of random 8x8 blocks (codecs keep flat blocks close)."""
  rng = np.random.default_rng(seed)
  blocks = rng.integers(0, 256, (n, H // 8, W // 8, 3), dtype=np.uint8)
  return blocks.repeat(8, axis=1).repeat(8, axis=2)


def _write(path, frames, codec, fps=10):
  pix_fmt = "gbrp" if codec == "ffv1" else "yuv420p"  # FFV1 in planar RGB: lossless.
  writer = imageio_ffmpeg.write_frames(str(path), (W, H), fps=fps, codec=codec, macro_block_size=1,
                                       pix_fmt_out=pix_fmt, ffmpeg_log_level="error",
                                       output_params=["-g", "1"])
  writer.send(None)
  for f in frames:
    writer.send(np.ascontiguousarray(f))
  writer.close()
  return str(path)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
  root = tmp_path_factory.mktemp("videos")
  frames = _frames()
  return {"frames": frames, "root": root,
          "lossless": _write(root / "lossless.avi", frames, "ffv1"),
          "mjpeg": _write(root / "clip.avi", _frames(60, seed=1), "mjpeg", fps=25),
          "mp4": _write(root / "clip.mp4", frames, "libx264", fps=12.5),
          "mkv": _write(root / "clip.mkv", frames, "ffv1")}


def test_lossless_avi_frames_and_fps(videos):
  with media.open_source(videos["lossless"]) as source:
    assert (source.kind, source.fps, source.name) == ("video", 10.0, videos["lossless"])
    frames = list(source)
  np.testing.assert_array_equal(np.stack(frames), videos["frames"])  # FFV1 is lossless.
  assert frames[0].dtype == np.uint8 and frames[0].shape == (H, W, 3)
  np.testing.assert_array_equal(np.stack(media.read_frames(videos["lossless"])), videos["frames"])
  # A Path and a file:// URL read the same.
  np.testing.assert_array_equal(np.stack(media.read_frames(videos["root"] / "lossless.avi")),
                                videos["frames"])
  url = media.open_source("file://" + videos["lossless"])
  assert url.kind == "stream"
  np.testing.assert_array_equal(np.stack(list(url)), videos["frames"])


def test_mp4_is_close_and_keeps_its_rate(videos):
  with media.open_source(videos["mp4"]) as source:
    frames = np.stack(list(source))
    assert source.fps == 12.5
  assert frames.shape == (T, H, W, 3)
  assert np.abs(frames.astype(float) - videos["frames"]).mean() < 12  # H.264 is lossy.
  # Control: the frames are in order (each is closest to its own original).
  dist = np.abs(frames[:, None].astype(float) - videos["frames"][None]).mean((2, 3, 4))
  np.testing.assert_array_equal(dist.argmin(1), np.arange(T))


def test_lazy_and_closed_early(videos):
  with media.open_source(videos["mjpeg"]) as source:
    first = next(source)
    assert first.shape == (H, W, 3)
  with pytest.raises(StopIteration):  # Closed: nothing more comes.
    next(source)


def test_truncated_avi_names_the_file(videos, tmp_path):
  data = open(videos["mjpeg"], "rb").read()
  cut = tmp_path / "S001-002.avi"
  cut.write_bytes(data[:int(len(data) * 0.6)])
  with pytest.raises(errors.UnreadableVideoError, match="S001-002.avi.*(truncated|corrupt)"):
    media.read_frames(str(cut))
  header_cut = tmp_path / "S001-003.avi"  # Cut inside the header: ffmpeg cannot open it.
  header_cut.write_bytes(data[:1000])
  with pytest.raises(errors.UnreadableVideoError, match="Cannot open video .*S001-003.avi"):
    media.open_source(str(header_cut))
  junk = tmp_path / "junk.mp4"
  junk.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
  with pytest.raises(errors.UnreadableVideoError, match="junk.mp4"):
    media.read_frames(str(junk))
  # The builders' reader is the same one.
  with pytest.raises(errors.UnreadableVideoError, match="S001-002.avi"):
    common.read_video(str(cut))
  assert issubclass(errors.UnreadableVideoError, errors.FerError)


def test_zero_frame_avi(videos, tmp_path):
  data = open(videos["mjpeg"], "rb").read()
  empty = tmp_path / "empty.avi"  # Headers up to the start of the frame list, no frame.
  empty.write_bytes(data[:data.index(b"movi") + 4])
  with pytest.raises(errors.EmptySequenceError, match="empty.avi"):
    media.read_frames(str(empty))


def test_frame_folder_natural_order_and_bad_image(tmp_path):
  frames = _frames(11)
  folder = tmp_path / "seq"
  folder.mkdir()
  for t, f in enumerate(frames):  # frame_1 .. frame_11: as text, frame_10 < frame_2.
    Image.fromarray(f).save(folder / f"frame_{t + 1}.png")
  (folder / ".hidden.png").write_bytes(b"x")
  (folder / "notes.txt").write_text("not a frame")
  with media.open_source(str(folder)) as source:
    assert (source.kind, source.fps, source.num_frames) == ("folder", None, 11)
    np.testing.assert_array_equal(np.stack(list(source)), frames)
  (folder / "frame_5.png").write_bytes(b"not a png")
  with media.open_source(str(folder)) as source:
    for _ in range(4):
      next(source)  # Lazy: frames 1-4 read fine.
    with pytest.raises(errors.UnreadableImageError, match="frame_5.png"):
      next(source)
  empty = tmp_path / "nothing"
  empty.mkdir()
  with pytest.raises(errors.EmptySequenceError, match="nothing"):
    media.open_source(str(empty))


def test_single_image_and_missing_paths(tmp_path):
  grey = _frames(1)[0, ..., 0]
  Image.fromarray(grey).save(tmp_path / "face.PNG")
  frames = media.read_frames(str(tmp_path / "face.PNG"))
  assert len(frames) == 1
  np.testing.assert_array_equal(frames[0], np.repeat(grey[..., None], 3, -1))
  with pytest.raises(errors.MissingInputError, match="missing.mp4"):
    media.open_source(str(tmp_path / "missing.mp4"))
  assert issubclass(errors.MissingInputError, FileNotFoundError)


def _stream_through_fifo(path, data):
  """Frames of `data` (a video file's bytes) fed through a named pipe at `path`, and the source."""
  os.mkfifo(path)

  def feed():
    with open(path, "wb") as f:
      for i in range(0, len(data), 1000):
        f.write(data[i:i + 1000])

  writer = threading.Thread(target=feed)
  writer.start()
  try:
    with media.open_source(path) as source:
      return np.stack(list(source)), source
  finally:
    writer.join(timeout=30)


def test_named_pipe_streams_like_a_webcam(videos, tmp_path, caplog):
  """A live source: the clip's bytes fed through a FIFO, read as they arrive."""
  data = open(videos["mkv"], "rb").read()
  frames, source = _stream_through_fifo(str(tmp_path / "camera"), data)
  assert source.kind == "stream" and source.fps == 10.0
  np.testing.assert_array_equal(frames, videos["frames"])
  # A stream cut mid-frame (a dropped connection) ends with a warning, keeping the frames decoded.
  with caplog.at_level(logging.WARNING):
    frames, _ = _stream_through_fifo(str(tmp_path / "cut"), data[:int(len(data) * 0.7)])
  assert 0 < len(frames) < T
  np.testing.assert_array_equal(frames[:-1], videos["frames"][:len(frames) - 1])
  assert "Stream" in caplog.text and "cut" in caplog.text


def test_webcam_index_goes_to_ffmpeg():
  assert media.webcam_input(2, "linux") == ("/dev/video2", ["-f", "v4l2"])
  assert media.webcam_input(0, "darwin") == ("0", ["-f", "avfoundation", "-framerate", "30"])
  with pytest.raises(errors.UnreadableVideoError, match="Webcam 1.*URL"):
    media.webcam_input(1, "win32")
  missing = 63  # No such camera on a test machine: ffmpeg's failure is named.
  if not os.path.exists(f"/dev/video{missing}") and os.uname().sysname == "Linux":
    with pytest.raises(errors.UnreadableVideoError, match=f"webcam {missing}"):
      media.open_source(str(missing))


def test_extension_rules():
  assert media.is_image_file("a/B.JPG") and not media.is_image_file("a/b.avi")
  assert media.is_video_file("x.AVI") and media.is_video_file("x.webm")
  assert not set(media.IMAGE_EXTENSIONS) & set(media.VIDEO_EXTENSIONS)
  assert common.VIDEO_EXTENSIONS is media.VIDEO_EXTENSIONS
