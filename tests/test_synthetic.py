"""The synthetic data set: drawing, labelling rule, determinism, TFDS round trip, temporal ambiguity."""
import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import default
from fer_jax.data import builders
from fer_jax.data import synthetic


def _records(**kw):
  args = dict(num_subjects=3, sequences_per_subject=6, min_length=5, max_length=9, size=24, seed=0)
  args.update(kw)
  return list(synthetic.generate(**args))


def test_generate_is_deterministic_and_seed_dependent():
  a, b, c = _records(), _records(), _records(seed=1)
  assert [r["sequence"] for r in a] == [r["sequence"] for r in b]
  for ra, rb in zip(a, b):
    np.testing.assert_array_equal(ra["frames"], rb["frames"])
    np.testing.assert_array_equal(ra["labels"], rb["labels"])
    np.testing.assert_array_equal(ra["landmarks"], rb["landmarks"])
  assert not all(ra["frames"].shape == rc["frames"].shape and np.array_equal(ra["frames"], rc["frames"])
                 for ra, rc in zip(a, c))


def test_records_format_balance_and_labels():
  recs = _records(num_subjects=4)
  assert len(recs) == 24
  ends_neutral = 0
  for r in recs:
    f, l = r["frames"], r["labels"]
    assert f.dtype == np.uint8 and f.shape[1:] == (24, 24, 3) and 5 <= len(f) <= 9
    assert l.dtype == np.int32 and l.shape == (len(f),)
    emotions = set(l.tolist()) - {0}
    assert len(emotions) == 1 and l[0] == 0  # Neutral head, one emotion.
    # The emotion frames are one contiguous run (neutral -> apex [-> neutral]).
    on = np.flatnonzero(l)
    assert np.all(np.diff(on) == 1)
    ends_neutral += l[-1] == 0
  assert ends_neutral == 12  # Kinds alternate: half MMI-like.
  for i in range(4):  # Each subject shows each of the six emotions once.
    subj = [r for r in recs if r["subject"] == f"S{i + 1:03d}"]
    assert sorted(int(r["labels"].max()) for r in subj) == [1, 2, 3, 4, 5, 6]


class _ScriptedRng:
  """A Generator whose next `uniform` / `integers` draws are scripted as (method, bounds, value);
  each scripted draw checks the bounds it is asked for. Every other draw comes from a real Generator."""

  def __init__(self, script, seed=0):
    self._script = list(script)
    self._rng = np.random.default_rng(seed)

  def __getattr__(self, name):
    if self._script and self._script[0][0] == name:
      _, bounds, value = self._script.pop(0)

      def draw(*args):
        assert args == bounds, (name, args, bounds)
        return value
      return draw
    return getattr(self._rng, name)


# Hand-computed, 11 frames, emotion 4: intensity = apex * smoothstep(ramp), smoothstep(r) = r^2 (3 - 2r);
# a frame is neutral (0) when its intensity is below 0.3.
#   onset_apex, rise over round(10 * share) frames, ramp = min(t / rise, 1):
#     apex 1.0, share 1.0: t = 3 -> 0.216, t = 4 -> 0.352.
#     apex 0.62, share 0.6: t = 2 -> 0.62 * 7/27 = 0.161, t = 3 -> 0.62 * 0.5 = 0.31.
#   onset_apex_offset, peak 4, hold 1 (the fall starts at t = 5 and reaches 0 at t = 10):
#     ramp 0, .25, .5, .75, 1, 1, .8, .6, .4, .2, 0 -> smoothstep 0, .156, .5, .844, 1, 1, .896, .648,
#     .352, .104, 0; apex 1.0 keeps t = 8 (0.352), apex 0.85 drops it (0.2992).
# So a threshold anywhere outside (0.2992, 0.31] fails one of the cases.
@pytest.mark.parametrize("kind,script,expected", [
    ("onset_apex", [("uniform", (0.6, 1.0), 1.0), ("uniform", (0.6, 1.0), 1.0)],
     [0, 0, 0, 0, 4, 4, 4, 4, 4, 4, 4]),
    ("onset_apex", [("uniform", (0.6, 1.0), 0.62), ("uniform", (0.6, 1.0), 0.6)],
     [0, 0, 0, 4, 4, 4, 4, 4, 4, 4, 4]),
    ("onset_apex_offset", [("uniform", (0.6, 1.0), 1.0), ("integers", (1, 10), 4),
                           ("integers", (0, 3), 1)],
     [0, 0, 4, 4, 4, 4, 4, 4, 4, 0, 0]),
    ("onset_apex_offset", [("uniform", (0.6, 1.0), 0.85), ("integers", (1, 10), 4),
                           ("integers", (0, 3), 1)],
     [0, 0, 4, 4, 4, 4, 4, 4, 0, 0, 0]),
])
def test_labels_follow_intensity_threshold(kind, script, expected):
  subject = synthetic.make_subject(np.random.default_rng(3))
  rng = _ScriptedRng(script)
  frames, labels = synthetic.draw_sequence(subject, 4, 11, kind, 24, rng)
  assert not rng._script  # pylint: disable=protected-access  (every scripted draw was used)
  np.testing.assert_array_equal(labels, expected)
  assert frames.shape == (11, 24, 24, 3)


@pytest.mark.parametrize("kind", synthetic.KINDS)
def test_labels_start_neutral_and_end_as_documented(kind):
  subject = synthetic.make_subject(np.random.default_rng(3))
  for seed in range(5):
    _, labels = synthetic.draw_sequence(subject, 4, 11, kind, 24, np.random.default_rng(seed))
    assert set(labels.tolist()) == {0, 4} and labels[0] == 0
    assert (labels[-1] == 0) == (kind == "onset_apex_offset")
    run = np.flatnonzero(labels)  # One contiguous emotion run.
    assert np.all(np.diff(run) == 1)


def test_bad_arguments_raise():
  subject = synthetic.make_subject(np.random.default_rng(0))
  rng = np.random.default_rng(0)
  with pytest.raises(ValueError, match="emotion"):
    synthetic.draw_sequence(subject, 0, 5, "onset_apex", 24, rng)
  with pytest.raises(ValueError, match="kind"):
    synthetic.draw_sequence(subject, 1, 5, "apex", 24, rng)
  with pytest.raises(ValueError, match="too short"):
    synthetic.draw_sequence(subject, 1, 2, "onset_apex_offset", 24, rng)
  with pytest.raises(ValueError, match="intensity"):
    synthetic.draw_frame(subject, 1, 1.5, 24, rng)
  with pytest.raises(ValueError, match="min_length"):
    next(synthetic.generate(2, 2, 8, 5, 24, 0))


def test_subjects_look_different_and_expressions_change_the_face():
  size = 48
  subjects = [synthetic.make_subject(np.random.default_rng(i)) for i in range(4)]
  assert len({s.eye_dist for s in subjects}) == 4 and len({s.skin for s in subjects}) == 4
  # Same pose/noise draw (same rng seed), different subjects: far apart.
  neutral = [synthetic.draw_frame(s, 0, 0.0, size, np.random.default_rng(0)).astype(float)
             for s in subjects]
  between = min(np.abs(a - b).mean() for i, a in enumerate(neutral) for b in neutral[i + 1:])
  # Same subject and draw, full expression vs neutral: a visible but local change.
  s = subjects[0]
  for emotion in range(1, 7):
    apex = synthetic.draw_frame(s, emotion, 1.0, size, np.random.default_rng(0)).astype(float)
    change = np.abs(apex - neutral[0]).mean()
    assert 0.5 < change < between, (emotion, change, between)
  f = synthetic.draw_frame(s, 2, 0.5, size, np.random.default_rng(0))
  assert f.shape == (size, size, 3) and f.dtype == np.uint8


def test_single_frames_ambiguous_sequences_not():
  """Per-frame nearest centroid (per subject, on 2x2-pooled pixels) vs a majority vote per sequence."""
  size = 32
  recs = _records(num_subjects=10, sequences_per_subject=12, min_length=8, max_length=14, size=size)

  def feat(frames):
    x = frames.astype(np.float32).mean(-1).reshape(len(frames), size // 2, 2, size // 2, 2)
    x = x.mean((2, 4)).reshape(len(frames), -1)
    x -= x.mean(1, keepdims=True)
    return x / (x.std(1, keepdims=True) + 1e-6)

  frame_hits, seq_hits = [], []
  for i in range(10):
    subj = [r for r in recs if r["subject"] == f"S{i + 1:03d}"]
    train, test = subj[:6], subj[6:]  # Same six emotions again, new draws.
    x = np.concatenate([feat(r["frames"]) for r in train])
    y = np.concatenate([r["labels"] for r in train])
    centroids = np.stack([x[y == k].mean(0) for k in range(7)])
    for r in test:
      pred = np.argmin(((feat(r["frames"])[:, None] - centroids[None]) ** 2).sum(-1), 1)
      labels = r["labels"]
      frame_hits.append(pred[labels > 0] == labels[labels > 0])
      votes = np.bincount(pred[pred > 0], minlength=7)
      seq_hits.append(votes.argmax() == labels.max())
  frame_acc, seq_acc = np.concatenate(frame_hits).mean(), np.mean(seq_hits)
  assert 1 / 7 < frame_acc < 0.8, frame_acc
  assert seq_acc > frame_acc + 0.1, (frame_acc, seq_acc)


def test_builder_round_trip(tmp_path):
  config = default.get_config()
  with config.unlocked():
    config.data.data_dir = str(tmp_path)
    config.data.image_size = 32
    config.data.synthetic.update(num_subjects=6, sequences_per_subject=2, min_length=4, max_length=7)
  builder = builders.make_builder(config.data)
  assert builder.builder_config.name == "n6_q2_t4-7_s32_seed0"
  builder.download_and_prepare()
  read = {ex["sequence"].decode(): ex
          for ex in tfds.as_numpy(builder.as_dataset(split="train"))}
  drawn = list(synthetic.generate(6, 2, 4, 7, 32, 0))
  assert len(read) == len(drawn) == 12
  for r in drawn:
    ex = read[r["sequence"]]
    assert ex["subject"].decode() == r["subject"]
    np.testing.assert_array_equal(ex["frames"], r["frames"])  # PNG is lossless.
    np.testing.assert_array_equal(ex["labels"], r["labels"])
    np.testing.assert_array_equal(ex["landmarks"], r["landmarks"])
  assert builders.class_names(config.data) == synthetic.BASIC7
  with config.unlocked():  # Another size is another directory.
    config.data.image_size = 40
  assert builders.make_builder(config.data).data_dir != builder.data_dir
  registered = default.get_config()  # BUILDER_CONFIGS[0]: 60 subjects x 6 sequences, 96 px.
  with registered.unlocked():
    registered.data.image_size = 96
  assert builders.make_builder(registered.data).builder_config.name == "n60_q6_t12-24_s96_seed0"
  with registered.unlocked():  # Another difficulty is another directory too.
    registered.data.synthetic.update(noise=0.15, occlusion_prob=0.3, landmark_noise=0.06)
  assert (builders.make_builder(registered.data).builder_config.name
          == "n60_q6_t12-24_s96_seed0_noise0.15_occ0.3_lm0.06")
  with config.unlocked():
    config.data.name = "nope"
  with pytest.raises(ValueError, match="synthetic_expressions"):
    builders.make_builder(config.data)


def _clean(size=128, **kw):
  """Records drawn without pixel noise, occlusion or landmark noise (pose jitter stays)."""
  args = dict(num_subjects=2, sequences_per_subject=6, min_length=6, max_length=8, size=size, seed=0,
              noise=0.0, occlusion_prob=0.0, landmark_noise=0.0)
  args.update(kw)
  return list(synthetic.generate(**args))


def _pixel(frame, point):
  x, y = np.round(point).astype(int)
  return frame[y, x].astype(float) / 255.0


def test_landmarks_lie_on_the_drawn_parts():
  """Pixels under the landmarks have the colour of the part each point names (dlib's scheme)."""
  for r in _clean():
    subject = synthetic.make_subject(np.random.default_rng([0, int(r["subject"][1:]) - 1]))
    hair = np.array(subject.hair)
    lm = r["landmarks"]
    assert lm.shape == (len(r["frames"]), 68, 2) and lm.dtype == np.float32
    for frame, p in zip(r["frames"], lm):
      # Pupils: the centre of each eye's four lid points; the drawn pupil is near black.
      for first in (36, 42):
        centre = p[[first + 1, first + 2, first + 4, first + 5]].mean(0)
        assert _pixel(frame, centre).max() < 0.3
      # Brow points 17-26 on the brows, drawn in the hair colour (exposure scales colours by 0.85-1.15).
      for k in range(17, 27):
        assert np.abs(_pixel(frame, p[k]) - hair).max() < 0.15 * hair.max() + 0.05, k
      # Image left: 0-16 jaw, 17-21 brow, 36-41 eye, 48 mouth corner left of their mirrors.
      assert p[0, 0] < p[16, 0] and p[17, 0] < p[21, 0] < p[22, 0] < p[26, 0]
      assert p[36, 0] < p[39, 0] < p[42, 0] < p[45, 0] and p[48, 0] < p[54, 0]
      assert p[8, 1] > p[57, 1] > p[51, 1] > p[33, 1] > p[27, 1] > p[19, 1]  # Chin lowest, brows highest.


def test_open_mouth_landmarks_surround_the_opening():
  """Surprise at apex opens the mouth: the point between the inner lips (62, 66) is in the dark opening
  or on the teeth, not on lips or skin; the inner lips are further apart than at neutral."""
  seen = 0
  for r in _clean():
    if r["labels"].max() != 6 or r["labels"][-1] != 6:  # Surprise, ending at the apex (CK+-like).
      continue
    frame, p = r["frames"][-1], r["landmarks"][-1]
    colour = _pixel(frame, (p[62] + p[66]) / 2)
    dark, teeth = np.array([0.15, 0.02, 0.05]), np.array([0.9, 0.9, 0.85])
    assert min(np.abs(colour - dark).max(), np.abs(colour - teeth).max()) < 0.2, colour
    gap = lambda q: np.linalg.norm(q[66] - q[62])
    assert gap(p) > 3 * gap(r["landmarks"][0]) + 1.0
    seen += 1
  assert seen


def test_landmark_noise_is_drawn_last_and_has_its_size():
  noisy, clean = _clean(size=64, landmark_noise=0.05), _clean(size=64)
  errors, iod = [], []
  for a, b in zip(noisy, clean):
    np.testing.assert_array_equal(a["frames"], b["frames"])  # Frames do not depend on it.
    errors.append(a["landmarks"] - b["landmarks"])
    # Inter-ocular distance in pixels: eye centres (mean of the lid points) of the clean points.
    eyes = [b["landmarks"][:, [k + 1, k + 2, k + 4, k + 5]].mean(1) for k in (36, 42)]
    iod.append(np.repeat(np.linalg.norm(eyes[1] - eyes[0], axis=-1), 68 * 2))
  ratio = np.concatenate([e.reshape(-1) for e in errors]) / np.concatenate(iod)
  assert 0.04 < ratio.std() < 0.06, ratio.std()  # Pose jitter scales it by ~2%.
  assert abs(ratio.mean()) < 0.005
