"""CRF inputs on any feature set: parsing, concatenation, standardisation on training frames, extras."""
import numpy as np
import pytest

from fer_jax import crf_inputs
from fer_jax import errors
from fer_jax import geometry


def test_parse_spec_and_labels():
  assert crf_inputs.parse_spec("logits") == ("logits",)
  assert crf_inputs.parse_spec("logits+geometry") == ("logits", "geometry")
  assert crf_inputs.parse_spec("features+logits+geometry") == ("features", "logits", "geometry")
  for bad in ("", "logit", "logits+logits", "logits+", "geometry,logits"):
    with pytest.raises(errors.ConfigError, match="crf.features"):
      crf_inputs.parse_spec(bad)
  assert crf_inputs.label("logits") == "CNN + CRF"
  assert crf_inputs.label("geometry+logits") == "fused + CRF"
  with pytest.raises(errors.ConfigError, match="geometry_reference"):
    crf_inputs.CrfInputs("geometry", reference="middle")


def _sequences(rng, lengths, c=3, f=5):
  t = max(lengths)
  mask = np.arange(t)[None] < np.array(lengths)[:, None]
  outputs = {"logits": rng.normal(2.0, 3.0, (len(lengths), t, c)).astype(np.float32),
             "features": rng.normal(-1.0, 0.5, (len(lengths), t, f)).astype(np.float32)}
  landmarks = [rng.normal(50.0, 10.0, (n, 68, 2)).astype(np.float32) for n in lengths]
  return outputs, landmarks, mask


def test_raw_concatenates_parts_in_order():
  rng = np.random.default_rng(0)
  outputs, landmarks, mask = _sequences(rng, [4, 2])
  inputs = crf_inputs.CrfInputs("geometry+logits", reference="none")
  x = inputs.raw_sequences(outputs, landmarks, mask)
  assert x.shape == (2, 4, 136 + 3) and x.dtype == np.float32
  np.testing.assert_allclose(x[1, :2, :136], geometry.features(landmarks[1], "none"))
  np.testing.assert_array_equal(x[1, :2, 136:], outputs["logits"][1, :2])
  np.testing.assert_array_equal(x[1, 2:], 0.0)  # Padding.
  with pytest.raises(ValueError, match="landmarks"):
    inputs.raw({"logits": outputs["logits"][0]})


def test_standardiser_uses_real_training_frames_only_and_imputes_nan():
  rng = np.random.default_rng(1)
  outputs, landmarks, mask = _sequences(rng, [5, 3, 4])
  landmarks[1][1, 30] = np.nan  # Frame without usable geometry.
  inputs = crf_inputs.CrfInputs("logits+features+geometry", reference="first")
  raw = inputs.raw_sequences(outputs, landmarks, mask)
  poisoned = raw.copy()
  poisoned[~mask] = 1e6  # Padding must not enter the statistics.
  fitted = inputs.fit(poisoned, mask)
  frames = raw[mask].astype(np.float64)
  mean, std = np.nanmean(frames, 0), np.nanstd(frames, 0)
  live = std > 1e-6  # Displacements of the reference frame's dims are not constant; none are dead.
  np.testing.assert_allclose(fitted.mean, mean, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(fitted.std[live], std[live], rtol=1e-4)
  z = fitted.standardise(raw)[mask]
  assert np.isfinite(z).all()
  nan_frame = np.isnan(frames).any(1)
  assert nan_frame.sum() == 1 and (z[nan_frame][:, np.isnan(frames[nan_frame][0])] == 0).all()
  np.testing.assert_allclose(z[:, live].mean(0), 0.0, atol=1e-4)
  # One sequence through __call__ (predict's path) equals its rows of the batch.
  one = fitted({"logits": outputs["logits"][2, :4], "features": outputs["features"][2, :4]},
               landmarks[2])
  np.testing.assert_allclose(one, fitted.standardise(raw)[2, :4], atol=1e-6)


def test_extras_round_trip_through_npz(tmp_path):
  rng = np.random.default_rng(2)
  outputs, landmarks, mask = _sequences(rng, [3, 3])
  inputs = crf_inputs.CrfInputs("logits+geometry", reference="none")
  fitted = inputs.fit(inputs.raw_sequences(outputs, landmarks, mask), mask)
  path = tmp_path / "x.npz"
  np.savez(path, **fitted.to_extras())
  with np.load(path, allow_pickle=False) as z:
    back = crf_inputs.CrfInputs.from_extras(dict(z))
  assert back.spec == "logits+geometry" and back.reference == "none"
  np.testing.assert_array_equal(back.mean, fitted.mean)
  np.testing.assert_array_equal(back.std, fitted.std)
  with pytest.raises(errors.MissingOutputError, match="rerun stage 2"):
    crf_inputs.CrfInputs.from_extras({})


def test_stage3_view_equals_stage2_inputs():
  """experiment.joint_inputs: the CNN parts standardised by joint.CRFInput plus the standardised
  geometry as extra give exactly the inputs the stage-2 CRF was fitted on."""
  from fer_jax import experiment
  from fer_jax.data import pipeline
  rng = np.random.default_rng(3)
  outputs, landmarks, mask = _sequences(rng, [4, 3])
  landmarks[0][2, 27] = np.nan
  frames = [np.zeros((len(l), 8, 8, 3), np.uint8) for l in landmarks]
  seqs = pipeline.Sequences(frames, [np.zeros(len(l), np.int32) for l in landmarks], ["a", "b"],
                            ["a1", "b1"], ("neutral", "x", "y"), landmarks)
  for spec in ("logits", "features+logits+geometry"):
    inputs = crf_inputs.CrfInputs(spec, "first")
    inputs = inputs.fit(inputs.raw_sequences(outputs, landmarks, mask), mask)
    crf_input, extra = experiment.joint_inputs(inputs, {"train": seqs})
    for i, n in enumerate([4, 3]):
      one = {k: v[i, :n] for k, v in outputs.items()}
      got = crf_input(one, None if extra is None else extra["train"][i])
      np.testing.assert_allclose(got, inputs(one, landmarks[i]), atol=1e-5)
  with pytest.raises(errors.ConfigError, match="joint.steps"):
    experiment.joint_inputs(crf_inputs.CrfInputs("geometry+logits").fit(
        crf_inputs.CrfInputs("geometry+logits").raw_sequences(outputs, landmarks, mask), mask),
        {"train": seqs})
