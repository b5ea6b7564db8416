"""Tiny fake copies of CK+, MMI and GEMEP-FERA in their official layouts (see shared DATASETS.md).

Frames come from the synthetic face generator (cartoon faces: build them with data.register=False) or
are given by the caller (e.g. the astronaut photograph, for registration). Each writer returns the truth
the builder must reproduce: {sequence name: (frames uint8 [T, S, S, 3] as written, class name)}.
"""
import os
import subprocess
from typing import Optional, Sequence

import imageio.v2 as imageio
import numpy as np
from PIL import Image

from fer_jax.data import labels as labels_lib
from fer_jax.data import synthetic


def _frames(emotion_name: str, length: int, size: int, rng) -> np.ndarray:
  """A cartoon neutral -> apex sequence uint8 [T, S, S, 3] (contempt is drawn as disgust)."""
  name = "disgust" if emotion_name in ("contempt", "neutral", "relief") else emotion_name
  name = "happiness" if name == "joy" else name
  if length < 2:
    return synthetic.draw_frame(synthetic.make_subject(rng), labels_lib.BASIC7.index(name), 0.8,
                                size, rng)[None]
  frames, _ = synthetic.draw_sequence(synthetic.make_subject(rng), labels_lib.BASIC7.index(name),
                                      length, "onset_apex", size, rng)
  return frames


def _touch_ds_store(folder: str) -> None:
  with open(os.path.join(folder, ".DS_Store"), "wb") as f:
    f.write(b"\x00\x01junk")


def write_video(path: str, frames: np.ndarray, fps: int = 24) -> None:
  """Writes uint8 [T, H, W, 3] as an AVI with the lossless PNG codec."""
  writer = imageio.get_writer(path, format="FFMPEG", fps=fps, codec="png", pixelformat="rgb24",
                              macro_block_size=1, ffmpeg_log_level="error")
  for f in frames:
    writer.append_data(f)
  writer.close()


def write_ck_plus(root: str, sequences: Sequence[tuple], size: int = 32, seed: int = 0,
                  grey: bool = True, frames: Optional[dict] = None, landmarks: Optional[dict] = None,
                  extra_unlabelled: bool = True) -> dict:
  """CK+ as unzipped from the official archives (nested one level, with .DS_Store litter).

  Args:
    root: manual_dir.
    sequences: (subject "S005", sequence "001", emotion code text or None for no Emotion file, length).
    size: frame side of the drawn frames.
    grey: write frames as 8-bit greyscale PNG (most of CK+); the truth is the grey value x 3 channels.
    frames: optional {(subject, seq): uint8 [T, H, W, 3]} used instead of drawn frames.
    landmarks: optional {(subject, seq): float [T, 68, 2]} written to Landmarks/.
    extra_unlabelled: also write an empty Emotion folder and a sequence without one (both unlabelled).

  Returns:
    {"S005/001": (frames uint8 [T, S, S, 3], emotion code text)} for the labelled sequences.
  """
  rng = np.random.default_rng(seed)
  images = os.path.join(root, "extended-cohn-kanade-images", "cohn-kanade-images")
  emotion = os.path.join(root, "Emotion_labels", "Emotion")
  truth = {}
  todo = list(sequences)
  if extra_unlabelled:
    todo += [("S999", "001", None, 3), ("S999", "002", "", 3)]
  for subject, seq, code, length in todo:
    given = (frames or {}).get((subject, seq))
    if given is None:
      name = labels_lib.CK_CODES.get(int(float(code)), "disgust") if code else "disgust"
      given = _frames(name, length, size, rng)
    folder = os.path.join(images, subject, seq)
    os.makedirs(folder, exist_ok=True)
    written = []
    for t, frame in enumerate(given):
      im = Image.fromarray(frame).convert("L") if grey else Image.fromarray(frame)
      im.save(os.path.join(folder, f"{subject}_{seq}_{t + 1:08d}.png"))
      written.append(np.asarray(im.convert("RGB")))
    _touch_ds_store(folder)
    if landmarks is not None and (subject, seq) in landmarks:
      lm_dir = os.path.join(root, "Landmarks", subject, seq)
      os.makedirs(lm_dir, exist_ok=True)
      for t, pts in enumerate(landmarks[(subject, seq)]):
        np.savetxt(os.path.join(lm_dir, f"{subject}_{seq}_{t + 1:08d}_landmarks.txt"), pts,
                   fmt="   %.7e")
    if code is not None:
      emo_dir = os.path.join(emotion, subject, seq)
      os.makedirs(emo_dir, exist_ok=True)
      _touch_ds_store(emo_dir)
      if code != "":
        with open(os.path.join(emo_dir, f"{subject}_{seq}_{len(given):08d}_emotion.txt"), "w") as f:
          f.write(f"   {code}\n")
        truth[f"{subject}/{seq}"] = (np.stack(written) if written else None, code)
  _touch_ds_store(root)
  return truth


def _mmi_metadata(path: str, emotion: Optional[str]) -> None:
  tags = ['  <Metatag Name="Gender" Value="1"/>', '  <Metatag Name="Age" Value="27"/>']
  if emotion is not None:
    tags.append(f'  <Metatag Name="Emotion" Value="{emotion}"/>')
  with open(path, "w") as f:
    f.write('<?xml version="1.0" encoding="utf-8"?>\n<Metadata>\n' + "\n".join(tags) + "\n</Metadata>\n")


def write_mmi(root: str, sessions: Sequence[tuple], size: int = 32, seed: int = 0) -> dict:
  """MMI sessions: Sessions/<n>/S<subj>-<rec>.avi + .xml + session.xml (+ -oao_aucs.xml).

  Args:
    sessions: (session number, "S001-002", emotion code text or None, length, view "0"/"1"/"2",
      oao: the text of S<subj>-<rec>-oao_aucs.xml (markers) or None, stills: bool (jpg frames
      instead of a video)).

  Returns:
    {"S001-002": (frames uint8 [T, S, S, 3], emotion code text)} for every video session written.
  """
  rng = np.random.default_rng(seed)
  base = os.path.join(root, "mmi-facial-expression-database_download_2026-01-01", "Sessions")
  truth = {}
  for number, stem, emotion, length, view, oao, stills in sessions:
    folder = os.path.join(base, str(number))
    os.makedirs(folder, exist_ok=True)
    code = int(emotion) if emotion and emotion.isdigit() else 0
    name = labels_lib.MMI_CODES.get(code, "disgust")
    frames = _frames(name, length, size, rng)
    if stills:
      for t, frame in enumerate(frames):
        Image.fromarray(frame).save(os.path.join(folder, f"{stem}-{t}.jpg"))
    else:
      write_video(os.path.join(folder, f"{stem}.avi"), frames)
      truth[stem] = (frames, emotion)
    _mmi_metadata(os.path.join(folder, f"{stem}.xml"), emotion)
    annotations = f'  <annotation filename="{stem}-oao_aucs.xml"/>\n' if oao else ""
    with open(os.path.join(folder, "session.xml"), "w") as f:
      f.write(f'<?xml version="1.0"?>\n<session sessionId="{number}">\n  <track view="{view}" '
              f'filename="{stem}.avi"/>\n{annotations}</session>\n')
    if oao:
      with open(os.path.join(folder, f"{stem}-oao_aucs.xml"), "w") as f:
        f.write(oao)
    _touch_ds_store(folder)
  return truth


def write_empty_video(path: str, size: int = 32) -> None:
  """An AVI (PNG codec) with a video stream and no frame, written by imageio-ffmpeg's ffmpeg."""
  import imageio_ffmpeg  # pylint: disable=g-import-not-at-top
  subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i",
                  f"color=black:s={size}x{size}:r=24", "-frames:v", "0", "-c:v", "png", "-y", path],
                 check=True, stdin=subprocess.DEVNULL)


def truncate(path: str, fraction: float = 0.6) -> None:
  """Cuts a file to `fraction` of its bytes (a download that stopped early)."""
  with open(path, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:
    f.write(data[:int(len(data) * fraction)])


def write_fera(root: str, train: Sequence[tuple], test: Sequence[tuple], size: int = 32,
               seed: int = 0, frames: Optional[dict] = None) -> dict:
  """GEMEP-FERA emotion set: training/<dir>/<stem>.avi + <stem>.dat; test/test/<dir>/<stem>.avi,
  test/labels/<stem>.dat (one class word each).

  Args:
    train, test: (folder, stem, class word, length).
    frames: optional {stem: uint8 [T, H, W, 3]} written instead of drawn frames (length ignored).

  Returns:
    {stem: (frames uint8 [T, S, S, 3], class word, split)}.
  """
  rng = np.random.default_rng(seed)
  base = os.path.join(root, "GEMEP-FERA")
  truth = {}
  for split, rows in (("train", train), ("test", test)):
    for folder, stem, word, length in rows:
      given = (frames or {}).get(stem)
      video = (_frames(labels_lib.FERA_WORDS.get(word.lower(), "anger"), length, size, rng)
               if given is None else np.asarray(given, np.uint8))
      if split == "train":
        video_dir = os.path.join(base, "training", folder)
        label_path = os.path.join(video_dir, f"{stem}.dat")
      else:
        video_dir = os.path.join(base, "test", "test", folder)
        label_path = os.path.join(base, "test", "labels", f"{stem}.dat")
      os.makedirs(video_dir, exist_ok=True)
      os.makedirs(os.path.dirname(label_path), exist_ok=True)
      write_video(os.path.join(video_dir, f"{stem}.avi"), video)
      with open(label_path, "w") as f:
        f.write(f"{word}\n")
      truth[stem] = (video, word, split)
  return truth
