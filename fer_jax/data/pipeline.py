"""Input pipeline: TFDS sequences in memory, resumable frame batches for training, exact eval batches.

TensorFlow only reads the data sets and resizes crops; it never takes a GPU (JAX owns the accelerator).
Batches are NumPy. Training batches are a pure function of (seed, global step), so a restarted job
resumes the exact stream: epoch e shuffles all frames with np.random.default_rng([seed, e]); global
batch s holds positions [s * B, (s + 1) * B) of the concatenated epoch stream; host p of P takes the
p-th slice of B / P of it. Augmentation of the frame at position q of batch s draws from
np.random.default_rng([seed, s, q]).
"""
import concurrent.futures
import dataclasses
from typing import Iterator, Optional, Sequence

from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from fer_jax import tf_devices  # noqa: E402

tf_devices.hide_gpus_from_tensorflow()

from fer_jax.data import builders  # noqa: E402  (after hiding the GPU from TF)

NUM_LANDMARKS = 68  # dlib's 68-point scheme.


@dataclasses.dataclass(frozen=True, eq=False)
class Sequences:
  """Labelled sequences in memory.

  Attributes:
    frames: list of N arrays uint8 [T_i, S, S, 3] (same S for all).
    labels: list of N arrays int32 [T_i], indices into class_names.
    subjects: str [N], subject id per sequence.
    names: str [N], sequence name.
    class_names: the label names.
    landmarks: list of N arrays float32 [T_i, 68, 2], the 68 points (x, y) in crop pixels (NaN where
      the data set has none); None (the default) means none for any frame.
  """
  frames: list
  labels: list
  subjects: np.ndarray
  names: np.ndarray
  class_names: tuple
  landmarks: Optional[list] = None

  def __post_init__(self):
    set_ = lambda k, v: object.__setattr__(self, k, v)
    set_("frames", list(self.frames))
    set_("labels", [np.asarray(l, np.int32) if np.issubdtype(np.asarray(l).dtype, np.integer)
                    else np.asarray(l) for l in self.labels])
    set_("subjects", np.asarray(self.subjects, dtype=str).reshape(-1))
    set_("names", np.asarray(self.names, dtype=str).reshape(-1))
    set_("class_names", tuple(self.class_names))
    if self.landmarks is None:
      set_("landmarks", [np.full((len(f), NUM_LANDMARKS, 2), np.nan, np.float32) for f in self.frames])
    set_("landmarks", [np.asarray(p, np.float32) for p in self.landmarks])
    n = len(self.frames)
    if not len(self.labels) == len(self.subjects) == len(self.names) == len(self.landmarks) == n:
      raise ValueError(f"Sequences: {n} frame arrays but {len(self.labels)} label arrays, "
                       f"{len(self.subjects)} subjects, {len(self.names)} names and "
                       f"{len(self.landmarks)} landmark arrays; give one of each per sequence.")
    k = len(self.class_names)
    size = None
    for name, f, l, p in zip(self.names, self.frames, self.labels, self.landmarks):
      if not isinstance(f, np.ndarray) or f.dtype != np.uint8 or f.ndim != 4 or f.shape[-1] != 3 \
          or f.shape[1] != f.shape[2]:
        got = f"{f.dtype} {f.shape}" if isinstance(f, np.ndarray) else type(f).__name__
        raise ValueError(f"Sequence {name!r}: frames must be uint8 [T, S, S, 3], got {got}; convert "
                         "to square RGB uint8 frames.")
      if len(f) == 0:
        raise ValueError(f"Sequence {name!r} is empty (0 frames); drop it or give it frames.")
      if size is not None and f.shape[1] != size:
        raise ValueError(f"Sequence {name!r}: frames are {f.shape[1]} px but earlier ones {size} px; "
                         "resize all sequences to one image size.")
      size = f.shape[1]
      if l.shape != (len(f),) or not np.issubdtype(l.dtype, np.integer):
        raise ValueError(f"Sequence {name!r}: labels must be int [T] with T = {len(f)} frames, got "
                         f"{l.dtype} {l.shape}; give one label per frame.")
      if l.min() < 0 or l.max() >= k:
        raise ValueError(f"Sequence {name!r}: labels {sorted(set(l.tolist()))} outside [0, {k}) "
                         f"for class_names {self.class_names}; fix the labels or the class names.")
      if p.shape != (len(f), NUM_LANDMARKS, 2):
        raise ValueError(f"Sequence {name!r}: landmarks must be float32 [T, {NUM_LANDMARKS}, 2] with "
                         f"T = {len(f)} frames, got {p.shape}; give 68 (x, y) points per frame (NaN "
                         "where unknown).")

  def __len__(self) -> int:
    return len(self.frames)

  @property
  def num_frames(self) -> int:
    """Total frames over all sequences."""
    return int(sum(len(f) for f in self.frames))

  @property
  def image_size(self) -> Optional[int]:
    return self.frames[0].shape[1] if self.frames else None

  def subset(self, indices) -> "Sequences":
    """The sequences at `indices` (int array), in that order."""
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
      raise IndexError(f"subset: indices {idx.min()}..{idx.max()} out of range for {len(self)} "
                       "sequences.")
    return Sequences([self.frames[i] for i in idx], [self.labels[i] for i in idx],
                     self.subjects[idx], self.names[idx], self.class_names,
                     [self.landmarks[i] for i in idx])

  @classmethod
  def concat(cls, parts: Sequence["Sequences"]) -> "Sequences":
    """The sequences of `parts` one after another; all parts must share class_names."""
    parts = list(parts)
    if not parts:
      raise ValueError("Sequences.concat needs at least one Sequences.")
    for p in parts[1:]:
      if p.class_names != parts[0].class_names:
        raise ValueError(f"Sequences.concat: class_names differ ({parts[0].class_names} vs "
                         f"{p.class_names}); map the labels to one label space first.")
    return cls(sum((p.frames for p in parts), []), sum((p.labels for p in parts), []),
               np.concatenate([p.subjects for p in parts]), np.concatenate([p.names for p in parts]),
               parts[0].class_names, sum((p.landmarks for p in parts), []))


concat = Sequences.concat


def load_sequences(data_config, split: str = "train") -> Sequences:
  """Builds (if needed) and reads a data set split into memory.

  Args:
    data_config: the `config.data` ConfigDict (name, data_dir, manual_dir, image_size, ...).
    split: TFDS split name.
  """
  builder = builders.make_builder(data_config)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=data_config.manual_dir))
  labels_feature = builder.info.features["labels"]
  class_names = tuple(getattr(labels_feature, "feature", labels_feature).names)
  has_landmarks = "landmarks" in builder.info.features
  if not has_landmarks:
    logging.warning("%s %s stores no landmarks: geometry features are NaN (rebuild it with a version "
                    "that stores them to use crf.features with geometry).", data_config.name,
                    builder.info.version)
  total = builder.info.splits[split].num_examples
  logging.info("Reading %s/%s: %d sequences from %s.", data_config.name, split, total,
               builder.data_dir)
  frames, labels, subjects, names, landmarks = [], [], [], [], []
  for i, ex in enumerate(tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False))):
    frames.append(ex["frames"])
    labels.append(ex["labels"].astype(np.int32))
    landmarks.append(ex["landmarks"] if has_landmarks
                     else np.full((len(ex["frames"]), NUM_LANDMARKS, 2), np.nan, np.float32))
    subjects.append(ex["subject"].decode())
    names.append(ex["sequence"].decode())
    if (i + 1) % 100 == 0 or i + 1 == total:
      logging.info("Read %d/%d sequences.", i + 1, total)
  seqs = Sequences(frames, labels, np.array(subjects, dtype=str), np.array(names, dtype=str),
                   class_names, landmarks)
  logging.info("%s/%s: %d sequences, %d frames, %d subjects.", data_config.name, split, len(seqs),
               seqs.num_frames, len(np.unique(seqs.subjects)))
  return seqs


def _host_batch(batch_size, process_index, process_count) -> int:
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} must lie in [0, process_count={process_count}).")
  if batch_size < 1 or batch_size % process_count:
    raise ValueError(f"batch_size={batch_size} (the global batch) must be a positive multiple of "
                     f"process_count={process_count}; change train.batch_size.")
  return batch_size // process_count


def _flat(seqs: Sequences):
  """Per flat frame index: (sequence index [F], time index [F], label [F])."""
  lengths = np.array([len(f) for f in seqs.frames], np.int64)
  seq_of = np.repeat(np.arange(len(lengths)), lengths)
  t_of = np.arange(len(seq_of)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
  labels = np.concatenate(seqs.labels).astype(np.int32) if len(seqs) else np.zeros(0, np.int32)
  return seq_of, t_of, labels


def _gather(seqs, seq_of, t_of, flat_idx) -> np.ndarray:
  return np.stack([seqs.frames[seq_of[i]][t_of[i]] for i in flat_idx])


def _augment(images: np.ndarray, augment, seed: int, step: int, positions: np.ndarray) -> np.ndarray:
  """Flip, crop-and-resize, brightness; per image drawn from default_rng([seed, step, position])."""
  b, s = images.shape[:2]
  crop = int(round(float(augment.crop_fraction) * s))
  if not 1 <= crop <= s:
    raise ValueError(f"data.augment.crop_fraction={augment.crop_fraction} must lie in (0, 1].")
  out = np.empty((b, crop, crop, 3), np.uint8)
  delta = np.zeros(b, np.float32)
  for i, q in enumerate(positions):
    rng = np.random.default_rng([seed, step, int(q)])
    flip = rng.random() < 0.5
    oy, ox = rng.integers(0, s - crop + 1, size=2)
    delta[i] = rng.uniform(-1.0, 1.0) * float(augment.brightness) * 255.0
    img = images[i, oy:oy + crop, ox:ox + crop]
    out[i] = img[:, ::-1] if (flip and augment.flip) else img
  if crop != s:
    x = tf.image.resize(out, (s, s), method="bilinear", antialias=False).numpy()
  else:
    x = out.astype(np.float32)
  x += delta[:, None, None, None]
  return np.clip(np.round(x), 0, 255).astype(np.uint8)


def _prefetch(fn, steps) -> Iterator:
  """Yields fn(step) for each step, computing the next one in a background thread."""
  with concurrent.futures.ThreadPoolExecutor(1) as pool:
    steps = iter(steps)
    pending = pool.submit(fn, next(steps))
    for step in steps:
      nxt = pool.submit(fn, step)
      yield pending.result()
      pending = nxt


def _count_up(start):
  while True:
    yield start
    start += 1


class _ShuffledOrder:
  """Items of global step s, in a fresh permutation of n items per epoch (seeded by (seed, epoch)).

  Step s takes global positions s * batch_size + [offset, offset + count): this host's slice.
  __call__(step) -> (item indices int64 [count], global positions int64 [count]).
  """

  def __init__(self, n: int, seed: int, batch_size: int, offset: int, count: int):
    self.n, self.seed, self.batch_size, self.offset, self.count = n, seed, batch_size, offset, count
    self._perms = {}

  def _perm(self, epoch: int) -> np.ndarray:
    if epoch not in self._perms:
      if len(self._perms) > 4:
        self._perms.pop(min(self._perms))
      self._perms[epoch] = np.random.default_rng([self.seed, epoch]).permutation(self.n)
    return self._perms[epoch]

  def __call__(self, step: int):
    positions = step * self.batch_size + self.offset + np.arange(self.count, dtype=np.int64)
    epochs, offsets = np.divmod(positions, self.n)
    idx = np.empty(self.count, np.int64)
    for e in np.unique(epochs):
      sel = epochs == e
      idx[sel] = self._perm(int(e))[offsets[sel]]
    return idx, positions


def train_batches(seqs: Sequences, batch_size: int, *, seed: int, start_step: int = 0, augment=None,
                  process_index: int = 0, process_count: int = 1) -> Iterator[dict]:
  """Endless shuffled frame batches, resumable: the batch of global step s depends on (seed, s) only.

  Args:
    seqs: the training sequences.
    batch_size: the global batch B; this host yields B / process_count frames per step.
    seed: shuffling and augmentation seed.
    start_step: the first global step to yield (resume).
    augment: `config.data.augment` (flip, crop_fraction, brightness) or None for no augmentation.
    process_index, process_count: this host and the number of hosts.

  Yields:
    {"image": uint8 [b, S, S, 3], "label": int32 [b]}, b = batch_size // process_count.
  """
  b = _host_batch(batch_size, process_index, process_count)
  seq_of, t_of, labels = _flat(seqs)
  n = len(labels)
  if n == 0:
    raise ValueError("train_batches: no training frames; check the data set and the fold.")
  if start_step < 0:
    raise ValueError(f"start_step={start_step} must be >= 0.")
  order = _ShuffledOrder(n, seed, batch_size, process_index * b, b)

  def batch(step):
    idx, positions = order(step)
    images = _gather(seqs, seq_of, t_of, idx)
    if augment is not None:
      images = _augment(images, augment, seed, step, positions - step * batch_size)
    return {"image": images, "label": labels[idx]}

  return _prefetch(batch, _count_up(start_step))


def window_batches(seqs: Sequences, window: int, batch_size: int, *, seed: int, start_step: int = 0,
                   extra: Optional[Sequence[np.ndarray]] = None, augment=None,
                   process_index: int = 0, process_count: int = 1) -> Iterator[dict]:
  """Endless shuffled batches of windows of consecutive frames (stage 3), resumable by step.

  The windows of a sequence of length L start at t = 0 .. max(L - W, 0); a sequence shorter than
  W gives one window, padded at its end (mask False, zeros). Epoch e shuffles the windows of all
  sequences with np.random.default_rng([seed, e]); global batch s holds positions [s B, (s + 1) B)
  of the epoch stream, host p of P the p-th slice of B / P: the batch of step s depends on
  (seed, s) only. Augmentation as train_batches', one draw per window: all its frames get the
  flip, crop and brightness of np.random.default_rng([seed, s, q]), q its position in the batch.

  Args:
    seqs: the training sequences.
    window: W, frames per window (>= 1).
    batch_size: the global number of windows B per step.
    seed: shuffling seed.
    start_step: the first global step to yield (resume).
    extra: None, or per sequence a float array [T_i, G] of per-frame inputs that are not CNN
      outputs (e.g. geometry features); windows carry their slices.
    augment: `config.data.augment` or None for no augmentation.
    process_index, process_count: this host and the number of hosts.

  Yields:
    {"image": uint8 [b, W, S, S, 3], "label": int32 [b, W] (0 at padding), "mask": bool [b, W]
    (a prefix of True), "first": bool [b] (the window starts at the sequence's first frame),
    "last": bool [b] (its last real frame is the sequence's last), and "extra": float32 [b, W, G]
    when extra is given}, b = batch_size // process_count.
  """
  b = _host_batch(batch_size, process_index, process_count)
  if window < 1:
    raise ValueError(f"window={window} must be >= 1; set joint.window.")
  if start_step < 0:
    raise ValueError(f"start_step={start_step} must be >= 0.")
  lengths = np.array([len(l) for l in seqs.labels], np.int64)
  if not len(lengths):
    raise ValueError("window_batches: no training sequences; check the data set and the fold.")
  if extra is not None:
    extra = [np.asarray(e, np.float32) for e in extra]
    if len(extra) != len(seqs) or any(e.ndim != 2 or len(e) != n for e, n in zip(extra, lengths)) \
        or len({e.shape[1] for e in extra}) != 1:
      raise ValueError("window_batches: extra must hold one float array [T_i, G] per sequence, with "
                       "T_i its number of frames and one G for all.")
  per_seq = np.maximum(lengths - window + 1, 1)
  seq_of = np.repeat(np.arange(len(lengths)), per_seq)
  start_of = np.arange(len(seq_of)) - np.repeat(np.cumsum(per_seq) - per_seq, per_seq)
  n = len(seq_of)
  s = seqs.image_size
  order = _ShuffledOrder(n, seed, batch_size, process_index * b, b)

  def batch(step):
    windows, positions = order(step)
    out = {"image": np.zeros((b, window, s, s, 3), np.uint8),
           "label": np.zeros((b, window), np.int32), "mask": np.zeros((b, window), bool),
           "first": np.zeros(b, bool), "last": np.zeros(b, bool)}
    if extra is not None:
      out["extra"] = np.zeros((b, window, extra[0].shape[1]), np.float32)
    for row, w in enumerate(windows):
      i, t0 = seq_of[w], start_of[w]
      t1 = min(t0 + window, lengths[i])
      out["image"][row, :t1 - t0] = seqs.frames[i][t0:t1]
      out["label"][row, :t1 - t0] = seqs.labels[i][t0:t1]
      out["mask"][row, :t1 - t0] = True
      out["first"][row], out["last"][row] = t0 == 0, t1 == lengths[i]
      if extra is not None:
        out["extra"][row, :t1 - t0] = extra[i][t0:t1]
    if augment is not None:
      real = out["mask"]
      rows = positions - step * batch_size
      out["image"][real] = _augment(out["image"][real], augment, seed, step,
                                    np.broadcast_to(rows[:, None], real.shape)[real])
    return out

  return _prefetch(batch, _count_up(start_step))


def eval_batches(seqs: Sequences, batch_size: int, *, process_index: int = 0,
                 process_count: int = 1) -> Iterator[dict]:
  """All frames in sequence order, ceil(F / B) global batches, the last padded.

  Yields:
    {"image": uint8 [b, S, S, 3], "label": int32 [b], "mask": bool [b]}; padding is zeros with mask
    False. Every host yields the same number of batches; host p gets slice p of each global batch.
  """
  b = _host_batch(batch_size, process_index, process_count)
  seq_of, t_of, labels = _flat(seqs)
  n = len(labels)
  s = seqs.image_size or 0

  def batches():
    for start in range(0, n, batch_size):
      positions = start + process_index * b + np.arange(b)
      mask = positions < n
      real = positions[mask]
      image = np.zeros((b, s, s, 3), np.uint8)
      label = np.zeros(b, np.int32)
      if real.size:
        image[mask] = _gather(seqs, seq_of, t_of, real)
        label[mask] = labels[real]
      yield {"image": image, "label": label, "mask": mask}

  return batches()


def sequence_arrays(seqs: Sequences, values: np.ndarray):
  """Scatters per-frame values back into padded per-sequence arrays (for the CRF).

  Args:
    seqs: the sequences.
    values: [F, D], one row per frame in eval_batches order (padding removed), F = seqs.num_frames.

  Returns:
    x [N, T_max, D] (values.dtype, 0 at padding), tags int32 [N, T_max] (the labels, 0 at padding),
    mask bool [N, T_max].
  """
  values = np.asarray(values)
  if values.ndim != 2 or len(values) != seqs.num_frames:
    raise ValueError(f"values must be [num_frames={seqs.num_frames}, D], got {values.shape}; drop "
                     "the padded rows (mask False) of eval_batches first.")
  lengths = np.array([len(l) for l in seqs.labels], np.int64)
  t_max = int(lengths.max()) if len(lengths) else 0
  mask = np.arange(t_max)[None, :] < lengths[:, None]
  x = np.zeros((len(seqs), t_max, values.shape[1]), values.dtype)
  tags = np.zeros((len(seqs), t_max), np.int32)
  x[mask] = values
  if len(seqs):
    tags[mask] = np.concatenate(seqs.labels)
  return x, tags, mask
