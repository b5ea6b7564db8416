"""dlib face registration on a real photograph (skimage.data.astronaut)."""
import logging

import numpy as np
import pytest
import skimage.data
import skimage.transform
from PIL import Image

from fer_jax.data import registration as R

S = 128


@pytest.fixture(scope="module")
def registrar():
  return R.Registrar(size=S, redetect_every=3)


@pytest.fixture(scope="module")
def astronaut():
  return skimage.data.astronaut()


def _eye_error(registrar, face):
  """Max distance (px) of the re-detected eye centres from the template's."""
  box = registrar.detect(face)
  assert box is not None, "no face re-detected in the registered crop"
  eyes = R.anchors(registrar.landmarks(face, box))[:2]
  return np.abs(eyes - R.TEMPLATE[:2] * S).max()


def test_eyes_on_template(registrar, astronaut):
  face = registrar.register_image(astronaut)
  assert face.shape == (S, S, 3) and face.dtype == np.uint8
  assert _eye_error(registrar, face) < 3.0
  # Negative control: in the unregistered photo, merely resized to S, the eyes are far off the template.
  eyes = R.anchors(registrar.landmarks(astronaut, registrar.detect(astronaut)))[:2] * S / 512
  assert np.abs(eyes - R.TEMPLATE[:2] * S).max() > 10.0


def test_known_similarity():
  """Landmarks whose eyes/mouth are a shifted copy of the template give a pure shift (hand-computed)."""
  reg = R.Registrar(size=150)
  pts = np.zeros((68, 2))
  pts[36:42] = (100, 120)  # Template at S=150: eyes (45, 57), (105, 57), mouth (75, 117).
  pts[42:48] = (160, 120)
  pts[48:68] = (130, 180)
  tform = reg.transform(pts)
  np.testing.assert_allclose(tform.params, [[1, 0, -55], [0, 1, -63], [0, 0, 1]], atol=1e-9)
  image = np.zeros((300, 300, 3), np.uint8)
  image[120, 100] = 255
  out = reg.align(image, pts)
  assert out[57, 45].tolist() == [255, 255, 255] and out.sum() == 3 * 255


def test_blank_image_raises(registrar):
  with pytest.raises(R.NoFaceError, match="blank.png"):
    registrar.register_image(np.full((200, 200, 3), 128, np.uint8), source="blank.png")


def test_grayscale(registrar, astronaut):
  grey = np.asarray(Image.fromarray(astronaut).convert("L"))
  face = registrar.register_image(grey)
  assert face.shape == (S, S, 3)
  np.testing.assert_array_equal(face[..., 0], face[..., 2])
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


def test_sequence_tracking_and_fallback(registrar, astronaut):
  blank = np.zeros_like(astronaut)
  frames = [blank, astronaut, _moved(astronaut, 0, (2, 3)), blank, _moved(astronaut, 0, (4, 6)),
            astronaut, blank]
  faces, info = registrar.register_sequence(frames, source="seq")
  assert faces.shape == (7, S, S, 3)
  # redetect_every=3: detect at t=1 (no box yet), t=3 (blank: fallback), t=6 (blank: fallback).
  assert info["status"] == ["fallback", "detected", "tracked", "fallback", "tracked", "tracked",
                            "fallback"]
  for t in (1, 2, 4, 5):  # Tracked frames (face moved a few px) still hit the template.
    assert _eye_error(registrar, faces[t]) < 3.0
  assert faces[0].max() == 0  # Blank frames stay blank (warped with the fallback box).


def test_sequence_without_face_raises(registrar, tmp_path):
  blank = np.full((100, 100), 90, np.uint8)
  with pytest.raises(R.NoFaceError, match="3 frames of S010/004"):
    registrar.register_sequence([blank] * 3, source="S010/004")
  with pytest.raises(ValueError, match="empty"):
    registrar.register_sequence([], source="S010/005")


def test_database_landmarks(registrar, astronaut):
  pts = registrar.landmarks(astronaut, registrar.detect(astronaut)) + (7.0, -4.0)
  faces, info = registrar.register_sequence(astronaut[None], landmarks=[pts])
  assert info["status"] == ["database"]
  np.testing.assert_array_equal(faces[0], registrar.align(astronaut, pts))
  with pytest.raises(ValueError, match="S001/001: landmarks of frame 0 lie outside.*\\(x, y\\)"):
    registrar.register_sequence(astronaut[None, :180], landmarks=[pts[:, ::-1]],  # (y, x) rows.
                                source="S001/001")
  # The shifted landmarks move the crop: it differs from the detector's registration.
  assert np.abs(faces[0].astype(float) - registrar.register_image(astronaut)).mean() > 5.0


def test_largest_of_several_faces(registrar, astronaut, caplog):
  canvas = np.zeros((600, 900, 3), np.uint8)
  canvas[:512, 380:892] = astronaut
  small = np.asarray(Image.fromarray(astronaut).resize((300, 300)))
  canvas[:300, :300] = small
  with caplog.at_level(logging.INFO):
    box = registrar.detect(canvas, "two.png")
  assert box.left() > 380  # The big copy's face.
  assert "2 faces" in caplog.text


def test_corrupt_png_names_file(registrar, astronaut, tmp_path):
  good = tmp_path / "good.png"
  Image.fromarray(astronaut).save(good)
  truncated = tmp_path / "truncated.png"
  truncated.write_bytes(good.read_bytes()[:5000])
  junk = tmp_path / "junk.png"
  junk.write_bytes(b"not a png at all")
  for bad in (truncated, junk):
    with pytest.raises(R.UnreadableImageError, match=str(bad.name)):
      R.read_image(bad)
  with pytest.raises(R.UnreadableImageError, match="truncated.png"):
    registrar.register_sequence([str(good), str(truncated)], source="seq")
  with pytest.raises(R.UnreadableImageError, match="missing.png"):
    R.read_image(tmp_path / "missing.png")
  np.testing.assert_array_equal(R.read_image(good), astronaut)
