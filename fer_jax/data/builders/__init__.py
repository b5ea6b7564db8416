"""TFDS builders of the project's data sets, chosen by `config.data.name`."""
import importlib

import tensorflow_datasets as tfds

NAMES = ("synthetic_expressions", "ck_plus", "mmi", "fera")


def make_builder(data_config) -> tfds.core.DatasetBuilder:
  """The TFDS builder for `data_config` (the `config.data` ConfigDict), dispatching on its `name`.

  Each module fer_jax/data/builders/<name>.py defines `make_builder(data_config)`.
  """
  name = data_config.name
  if name not in NAMES:
    raise ValueError(f"config.data.name={name!r} is not a known data set; use one of {NAMES}.")
  module = importlib.import_module(f"fer_jax.data.builders.{name}")
  return module.make_builder(data_config)


def class_names(data_config) -> tuple[str, ...]:
  """The per-frame class names of the data set, from its builder's `labels` feature."""
  labels = make_builder(data_config).info.features["labels"]
  feature = getattr(labels, "feature", labels)  # Sequence(ClassLabel) or ClassLabel.
  if not isinstance(feature, tfds.features.ClassLabel):
    raise ValueError(f"Data set {data_config.name!r}: its 'labels' feature is {labels}, not a "
                     "Sequence(ClassLabel); fix the builder.")
  return tuple(feature.names)
