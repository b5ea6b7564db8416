"""dlib face registration on real photographs (skimage's astronaut, matplotlib's Grace Hopper)."""
import logging
import os
import re

import matplotlib
import numpy as np
import pytest
import skimage.data
import skimage.transform
from PIL import Image

from bench import registration as bench_registration
from fer_jax.data import registration as R

S = 128


@pytest.fixture(scope="module")
def registrar():
  return R.Registrar(size=S, redetect_every=3)


@pytest.fixture(scope="module")
def astronaut():
  return skimage.data.astronaut()


@pytest.fixture(scope="module")
def hopper():
  path = os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")
  return np.asarray(Image.open(path).convert("RGB"))


def _eyes(registrar, image):
  """Eye centres [2, 2] of the face the detector finds in `image` (asserts there is one)."""
  box = registrar.detect(image)
  assert box is not None, "no face detected"
  return R.eye_centres(registrar.landmarks(image, box))


def _eye_error(registrar, face):
  """Max distance (px) of the re-detected eye centres from the template's (EYES * S)."""
  return np.abs(_eyes(registrar, face) - R.EYES * S).max()


def test_mean_shape_is_dlibs_symmetric_face():
  shape = R.mean_shape()
  assert shape.shape == (68, 2)
  # The predictor's mean face fills its unit detection box and is left-right symmetric: point i of
  # the 68-point scheme mirrors point m(i) about x = 0.5 (a wrong parse would not be).
  mirror = list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30, 35, 34, 33, 32, 31] + [
      45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40] + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56,
                                                         55, 64, 63, 62, 61, 60, 67, 66, 65]
  np.testing.assert_allclose(shape[mirror, 0], 1 - shape[:, 0], atol=2e-3)
  np.testing.assert_allclose(shape[mirror, 1], shape[:, 1], atol=2e-3)
  assert 0 < shape[:, 0].min() < 0.05 and 0.95 < shape[:, 0].max() < 1
  # The template puts the mean face's eye centres exactly where the old template did.
  tform = skimage.transform.SimilarityTransform.from_estimate(shape[list(R.RIGID)], R.template())
  np.testing.assert_allclose(tform(R.eye_centres(shape)), R.EYES, atol=1e-9)


def test_eyes_on_template(registrar, astronaut):
  face = registrar.register_image(astronaut)
  assert face.shape == (S, S, 3) and face.dtype == np.uint8
  assert _eye_error(registrar, face) < 3.0
  # Negative control: in the unregistered photo, merely resized to S, the eyes are far off the template.
  assert np.abs(_eyes(registrar, astronaut) * S / 512 - R.EYES * S).max() > 10.0


def test_known_similarity():
  """Landmarks = the template scaled by 2 and shifted give the inverse map (hand-computed)."""
  reg = R.Registrar(size=150)
  mean = R.mean_shape()
  fit = skimage.transform.SimilarityTransform.from_estimate(mean[list(R.RIGID)], R.template())
  pts = fit(mean) * 150 * 2 + (10, 20)  # All 68 points of the mean face, at twice the crop scale.
  got = reg.transform(pts)
  np.testing.assert_allclose(got.params, [[0.5, 0, -5], [0, 0.5, -10], [0, 0, 1]], atol=1e-9)
  image = np.zeros((400, 400, 3), np.uint8)
  image[120, 100] = 255
  frame = reg.registered(image, pts, "database")
  assert frame.face[50, 45].tolist() == [255, 255, 255] and frame.face.sum() == 3 * 255
  np.testing.assert_allclose(frame.landmarks, (pts - (10, 20)) / 2, atol=1e-4)
  assert frame.landmarks.dtype == np.float32 and frame.box is None


def test_open_mouth_keeps_eyes_and_scale(registrar, astronaut):
  pts = registrar.landmarks(astronaut, registrar.detect(astronaut))
  eye_distance = np.linalg.norm(np.diff(R.eye_centres(pts), axis=0))
  warped = bench_registration.open_mouth(astronaut, pts, 0.3 * eye_distance)
  moved = registrar.landmarks(warped, registrar.detect(warped))  # Re-detected, as in a video.
  assert moved[48:68, 1].mean() - pts[48:68, 1].mean() > 3.0  # The detector sees the mouth drop.
  new, new_moved = registrar.transform(pts), registrar.transform(moved)
  assert abs(new_moved.scale / new.scale - 1) < 0.01
  assert np.abs(new_moved(R.eye_centres(moved)) - new(R.eye_centres(pts))).max() < 0.01 * S
  # The crops themselves: eyes re-detected in both within 1% of S of each other.
  faces = [registrar.align(astronaut, pts), registrar.align(warped, moved)]
  assert np.abs(_eyes(registrar, faces[0]) - _eyes(registrar, faces[1])).max() < 0.01 * S + 0.5
  # Control: the former eyes+mouth template zooms out as the mouth opens (> 4 % scale change).
  old, old_moved = (bench_registration.old_transform(p, S) for p in (pts, moved))
  assert old_moved.scale / old.scale < 0.96


def test_views_map_points_back_to_the_frame():
  """View.to_frame inverts View.image pixel for pixel, for every orientation and half (brute force)."""
  h, w = 5, 8
  frame = np.arange(h * w).reshape(h, w)[..., None].repeat(3, -1)  # Each pixel holds its index.
  for half in (None, "left", "right"):
    for orientation in R.ORIENTATIONS:
      view = R.View(orientation, half)
      image = view.image(frame)
      ys, xs = np.mgrid[:image.shape[0], :image.shape[1]]
      pts = np.stack([xs.ravel(), ys.ravel()], -1)
      back = view.to_frame(pts, frame.shape).astype(int)
      np.testing.assert_array_equal(frame[back[:, 1], back[:, 0], 0], image[ys, xs, 0].ravel())


def test_turned_photo_is_found_and_stood_up(registrar, astronaut):
  upright, ref = registrar.register_sequence([astronaut], source="upright")
  assert (ref["orientation"], ref["half"]) == (0, None)
  for k in (1, 2, 3):  # np.rot90 turns counterclockwise; undoing k turns takes 4 - k.
    faces, info = registrar.register_sequence([np.rot90(astronaut, k)] * 2, source=f"turned{k}")
    assert info["orientation"] == 90 * (4 - k) and info["half"] is None
    assert info["status"] == ["detected", "tracked"]
    np.testing.assert_array_equal(faces[0], upright[0])  # Quarter turns permute pixels exactly.
    np.testing.assert_allclose(info["landmarks"][0], ref["landmarks"][0], atol=1e-3)
    if k == 1:  # Image coordinates are the turned frame's: upright (x, y) -> (y, W - 1 - x).
      x, y = ref["image_landmarks"][0].T
      np.testing.assert_allclose(info["image_landmarks"][0], np.stack([y, 511 - x], -1), atol=1e-4)


def test_turned_photo_beside_another_image(registrar, astronaut):
  """[coffee | astronaut turned 90 degrees]: no upright face; the search finds the turned one."""
  coffee = skimage.transform.resize(skimage.data.coffee(), (512, 512), preserve_range=True)
  frame = np.concatenate([coffee.astype(np.uint8), np.rot90(astronaut, 1)], 1)  # [512, 1024, 3]
  assert registrar.detect(frame) is None
  counts = registrar.view_counts.copy()
  faces, info = registrar.register_sequence([frame, frame, frame], source="dual")
  assert info["orientation"] == 270
  assert registrar.view_counts - counts == {"turned 270 degrees": 1}
  assert _eye_error(registrar, faces[0]) < 3.0
  reference = registrar.register_image(astronaut)
  assert np.abs(faces[0].astype(float) - reference).mean() < 8.0  # Box found with context: close.
  # Online, the box and image landmarks are in the input frame: the astronaut's half (x >= 512).
  first = next(registrar.stream([frame], source="dual"))
  left, top, right, bottom = first.box
  assert 512 <= left < right < 1024 and 0 <= top < bottom < 512
  assert (first.image_landmarks[:, 0] > 512).all()


def test_two_faces_side_by_side_keep_one_half(registrar, astronaut, hopper):
  """Dual view: [astronaut | Grace Hopper]; one half is chosen and kept for every frame."""
  right = np.zeros_like(astronaut)
  right[:, :] = np.asarray(Image.fromarray(hopper).resize((512, 600)))[44:556]
  frame = np.concatenate([astronaut, right], 1)  # [512, 1024, 3], a face in each half.
  faces, info = registrar.register_sequence([frame] * 4, source="dual")
  assert info["half"] in ("left", "right") and info["orientation"] == 0
  alone = registrar.register_image(astronaut if info["half"] == "left" else right)
  inside = (info["image_landmarks"][..., 0] < 512) == (info["half"] == "left")
  assert inside.all()  # Image coordinates are the whole frame's, all in the chosen half.
  for face in faces:
    assert np.abs(face.astype(float) - alone).mean() < 8.0
  # One face beside a photo without faces: no half needed.
  coffee = skimage.transform.resize(skimage.data.coffee(), (512, 512), preserve_range=True)
  _, info = registrar.register_sequence([np.concatenate([astronaut, coffee.astype(np.uint8)], 1)])
  assert info["half"] is None


def test_grayscale(registrar, astronaut):
  grey = np.asarray(Image.fromarray(astronaut).convert("L"))
  face = registrar.register_image(grey)
  assert face.shape == (S, S, 3)
  np.testing.assert_array_equal(face[..., 0], face[..., 2])
  assert _eye_error(registrar, face) < 3.0


def test_second_photo(registrar, hopper):
  face = registrar.register_image(hopper, "grace_hopper.jpg")
  assert _eye_error(registrar, face) < 3.0


def _moved(image, angle, shift):
  out = skimage.transform.rotate(image, angle, center=(220, 120), preserve_range=True, mode="edge")
  return np.roll(out.astype(np.uint8), shift, axis=(0, 1))


def test_rotated_shifted_copy_aligns_alike(registrar, astronaut):
  face = registrar.register_image(astronaut)
  moved = _moved(astronaut, 18, (25, -20))
  other = registrar.register_image(moved)
  assert _eye_error(registrar, other) < 3.0
  assert np.abs(face.astype(float) - other).mean() < 8.0
  # Control: without registration the two photos differ a lot.
  assert np.abs(astronaut.astype(float) - moved).mean() > 30.0


def test_stream_is_online_and_matches_the_offline_sequence(registrar, astronaut):
  blank = np.zeros_like(astronaut)
  frames = [blank, astronaut, _moved(astronaut, 0, (2, 3)), blank, _moved(astronaut, 0, (4, 6)),
            astronaut, blank]
  pulled = []

  def source():
    for t, f in enumerate(frames):
      pulled.append(t)
      yield f

  out = []
  for reg in registrar.stream(source(), source="seq"):
    assert len(pulled) == len(out) + 1  # Each frame is registered before the next is read.
    out.append(reg)
  # redetect_every=3: nothing at t=0 (no look-ahead), detect at t=1 (no box yet), t=3 (blank:
  # fallback), t=6 (blank: fallback).
  assert [r.status for r in out] == ["none", "detected", "tracked", "fallback", "tracked", "tracked",
                                     "fallback"]
  assert out[0].face is None and out[0].box is None and out[0].landmarks is None
  for t in (1, 2, 4, 5):  # Tracked frames (face moved a few px) still hit the template.
    assert _eye_error(registrar, out[t].face) < 3.0
    # Crop landmarks: where the predictor finds them again in the crop (inner face, 17-67: the jaw
    # reaches the crop's border, where re-detection is unreliable).
    again = registrar.landmarks(out[t].face, registrar.detect(out[t].face))
    error = np.linalg.norm(out[t].landmarks[17:] - again[17:], axis=-1)
    assert error.max() < 4.0 and error.mean() < 1.5, (error.max(), error.mean())
    left, top, right, bottom = out[t].box
    assert (out[t].image_landmarks.mean(0) > (left, top)).all()
    assert (out[t].image_landmarks.mean(0) < (right, bottom)).all()
  assert out[3].face.max() == 0  # Blank frames stay blank (warped with the previous box).
  # Offline: the same per-frame results, and the leading frame aligned with the first box.
  faces, info = registrar.register_sequence(frames, source="seq")
  assert info["status"] == ["fallback"] + [r.status for r in out[1:]]
  assert info["landmarks"].shape == (7, 68, 2) and info["landmarks"].dtype == np.float32
  for t in range(1, 7):
    np.testing.assert_array_equal(faces[t], out[t].face)
    np.testing.assert_array_equal(info["landmarks"][t], out[t].landmarks)
  assert faces[0].max() == 0


def test_sequence_without_face_raises(registrar, tmp_path):
  blank = np.full((100, 100), 90, np.uint8)
  with pytest.raises(R.NoFaceError, match="3 frames of S010/004"):
    registrar.register_sequence([blank] * 3, source="S010/004")
  with pytest.raises(R.errors.EmptySequenceError, match="S010/005.*empty"):
    registrar.register_sequence([], source="S010/005")


def test_database_landmarks(registrar, astronaut):
  pts = registrar.landmarks(astronaut, registrar.detect(astronaut)) + (7.0, -4.0)
  faces, info = registrar.register_sequence(astronaut[None], landmarks=[pts])
  assert info["status"] == ["database"]
  np.testing.assert_array_equal(faces[0], registrar.align(astronaut, pts))
  np.testing.assert_allclose(info["landmarks"][0], registrar.transform(pts)(pts), atol=1e-4)
  with pytest.raises(R.errors.ManualDataError,
                     match="S001/001: landmarks of frame 0 lie outside.*\\(x, y\\)"):
    registrar.register_sequence(astronaut[None, :180], landmarks=[pts[:, ::-1]],  # (y, x) rows.
                                source="S001/001")
  # The shifted landmarks move the crop: it differs from the detector's registration.
  assert np.abs(faces[0].astype(float) - registrar.register_image(astronaut)).mean() > 5.0


def test_largest_of_several_faces(registrar, astronaut, caplog):
  canvas = np.zeros((600, 1000, 3), np.uint8)
  canvas[:512, 488:] = astronaut
  canvas[:400, :400] = np.asarray(Image.fromarray(astronaut).resize((400, 400)))
  with caplog.at_level(logging.INFO):
    box = registrar.detect(canvas, "two.png")
  assert box.left() > 488  # The big copy's face.
  assert re.search(r"two.png: \d faces found, using the largest", caplog.text)
  # In a sequence each face lies in its own half: the half of the largest frontal face is kept.
  _, info = registrar.register_sequence([canvas, canvas], source="two")
  assert info["half"] == "right" and (info["image_landmarks"][..., 0] > 500).all()
  flipped = np.ascontiguousarray(canvas[:, ::-1])
  _, info = registrar.register_sequence([flipped, flipped], source="two")
  assert info["half"] == "left" and (info["image_landmarks"][..., 0] < 500).all()


def test_corrupt_png_names_file(registrar, astronaut, tmp_path):
  good = tmp_path / "good.png"
  Image.fromarray(astronaut).save(good)
  truncated = tmp_path / "truncated.png"
  truncated.write_bytes(good.read_bytes()[:5000])
  with pytest.raises(R.UnreadableImageError, match="truncated.png"):
    registrar.register_sequence([str(good), str(truncated)], source="seq")
