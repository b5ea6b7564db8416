"""TFDS builder for GEMEP-FERA 2011, emotion sub-challenge: five classes, the official train/test split.

Splits "train" and "test" are the organisers' partition (the test labels were released after the
challenge). Every frame carries the sequence's class (anger, fear, joy, relief, sadness).
Subject ids are actors found from the faces (fer_jax/data/actors.py): the official files name no actor
and the folders are most likely one per video (DATASETS.md), so every video's mean dlib face
descriptor (over a few frames) is clustered across both splits at dlib's 0.6 distance, and each cluster
is an actor ("actor01", ...; the same id in train and test). A video where no frame shows a face keeps
its folder (or, where the folder is named after a class, its stem) as the subject. The number of
actors in train, in test and in both is logged and saved in the data set's metadata ("actors"); give
the actors explicitly with index.csv (subject column) when you know them: that skips the clustering.
"""
import os

from absl import logging

from fer_jax.data import actors
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
      if not any(i.split == split for i in items):
        raise common.missing_error(self, manual_dir, f"no labelled {split} video")
    self.find_actors(items)
    return items

  def find_actors(self, items: list[common.Item]) -> dict:
    """Sets each item's subject to its actor (see module doc); returns and saves the counts."""
    describer = actors.FaceDescriber()
    descriptors = []
    for n, item in enumerate(items):
      if n % 20 == 0:
        logging.info("fera: face descriptors %d/%d (%s)", n, len(items), item.path)
      try:
        frames = common.read_item_frames(item)
      except common.SKIPPABLE as e:  # Reported (or skipped) when the records are written.
        logging.warning("fera: no face descriptor for %s: %s", item.path, e)
        frames = []
      descriptors.append(describer.describe_video(frames, item.path))
    names = actors.name_actors(descriptors, [item.subject for item in items])
    for item, name in zip(items, names):
      item.subject = name
    faceless = [item.path for item, d in zip(items, descriptors) if d is None]
    summary = actors.split_actors([i.subject for i in items if i.split == "train"],
                                  [i.subject for i in items if i.split == "test"])
    summary.update(threshold=actors.THRESHOLD, videos_without_face=len(faceless))
    logging.info("fera: actors found from the faces: %d in train, %d in test, %d in both (%s); %d "
                 "videos without a face keep their folder as subject%s", summary["train"],
                 summary["test"], summary["shared"], ", ".join(summary["shared_ids"]) or "none",
                 len(faceless), f", e.g. {faceless[:3]}" if faceless else "")
    self.info.metadata["actors"] = summary
    return summary

  def frame_labels(self, item, length):
    return labels_lib.fera_frame_labels(length, item.label, num_classes=len(self.class_names()),
                                        sequence=item.sequence)


def make_builder(data_config) -> Fera:
  """Fera builder for config.data (image_size, register -> BuilderConfig name); splits train, test."""
  return common.make(Fera, common.sequence_config(data_config), data_config)
