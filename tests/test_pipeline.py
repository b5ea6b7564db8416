"""Input pipeline: Sequences validation, resumable training batches, exact eval batches, CRF arrays."""
import ml_collections
import numpy as np
import pytest

from configs import default
from fer_jax.data import pipeline
from fer_jax.data import synthetic

CLASSES = ("a", "b", "c")
LENGTHS = (5, 1, 9, 7, 4, 11)  # 37 frames.
SIZE = 8


def _seqs():
  """Frames carry their flat index in pixel (0, 0): channel 0 = index // 256, channel 1 = index % 256."""
  frames, labels, start = [], [], 0
  rng = np.random.default_rng(0)
  for n in LENGTHS:
    f = rng.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)
    idx = start + np.arange(n)
    f[:, 0, 0, 0], f[:, 0, 0, 1] = idx // 256, idx % 256
    frames.append(f)
    labels.append(rng.integers(0, 3, n).astype(np.int32))
    start += n
  subjects = ["S1", "S1", "S2", "S3", "S3", "S4"]
  names = [f"q{i}" for i in range(len(LENGTHS))]
  return pipeline.Sequences(frames, labels, np.array(subjects), np.array(names), CLASSES)


def _index(images):
  return images[:, 0, 0, 0].astype(int) * 256 + images[:, 0, 0, 1]


def _augment():
  aug = default.get_config().data.augment
  with aug.unlocked():
    aug.crop_fraction = 0.75
  return aug


def _take(it, n):
  return [next(it) for _ in range(n)]


def test_sequences_basics():
  seqs = _seqs()
  assert len(seqs) == 6 and seqs.num_frames == 37 and seqs.image_size == SIZE
  sub = seqs.subset([3, 0])
  assert list(sub.names) == ["q3", "q0"] and sub.num_frames == 12
  np.testing.assert_array_equal(sub.frames[0], seqs.frames[3])
  both = pipeline.Sequences.concat([sub, seqs.subset([1])])
  assert list(both.names) == ["q3", "q0", "q1"] and list(both.subjects) == ["S3", "S1", "S1"]
  assert len(seqs.subset(np.array([], np.int64))) == 0
  other = pipeline.Sequences(seqs.frames, seqs.labels, seqs.subjects, seqs.names, ("x", "y", "z"))
  with pytest.raises(ValueError, match="class_names"):
    pipeline.Sequences.concat([seqs, other])


def test_sequences_carry_landmarks():
  seqs = _seqs()  # None given: NaN for every point of every frame.
  assert all(p.shape == (len(f), 68, 2) and np.isnan(p).all()
             for f, p in zip(seqs.frames, seqs.landmarks))
  points = [np.full((len(f), 68, 2), i, np.float32) for i, f in enumerate(seqs.frames)]
  seqs = pipeline.Sequences(seqs.frames, seqs.labels, seqs.subjects, seqs.names, CLASSES, points)
  both = pipeline.Sequences.concat([seqs.subset([4, 1]), seqs.subset([2])])
  assert [int(p[0, 0, 0]) for p in both.landmarks] == [4, 1, 2]
  assert [len(p) for p in both.landmarks] == [len(f) for f in both.frames]
  with pytest.raises(ValueError, match=r"q2.*landmarks must be float32 \[T, 68, 2\]"):
    pipeline.Sequences(seqs.frames, seqs.labels, seqs.subjects, seqs.names, CLASSES,
                       points[:2] + [points[2][:-1]] + points[3:])


@pytest.mark.parametrize("frames,labels,match", [
    (np.zeros((0, SIZE, SIZE, 3), np.uint8), np.zeros(0, np.int32), "empty"),
    (np.zeros((3, SIZE, SIZE, 3), np.float32), np.zeros(3, np.int32), "uint8"),
    (np.zeros((3, SIZE, SIZE), np.uint8), np.zeros(3, np.int32), "uint8"),
    (np.zeros((3, SIZE, SIZE, 3), np.uint8), np.zeros(2, np.int32), "one label per frame"),
    (np.zeros((3, SIZE, SIZE, 3), np.uint8), np.array([0, 3, 1]), "outside"),
    (np.zeros((3, SIZE, SIZE, 3), np.uint8), np.array([0, -1, 1]), "outside"),
    (np.zeros((3, 4, 4, 3), np.uint8), np.zeros(3, np.int32), "px"),
])
def test_sequences_validation(frames, labels, match):
  seqs = _seqs()
  with pytest.raises(ValueError, match=match) as e:
    pipeline.Sequences(seqs.frames[:2] + [frames], seqs.labels[:2] + [labels], ["a", "b", "c"],
                       ["x", "y", "bad_one"], CLASSES)
  assert "bad_one" in str(e.value)
  one = pipeline.Sequences([np.zeros((1, 4, 4, 3), np.uint8)], [np.array([2])], ["s"], ["n"], CLASSES)
  assert one.num_frames == 1  # A one-frame sequence is valid.


def test_train_batches_epoch_covers_every_frame_once():
  seqs = _seqs()
  labels = np.concatenate(seqs.labels)
  batches = _take(pipeline.train_batches(seqs, 8, seed=0), 10)  # 80 positions = 2 epochs + 6.
  idx = np.concatenate([_index(b["image"]) for b in batches])
  lab = np.concatenate([b["label"] for b in batches])
  assert all(b["image"].shape == (8, SIZE, SIZE, 3) and b["image"].dtype == np.uint8 for b in batches)
  assert all(b["label"].dtype == np.int32 for b in batches)
  np.testing.assert_array_equal(lab, labels[idx])
  assert sorted(idx[:37]) == list(range(37)) and sorted(idx[37:74]) == list(range(37))
  assert not np.array_equal(idx[:37], idx[37:74])  # Reshuffled each epoch.
  other = np.concatenate([_index(b["image"]) for b in _take(pipeline.train_batches(seqs, 8, seed=1), 5)])
  assert not np.array_equal(other[:37], idx[:37])


def test_train_batches_resume_with_augmentation():
  seqs = _seqs()
  fresh = _take(pipeline.train_batches(seqs, 8, seed=3, augment=_augment()), 7)
  resumed = _take(pipeline.train_batches(seqs, 8, seed=3, start_step=4, augment=_augment()), 3)
  for a, b in zip(fresh[4:], resumed):
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["label"], b["label"])
  plain = _take(pipeline.train_batches(seqs, 8, seed=3), 7)
  assert not np.array_equal(plain[5]["image"], fresh[5]["image"])  # Augmentation does something.
  np.testing.assert_array_equal(plain[5]["label"], fresh[5]["label"])  # ... on the same frames.


def test_augmentation_ops():
  """Crop 1.0, no brightness: each image is the frame or its mirror; brightness shifts stay bounded."""
  seqs = _seqs()
  flip_only = ml_collections.ConfigDict(dict(flip=True, crop_fraction=1.0, brightness=0.0))
  plain = _take(pipeline.train_batches(seqs, 8, seed=5), 3)
  flipped = _take(pipeline.train_batches(seqs, 8, seed=5, augment=flip_only), 3)
  mirrored = 0
  for p, f in zip(plain, flipped):
    for a, b in zip(p["image"], f["image"]):
      assert np.array_equal(a, b) or np.array_equal(a[:, ::-1], b)
      mirrored += not np.array_equal(a, b)
  assert 3 <= mirrored <= 21
  bright = ml_collections.ConfigDict(dict(flip=False, crop_fraction=1.0, brightness=0.1))
  shifted = _take(pipeline.train_batches(seqs, 8, seed=5, augment=bright), 1)[0]["image"]
  diff = shifted.astype(int) - plain[0]["image"].astype(int)
  assert np.abs(diff).max() <= 26 and np.abs(diff).max() > 0


def test_hosts_split_the_global_batch():
  seqs = _seqs()
  whole = _take(pipeline.train_batches(seqs, 8, seed=2, augment=_augment()), 6)
  hosts = [_take(pipeline.train_batches(seqs, 8, seed=2, augment=_augment(), process_index=p,
                                        process_count=2), 6) for p in (0, 1)]
  for s in range(6):
    assert hosts[0][s]["image"].shape[0] == 4
    np.testing.assert_array_equal(
        np.concatenate([hosts[0][s]["image"], hosts[1][s]["image"]]), whole[s]["image"])
    np.testing.assert_array_equal(
        np.concatenate([hosts[0][s]["label"], hosts[1][s]["label"]]), whole[s]["label"])
  with pytest.raises(ValueError, match="multiple of process_count"):
    pipeline.train_batches(seqs, 9, seed=0, process_count=2)


@pytest.mark.parametrize("process_count", [1, 2])
def test_eval_batches_exact(process_count):
  seqs = _seqs()
  hosts = [list(pipeline.eval_batches(seqs, 8, process_index=p, process_count=process_count))
           for p in range(process_count)]
  assert all(len(h) == 5 for h in hosts)  # ceil(37 / 8) on every host.
  order = []
  for s in range(5):
    for h in hosts:
      b = h[s]
      assert b["image"].shape == (8 // process_count, SIZE, SIZE, 3) and b["mask"].dtype == bool
      assert not b["image"][~b["mask"]].any() and not b["label"][~b["mask"]].any()
      order.extend(zip(_index(b["image"][b["mask"]]), b["label"][b["mask"]]))
  assert [i for i, _ in order] == list(range(37))  # Every frame once, in sequence order.
  np.testing.assert_array_equal([l for _, l in order], np.concatenate(seqs.labels))


def test_sequence_arrays_round_trip():
  seqs = _seqs()
  values = np.stack([np.arange(37.0), -np.arange(37.0)], 1).astype(np.float32)
  x, tags, mask = pipeline.sequence_arrays(seqs, values)
  assert x.shape == (6, 11, 2) and tags.shape == (6, 11) and tags.dtype == np.int32
  np.testing.assert_array_equal(mask.sum(1), LENGTHS)
  np.testing.assert_array_equal(x[mask], values)
  assert not x[~mask].any() and not tags[~mask].any()
  start = 0
  for n, (length, lab) in enumerate(zip(LENGTHS, seqs.labels)):
    np.testing.assert_array_equal(x[n, :length, 0], start + np.arange(length))
    np.testing.assert_array_equal(tags[n, :length], lab)
    start += length
  with pytest.raises(ValueError, match="num_frames"):
    pipeline.sequence_arrays(seqs, values[:-1])


def test_load_sequences_synthetic(tmp_path):
  config = default.get_config()
  with config.unlocked():
    config.data.data_dir = str(tmp_path)
    config.data.image_size = 16
    config.data.synthetic.update(num_subjects=3, sequences_per_subject=2, min_length=3, max_length=5)
  seqs = pipeline.load_sequences(config.data)
  drawn = {r["sequence"]: r for r in synthetic.generate(3, 2, 3, 5, 16, 0)}
  assert len(seqs) == 6 and seqs.class_names == synthetic.BASIC7
  for f, l, s, n, p in zip(seqs.frames, seqs.labels, seqs.subjects, seqs.names, seqs.landmarks):
    np.testing.assert_array_equal(f, drawn[n]["frames"])
    np.testing.assert_array_equal(l, drawn[n]["labels"])
    np.testing.assert_array_equal(p, drawn[n]["landmarks"])
    assert s == drawn[n]["subject"]
