"""fer_jax.predict end to end on a tiny random workdir and a generated astronaut clip.

The workdir is laid out as the experiment writes it (config.json, results.json, fold_0/cnn/best via
the trainer's Checkpointer, fold_0/crf.npz via experiment.save_crf), with random weights. The CRF
outputs are checked against brute force over every label sequence of the registered frames.
"""
import csv
import itertools
import json
import os
import shutil

from absl import flags
import imageio.v3 as iio
import numpy as np
from PIL import Image
import pytest

from bench import predict as bench_predict
from configs import default as default_config
from fer_jax import crf
from fer_jax import experiment
from fer_jax import predict
from fer_jax import train
from fer_jax.data import media
from fer_jax.data import registration

CLASSES = ("neutral", "happy", "surprise")
T = 12
BLANK = (0, 1, 6, 7)  # Two frames before any face, two after one.
EXPECTED_STATUS = ["none", "none"] + ["detected"] * 4 + ["fallback"] * 2 + ["detected"] * 4


def tiny_config():
  c = default_config.get_base_config()
  default_config.tiny(c)  # data.image_size 75; model input 75, width 0.125, fc1_width 32.
  c.lock()
  return c


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("predict")
  config = tiny_config()
  workdir = bench_predict.make_random_workdir(config, str(tmp / "workdir"), CLASSES, seed=3)
  frames = bench_predict.astronaut_frames(T, 320, 240, blank=BLANK)
  video = str(tmp / "clip.mp4")
  bench_predict.write_video(video, frames, fps=25.0)
  return {"tmp": tmp, "config": config, "workdir": workdir, "frames": frames, "video": video}


@pytest.fixture(scope="module")
def result(setup):
  return predict.predict_video(setup["workdir"], setup["video"])


def brute_force(unaries, transitions, start, end):
  """Marginals [N, K] and the best path [N] by enumerating all K^N label sequences."""
  n, k = unaries.shape
  paths = np.array(list(itertools.product(range(k), repeat=n)))  # [K^N, N]
  score = unaries[np.arange(n), paths].sum(1) + start[paths[:, 0]] + end[paths[:, -1]]
  score += transitions[paths[:, :-1], paths[:, 1:]].sum(1)
  p = np.exp(score - score.max())
  p /= p.sum()
  marg = np.stack([np.bincount(paths[:, t], weights=p, minlength=k) for t in range(n)])
  return marg, paths[np.argmax(score)]


def test_every_frame_has_a_row_with_its_face_status(setup, result):
  assert result.num_frames == T
  assert result.class_names == list(CLASSES)
  assert result.face_status == EXPECTED_STATUS
  # The registration itself, run on the decoded frames, reports the same (leading frames -> none).
  decoded = iio.imread(setup["video"], plugin="FFMPEG")
  _, info = registration.Registrar(75, redetect_every=1).register_sequence(decoded)
  assert predict.face_status(info["status"]) == result.face_status
  none = np.array([s == "none" for s in EXPECTED_STATUS])
  assert (result.labels[none] == -1).all() and (result.labels[~none] >= 0).all()
  assert np.isnan(result.crf_probs[none]).all() and np.isnan(result.softmax_probs[none]).all()
  for probs in (result.crf_probs[~none], result.softmax_probs[~none]):
    assert np.all(probs >= 0)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
  np.testing.assert_allclose(result.times, np.arange(T) / 25.0)
  assert set(result.timings) == {"load", "decode", "registration", "cnn", "crf"}


def test_crf_output_matches_brute_force_on_the_registered_frames(setup, result):
  config, workdir = setup["config"], setup["workdir"]
  decoded = iio.imread(setup["video"], plugin="FFMPEG")
  faces, _ = registration.Registrar(75, redetect_every=1).register_sequence(decoded)
  has_face = np.array([s != "none" for s in EXPECTED_STATUS])
  model = train.load_model(config, os.path.join(workdir, "fold_0", "cnn"), len(CLASSES))
  out = train.predict_batches(model, config, [{"image": faces[has_face],
                                               "mask": np.ones(has_face.sum(), bool)}])
  params, _ = experiment.load_crf(os.path.join(workdir, "fold_0", "crf.npz"))
  w, b, trans, start, end = (np.asarray(getattr(params, n), np.float64)
                             for n in ("weights", "bias", "transitions", "start", "end"))
  unaries = out[config.crf.features].astype(np.float64) @ w + b  # [N, K]
  marg, best = brute_force(unaries, trans, start, end)
  np.testing.assert_allclose(result.crf_probs[has_face], marg, atol=2e-4)
  np.testing.assert_array_equal(result.labels[has_face], best)
  mask = np.ones((1, len(unaries)), bool)
  tags, _ = crf.viterbi_decode(unaries[None].astype(np.float32), trans.astype(np.float32), mask,
                               start=start.astype(np.float32), end=end.astype(np.float32))
  np.testing.assert_array_equal(result.labels[has_face], np.asarray(tags)[0])
  logits = out["logits"].astype(np.float64)
  soft = np.exp(logits - logits.max(1, keepdims=True))
  np.testing.assert_allclose(result.softmax_probs[has_face], soft / soft.sum(1, keepdims=True),
                             atol=1e-5)
  # Random weights make the CNN output vary with the frame: the wiring is not checked on constants.
  assert np.ptp(result.softmax_probs[has_face], axis=0).max() > 1e-4


def test_frame_folder_is_read_in_natural_order(setup, result):
  folder = setup["tmp"] / "frames"
  folder.mkdir()
  for t, frame in enumerate(setup["frames"]):  # frame_1 .. frame_12 (as text, frame_10 < frame_2).
    Image.fromarray(frame).save(folder / f"frame_{t + 1}.png")
  assert [os.path.basename(p) for p in media.frame_files(str(folder))][:3] == [
      "frame_1.png", "frame_2.png", "frame_3.png"]
  from_folder = predict.predict_video(setup["workdir"], str(folder))
  assert from_folder.face_status == result.face_status == EXPECTED_STATUS
  assert from_folder.fps == predict.FOLDER_FPS
  # Lossless PNG vs H.264: the same face frames, close (not equal) probabilities.
  np.testing.assert_array_equal(np.isnan(from_folder.crf_probs), np.isnan(result.crf_probs))
  (folder / "frame_5.png").write_bytes(b"not a png")
  with pytest.raises(registration.UnreadableImageError, match="frame_5.png"):
    predict.predict_video(setup["workdir"], str(folder))


def test_cli_writes_csv_json_plot_and_video_and_never_overwrites(setup, result):
  out = str(setup["tmp"] / "out" / "clip.csv")
  render, plot = str(setup["tmp"] / "out" / "clip.mp4"), str(setup["tmp"] / "out" / "clip.png")
  got = predict.run(setup["workdir"], setup["video"], output=out, write_json_file=True,
                    render=render, plot=plot)
  with open(out, newline="") as f:
    rows = list(csv.reader(f))
  assert rows[0] == (["frame", "time_s", "face", "label"] + [f"crf_{c}" for c in CLASSES]
                     + [f"softmax_{c}" for c in CLASSES])
  assert len(rows) == T + 1
  for t, row in enumerate(rows[1:]):
    assert int(row[0]) == t and float(row[1]) == pytest.approx(t / 25.0)
    assert row[2] == EXPECTED_STATUS[t]
    if EXPECTED_STATUS[t] == "none":
      assert row[3:] == [""] * (1 + 2 * len(CLASSES))
    else:
      assert row[3] == CLASSES[got.labels[t]]
      np.testing.assert_allclose([float(v) for v in row[4:4 + len(CLASSES)]], got.crf_probs[t],
                                 atol=1e-6)
  np.testing.assert_allclose(got.crf_probs, result.crf_probs, atol=1e-5)  # Deterministic.
  with open(os.path.splitext(out)[0] + ".json") as f:
    js = json.load(f)
  assert [fr["face"] for fr in js["frames"]] == EXPECTED_STATUS and js["frames"][0]["crf"] is None
  assert Image.open(plot).size[0] > 100
  rendered = iio.imread(render, plugin="FFMPEG")
  assert rendered.shape == (T, 240, 320, 3)
  before = open(out).read()
  with pytest.raises(FileExistsError, match="clip.csv.*--overwrite"):
    predict.run(setup["workdir"], setup["video"], output=out)
  with pytest.raises(FileExistsError, match="clip.png"):
    predict.run(setup["workdir"], setup["video"], output=str(setup["tmp"] / "new.csv"), plot=plot)
  assert open(out).read() == before and not os.path.exists(setup["tmp"] / "new.csv")


def test_cli_main_default_output_and_error_exit(setup, capsys):
  fv = flags.FlagValues()
  predict.define_flags(fv)
  fv(["predict", f"--workdir={setup['workdir']}", f"--video={setup['video']}", "--json"])
  predict.main(["predict"], fv)
  default = os.path.join(setup["workdir"], "predictions", "clip_fold0.csv")
  with open(default) as f:
    assert len(f.read().strip().splitlines()) == T + 1
  assert os.path.exists(os.path.join(setup["workdir"], "predictions", "clip_fold0.json"))
  with pytest.raises(SystemExit) as exit_info:  # Refuses before any work: the file is still there.
    predict.main(["predict"], fv)
  assert exit_info.value.code == 2 and "clip_fold0.csv exists" in capsys.readouterr().err


def test_missing_pieces_of_the_workdir_are_named(setup, tmp_path):
  with pytest.raises(FileNotFoundError, match="nowhere.*fer_jax.main"):
    predict.predict_video(str(tmp_path / "nowhere"), setup["video"])
  copy = str(tmp_path / "copy")
  shutil.copytree(setup["workdir"], copy)
  with pytest.raises(FileNotFoundError, match="fold_1"):
    predict.predict_video(copy, setup["video"], fold=1)
  os.remove(os.path.join(copy, "fold_0", "crf.npz"))
  with pytest.raises(FileNotFoundError, match=r"crf\.npz.*fer_jax\.main"):
    predict.predict_video(copy, setup["video"])
  os.remove(os.path.join(copy, "config.json"))
  with pytest.raises(FileNotFoundError, match=r"config\.json.*fer_jax\.main"):
    predict.predict_video(copy, setup["video"])


def test_no_face_and_corrupt_videos_are_named(setup, tmp_path):
  blank = str(tmp_path / "empty_room.mp4")
  bench_predict.write_video(blank, np.full((4, 120, 160, 3), 90, np.uint8))
  with pytest.raises(registration.NoFaceError, match="empty_room.mp4"):
    predict.predict_video(setup["workdir"], blank)
  bad = tmp_path / "broken.mp4"
  bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
  with pytest.raises(predict.UnreadableVideoError, match="broken.mp4"):
    predict.predict_video(setup["workdir"], str(bad))
  with pytest.raises(FileNotFoundError, match="missing.mp4"):
    predict.predict_video(setup["workdir"], str(tmp_path / "missing.mp4"))
