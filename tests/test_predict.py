"""fer_jax.predict end to end on a tiny random workdir and a generated astronaut clip.

The workdir is laid out as the experiment writes it (config.json, results.json, fold_0/cnn/best via
the trainer's Checkpointer, fold_0/crf.npz via experiment.save_crf), with random weights. The CRF
outputs are checked against brute force over every label sequence of the registered frames.
"""
import csv
import dataclasses
import itertools
import json
import os
import shutil
import signal
import time

from absl import flags
import imageio.v3 as iio
import numpy as np
from PIL import Image
import pytest

from bench import predict as bench_predict
from configs import default as default_config
from fer_jax import crf
from fer_jax import errors
from fer_jax import predict
from fer_jax import streaming
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
  params, _, extras = crf.load_crf(os.path.join(workdir, "fold_0", "crf.npz"))
  w, b, trans, start, end = (np.asarray(getattr(params, n), np.float64)
                             for n in ("weights", "bias", "transitions", "start", "end"))
  x = (out["logits"] - extras["input_mean"]) / extras["input_std"]  # Stage 2's standardisation.
  unaries = x.astype(np.float64) @ w + b  # [N, K]
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
  with pytest.raises(FileNotFoundError, match=r"without stage 3.*--stage=crf"):
    predict.predict_video(copy, setup["video"], stage="joint")
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


# ----------------------------------------------------------------------------- streaming
# Truth for the streaming rows: brute-force enumeration of the CRF of each prefix of the face frames
# (no `end` term), on CNN outputs computed here from the offline registration of the decoded clip
# (online registration crops the same faces once the first face is detected).

FACES = [t for t, s in enumerate(EXPECTED_STATUS) if s != "none"]  # Frame index of each face frame.


@pytest.fixture(scope="module")
def truth(setup):
  """CRF unaries [N, K] float64 and CNN softmax [N, K] of the N face frames, and the CRF params."""
  config, workdir = setup["config"], setup["workdir"]
  decoded = iio.imread(setup["video"], plugin="FFMPEG")
  faces, _ = registration.Registrar(75, redetect_every=1).register_sequence(decoded)
  model = train.load_model(config, os.path.join(workdir, "fold_0", "cnn"), len(CLASSES))
  out = train.predict_batches(model, config, [{"image": faces[FACES],
                                               "mask": np.ones(len(FACES), bool)}])
  params, _, extras = crf.load_crf(os.path.join(workdir, "fold_0", "crf.npz"))
  p = {n: np.asarray(getattr(params, n), np.float64)
       for n in ("weights", "bias", "transitions", "start", "end")}
  logits = out["logits"].astype(np.float64)
  soft = np.exp(logits - logits.max(1, keepdims=True))
  x = (logits - extras["input_mean"]) / extras["input_std"]  # crf.features "logits", standardised.
  return dict(p, unaries=x @ p["weights"] + p["bias"], softmax=soft / soft.sum(1, keepdims=True))


def prefix_truth(truth, lag: int, num_faces: int):
  """Marginals [n, K] and labels [n] of face frames 0..n-1 decided with `lag`: face i from the CRF
  of faces 0..min(i + lag, n - 1), no end term (the label: the argmax of that marginal)."""
  k = truth["unaries"].shape[1]
  marg = []
  for i in range(num_faces):
    last = min(i + lag, num_faces - 1)
    m, _ = brute_force(truth["unaries"][:last + 1], truth["transitions"], truth["start"],
                       np.zeros(k))
    marg.append(m[i])
  return np.array(marg), np.argmax(marg, axis=1)


def read_rows(path):
  with open(path, newline="") as f:
    return list(csv.reader(f))


def check_rows(rows, result, truth, lag, num_frames):
  """The CSV rows (header + num_frames) hold result's rows, and these match the prefix truth."""
  assert rows[0] == predict.csv_header(CLASSES) and len(rows) == num_frames + 1
  assert result.num_frames == num_frames
  assert [r[2] for r in rows[1:]] == EXPECTED_STATUS[:num_frames] == result.face_status
  faces = [t for t in FACES if t < num_frames]
  marg, labels = prefix_truth(truth, lag, len(faces))
  np.testing.assert_allclose(result.crf_probs[faces], marg, atol=2e-4)
  np.testing.assert_array_equal(result.labels[faces], labels)
  np.testing.assert_allclose(result.softmax_probs[faces], truth["softmax"][:len(faces)], atol=1e-5)
  k = len(CLASSES)
  for t, row in enumerate(rows[1:]):
    assert int(row[0]) == t and float(row[1]) == pytest.approx(t / 25.0, abs=1e-4)
    if t in faces:
      assert row[3] == CLASSES[result.labels[t]]
      np.testing.assert_allclose([float(v) for v in row[4:4 + 2 * k]],
                                 np.concatenate([result.crf_probs[t], result.softmax_probs[t]]),
                                 atol=1e-6)
    else:
      assert row[3:] == [""] * (1 + 2 * k)


def source_frames(video):
  """The clip's frames through the same reader the CLI uses."""
  with media.open_source(video) as frames:
    yield from frames


@pytest.mark.parametrize("lag", [0, 2])
def test_stream_rows_are_the_crf_of_each_prefix(setup, truth, lag):
  out = str(setup["tmp"] / f"stream_lag{lag}.csv")
  render = str(setup["tmp"] / f"stream_lag{lag}.mp4")
  result = predict.run(setup["workdir"], setup["video"], output=out, stream=True, lag=lag,
                       render=render, draw_points=True)
  check_rows(read_rows(out), result, truth, lag, T)
  # The face box and the 68 points are those of the frame (inside it, points inside the box).
  faces = np.array(FACES)
  assert np.isnan(result.boxes[:2]).all() and np.isfinite(result.boxes[faces]).all()
  pts = result.points[faces]
  left, top, right, bottom = (result.boxes[faces, i, None] for i in range(4))
  inside = ((pts[..., 0] >= left - 5) & (pts[..., 0] <= right + 5) & (pts[..., 1] >= top - 5)
            & (pts[..., 1] <= bottom + 30))  # The chin may sit below dlib's box.
  assert inside.mean() > 0.95
  assert iio.imread(render, plugin="FFMPEG").shape == (T, 240, 320, 3)


@pytest.mark.parametrize("features", ["logits", "logits+geometry"])
def test_stream_equals_offline_when_the_lag_covers_the_clip(setup, tmp_path, features):
  config = tiny_config()
  with config.unlocked():
    config.crf.features = features
  workdir = bench_predict.make_random_workdir(config, str(tmp_path / "workdir"), CLASSES, seed=3)
  path = os.path.join(workdir, "fold_0", "crf.npz")
  params, sigma2, extras = crf.load_crf(path)  # No `end` term: what a stream has not seen.
  crf.save_crf(path, params.replace(end=np.zeros_like(params.end)), sigma2, extras)
  offline = predict.predict_video(workdir, setup["video"])
  online = predict.run(workdir, setup["video"], output=str(tmp_path / "s.csv"), stream=True, lag=T)
  assert online.face_status == offline.face_status == EXPECTED_STATUS
  np.testing.assert_allclose(online.crf_probs, offline.crf_probs, atol=1e-5)
  np.testing.assert_allclose(online.softmax_probs, offline.softmax_probs, atol=1e-6)
  # Offline labels are the Viterbi path, streaming ones each frame's most probable label.
  faces = np.array(FACES)
  np.testing.assert_array_equal(online.labels[faces], np.argmax(offline.crf_probs[faces], 1))
  np.testing.assert_array_equal(online.labels == -1, offline.labels == -1)
  np.testing.assert_allclose(online.boxes, offline.boxes)
  np.testing.assert_allclose(online.points, offline.points)


def test_stream_from_a_pipe_a_url_and_a_webcam_index(setup, truth, tmp_path):
  import imageio_ffmpeg  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import threading  # pylint: disable=g-import-not-at-top
  ts = str(tmp_path / "clip.ts")  # The clip's H.264 stream, remuxed (same decoded frames).
  subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-i", setup["video"],
                  "-c", "copy", "-f", "mpegts", ts], check=True)
  fifo = str(tmp_path / "camera_pipe")
  os.mkfifo(fifo)

  def feed():
    with open(fifo, "wb") as f:
      f.write(open(ts, "rb").read())
  feeder = threading.Thread(target=feed, daemon=True)
  feeder.start()
  assert predict.is_live(fifo) and predict.is_live("rtsp://host/cam") and predict.is_live("7")
  assert not predict.is_live(setup["video"])
  result = predict.run(setup["workdir"], fifo, output=str(tmp_path / "pipe.csv"), lag=2)
  feeder.join(timeout=10)
  check_rows(read_rows(str(tmp_path / "pipe.csv")), result, truth, 2, T)
  url = "file://" + ts
  result = predict.run(setup["workdir"], url, output=str(tmp_path / "url.csv"), lag=2)
  check_rows(read_rows(str(tmp_path / "url.csv")), result, truth, 2, T)
  assert predict.default_output("W", url, 0) == os.path.join("W", "predictions", "clip_fold0.csv")
  # A webcam index goes to ffmpeg's camera input (none here): a named error, no file written.
  assert predict.default_output("W", "63", 1) == os.path.join("W", "predictions",
                                                              "webcam63_fold1.csv")
  with pytest.raises(errors.UnreadableVideoError, match="webcam 63"):
    predict.run(setup["workdir"], "63", output=str(tmp_path / "cam.csv"))
  assert not os.path.exists(tmp_path / "cam.csv")


def test_rows_appear_before_the_input_ends(setup, truth, tmp_path):
  out = str(tmp_path / "live.csv")
  seen = {}

  def frames():
    for t, frame in enumerate(source_frames(setup["video"])):
      if t == 10:  # Frames 0..9 are in: with lag 2, faces up to frame 7 are decided, 8 is not.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(read_rows_if_any(out)) < 9:
          time.sleep(0.05)
        time.sleep(0.3)
        seen["rows"] = len(read_rows_if_any(out)) - 1
      yield frame

  result = streaming.run(setup["workdir"], frames(), {"csv": out}, lag=2, fps=25.0)
  assert seen["rows"] == 8
  check_rows(read_rows(out), result, truth, 2, T)


def read_rows_if_any(path):
  return read_rows(path) if os.path.exists(path) else []


@pytest.mark.parametrize("how", ["sigint", "raise"])
def test_ctrl_c_leaves_a_complete_csv_of_the_frames_read(setup, truth, tmp_path, how):
  out = str(tmp_path / "stopped.csv")
  stop_at = 7

  def frames():
    for t, frame in enumerate(source_frames(setup["video"])):
      if t == stop_at and how == "raise":  # As a source reading in the main thread sees Ctrl-C.
        raise KeyboardInterrupt
      if t == stop_at:  # Once rows are being written (the model is compiled), press Ctrl-C.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(read_rows_if_any(out)) < 2:
          time.sleep(0.05)
        signal.raise_signal(signal.SIGINT)  # The CLI's handler stops the stream.
      if t >= stop_at:
        time.sleep(1.0)  # A live source: frames keep coming, slowly.
      yield frame

  before = signal.getsignal(signal.SIGINT)
  result = streaming.run(setup["workdir"], frames(), {"csv": out}, lag=2, fps=25.0)
  assert signal.getsignal(signal.SIGINT) is before
  n = result.num_frames
  # Every frame read before Ctrl-C got its row, decided from the frames read (the CRF of the
  # prefix, no end); the source was not read to its end.
  assert (stop_at <= n < T if how == "sigint" else n == stop_at), n
  check_rows(read_rows(out), result, truth, 2, n)


def test_annotate_draws_the_face_box_status_and_points():
  frame = np.zeros((200, 240, 3), np.uint8)
  points = np.array([[100.0, 100.0]] * 68, np.float32)
  points[1] = (120, 140)
  row = predict.FrameRow(index=0, time_s=0.0, face="tracked", label=1,
                         crf_probs=np.array([0.2, 0.7, 0.1], np.float32),
                         softmax_probs=np.array([0.3, 0.4, 0.3], np.float32),
                         box=(60.0, 50.0, 180.0, 170.0), points=points)
  plain = predict.annotate(frame, row, CLASSES)
  dotted = predict.annotate(frame, row, CLASSES, draw_points=True)
  box_colour = predict.BOX_COLOURS["tracked"]
  for x, y in ((60, 110), (180, 110), (120, 170)):  # Left, right and bottom edges.
    assert tuple(plain[y, x]) == box_colour
  assert tuple(plain[100, 100]) == (0, 0, 0) and tuple(plain[140, 120]) == (0, 0, 0)
  assert tuple(dotted[100, 100]) == tuple(dotted[140, 120]) != (0, 0, 0)
  assert tuple(dotted[100, 100])[1:] == (255, 255)  # Cyan points.
  none = dataclasses.replace(row, face="none", label=-1, box=None, points=None)
  # No face: no box, no points (the title bar is above y 30, the probability panel below y 125).
  assert (predict.annotate(frame, none, CLASSES, draw_points=True)[30:125, 50:235] == 0).all()
  assert (plain[30:125, 50:235] != 0).any()


def test_lag_in_frames_and_seconds():
  assert streaming.lag_frames(None, None, 30.0) == 15  # DEFAULT_LAG_SECONDS.
  assert streaming.lag_frames(None, 0.5, 25.0) == 13  # At least half a second: ceil(12.5).
  assert streaming.lag_frames(4, None, 25.0) == 4
  assert streaming.lag_frames(4, 0.2, 25.0) == 9
  assert streaming.lag_frames(0, None, 25.0) == 0
  with pytest.raises(errors.ConfigError, match="--lag=-1"):
    streaming.lag_frames(-1, None, 25.0)
  with pytest.raises(errors.ConfigError, match="add --stream"):
    predict.run("W", __file__, lag=3)


def test_default_output_names_the_stage():
  assert predict.default_output("w", "clips/a.mp4", 1) == os.path.join("w", "predictions",
                                                                       "a_fold1.csv")
  assert predict.default_output("w", "0", 0, "joint") == os.path.join("w", "predictions",
                                                                      "webcam0_fold0_joint.csv")
