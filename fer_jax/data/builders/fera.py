"""TFDS builder for GEMEP-FERA 2011, emotion sub-challenge: five classes, the official train/test split.

Splits "train" and "test" are the organisers' partition (the test labels were released after the
challenge). Every frame carries the sequence's class (anger, fear, joy, relief, sadness).
Subject ids: the official file names' actor encoding is unconfirmed, so the subject is the folder that
holds the video (training/<dir>/), or the video's stem where that folder is named after a class; give
the actors explicitly with index.csv (subject column) when you know them.
"""
import os

from absl import logging

from fer_jax.data import labels as labels_lib
from fer_jax.data.builders import common

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
GEMEP-FERA is licensed: request the FERA 2011 emotion sub-challenge data from the organisers
(http://sspnet.eu/fera2011/) and unpack it into manual_dir (data.manual_dir), which must then contain,
at any depth:
  training/<dir>/<name>.avi and training/<dir>/<name>.dat   (label file: one class word, e.g. relief)
  test/<...>/<name>.avi (e.g. test/test/<dir>/<name>.avi) and test/labels/<name>.dat (or <name>.dat
                                                             beside the video)
Class words: anger, fear, joy, relief, sadness.
Alternatively put an index.csv at the root of manual_dir with columns path,subject,sequence,label,split
(path: a video file or frame folder relative to manual_dir; label: a class word; split: train or test).
"""


def read_label(path):
  """The FERA5 index named by a label file (the one class word in it); ValueError naming the file."""
  with open(path, errors="replace") as f:
    words = {w.lower() for w in f.read().replace(",", " ").split()}
  found = {labels_lib.FERA_WORDS[w] for w in words if w in labels_lib.FERA_WORDS}
  if len(found) != 1:
    raise ValueError(f"{path}: expected exactly one FERA class word ({', '.join(labels_lib.FERA5)}), "
                     f"found {sorted(words)[:10]}.")
  return labels_lib.FERA5.index(found.pop())


class Fera(common.SequenceBuilder, skip_registration=True):
  """GEMEP-FERA 2011 emotion videos: registered frames, the sequence label on every frame."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  SPLITS = ("train", "test")

  def class_names(self):
    return labels_lib.FERA5

  def scan(self, manual_dir):
    if os.path.isfile(os.path.join(manual_dir, common.INDEX_FILE)):
      return common.read_index(self, manual_dir, self.class_names())
    train, test = common.find_dirs(manual_dir, "training"), common.find_dirs(manual_dir, "test")
    if not train or not test:
      absent = [n for n, d in (("training", train), ("test", test)) if not d]
      raise common.missing_error(self, manual_dir, f"no {' and no '.join(absent)} folder")
    items, unlabelled = [], []
    for split, root in (("train", train[0]), ("test", test[0])):
      label_dirs = [os.path.join(root, "labels")]
      for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "labels")
        for name in sorted(filenames):
          stem, ext = os.path.splitext(name)
          if name.startswith(".") or ext.lower() not in common.VIDEO_EXTENSIONS:
            continue
          candidates = [os.path.join(dirpath, stem + ".dat")] + [
              os.path.join(d, stem + ".dat") for d in label_dirs]
          label_file = next((c for c in candidates if os.path.isfile(c)), None)
          path = os.path.join(dirpath, name)
          if label_file is None:
            unlabelled.append(os.path.relpath(path, manual_dir))
            continue
          folder = os.path.basename(dirpath)
          subject = stem if folder.lower() in labels_lib.FERA_WORDS or dirpath == root else folder
          items.append(common.Item(key=os.path.relpath(path, root), subject=subject, sequence=stem, path=path,
                                   label=read_label(label_file), split=split))
    if unlabelled:
      raise common.missing_error(self, manual_dir, f"{len(unlabelled)} videos have no <name>.dat label "
                                 f"file (partial download?), e.g. {unlabelled[:5]}")
    for split in self.SPLITS:
      part = [i for i in items if i.split == split]
      if not part:
        raise common.missing_error(self, manual_dir, f"no labelled {split} video")
      logging.info("fera: %s: %d sequences, %d subject folders", split, len(part),
                   len({i.subject for i in part}))
    return items

  def frame_labels(self, item, length):
    return labels_lib.fera_frame_labels(length, item.label, num_classes=len(self.class_names()),
                                        sequence=item.sequence)


def make_builder(data_config) -> Fera:
  """Fera builder for config.data (image_size, register -> BuilderConfig name); splits train, test."""
  return common.make(Fera, common.sequence_config(data_config), data_config)
