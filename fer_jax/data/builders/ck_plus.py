"""TFDS builder for the Extended Cohn-Kanade data set (CK+): the labelled posed sequences.

327 sequences (of 593) carry an Emotion file; contempt (18 of them) is dropped unless
data.keep_contempt. Per-frame labels: the first data.neutral_head frames neutral, the rest the emotion.
"""
import os
import re

from absl import logging

from fer_jax.data import labels as labels_lib
from fer_jax.data import media
from fer_jax.data.builders import common

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
CK+ is licensed: request it at https://www.jeffcohn.net/Resources/ and unzip the release into
manual_dir (data.manual_dir), which must then contain, at any depth:
  cohn-kanade-images/S005/001/S005_001_00000001.png ...   (frames; from extended-cohn-kanade-images.zip)
  Emotion/S005/001/S005_001_00000011_emotion.txt          (one code 0..7 per labelled sequence;
                                                           from Emotion_labels.zip)
  Landmarks/S005/001/S005_001_00000001_landmarks.txt      (optional: 68 AAM points (x y) per frame,
                                                           used when data.use_database_landmarks)
Sequences without an Emotion file (or with an empty Emotion folder) are unlabelled and not used.
Alternatively put an index.csv at the root of manual_dir with columns path,subject,sequence,label
(path: a frame folder or video file relative to manual_dir; label: a class name such as happiness).
"""


class CkPlus(common.SequenceBuilder, skip_registration=True):
  """CK+ sequences: registered frames, per-frame labels (neutral head, then the emotion)."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS

  def class_names(self):
    return labels_lib.ck_class_names(self.builder_config.keep_contempt)

  def scan(self, manual_dir):
    if os.path.isfile(os.path.join(manual_dir, common.INDEX_FILE)):
      return common.read_index(self, manual_dir, self.class_names())
    images = common.find_dirs(manual_dir, "cohn-kanade-images")
    emotion = common.find_dirs(manual_dir, "Emotion")
    if not images or not emotion:
      absent = [n for n, d in (("cohn-kanade-images", images), ("Emotion", emotion)) if not d]
      raise common.missing_error(self, manual_dir, f"no {' and no '.join(absent)} folder")
    images, emotion = images[0], emotion[0]
    landmarks_dirs = common.find_dirs(manual_dir, "Landmarks")
    keep_contempt = self.builder_config.keep_contempt
    items, missing, unlabelled, contempt = [], [], 0, 0
    for subject in common.visible(os.listdir(emotion)):
      subject_dir = os.path.join(emotion, subject)
      if not os.path.isdir(subject_dir):
        continue
      for seq in common.visible(os.listdir(subject_dir)):
        seq_dir = os.path.join(subject_dir, seq)
        if not os.path.isdir(seq_dir):
          continue
        files = [n for n in common.visible(os.listdir(seq_dir)) if n.endswith("_emotion.txt")]
        if not files:
          unlabelled += 1
          continue
        if len(files) > 1:
          raise ValueError(f"{seq_dir}: {len(files)} emotion files; a sequence has one. Remove the extra.")
        path = os.path.join(seq_dir, files[0])
        with open(path) as f:
          label = labels_lib.parse_ck_code(f.read(), path, keep_contempt)
        if label is None:
          contempt += 1
          continue
        frames_dir = os.path.join(images, subject, seq)
        if not os.path.isdir(frames_dir):
          missing.append(os.path.relpath(frames_dir, manual_dir))
          continue
        items.append(common.Item(key=f"{subject}_{seq}", subject=subject, sequence=f"{subject}/{seq}",
                                 path=frames_dir, label=label,
                                 landmarks=self._landmarks(landmarks_dirs, subject, seq, frames_dir)))
    if missing:
      raise common.missing_error(
          self, manual_dir, f"{len(missing)} labelled sequences have no frame folder (partial "
          f"download?), e.g. {missing[:5]}")
    logging.info("ck_plus: %d labelled sequences of %d subjects; %d without emotion file; %d contempt "
                 "%s.", len(items), len({i.subject for i in items}), unlabelled, contempt,
                 "kept" if keep_contempt else "dropped")
    return items

  def _landmarks(self, landmarks_dirs, subject, seq, frames_dir):
    """Per-frame landmark files when configured and complete for the sequence, else None."""
    cfg = self.builder_config
    if not (cfg.register and cfg.use_database_landmarks and landmarks_dirs):
      return None
    folder = os.path.join(landmarks_dirs[0], subject, seq)
    frames = media.frame_files(frames_dir)
    paths = [os.path.join(folder, re.sub(r"\.[^.]*$", "", os.path.basename(f)) + "_landmarks.txt")
             for f in frames]
    if not frames or not all(os.path.isfile(p) for p in paths):
      logging.info("ck_plus: %s has no complete landmarks; detecting faces instead.", frames_dir)
      return None
    return paths

  def frame_labels(self, item, length):
    return labels_lib.ck_frame_labels(length, item.label, self.builder_config.neutral_head,
                                      num_classes=len(self.class_names()), sequence=item.sequence)


def make_builder(data_config) -> CkPlus:
  """CkPlus builder for config.data (image_size, register, labelling rules -> BuilderConfig name)."""
  d = data_config
  config = common.sequence_config(
      d, nh=d.neutral_head, c=8 if d.keep_contempt else 7,
      lm=bool(d.use_database_landmarks and d.register))
  return common.make(CkPlus, config, d)

