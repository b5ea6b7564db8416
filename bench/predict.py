"""Frames per second of fer_jax.predict on a generated clip, per stage, with peak memory.

    python -m bench.predict                # demo network (configs/demo.py: input 75, width 1/8)
    python -m bench.predict --model=paper  # the paper's network (299x299, 1/1/1 blocks), on a GPU
    python -m bench.predict --mode=stream  # live: sustained fps and latency (fer_jax.streaming)
    python -m bench.predict --mode=cnn --model=paper --frames=2048   # CNN + CRF stages alone (GPU)

--mode=stream runs the CLI's streaming path (fer_jax.streaming.run, CSV written and flushed per row)
on the clip paced like a camera (PacedFrames: --rates frames/s; 0 = as fast as it decodes) and
--mode=cnn times predict's CNN and CRF stages alone (predict.classify, the call predict_video makes
after registration) on --frames registered crops (the clip's frames resized to the CNN's input): what
an accelerator changes, without decoding or dlib (which run on the CPU whatever the device).

--mode=stream reports the sustained fps, the latency from a frame's arrival to its row (median, p95) and the part
of it beyond the fixed lag, beside the offline path measured in the same run (the peer: ratio
stream/offline fps). The load average before and after shows how busy the machine was.

Weights do not change speed, so the bench needs no training: it builds a workdir itself
(make_random_workdir; the tests use it too) with a randomly initialised CNN saved through the
trainer's checkpoint code (fer_jax.checkpoint.Checkpointer, the "best" layout that
train.load_model reads) and a random CRF saved with crf.save_crf. The clip is the real photo
skimage.data.astronaut() with small per-frame shifts, rotations and zoom, written with
imageio-ffmpeg (H.264). Every run goes through predict.predict_video: load (config, CNN checkpoint,
CRF), decode, dlib registration (--redetect_every), CNN (train.predict_batches, which jit-compiles
on every call: the XLA compile time after loading is reported separately), CRF (marginals, Viterbi).
"""
import dataclasses
import json
import os
import resource
import tempfile
import time

from absl import app
from absl import flags
from absl import logging
from flax import nnx
import jax
import numpy as np

from configs import default as default_config
from configs import demo as demo_config
from fer_jax import checkpoint
from fer_jax import crf
from fer_jax import crf_inputs
from fer_jax import geometry
from fer_jax import models
from fer_jax import predict
from fer_jax import streaming
from fer_jax.data import media

CLASS_NAMES = ("neutral", "anger", "disgust", "fear", "happy", "sadness", "surprise")

FLAGS = flags.FLAGS


def make_config(model: str):
  """The demo config, or the same with the paper's network (input 299 / 1 / 1-1-1 blocks)."""
  config = demo_config.get_config()
  if model == "paper":
    config.unlock()
    config.data.image_size = default_config.PAPER_MODEL["input_size"]
    config.model.update(fc1_width=1024, **default_config.PAPER_MODEL)
    config.lock()
  return config


def random_weights(config, num_classes: int, seed: int = 0) -> dict:
  """{"params", "batch_stats"} (nnx pure dicts) of a randomly initialised create_model(...).

  Parameters from the model's own initialisers (seed `seed`); BatchNorm statistics drawn at random
  too (mean ~ N(0, 0.05), var ~ U(0.8, 1.2)), so they are not the identity a fresh model has.
  """
  model = models.create_model(config.model, num_classes, nnx.Rngs(params=seed, dropout=seed))
  _, params, batch_stats, _ = nnx.split(model, nnx.Param, nnx.BatchStat, ...)
  rng = np.random.default_rng(seed)

  def draw(path, x):
    if str(getattr(path[-1], "key", path[-1])) == "var":
      return rng.uniform(0.8, 1.2, x.shape).astype(np.float32)
    return rng.normal(0.0, 0.05, x.shape).astype(np.float32)

  return {"params": jax.tree.map(np.asarray, nnx.to_pure_dict(params)),
          "batch_stats": jax.tree_util.tree_map_with_path(draw, nnx.to_pure_dict(batch_stats))}


def make_random_workdir(config, workdir: str, class_names=CLASS_NAMES, fold: int = 0,
                        seed: int = 0) -> str:
  """An experiment workdir with a random CNN and CRF for fold `fold`, laid out as experiment.py's.

  Writes config.json, results.json (class_names), fold_<k>/cnn/best (random_weights saved with
  fer_jax.checkpoint.Checkpointer as train.py saves its best checkpoint; train.load_model reads it)
  and fold_<k>/crf.npz (a random CRF and random input statistics, crf.save_crf with
  crf_inputs.CrfInputs extras). Returns workdir.
  """
  k = len(class_names)
  fold_dir = os.path.join(workdir, f"fold_{fold}")
  ckpt = checkpoint.Checkpointer(os.path.join(fold_dir, "cnn", "best"), keep=1,
                                 best_metric="val_accuracy")
  ckpt.save(0, random_weights(config, k, seed), metrics={"val_accuracy": 0.0})
  ckpt.close()
  rng = np.random.default_rng(seed + 1)
  inputs = crf_inputs.CrfInputs(config.crf.features, config.crf.geometry_reference)
  widths = {"logits": k, "features": config.model.fc1_width,
            "geometry": geometry.num_features(inputs.reference)}
  d = sum(widths[part] for part in inputs.parts)
  r = lambda *shape: rng.normal(0.0, 0.5, shape).astype(np.float32)  # noqa: E731
  params = crf.CRFParams(weights=r(d, k), bias=r(k),
                         transitions=r(k, k) + 2 * np.eye(k, dtype=np.float32),
                         start=r(k), end=r(k))
  # Standardisation statistics as stage 2 saves them (random: predict must apply them).
  inputs = dataclasses.replace(inputs, mean=r(d), std=rng.uniform(0.5, 2.0, d).astype(np.float32))
  crf.save_crf(os.path.join(fold_dir, "crf.npz"), params, 1.0, extras=inputs.to_extras())
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=1))
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump({"class_names": list(class_names)}, f)
  return workdir


def astronaut_frames(num_frames: int, width: int, height: int, blank=()) -> np.ndarray:
  """uint8 [T, H, W, 3]: skimage's astronaut photo moving a little per frame; `blank` ones black."""
  import skimage.data  # pylint: disable=g-import-not-at-top
  import skimage.transform  # pylint: disable=g-import-not-at-top
  photo = skimage.data.astronaut()
  out = np.zeros((num_frames, height, width, 3), np.uint8)
  for t in range(num_frames):
    if t in blank:
      continue
    scale = 1.2 * height / photo.shape[0] * (1 + 0.03 * np.sin(t / 11))
    angle = np.deg2rad(4 * np.sin(t / 7))
    shift = (width / 2 - 0.42 * photo.shape[1] * scale + 0.03 * width * np.sin(t / 5),
             height * 0.02 * np.cos(t / 9) - 0.1 * height)
    tform = skimage.transform.SimilarityTransform(scale=scale, rotation=angle, translation=shift)
    out[t] = skimage.transform.warp(photo, tform.inverse, output_shape=(height, width), order=1,
                                    preserve_range=True).astype(np.uint8)
  return out


def write_video(path: str, frames: np.ndarray, fps: float = 30.0):
  """uint8 [T, H, W, 3] -> an H.264 file via imageio-ffmpeg."""
  import imageio_ffmpeg  # pylint: disable=g-import-not-at-top
  t, h, w, _ = frames.shape
  writer = imageio_ffmpeg.write_frames(path, (w, h), fps=fps, macro_block_size=1,
                                       ffmpeg_log_level="error", quality=8)
  writer.send(None)
  for frame in frames:
    writer.send(np.ascontiguousarray(frame))
  writer.close()


def define_flags():
  """Bench flags (defined only when run as a script; tests import the helpers)."""
  flags.DEFINE_enum("mode", "offline", ["offline", "stream", "cnn"], "cnn: the CNN and CRF stages "
                    "on registered crops; offline: predict_video per stage; "
                    "stream: fer_jax.streaming's sustained fps and latency (offline as the peer).")
  flags.DEFINE_enum("model", "demo", ["demo", "paper"], "demo: configs/demo.py network; paper: "
                    "299x299 Inception-ResNet with 1/1/1 blocks.")
  flags.DEFINE_integer("frames", 120, "Frames in the generated clip.")
  flags.DEFINE_string("size", "640x480", "Clip size WxH.")
  flags.DEFINE_integer("redetect_every", 1, "Face detection every N-th frame (predict's flag).")
  flags.DEFINE_integer("repeats", 2, "Runs of the whole path (the first includes the jit compile).")
  flags.DEFINE_list("rates", ["15", "30"], "stream: source frame rates to pace the clip at (a "
                    "camera); 0 = as fast as it decodes (sustained throughput).")
  flags.DEFINE_float("lag_seconds", 0.5, "stream: the fixed lag in seconds (frames = ceil(lag * "
                     "rate); 30 fps for rate 0).")
  flags.DEFINE_integer("max_chunk", streaming.MAX_CHUNK, "stream: most frames per CNN call.")
  flags.DEFINE_string("json_out", None, "Also write the figures here.")


def offline_figures(workdir: str, video: str, events: list) -> dict:
  """predict_video run FLAGS.repeats times: fps overall, net of load and compile, per stage."""
  runs = []
  for i in range(FLAGS.repeats):
    start = time.perf_counter()
    result = predict.predict_video(workdir, video, redetect_every=FLAGS.redetect_every)
    total = time.perf_counter() - start
    loaded = start + result.timings["load"]  # Compiles after loading: the CNN's and the CRF's.
    runs.append(dict(result.timings, total=total,
                     compile_after_load=sum(s for end, s in events if end > loaded)))
    logging.info("run %d: %s", i, runs[-1])
  last = runs[-1]
  t = result.num_frames
  return {
      "frames": t, "faces": sum(s != predict.NO_FACE for s in result.face_status),
      "fps_total_first_run": t / runs[0]["total"],
      "fps_total": t / last["total"],
      "fps_excluding_load_and_compile": t / (last["total"] - last["load"]
                                             - last["compile_after_load"]),
      "fps_per_stage": {k: t / last[k] for k in ("decode", "registration", "cnn", "crf")},
      "seconds_per_stage": {k: round(v, 4) for k, v in last.items()},
      "compile_after_load_s_per_run": [round(r["compile_after_load"], 3) for r in runs],
  }


class PacedFrames:
  """A video's frames through media.open_source, handed out like a camera at `rate` frames/s.

  The clock starts at the first request (after the stream's model load and warm-up); frame i is due
  at start + i / rate and `arrivals[i]` is that time (a late reader makes the frame wait: that
  counts in its latency). rate 0: as fast as frames decode; arrivals[i] is when frame i was read.
  """

  def __init__(self, video: str, rate: float):
    self.video, self.rate = video, float(rate)
    self.name = f"{os.path.basename(video)} at {rate:g} fps" if rate else os.path.basename(video)
    self.fps = self.rate or None
    self.arrivals = []

  def __iter__(self):
    with media.open_source(self.video) as source:
      if self.fps is None:
        self.fps = source.fps
      start = None
      for i, frame in enumerate(source):
        now = time.perf_counter()
        start = now if start is None else start
        if self.rate:
          due = start + i / self.rate
          if due > now:
            time.sleep(due - now)
          self.arrivals.append(due)
        else:
          self.arrivals.append(now)
        yield frame


def stream_figures(workdir: str, video: str, rate: float, tmp: str) -> dict:
  """One streaming run (fer_jax.streaming.run, the CLI's path incl. the CSV) at source rate `rate`.

  Latency of frame i: its row's write time minus its arrival. A frame is decided when frame i + L
  arrives (every frame of the clip has a face), so latency - (arrival[i + L] - arrival[i]) is the
  time the path adds beyond the lag; both over the frames decided by the lag (not the last L,
  which the end of input decides).
  """
  paced = PacedFrames(video, rate)
  written = {}
  csv_path = os.path.join(tmp, f"stream_{rate:g}.csv")
  if os.path.exists(csv_path):
    os.remove(csv_path)
  start = time.perf_counter()
  cpu = []

  def on_row(row):
    written[row.index] = time.perf_counter()
    if row.index == 0 or len(written) == paced_total:
      cpu.append(_cpu_seconds())
  paced_total = FLAGS.frames
  result = streaming.run(workdir, paced, {"csv": csv_path}, fps=rate or None,
                         lag_seconds=FLAGS.lag_seconds, redetect_every=FLAGS.redetect_every,
                         max_chunk=FLAGS.max_chunk,
                         on_row=on_row)
  arrivals = np.array(paced.arrivals)
  n = result.num_frames
  lag = streaming.lag_frames(None, FLAGS.lag_seconds, rate or paced.fps or predict.FOLDER_FPS)
  rows = np.array([written[i] for i in range(n)])
  by_lag = np.arange(max(n - lag, 0))
  latency = rows[by_lag] - arrivals[by_lag]
  beyond = rows[by_lag] - arrivals[by_lag + lag]
  ms = lambda x, q: round(float(np.percentile(x, q)) * 1000, 1) if len(x) else None  # noqa: E731
  return {
      "source_rate_fps": rate or "unpaced", "lag_frames": lag,
      "load_and_warm_up_s": round(arrivals[0] - start, 2),
      "sustained_fps": round(n / (rows[-1] - arrivals[0]), 2),
      "faces": sum(s != predict.NO_FACE for s in result.face_status),
      "latency_ms_median": ms(latency, 50), "latency_ms_p95": ms(latency, 95),
      "latency_beyond_lag_ms_median": ms(beyond, 50),
      "latency_beyond_lag_ms_p95": ms(beyond, 95),
      "latency_beyond_lag_ms_max": ms(beyond, 100),
      # CPU time of the process (all threads) per frame between the first and the last row: what
      # a frame costs whatever else runs on the machine; 1000 / it = fps on one idle core.
      "cpu_ms_per_frame": round((cpu[-1] - cpu[0]) / max(n - 1, 1) * 1000, 1),
  }


def cnn_figures(workdir: str, frames: np.ndarray) -> dict:
  """predict.classify on `frames` resized to the CNN's input, FLAGS.repeats times (first: compile)."""
  import skimage.transform  # pylint: disable=g-import-not-at-top
  fold = predict.load_fold(workdir)
  s = fold.config.data.image_size
  faces = np.stack([skimage.transform.resize(f, (s, s), preserve_range=True) for f in frames])
  faces = faces.astype(np.uint8)
  landmarks = np.zeros((len(faces), 68, 2), np.float32)
  runs = []
  for i in range(FLAGS.repeats):
    timings = {}
    predict.classify(fold, faces, landmarks, timings)
    runs.append(timings)
    logging.info("run %d: %s", i, timings)
  n, last = len(faces), runs[-1]
  return {"frames": n, "batch_size": int(fold.config.train.eval_batch_size),
          "fps_cnn_first_run": n / runs[0]["cnn"], "fps_cnn": n / last["cnn"],
          "fps_crf": n / last["crf"], "seconds_per_stage": {k: round(v, 4) for k, v in last.items()}}


def _cpu_seconds() -> float:
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def main(argv):
  del argv
  width, height = (int(v) for v in FLAGS.size.lower().split("x"))
  config = make_config(FLAGS.model)
  events = []  # (end time, seconds) of every XLA lowering + compile.

  def on_event(name, seconds, **_):
    if name in ("/jax/core/compile/backend_compile_duration",
                "/jax/core/compile/jaxpr_to_mlir_module_duration"):
      events.append((time.perf_counter(), seconds))
  jax.monitoring.register_event_duration_secs_listener(on_event)
  figures = {"model": FLAGS.model, "mode": FLAGS.mode, "device": jax.devices()[0].device_kind,
             "size": f"{width}x{height}", "redetect_every": FLAGS.redetect_every,
             "cpu_count": os.cpu_count(), "load_average_1m_before": os.getloadavg()[0]}
  with tempfile.TemporaryDirectory() as tmp:
    workdir = make_random_workdir(config, os.path.join(tmp, "workdir"))
    if FLAGS.mode == "cnn":
      figures["cnn"] = cnn_figures(workdir, astronaut_frames(FLAGS.frames, width, height))
      return _finish(figures)
    video = os.path.join(tmp, "astronaut.mp4")
    write_video(video, astronaut_frames(FLAGS.frames, width, height))
    figures["offline"] = offline_figures(workdir, video, events)
    if FLAGS.mode == "stream":
      figures["stream"] = [stream_figures(workdir, video, float(r), tmp) for r in FLAGS.rates]
      figures["stream_vs_offline_fps_unpaced"] = [  # Same frames, same run: the peer ratio.
          round(s["sustained_fps"] / figures["offline"]["fps_excluding_load_and_compile"], 3)
          for s in figures["stream"] if s["source_rate_fps"] == "unpaced"]
  _finish(figures)


def _finish(figures: dict):
  """Adds load and peak memory, prints the figures and writes --json_out."""
  figures["load_average_1m_after"] = os.getloadavg()[0]
  figures["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  if jax.devices()[0].platform == "gpu":
    stats = jax.devices()[0].memory_stats() or {}
    figures["peak_device_mib"] = stats.get("peak_bytes_in_use", 0) / 2**20
  print(json.dumps(figures, indent=1))
  if FLAGS.json_out:
    with open(FLAGS.json_out, "w") as f:
      json.dump(figures, f, indent=1)


if __name__ == "__main__":
  define_flags()
  app.run(main)
