"""TFDS builder `synthetic_expressions`: procedural face sequences (fer_jax/data/synthetic.py).

Needs no download. The config (subjects, sequences per subject, lengths, seed, image size and, where
not the default, the difficulty: pixel noise, occlusion, landmark noise) is encoded in the config name,
so different settings never share a directory. Frames are stored as PNG (lossless) and landmarks as
float32, so reading back gives exactly what `synthetic.generate` drew.
"""
import dataclasses

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from fer_jax.data import synthetic

_VERSION = tfds.core.Version("2.0.0")


@dataclasses.dataclass
class SyntheticConfig(tfds.core.BuilderConfig):
  """Size and seed of the synthetic set; build with `make_config`."""
  num_subjects: int = 60
  sequences_per_subject: int = 6
  min_length: int = 12
  max_length: int = 24
  seed: int = 0
  image_size: int = 96
  noise: float = synthetic.NOISE
  occlusion_prob: float = synthetic.OCCLUSION_PROB
  landmark_noise: float = synthetic.LANDMARK_NOISE


def make_config(num_subjects, sequences_per_subject, min_length, max_length, seed, image_size,
                noise=synthetic.NOISE, occlusion_prob=synthetic.OCCLUSION_PROB,
                landmark_noise=synthetic.LANDMARK_NOISE) -> SyntheticConfig:
  """A SyntheticConfig named after its fields, e.g. "n60_q6_t12-24_s96_seed0" (default difficulty) or
  "n60_q6_t12-24_s96_seed0_noise0.15_occ0.3_lm0.06"."""
  name = (f"n{num_subjects}_q{sequences_per_subject}_t{min_length}-{max_length}_s{image_size}"
          f"_seed{seed}")
  difficulty = (noise, occlusion_prob, landmark_noise)
  if difficulty != (synthetic.NOISE, synthetic.OCCLUSION_PROB, synthetic.LANDMARK_NOISE):
    name += "_noise{:g}_occ{:g}_lm{:g}".format(*difficulty)
  return SyntheticConfig(
      name=name, version=_VERSION, num_subjects=num_subjects,
      sequences_per_subject=sequences_per_subject, min_length=min_length, max_length=max_length,
      seed=seed, image_size=image_size, noise=float(noise), occlusion_prob=float(occlusion_prob),
      landmark_noise=float(landmark_noise),
      description="Procedural faces, neutral -> apex (CK+-like) and neutral -> apex -> neutral "
                  "(MMI-like) sequences of six emotions.")


class SyntheticExpressions(tfds.core.GeneratorBasedBuilder):
  """Procedural facial-expression sequences with per-frame BASIC7 labels."""

  VERSION = _VERSION
  RELEASE_NOTES = {"1.0.0": "Initial release.",
                   "2.0.0": "Adds landmarks [T, 68, 2] and the difficulty fields."}
  BUILDER_CONFIGS = [make_config(60, 6, 12, 24, 0, 96)]
  # TFDS's own code_path needs the `importlib_resources` package (not installed) for builders outside
  # tensorflow_datasets; it is only used to look for a checksums.tsv beside the code.
  code_path = epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    s = self.builder_config.image_size
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "frames": tfds.features.Video((None, s, s, 3), encoding_format="png"),
            "labels": tfds.features.Sequence(tfds.features.ClassLabel(names=synthetic.BASIC7)),
            # The 68 points (x, y) in crop pixels, dlib's index scheme.
            "landmarks": tfds.features.Tensor(shape=(None, synthetic.NUM_LANDMARKS, 2),
                                              dtype=np.float32),
            "subject": tfds.features.Text(),
            "sequence": tfds.features.Text(),
        }),
        supervised_keys=None,
        homepage="https://github.com/",  # Generated locally; no source.
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    c = self.builder_config
    for record in synthetic.generate(c.num_subjects, c.sequences_per_subject, c.min_length,
                                     c.max_length, c.image_size, c.seed, noise=c.noise,
                                     occlusion_prob=c.occlusion_prob,
                                     landmark_noise=c.landmark_noise):
      yield record["sequence"], record


def make_builder(data_config) -> SyntheticExpressions:
  """The builder for `config.data` (uses data_dir, image_size and the synthetic.* fields)."""
  syn = data_config.synthetic
  config = make_config(syn.num_subjects, syn.sequences_per_subject, syn.min_length, syn.max_length,
                       syn.seed, data_config.image_size, syn.noise, syn.occlusion_prob,
                       syn.landmark_noise)
  # TFDS wants the registered object itself when the name is one of BUILDER_CONFIGS.
  config = next((c for c in SyntheticExpressions.BUILDER_CONFIGS if c.name == config.name), config)
  return SyntheticExpressions(config=config, data_dir=data_config.data_dir)
