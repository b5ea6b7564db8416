"""CK+, MMI and GEMEP-FERA builders end to end on tiny fake copies of each database."""
import logging
import os
import shutil

import numpy as np
import pytest
import skimage.data
import tensorflow_datasets as tfds

from configs import default
from fer_jax import errors
from fer_jax.data import actors
from fer_jax.data import labels as L
from fer_jax.data import registration
from fer_jax.data.builders import ck_plus, common, fera, mmi
import fake_databases as fake

SIZE = 32
CK_SEQS = [("S005", "001", "3.0000000e+00", 5),  # disgust
           ("S005", "002", "5.0000000e+00", 4),  # happy
           ("S010", "001", "2.0000000e+00", 3),  # contempt
           ("S011", "003", "7.0000000e+00", 1)]  # surprise, one frame


def _config(name, root, **changes):
  d = default.get_config().data
  d.name, d.data_dir, d.manual_dir = name, str(root / "tfds"), str(root / name)
  d.image_size, d.register = SIZE, False
  for k, v in changes.items():
    setattr(d, k, v)
  return d


def _load(builder):
  builder.download_and_prepare()
  return {split: {ex["sequence"].decode(): ex for ex in tfds.as_numpy(builder.as_dataset(split=split))}
          for split in builder.info.splits}


@pytest.fixture(scope="module")
def ck_root(tmp_path_factory):
  root = tmp_path_factory.mktemp("ck")
  truth = fake.write_ck_plus(str(root / "ck_plus"), CK_SEQS, size=SIZE)
  return root, truth


def test_ck_plus_records(ck_root):
  root, truth = ck_root
  builder = ck_plus.make_builder(_config("ck_plus", root))
  records = _load(builder)["train"]
  assert sorted(records) == ["S005/001", "S005/002", "S011/003"]  # Contempt and unlabelled left out.
  expected = {"S005/001": [0, 0, 0, 2, 2], "S005/002": [0, 0, 0, 4], "S011/003": [6]}
  for name, ex in records.items():
    np.testing.assert_array_equal(ex["labels"], expected[name])
    np.testing.assert_array_equal(ex["frames"], truth[name][0])  # Grey PNGs -> 3 equal channels.
    assert ex["subject"].decode() == name[:4]
    # register=False: the detector finds no face in 32-px cartoons, so every point is NaN.
    assert ex["landmarks"].shape == (len(expected[name]), 68, 2) and ex["landmarks"].dtype == np.float32
    assert np.isnan(ex["landmarks"]).all()
  assert builder.info.features["labels"].feature.names == list(
      ("neutral", "anger", "disgust", "fear", "happiness", "sadness", "surprise"))


def test_ck_plus_variants(ck_root):
  root, _ = ck_root
  base = ck_plus.make_builder(_config("ck_plus", root))
  contempt = ck_plus.make_builder(_config("ck_plus", root, keep_contempt=True, neutral_head=1))
  records = _load(contempt)["train"]
  assert len(records) == 4
  np.testing.assert_array_equal(records["S010/001"]["labels"], [0, 7, 7])
  np.testing.assert_array_equal(records["S005/001"]["labels"], [0, 2, 2, 2, 2])
  names = {ck_plus.make_builder(_config("ck_plus", root, **kw)).data_dir for kw in (
      {}, {"image_size": 48}, {"register": True}, {"neutral_head": 1}, {"keep_contempt": True},
      {"register": True, "use_database_landmarks": False}, {"skip_unreadable": True})}
  assert len(names) == 7 and base.data_dir in names


def test_ck_plus_registration_with_astronaut(tmp_path):
  photo = skimage.data.astronaut()
  frames = np.stack([photo, np.roll(photo, (6, -4), axis=(0, 1)), photo])
  reg = registration.Registrar(64, common.REDETECT_EVERY)
  pts = reg.landmarks(photo, reg.detect(photo))
  fake.write_ck_plus(str(tmp_path / "ck_plus"), [("S001", "001", "4.0", 3), ("S001", "002", "1.0", 3)],
                     grey=False, frames={("S001", "001"): frames, ("S001", "002"): frames[:3]},
                     landmarks={("S001", "002"): [pts + (5, 0)] * 3}, extra_unlabelled=False)
  records = _load(ck_plus.make_builder(_config("ck_plus", tmp_path, register=True,
                                               image_size=64)))["train"]
  detected, _ = reg.register_sequence(frames)
  np.testing.assert_array_equal(records["S001/001"]["frames"], detected)
  # The second sequence ships landmarks: registration uses them, not the detector.
  np.testing.assert_array_equal(records["S001/002"]["frames"][0], reg.align(photo, pts + (5, 0)))
  assert not np.array_equal(records["S001/002"]["frames"][0], detected[0])
  # Landmarks in crop pixels: the eye centres sit where registration's template puts them, (0.30,
  # 0.38) S and (0.70, 0.38) S (within 5 % of S; the fit is least squares over 13 rigid points).
  for name in ("S001/001", "S001/002"):
    lm = records[name]["landmarks"]
    assert lm.shape == (3, 68, 2) and lm.dtype == np.float32
    eyes = np.stack([lm[:, 36:42].mean(1), lm[:, 42:48].mean(1)], axis=1)  # [T, 2, 2]
    np.testing.assert_allclose(eyes, np.broadcast_to([[0.30 * 64, 0.38 * 64], [0.70 * 64, 0.38 * 64]],
                                                     eyes.shape), atol=0.05 * 64)


def test_no_face_raises_or_skips(tmp_path, caplog):
  blank = np.full((3, 64, 64, 3), 120, np.uint8)
  fake.write_ck_plus(str(tmp_path / "ck_plus"), [("S001", "001", "4.0", 3), ("S002", "001", "1.0", 3)],
                     frames={("S001", "001"): blank, ("S002", "001"): blank}, extra_unlabelled=False)
  with pytest.raises(registration.NoFaceError, match="S001/001"):
    ck_plus.make_builder(_config("ck_plus", tmp_path, register=True)).download_and_prepare()
  with caplog.at_level(logging.WARNING):
    builder = ck_plus.make_builder(_config("ck_plus", tmp_path, register=True, skip_unreadable=True))
    with pytest.raises(common.ManualDataError, match="every sequence was skipped"):
      _load(builder)
  assert "skipped 2 of 2 sequences" in caplog.text


def test_missing_and_partial_manual_dir(tmp_path):
  cfg = _config("ck_plus", tmp_path)
  with pytest.raises(common.ManualDataError) as e:  # Missing folder, through TFDS's own entry point.
    ck_plus.make_builder(cfg).download_and_prepare()
  assert "cohn-kanade-images/S005/001" in str(e.value) and "does not exist" in str(e.value)
  fake.write_ck_plus(str(tmp_path / "ck_plus"), CK_SEQS[:2])
  shutil.rmtree(tmp_path / "ck_plus" / "extended-cohn-kanade-images")
  with pytest.raises(common.ManualDataError, match="no cohn-kanade-images folder(.|\n)*Emotion_labels"):
    ck_plus.make_builder(cfg).download_and_prepare()
  os.makedirs(tmp_path / "ck_plus" / "cohn-kanade-images" / "S005" / "002")
  with pytest.raises(common.ManualDataError, match="1 labelled sequences have no frame folder.*S005"):
    ck_plus.make_builder(cfg).download_and_prepare()
  for name, module in (("mmi", mmi), ("fera", fera)):
    with pytest.raises(common.ManualDataError, match="Expected:(.|\n)*licensed"):
      module.make_builder(_config(name, tmp_path)).download_and_prepare()


def test_ck_plus_bad_files(tmp_path, caplog):
  root = tmp_path / "ck_plus"
  fake.write_ck_plus(str(root), CK_SEQS[:2], extra_unlabelled=False)
  frames = root / "extended-cohn-kanade-images" / "cohn-kanade-images"
  bad = frames / "S005" / "002" / "S005_002_00000002.png"
  bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
  with pytest.raises(registration.UnreadableImageError, match="S005_002_00000002.png"):
    ck_plus.make_builder(_config("ck_plus", tmp_path)).download_and_prepare()
  with caplog.at_level(logging.WARNING):
    records = _load(ck_plus.make_builder(_config("ck_plus", tmp_path, skip_unreadable=True)))["train"]
  assert sorted(records) == ["S005/001"] and "skipped 1 of 2" in caplog.text
  for f in (frames / "S005" / "002").glob("*.png"):  # An empty sequence.
    f.unlink()
  with pytest.raises(common.EmptySequenceError, match="S005/002"):
    ck_plus.make_builder(_config("ck_plus", tmp_path, image_size=30)).download_and_prepare()
  emotion = next((root / "Emotion_labels" / "Emotion" / "S005" / "001").glob("*_emotion.txt"))
  emotion.write_text("   9.0000000e+00\n")
  with pytest.raises(ValueError, match="S005_001_00000005_emotion.txt.*unknown CK"):
    ck_plus.make_builder(_config("ck_plus", tmp_path, image_size=31)).download_and_prepare()


@pytest.mark.parametrize("text, match", [
    ("   1.0000000e+02   2.0000000e+02\n" * 67, "expected 68 rows.*got shape \\(67, 2\\)"),
    ("   1.0000000e+02   abc\n" * 68, "Cannot read CK\\+ landmarks file"),
    ("   1.0   2.0   3.0\n" * 68, "got shape \\(68, 3\\)"),
    ("", "got shape \\(0, "),
])
def test_ck_plus_malformed_landmarks(tmp_path, text, match):
  root = tmp_path / "ck_plus"
  good = np.tile([[100.0, 200.0]], (68, 1))
  fake.write_ck_plus(str(root), CK_SEQS[:1], landmarks={("S005", "001"): [good] * 5},
                     extra_unlabelled=False)
  bad = root / "Landmarks" / "S005" / "001" / "S005_001_00000003_landmarks.txt"
  bad.write_text(text)
  with pytest.raises(common.ManualDataError, match=(  # Names the file, the fault and the fix.
      f"(?s)(?=.*S005_001_00000003_landmarks.txt)(?=.*{match})(?=.*use_database_landmarks=False)")):
    ck_plus.make_builder(_config("ck_plus", tmp_path, register=True)).download_and_prepare()


def _oao(*units):
  """-oao_aucs.xml text: units are (AU number, [(frame, type), ...]) with markers in the given order."""
  body = "".join(f'  <ActionUnit Number="{n}">\n' + "".join(
      f'    <Marker Frame="{f}" Type="{t}"/>\n' for f, t in markers) + "  </ActionUnit>\n"
      for n, markers in units)
  return f'<?xml version="1.0" encoding="utf-8"?>\n<ActionUnits>\n{body}</ActionUnits>\n'


# Shaped like the real files: several AUs, a Type-0 (neutral) marker at frame 1, markers out of frame
# order, an AU (25) with no offset. Types: 0 neutral, 1 onset, 2 apex, 3 offset.
OAO_RETURN = _oao(("12", [(31, 3), (1, 0), (12, 1), (40, 0), (20, 2)]),
                  ("6", [(1, 0), (15, 1), (22, 2), (35, 3), (44, 0)]),
                  ("25", [(1, 0), (10, 1), (18, 2)]))
# Old rule min/max over every marker: 1 .. 44. New: onset min(12, 15, 10) = 10; returns to neutral
# after an offset: AU12 at 40, AU6 at 44 (frame-1 markers precede every offset); latest 44 -> last
# expressive frame 43.
OAO_NO_RETURN = _oao(("4", [(14, 3), (1, 0), (5, 1), (9, 2)]), ("7", [(16, 3), (6, 1)]))
# Old: 1 .. 16. New: onset 5; no Type-0 after an offset; latest offset 16 -> 5 .. 16.
OAO_NO_OFFSET = _oao(("26", [(1, 0), (8, 2), (4, 1)]), ("27", [(1, 0)]))
# Old: 1 .. 8. New: onset 4, no offset anywhere -> to the end of the video.
OAO_NO_ONSET = _oao(("1", [(1, 0), (5, 2), (9, 3)]))
# Old: 1 .. 9. New: no Type-1 marker -> None (the neutral_fraction rule applies).
# A 9-frame session: AU12 1@3 2@4 3@5 0@7 (unsorted), AU6 1@4 3@6 (no return), AU25 1@4 2@5 (no offset).
# Old: 1 .. 7. New: onset 3; latest return 7 -> frames 3 .. 6 carry the emotion.
OAO_SESSION = _oao(("12", [(5, 3), (1, 0), (3, 1), (7, 0), (4, 2)]), ("6", [(1, 0), (4, 1), (6, 3)]),
                   ("25", [(1, 0), (5, 2), (4, 1)]))


def test_mmi_markers(tmp_path):
  spans = {}
  for name, text in (("return", OAO_RETURN), ("no_return", OAO_NO_RETURN),
                     ("no_offset", OAO_NO_OFFSET), ("no_onset", OAO_NO_ONSET)):
    path = tmp_path / f"S001-001-{name}.xml"
    path.write_text(text)
    spans[name] = mmi.read_onset_offset(str(path))
  assert spans == {"return": (10, 43), "no_return": (5, 16), "no_offset": (4, None), "no_onset": None}
  assert mmi.read_markers(str(tmp_path / "S001-001-no_return.xml")) == {
      "4": [(1, 0), (5, 1), (9, 2), (14, 3)], "7": [(6, 1), (16, 3)]}
  # Per-frame labels (happiness = 4) of a 50-frame video with the first file: 9 neutral frames, the
  # expression on frames 10 .. 43, neutral again from the return to neutral at 44.
  labels = L.mmi_frame_labels(50, 4, 0.25, onset=10, offset=43)
  np.testing.assert_array_equal(labels, [0] * 9 + [4] * 34 + [0] * 7)
  np.testing.assert_array_equal(L.mmi_frame_labels(10, 4, 0.25, onset=4, offset=None),
                                [0, 0, 0, 4, 4, 4, 4, 4, 4, 4])
  for bad, match in (((7, "7"), "Type '7'"), ((0, "1"), "Frame '0'"), (("x", "1"), "Frame 'x'")):
    path = tmp_path / "S001-001-bad.xml"
    path.write_text(_oao(("12", [(1, 0), bad])))
    with pytest.raises(ValueError, match=f"S001-001-bad.xml: ActionUnit 12: marker {match}"):
      mmi.read_onset_offset(str(path))


MMI_SESSIONS = [
    (2, "S001-002", "4", 8, "0", None, False),  # happiness, fraction rule
    (5, "S001-003", "6", 9, "0", OAO_SESSION, False),  # surprise, annotated: frames 3 .. 6
    (9, "S002-001", "1", 6, "0", None, False),  # anger
    (11, "S002-002", "3", 4, "1", None, False),  # profile view: left out
    (12, "S003-001", "2", 4, "0", None, True),  # stills: left out
    (13, "S003-002", "7", 4, "0", None, False),  # not a basic-six code: left out
    (14, "S003-003", None, 4, "0", None, False),  # no emotion: left out
    (15, "S003-004", "5", 4, "2", None, False),  # sadness, dual view: kept (registration picks the half)
]


def test_mmi_records(tmp_path):
  truth = fake.write_mmi(str(tmp_path / "mmi"), MMI_SESSIONS, size=SIZE)
  records = _load(mmi.make_builder(_config("mmi", tmp_path)))["train"]
  assert sorted(records) == ["S001-002", "S001-003", "S002-001", "S003-004"]
  expected = {"S001-002": [0, 0, 4, 4, 4, 4, 0, 0], "S001-003": [0, 0, 6, 6, 6, 6, 0, 0, 0],
              "S002-001": [0, 1, 1, 1, 1, 0], "S003-004": [0, 5, 5, 0]}
  for name, ex in records.items():
    np.testing.assert_array_equal(ex["labels"], expected[name])
    np.testing.assert_array_equal(ex["frames"], truth[name][0])  # Lossless AVI round trip.
    assert ex["subject"].decode() == name[:4]
  other = _load(mmi.make_builder(_config("mmi", tmp_path, neutral_fraction=0.1)))["train"]
  np.testing.assert_array_equal(other["S002-001"]["labels"], [1] * 6)  # floor(0.6) = 0 per end.
  next((tmp_path / "mmi").rglob("S002-001.avi")).unlink()  # Partial download: a video is missing.
  with pytest.raises(common.ManualDataError, match="1 sessions have metadata but neither(.|\n)*S002-001"):
    mmi.make_builder(_config("mmi", tmp_path, image_size=30)).download_and_prepare()


def test_mmi_bad_emotion(tmp_path):
  fake.write_mmi(str(tmp_path / "mmi"), [(2, "S001-002", "x", 3, "0", None, False)], size=SIZE)
  with pytest.raises(ValueError, match="S001-002.xml: Emotion value 'x'"):
    mmi.make_builder(_config("mmi", tmp_path)).download_and_prepare()


def test_fera_splits(tmp_path):
  truth = fake.write_fera(str(tmp_path / "fera"),
                          train=[("actor01", "train_001", "relief", 4), ("actor01", "train_002", "joy", 3),
                                 ("actor02", "train_003", "anger", 2)],
                          test=[("actor05", "test_001", "sadness", 3), ("actor06", "test_002", "fear", 1)],
                          size=SIZE)
  splits = _load(fera.make_builder(_config("fera", tmp_path)))
  assert sorted(splits["train"]) == ["train_001", "train_002", "train_003"]
  assert sorted(splits["test"]) == ["test_001", "test_002"]
  for part in splits.values():
    for name, ex in part.items():
      frames, word, _ = truth[name]
      np.testing.assert_array_equal(ex["labels"], [("anger", "fear", "joy", "relief", "sadness").index(
          word)] * len(frames))
      np.testing.assert_array_equal(ex["frames"], frames)
  assert {ex["subject"].decode() for ex in splits["train"].values()} == {"actor01", "actor02"}
  assert {ex["subject"].decode() for ex in splits["test"].values()} == {"actor05", "actor06"}
  (tmp_path / "fera" / "GEMEP-FERA" / "test" / "labels" / "test_002.dat").unlink()
  with pytest.raises(common.ManualDataError, match="1 videos have no <name>.dat(.|\n)*test_002.avi"):
    fera.make_builder(_config("fera", tmp_path, image_size=30)).download_and_prepare()
  (tmp_path / "fera" / "GEMEP-FERA" / "test" / "labels" / "test_002.dat").write_text("boredom\n")
  with pytest.raises(ValueError, match="test_002.dat: expected exactly one FERA class word"):
    fera.make_builder(_config("fera", tmp_path, image_size=30)).download_and_prepare()


def test_index_csv(tmp_path):
  """Another layout described by index.csv: a frame folder and a video, FERA splits from a column."""
  truth = fake.write_mmi(str(tmp_path / "src"), [(1, "S001-001", "5", 4, "0", None, False)], size=SIZE)
  for name in ("mmi", "fera"):
    root = tmp_path / name
    os.makedirs(root / "clips" / "a")
    frames = truth["S001-001"][0]
    for t, f in enumerate(frames):  # img9 .. img12: the numbers decide the order, not the names.
      fake.Image.fromarray(f).save(root / "clips" / "a" / f"img{t + 9}.png")
    video = next((tmp_path / "src").rglob("*.avi"))
    shutil.copy(video, root / "clips" / "b.avi")
    (root / "index.csv").write_text("path,subject,sequence,label,split\n"
                                    "clips/a,P1,seq_a,sadness,train\nclips/b.avi,P2,seq_b,fear,test\n")
  with pytest.raises(ValueError, match="index.csv names \\['test'\\]"):
    mmi.make_builder(_config("mmi", tmp_path)).download_and_prepare()
  splits = _load(fera.make_builder(_config("fera", tmp_path)))
  (a,), (b,) = splits["train"].values(), splits["test"].values()
  np.testing.assert_array_equal(a["frames"], truth["S001-001"][0])
  np.testing.assert_array_equal(b["frames"], truth["S001-001"][0])
  np.testing.assert_array_equal(a["labels"], [4] * 4)  # FERA5 sadness
  np.testing.assert_array_equal(b["labels"], [1] * 4)  # FERA5 fear
  assert (a["subject"], b["subject"]) == (b"P1", b"P2")
  (tmp_path / "fera" / "index.csv").write_text("path,subject,sequence,label\nclips/a,P1,s,disgust\n")
  with pytest.raises(ValueError, match="index.csv line 2: unknown label 'disgust'"):
    fera.make_builder(_config("fera", tmp_path, image_size=30)).download_and_prepare()


def test_through_pipeline(tmp_path):
  """The project's loader (pipeline.load_sequences) surfaces the builder's own errors and records."""
  from fer_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  with pytest.raises(common.ManualDataError, match="GEMEP-FERA is licensed"):
    pipeline.load_sequences(_config("fera", tmp_path), split="test")
  fake.write_fera(str(tmp_path / "fera"), train=[("a1", "t1", "fear", 2)], test=[("a2", "t2", "joy", 3)],
                  size=SIZE)
  seqs = pipeline.load_sequences(_config("fera", tmp_path), split="test")
  assert seqs.class_names == ("anger", "fear", "joy", "relief", "sadness")
  assert list(seqs.names) == ["t2"] and list(seqs.subjects) == ["a2"]
  np.testing.assert_array_equal(seqs.labels[0], [2, 2, 2])


@pytest.mark.parametrize("name", ["mmi", "fera"])
def test_bad_videos_raise_or_skip(tmp_path, caplog, name):
  """A truncated and a zero-frame AVI raise the media module's errors naming the file, or are skipped
  and counted with data.skip_unreadable."""
  if name == "mmi":
    fake.write_mmi(str(tmp_path / "mmi"), [(1, "S001-001", "4", 6, "0", None, False),
                                           (2, "S002-001", "5", 6, "0", None, False),
                                           (3, "S003-001", "6", 5, "0", None, False)], size=SIZE)
    videos = {v.stem: v for v in (tmp_path / "mmi").rglob("*.avi")}
    good, truncated, empty = videos["S001-001"], videos["S002-001"], videos["S003-001"]
  else:
    fake.write_fera(str(tmp_path / "fera"), train=[("d1", "t1", "joy", 6), ("d2", "t2", "fear", 6),
                                                   ("d3", "t3", "anger", 5)],
                    test=[("d4", "s1", "relief", 3)], size=SIZE)
    videos = {v.stem: v for v in (tmp_path / "fera").rglob("*.avi")}
    good, truncated, empty = videos["t1"], videos["t2"], videos["t3"]
  fake.truncate(str(truncated), 0.6)
  with pytest.raises(errors.UnreadableVideoError, match=f"{truncated.name}: .*truncated or corrupt"):
    module = {"mmi": mmi, "fera": fera}[name]
    module.make_builder(_config(name, tmp_path)).download_and_prepare()
  fake.write_empty_video(str(empty), SIZE)
  truncated.unlink()  # Now the zero-frame video is the first bad one.
  shutil.copy(good, truncated)
  with pytest.raises(errors.EmptySequenceError, match=f"{empty.name} has no"):
    module.make_builder(_config(name, tmp_path, image_size=30)).download_and_prepare()
  fake.truncate(str(truncated), 0.6)
  with caplog.at_level(logging.WARNING):
    builder = module.make_builder(_config(name, tmp_path, skip_unreadable=True))
    records = _load(builder)["train"]
  assert sorted(records) == [good.stem]
  assert "skipped 2 of 3 sequences" in caplog.text
  assert sorted(builder.info.metadata["skipped"]["train"]) == sorted([str(truncated), str(empty)])


def test_fera_actors_from_real_faces(tmp_path):
  """FERA videos of real people: the subject is the actor, the same id in train and test."""
  import test_actors  # pylint: disable=g-import-not-at-top
  videos = {name: np.stack(frames) for name, (frames, _) in test_actors.real_videos().items()
            if name in ("a1", "a2", "b1", "b2", "g0", "g1")}
  # One folder per video, as in the public copies: the folders say nothing about the actors.
  train = [("v1", "a1", "joy", 0), ("v2", "b1", "sadness", 0), ("v3", "b2", "joy", 0),
           ("v4", "g1", "relief", 0)]
  test = [("v5", "a2", "anger", 0), ("v6", "g0", "fear", 0)]
  fake.write_fera(str(tmp_path / "fera"), train=train, test=test, frames=videos)
  builder = fera.make_builder(_config("fera", tmp_path))
  splits = _load(builder)
  subject = {name: ex["subject"].decode() for part in splits.values() for name, ex in part.items()}
  # Clusters numbered by first video (train first): man A, woman B, group 1, then group 0.
  assert subject == {"a1": "actor01", "b1": "actor02", "b2": "actor02", "g1": "actor03",
                     "a2": "actor01", "g0": "actor04"}
  expected = {"train": 3, "test": 2, "shared": 1, "shared_ids": ["actor01"], "threshold": 0.6,
              "videos_without_face": 0}
  assert dict(builder.info.metadata["actors"]) == expected
  reloaded = fera.make_builder(_config("fera", tmp_path))  # Read back from the prepared data set.
  assert dict(reloaded.info.metadata["actors"]) == expected
  test_subjects = [subject[n] for n in sorted(splits["test"])]  # a2, g0
  np.testing.assert_array_equal(actors.unseen_in_training(test_subjects, [
      subject[n] for n in splits["train"]]), [False, True])
  # register=False: landmarks of the real faces from the predictor, in the 32-px frame: all found,
  # inside the frame, eyes above the mouth, the image-left eye left of the image-right eye.
  for ex in splits["train"].values():
    lm = ex["landmarks"]
    assert np.isfinite(lm).all() and (lm > -1).all() and (lm < SIZE).all()
    assert (lm[:, 36:48, 1].mean(1) < lm[:, 48:68, 1].mean(1)).all()
    assert (lm[:, 36:42, 0].mean(1) < lm[:, 42:48, 0].mean(1)).all()
