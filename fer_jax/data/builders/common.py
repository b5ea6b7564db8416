"""Shared parts of the licensed-database builders (ck_plus, mmi, fera).

Each builder scans the user's manual_dir into `Item`s (one per labelled sequence) in `_split_generators`
(raising ManualDataError, with the builder's MANUAL_DOWNLOAD_INSTRUCTIONS, when the layout is missing or
partial), then `_generate_examples` reads each sequence's frames (image folder or video file, through
fer_jax.data.media), registers them with dlib (or only resizes them when data.register is False),
applies the database's per-frame labelling rule and yields DESIGN.md's record {"frames" uint8
[T, S, S, 3], "labels" [T], "landmarks" float32 [T, 68, 2] (x, y) in crop pixels, "subject",
"sequence"}. Landmarks: registration's 68 points mapped into the crop; with data.register=False the
68-point predictor on the largest face the detector finds in the whole frame, NaN without a face.
Sequences skipped with data.skip_unreadable are logged with a count and listed per split in the data
set's metadata ("skipped").

Every builder also accepts `index.csv` at the root of manual_dir, overriding the official layout:
  path,subject,sequence,label[,split]
  path: a folder of frame images (sorted by the last number in the file name) or a video file, relative
    to manual_dir or absolute; label: a class name of the builder (e.g. "happiness"; CK+/MMI also accept
    "happy", FERA "joy") or its integer index; split: "train" or "test" (default "train"; FERA only).
"""
import csv
import dataclasses
import os
import re
from typing import Callable, Iterator, Optional, Sequence

from absl import logging
from etils import epath
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from fer_jax import errors
from fer_jax.data import media
from fer_jax.data import registration

IMAGE_EXTENSIONS = media.IMAGE_EXTENSIONS
VIDEO_EXTENSIONS = media.VIDEO_EXTENSIONS
INDEX_FILE = "index.csv"
INDEX_COLUMNS = ("path", "subject", "sequence", "label")
REDETECT_EVERY = 5  # Registration: run the face detector every this many frames, track in between.
NUM_LANDMARKS = 68  # dlib's 68-point scheme.
_ALIASES = {"happy": "happiness", "angry": "anger", "sad": "sadness", "surprised": "surprise"}


ManualDataError = errors.ManualDataError
EmptySequenceError = errors.EmptySequenceError


SKIPPABLE = (registration.UnreadableImageError, errors.UnreadableVideoError, registration.NoFaceError,
             EmptySequenceError)


@dataclasses.dataclass
class Item:
  """One labelled sequence found in manual_dir.

  Attributes:
    key: unique example key.
    subject, sequence: ids written into the record.
    path: frame folder or video file.
    label: the sequence's class index.
    split: "train" or "test".
    landmarks: per-frame landmark files [T] (CK+ Landmarks/), or None.
    onset, offset: 1-based expression onset/offset frames from the database's annotation, or None.
  """
  key: str
  subject: str
  sequence: str
  path: str
  label: int
  split: str = "train"
  landmarks: Optional[list[str]] = None
  onset: Optional[int] = None
  offset: Optional[int] = None


@dataclasses.dataclass(eq=False)
class SequenceConfig(tfds.core.BuilderConfig):
  """Every field that changes the generated records (see configs/default.py `data`)."""
  image_size: int = 299
  register: bool = True
  skip_unreadable: bool = False
  use_database_landmarks: bool = True  # CK+.
  keep_contempt: bool = False  # CK+.
  neutral_head: int = 3  # CK+.
  neutral_fraction: float = 0.25  # MMI.


def sequence_config(data_config, **rules) -> SequenceConfig:
  """SequenceConfig from config.data; `rules` (the builder's record-changing fields) go into the name."""
  d = data_config
  if d.image_size < 8:
    raise ValueError(f"data.image_size={d.image_size} is too small (need >= 8).")
  name = config_name(d.image_size, d.register, **rules, skip=d.skip_unreadable)
  return SequenceConfig(
      name=name, image_size=int(d.image_size), register=bool(d.register),
      skip_unreadable=bool(d.skip_unreadable), use_database_landmarks=bool(d.use_database_landmarks),
      keep_contempt=bool(d.keep_contempt), neutral_head=int(d.neutral_head),
      neutral_fraction=float(d.neutral_fraction),
      description=f"image_size={d.image_size}, register={d.register}, {rules}")


def features(image_size: int, class_names: Sequence[str]) -> tfds.features.FeaturesDict:
  """The record spec of the licensed builders (the synthetic builder writes the same fields)."""
  s = int(image_size)
  return tfds.features.FeaturesDict({
      "frames": tfds.features.Video((None, s, s, 3), encoding_format="png"),  # Lossless.
      "labels": tfds.features.Sequence(tfds.features.ClassLabel(names=list(class_names))),
      # The 68 points (x, y) in crop pixels, dlib's index scheme; NaN where no face was found.
      "landmarks": tfds.features.Tensor(shape=(None, NUM_LANDMARKS, 2), dtype=np.float32),
      "subject": tfds.features.Text(),
      "sequence": tfds.features.Text(),
  })


def config_name(image_size: int, register: bool, **rules) -> str:
  """Encodes every record-changing field into a BuilderConfig name, e.g. "s299-reg-nh3-c7"."""
  parts = [f"s{int(image_size)}", "reg" if register else "noreg"]
  for key, value in rules.items():
    if isinstance(value, bool):
      value = int(value)
    parts.append(f"{key}{value}".replace(".", "p"))
  return "-".join(parts)


def manual_dir_of(builder, dl_manager) -> str:
  """data.manual_dir when given, else the one TFDS chose (download_config.manual_dir or its default)."""
  path = getattr(builder, "manual_dir_override", None) or getattr(dl_manager, "_manual_dir", None)
  if path is None:
    raise ManualDataError(f"No manual_dir for {builder.name}: set data.manual_dir to the folder of your "
                          f"download.\n{builder.MANUAL_DOWNLOAD_INSTRUCTIONS}")
  return os.fspath(path)


def listing(path: str, limit: int = 12) -> str:
  """A short description of what is in `path` (for error messages)."""
  if not os.path.isdir(path):
    return f"{path} does not exist"
  names = sorted(n for n in os.listdir(path) if not n.startswith("."))
  if not names:
    return f"{path} is empty"
  more = f", ... ({len(names)} entries)" if len(names) > limit else ""
  return f"{path} holds: {', '.join(names[:limit])}{more}"


def missing_error(builder, manual_dir: str, what: str) -> ManualDataError:
  return ManualDataError(
      f"{builder.name}: {what} in manual_dir.\nFound: {listing(manual_dir)}.\nExpected:\n"
      f"{builder.MANUAL_DOWNLOAD_INSTRUCTIONS}")


def check_manual_dir(builder, manual_dir: str) -> None:
  if not os.path.isdir(manual_dir) or not any(not n.startswith(".") for n in os.listdir(manual_dir)):
    raise missing_error(builder, manual_dir, "nothing found (missing or empty folder)")


def find_dirs(root: str, name: str) -> list[str]:
  """Folders called `name` at any depth under root (not inside hidden folders), shallowest first."""
  found = []
  for dirpath, dirnames, _ in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__MACOSX")
    if name in dirnames:
      found.append(os.path.join(dirpath, name))
      dirnames.remove(name)
  return sorted(found, key=lambda p: (p.count(os.sep), p))


def visible(names: Sequence[str]) -> list[str]:
  return sorted(n for n in names if not n.startswith("."))




def read_video(path: str) -> list[np.ndarray]:
  """All frames of a video file as uint8 [H, W, 3] (media.read_frames: its errors name the file)."""
  return media.read_frames(path)


def class_index(label: str, class_names: Sequence[str], source: str) -> int:
  """A class name (or alias, or integer index) -> index into class_names; ValueError naming source."""
  text = label.strip()
  if re.fullmatch(r"\d+", text) and int(text) < len(class_names):
    return int(text)
  name = _ALIASES.get(text.lower(), text.lower())
  names = [c.lower() for c in class_names]
  if name == "happiness" and "joy" in names:
    name = "joy"
  if name not in names:
    raise ValueError(f"{source}: unknown label {label!r}; expected one of {tuple(class_names)} or an "
                     f"index 0..{len(class_names) - 1}.")
  return names.index(name)


def read_index(builder, manual_dir: str, class_names: Sequence[str],
               convert: Optional[Callable[[int], Optional[int]]] = None) -> list[Item]:
  """Items from manual_dir/index.csv (see module doc); `convert` may map or drop (None) a label."""
  path = os.path.join(manual_dir, INDEX_FILE)
  with open(path, newline="") as f:
    rows = list(csv.DictReader(f))
  if not rows or any(c not in rows[0] for c in INDEX_COLUMNS):
    raise missing_error(builder, manual_dir, f"{path} needs a header with columns {INDEX_COLUMNS} "
                        "and at least one row")
  items, missing = [], []
  for i, row in enumerate(rows, start=2):
    where = f"{path} line {i}"
    label = class_index(row["label"], class_names, where)
    if convert is not None:
      label = convert(label)
      if label is None:
        continue
    full = os.path.join(manual_dir, row["path"].strip())
    if not os.path.exists(full):
      missing.append(row["path"])
    split = (row.get("split") or "train").strip()
    if split not in ("train", "test"):
      raise ValueError(f"{where}: split {split!r} must be train or test.")
    items.append(Item(key=f"{i:06d}", subject=row["subject"].strip(), sequence=row["sequence"].strip(),
                      path=full, label=label, split=split))
  if missing:
    raise missing_error(builder, manual_dir, f"{len(missing)} paths listed in {INDEX_FILE} do not "
                        f"exist (e.g. {missing[:3]})")
  return items


def to_size(rgb: np.ndarray, size: int) -> np.ndarray:
  """uint8 [H, W, 3] -> uint8 [S, S, 3] (bilinear; unchanged when already S x S)."""
  if rgb.shape[:2] == (size, size):
    return rgb
  return np.asarray(Image.fromarray(rgb).resize((size, size), Image.BILINEAR), np.uint8)


def read_item_frames(item: Item) -> list[np.ndarray]:
  """The item's frames (folder or video, through media.read_frames) as uint8 [H, W, 3] each.

  Raises (naming the file): UnreadableVideoError (a truncated or corrupt video), UnreadableImageError
  (a bad frame image), EmptySequenceError (no frames), MissingInputError (the path is gone).
  """
  return media.read_frames(item.path)


def frame_landmarks(registrar: registration.Registrar, rgb: np.ndarray, size: int) -> np.ndarray:
  """The 68 points of the largest face in uint8 [H, W, 3], in the frame resized to S x S (`to_size`).

  The detector runs on the whole frame (no turn or half search); float32 [68, 2] (x, y), all NaN when
  no face is found.
  """
  box = registrar.detect(rgb)
  if box is None:
    return np.full((NUM_LANDMARKS, 2), np.nan, np.float32)
  h, w = rgb.shape[:2]
  pts = registrar.landmarks(rgb, box)
  # Pixel centres map as in a resize from W x H to S x S: x' = (x + 0.5) S / W - 0.5.
  return ((pts + 0.5) * np.array([size / w, size / h]) - 0.5).astype(np.float32)


def load_frames(item: Item, image_size: int, register: bool,
                registrar: registration.Registrar) -> tuple[np.ndarray, np.ndarray]:
  """The item's frames and landmarks: (uint8 [T, S, S, 3], float32 [T, 68, 2] crop pixels (x, y)).

  register: the registrar's aligned faces and its landmarks mapped into the crop (CK+ database
  landmarks, when the item has them, instead of detection). Not register (pre-aligned frames): each
  frame resized to S x S, and the 68-point predictor run on the largest face the detector finds in the
  whole frame (NaN points for a frame without one).
  """
  frames = read_item_frames(item)
  if register:
    landmarks = None
    if item.landmarks is not None:
      landmarks = [read_landmarks(p) for p in item.landmarks]
    out, info = registrar.register_sequence(frames, landmarks=landmarks, source=item.path)
    return out, np.asarray(info["landmarks"], np.float32)
  out, points = [], []
  for t, f in enumerate(frames):
    rgb = media.as_rgb(f, f"{item.path} frame {t}")
    out.append(to_size(rgb, image_size))
    points.append(frame_landmarks(registrar, rgb, image_size))
  return np.stack(out), np.stack(points)


def read_landmarks(path: str) -> np.ndarray:
  """A CK+ landmark file -> float64 [68, 2] (x, y); ManualDataError naming the file when malformed."""
  fix = ("Replace it from the CK+ Landmarks archive, or set data.use_database_landmarks=False to "
         "detect the faces instead.")
  try:
    pts = np.loadtxt(path, dtype=np.float64, ndmin=2)
  except (OSError, ValueError) as e:
    raise ManualDataError(f"Cannot read CK+ landmarks file {path}: {str(e).rstrip('.')}. {fix}") from e
  if pts.shape != (NUM_LANDMARKS, 2) or not np.isfinite(pts).all():
    raise ManualDataError(f"CK+ landmarks file {path}: expected {NUM_LANDMARKS} rows of finite (x, y), "
                          f"got shape {pts.shape}. {fix}")
  return pts


class SequenceBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base of the licensed-database builders; subclasses define `scan` and `frame_labels`."""

  VERSION = tfds.core.Version("2.0.0")
  RELEASE_NOTES = {
      "1.0.0": "Initial release.",
      "2.0.0": "Adds landmarks float32 [T, 68, 2] (crop pixels); MMI labels from the marker types; "
               "FERA subjects are the actors found from the faces; videos read by fer_jax.data.media.",
  }
  SPLITS = ("train",)
  manual_dir_override: Optional[str] = None
  # TFDS's own code_path needs the `importlib_resources` package (not installed) for builders that
  # live outside tensorflow_datasets; it is only used to look for a checksums.tsv beside the code.
  code_path = epath.Path(__file__)

  def class_names(self) -> tuple[str, ...]:
    raise NotImplementedError

  def scan(self, manual_dir: str) -> list[Item]:
    """Finds every labelled sequence; ManualDataError when the layout is missing or partial."""
    raise NotImplementedError

  def frame_labels(self, item: Item, length: int) -> np.ndarray:
    raise NotImplementedError

  def _info(self) -> tfds.core.DatasetInfo:
    # metadata (saved with the data set): "skipped" {split: [paths]} and what the builder adds.
    return tfds.core.DatasetInfo(
        builder=self, description=self.__doc__,
        features=features(self.builder_config.image_size, self.class_names()),
        metadata=tfds.core.MetadataDict())

  def _split_generators(self, dl_manager):
    manual_dir = manual_dir_of(self, dl_manager)
    check_manual_dir(self, manual_dir)
    items = self.scan(manual_dir)
    if not items:
      raise missing_error(self, manual_dir, "no labelled sequence found")
    others = sorted({it.split for it in items} - set(self.SPLITS))
    if others:
      raise ValueError(f"{self.name} has splits {self.SPLITS}; index.csv names {others}.")
    for split in self.SPLITS:
      if not any(it.split == split for it in items):
        raise missing_error(self, manual_dir, f"no labelled sequence for split {split!r}")
    logging.info("%s: %d labelled sequences in %s", self.name, len(items), manual_dir)
    return {split: self._generate_examples([it for it in items if it.split == split], split)
            for split in self.SPLITS}

  def _generate_examples(self, items: list[Item], split: str = "train"
                         ) -> Iterator[tuple[str, dict]]:
    cfg = self.builder_config
    registrar = registration.Registrar(cfg.image_size, REDETECT_EVERY)
    skipped = []
    for n, item in enumerate(items):
      if n % 20 == 0:
        logging.info("%s: sequence %d/%d (%s)", self.name, n, len(items), item.path)
      try:
        frames, landmarks = load_frames(item, cfg.image_size, cfg.register, registrar)
      except SKIPPABLE as e:
        if not cfg.skip_unreadable:
          raise
        skipped.append(item.path)
        logging.warning("%s: skipping %s: %s", self.name, item.path, e)
        continue
      labels = self.frame_labels(item, len(frames))
      yield item.key, {"frames": frames, "labels": labels, "landmarks": landmarks,
                       "subject": item.subject, "sequence": item.sequence}
    self.info.metadata.setdefault("skipped", {})[split] = skipped
    if cfg.register:
      logging.info("%s: %s: %s", self.name, split, registrar.summary())
    if skipped:
      logging.warning("%s: skipped %d of %d sequences (data.skip_unreadable=True): %s", self.name,
                      len(skipped), len(items), skipped[:10])
      if len(skipped) == len(items):
        raise ManualDataError(f"{self.name}: every sequence was skipped as unreadable or faceless "
                              f"({len(skipped)}, e.g. {skipped[:3]}); see the warnings above.")


def make(cls, config, data_config):
  """Instantiates builder class `cls` with `config` for data_config (data_dir, manual_dir)."""
  builder = cls(config=config, data_dir=data_config.data_dir)
  if data_config.manual_dir:
    builder.manual_dir_override = os.path.expanduser(data_config.manual_dir)
  return builder
