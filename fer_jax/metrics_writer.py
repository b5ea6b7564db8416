"""Training metrics: TensorBoard scalars (TF's core summary op) and a metrics.jsonl file.

Only process 0 writes. TensorBoard itself is not installed, so `tf.summary.scalar` is unavailable;
scalars are written with `tf.summary.write` and the "scalars" plugin metadata, which is exactly what
`tf.summary.scalar` writes, so TensorBoard shows them as usual.
"""
import json
import math
import os
from typing import Any, Mapping

import jax


def _import_tf():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from fer_jax import tf_devices  # pylint: disable=g-import-not-at-top
  tf_devices.hide_gpus_from_tensorflow()
  return tf


def read_jsonl(path: str) -> list[dict[str, Any]]:
  """The records of a metrics.jsonl file ([] when absent), in file order."""
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


class MetricWriter:
  """Writes {name: scalar} records to workdir/metrics.jsonl and workdir/tensorboard.

  Every record has "step" and "kind" ("train" or "eval"); TensorBoard tags are "kind/name".
  """

  def __init__(self, workdir: str, *, enabled: bool | None = None):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self.jsonl_path = os.path.join(workdir, "metrics.jsonl")
    self.tb_dir = os.path.join(workdir, "tensorboard")
    self._tf = self._tb = self._metadata = None
    if self.enabled:
      os.makedirs(workdir, exist_ok=True)

  def truncate_after(self, step: int) -> list[dict[str, Any]]:
    """On resume: drops records after `step` (they will be written again); returns those kept."""
    records = read_jsonl(self.jsonl_path)
    kept = [r for r in records if r["step"] <= step]
    if self.enabled and len(kept) != len(records):
      tmp = self.jsonl_path + ".tmp"
      with open(tmp, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in kept)
      os.replace(tmp, self.jsonl_path)
    return kept

  def _tensorboard(self):
    if self._tb is None:
      self._tf = _import_tf()
      from tensorflow.core.framework import summary_pb2  # pylint: disable=g-import-not-at-top
      self._metadata = summary_pb2.SummaryMetadata(
          plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
      ).SerializeToString()
      self._tb = self._tf.summary.create_file_writer(self.tb_dir)
    return self._tb

  def write(self, step: int, kind: str, scalars: Mapping[str, float]) -> dict[str, Any]:
    """Writes one record; returns it as a dict (also on processes that do not write)."""
    record = {"step": int(step), "kind": kind, **{k: float(v) for k, v in scalars.items()}}
    if not self.enabled:
      return record
    with open(self.jsonl_path, "a") as f:
      f.write(json.dumps({k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                          for k, v in record.items()}) + "\n")
    writer = self._tensorboard()
    tf = self._tf
    with writer.as_default():
      for name, value in scalars.items():
        tf.summary.write(f"{kind}/{name}", tf.constant(float(value), tf.float32), step=int(step),
                         metadata=self._metadata)
    return record

  def flush(self):
    if self._tb is not None:
      self._tb.flush()

  def close(self):
    if self._tb is not None:
      self._tb.close()
      self._tb = None
