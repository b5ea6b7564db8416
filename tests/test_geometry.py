"""Geometry features: similarity normalisation on the rigid points, displacement from a reference."""
import numpy as np
import pytest

from fer_jax import geometry


def _canonical(rng, t=1):
  """[t, 68, 2] points whose eye line (mean of 42, 45 minus mean of 36, 39) points along +x."""
  p = rng.normal(0.0, 1.0, (t, 68, 2))
  p[:, [36, 39], 0] -= 3.0
  p[:, [42, 45], 0] += 3.0
  p[:, [36, 39, 42, 45], 1] = 0.5  # Both eyes on one horizontal line.
  return p


def _by_hand(p):
  """Centre on the rigid points' centroid and divide by their RMS radius (no rotation needed)."""
  rigid = p[:, geometry.RIGID]
  c = rigid.mean(1, keepdims=True)
  r = np.sqrt(((rigid - c) ** 2).sum(-1).mean(-1))
  return (p - c) / r[:, None, None]


def _similarity(p, angle, scale, shift):
  rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
  return scale * p @ rot.T + shift


def test_normalise_matches_hand_computation_and_removes_pose():
  rng = np.random.default_rng(0)
  p = _canonical(rng, t=3)
  expected = _by_hand(p)
  np.testing.assert_allclose(geometry.normalise(p), expected, atol=1e-5)
  for angle, scale, shift in ((0.3, 2.5, (40.0, -7.0)), (-1.2, 0.1, (0.0, 300.0)), (3.0, 7.0, (1, 1))):
    moved = _similarity(p, angle, scale, np.array(shift))
    out = geometry.normalise(moved)
    assert out.dtype == np.float32 and out.shape == (3, 68, 2)
    np.testing.assert_allclose(out, expected, atol=1e-4)


def test_features_layout_and_displacement_from_first_frame():
  rng = np.random.default_rng(1)
  p = np.repeat(_canonical(rng), 4, axis=0)
  p[1:, 48, 0] -= 0.4  # Mouth corner moves out from frame 1 on (a non-rigid point).
  p[3] = _similarity(p[3], 0.7, 3.0, np.array([5.0, 5.0]))  # Frame 3 also moves the head.
  radius = np.sqrt(((p[0, geometry.RIGID] - p[0, geometry.RIGID].mean(0)) ** 2).sum(-1).mean())
  f = geometry.features(p, "first")
  assert f.shape == (4, geometry.num_features("first")) == (4, 272) and f.dtype == np.float32
  np.testing.assert_allclose(f[:, :136], geometry.normalise(p).reshape(4, -1))
  disp = f[:, 136:].reshape(4, 68, 2)
  np.testing.assert_allclose(disp[0], 0.0, atol=1e-6)
  expected = np.zeros((68, 2))
  expected[48, 0] = -0.4 / radius
  for t in (1, 2, 3):
    np.testing.assert_allclose(disp[t], expected, atol=1e-5)
  none = geometry.features(p, "none")
  assert none.shape == (4, 136)
  np.testing.assert_array_equal(none, f[:, :136])


def test_missing_points_and_chunks():
  rng = np.random.default_rng(2)
  p = _canonical(rng, t=5) + rng.normal(0, 0.05, (5, 68, 2))
  p[0, 30] = np.nan  # A rigid point missing: frame 0 is NaN throughout, frame 1 becomes the reference.
  p[2, 60] = np.nan  # A non-rigid point missing: only its coordinates are NaN.
  f = geometry.features(p, "first")
  assert np.isnan(f[0]).all()
  assert np.isnan(f[2]).sum() == 4 and np.isnan(f[2, [120, 121, 256, 257]]).all()
  np.testing.assert_allclose(f[1, 136:], 0.0, atol=1e-6)
  # A sequence seen in chunks gives the same features when the chunks share the reference frame.
  tail = geometry.features(p[3:], "first", reference_landmarks=p[1])
  np.testing.assert_allclose(tail, f[3:], atol=1e-6)
  assert np.isnan(geometry.features(np.full((2, 68, 2), np.nan), "first")).all()


def test_bad_inputs_raise():
  with pytest.raises(ValueError, match=r"\[T, 68, 2\]"):
    geometry.features(np.zeros((3, 5, 2)))
  with pytest.raises(ValueError, match="geometry_reference"):
    geometry.features(np.zeros((3, 68, 2)), reference="last")
