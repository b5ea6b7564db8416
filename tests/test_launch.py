"""The launch scripts, executed: launch/slurm.sbatch under a fake `srun` that starts 2 processes of 1
device each on 127.0.0.1 (jax.distributed reads SLURM's environment), and launch/local.sh (one process,
2 devices). The SLURM launch must train the same network as one process over 2 devices with the same
global batch and data (trained here in-process, as local.sh would: the full local launch costs ~1 CPU-
minute more and checks nothing else); a negative control (the same training with a wrong per-host
split) shows the comparison would catch a split bug. local.sh is run to a config error: it hands the
config, workdir and flags to fer_jax.main, logs to <workdir>/log.txt and returns main's status."""
import json
import os
import stat
import subprocess

import jax
import numpy as np

from configs import demo
from fer_jax import experiment
from fer_jax import train
from fer_jax.data import pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FAKE_SRUN = """#!/usr/bin/env bash
# Stands in for SLURM's srun on one machine: runs the command once per task, SLURM_PROCID 0..N-1.
while [[ "$1" == --* ]]; do shift; done
pids=()
for ((i = 0; i < SLURM_NTASKS; i++)); do
  SLURM_PROCID=$i SLURM_LOCALID=$i "$@" > "$FAKE_SRUN_LOGS/task$i.log" 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
exit $status
"""

# float32 sums in another order (1 process x 2 devices vs 2 x 1); on one machine the two launches agree
# to the bit and the in-process run to ~1e-7.
RTOL, ATOL = 1e-3, 1e-5


def _env(tmp_path, devices):
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  env["JAX_PLATFORMS"] = "cpu"
  return env


def _flags(tmp_path):
  # Stage 3 and the compared CRF rows off: only the CNN of stage 1 is compared (stage 3 shares its
  # training loop; the CRF rows run in test_experiment).
  return [f"--config.data.data_dir={tmp_path / 'tfds'}", "--jax_cache=", "--config.joint.steps=0",
          "--config.crf.compare_features=()"]


def _params(model):
  """The model's parameters as {path: array}."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  pure = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  return {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(pure)}


def _launched(workdir, config, num_classes):
  return _params(train.load_model(config, os.path.join(workdir, "fold_0", "cnn"), num_classes))


def _far(a, b):
  """Parameter paths where a and b differ by more than the tolerance the launches must meet."""
  return [k for k in a if not np.allclose(a[k], b[k], rtol=RTOL, atol=ATOL)]


def _in_process_params(tmp_path, config, monkeypatch, wrong_split):
  """Fold 0's CNN trained in this process as the launches train it (2 devices, same data and seed); with
  `wrong_split`, both "hosts" read host 0's half of every global batch (a per-host split bug)."""
  real_mesh, real_batches = train.make_mesh, pipeline.train_batches

  def host0_twice(seqs, batch_size, **kwargs):
    kwargs.update(process_index=0, process_count=2)
    for b in real_batches(seqs, batch_size, **kwargs):
      yield {k: np.concatenate([v, v]) for k, v in b.items()}

  with monkeypatch.context() as m:
    m.setattr(train, "make_mesh", lambda devices=None: real_mesh(devices or jax.devices()[:2]))
    if wrong_split:
      m.setattr(pipeline, "train_batches", host0_twice)
    seqs, folds, _, _ = experiment.load_data(config)
    workdir = tmp_path / f"in_process_{wrong_split}" / "cnn"
    model = experiment.train_cnn(config, str(workdir), seqs.subset(folds[0].train),
                                 seqs.subset(folds[0].val), len(seqs.class_names), config.seed)
  return _params(model)


def test_local_launch_hands_config_workdir_and_flags_to_main(tmp_path):
  local = tmp_path / "local"
  proc = subprocess.run(["bash", "launch/local.sh", "configs/demo.py:smoke", str(local)]
                        + _flags(tmp_path) + ["--config.train.batch_size=15"], cwd=ROOT,
                        env=_env(tmp_path, 2), capture_output=True, text=True, timeout=600)
  assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
  log = (local / "log.txt").read_text()
  assert "train.batch_size" in log and "multiple of the device count (2)" in log, log[-3000:]


def test_slurm_launch_trains_the_same_network_as_one_process(tmp_path, monkeypatch):
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  srun = bin_dir / "srun"
  srun.write_text(FAKE_SRUN)
  srun.chmod(srun.stat().st_mode | stat.S_IEXEC)
  env = _env(tmp_path, 1)
  env.update(PATH=f"{bin_dir}:{env['PATH']}", SLURM_NTASKS="2", SLURM_JOB_ID="4242",
             SLURM_STEP_NODELIST="localhost", SLURM_SUBMIT_DIR=ROOT,
             FAKE_SRUN_LOGS=str(tmp_path))
  multi = tmp_path / "multi"
  proc = subprocess.run(["bash", "launch/slurm.sbatch", "configs/demo.py:smoke", str(multi)]
                        + _flags(tmp_path), cwd=ROOT, env=env, capture_output=True, timeout=600)
  logs = [(tmp_path / f"task{i}.log").read_text() for i in range(2)]
  assert proc.returncode == 0, logs[0][-3000:] + logs[1][-3000:]
  for i in range(2):
    assert f"JAX process {i}/2" in logs[i] and "all devices 2" in logs[i]

  with open(multi / "results.json") as f:
    double = json.load(f)
  config = demo.get_config("smoke")
  with config.unlocked():
    config.data.data_dir = str(tmp_path / "tfds")
  seqs, folds, _, _ = experiment.load_data(config)
  assert double["folds"][0]["sizes"]["train_sequences"] == len(folds[0].train)
  num_classes = len(double["class_names"])
  two = _launched(str(multi), config, num_classes)
  one = _in_process_params(tmp_path, config, monkeypatch, wrong_split=False)
  init = _params(train._create_model(config, num_classes))  # pylint: disable=protected-access
  assert one.keys() == two.keys() == init.keys() and len(one) > 100
  assert not _far(one, two)  # The same network, within the tolerance ...
  assert len(_far(one, init)) > 0.75 * len(one)  # ... after training moved most parameters ...
  # ... and a wrong per-host split (negative control) would be caught.
  assert len(_far(two, _in_process_params(tmp_path, config, monkeypatch, wrong_split=True))) > (
      0.5 * len(one))
