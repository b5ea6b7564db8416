"""Class lists, per-frame labelling rules and the cross-database label space.

Class orders
  BASIC7 (CK+, MMI, synthetic): neutral, anger, disgust, fear, happiness, sadness, surprise.
  CK+ with data.keep_contempt: BASIC7 + ("contempt",) (contempt is the eighth class, index 7).
  FERA5 (GEMEP-FERA 2011 emotion sub-challenge): anger, fear, joy, relief, sadness.

Per-frame rules (one sequence label -> labels [T] int32)
  CK+: the first `neutral_head` frames are neutral (the paper: "the first few frames"), the rest carry
    the sequence's emotion. At least the last (peak) frame keeps the emotion, so a sequence of
    T <= neutral_head frames has T - 1 neutral frames.
  MMI: neutral -> apex -> neutral. With the database's own annotation (1-based first and last
    expressive frame, from the -oao_aucs.xml markers: see builders/mmi.py `expression_span`) frames
    outside [onset, offset] are neutral (no offset: the expression lasts to the last frame);
    otherwise floor(neutral_fraction * T) frames at each end are neutral. At least one frame keeps
    the emotion.
  FERA: the sequence label on every frame (GEMEP portrayals are expressive throughout).

Cross-database label space (train on two databases, test on the third)
  CK+ and MMI share BASIC7; FERA has five classes and no neutral frames. The only emotions all three
  databases label are anger, fear, happiness (FERA "joy") and sadness; disgust and surprise exist in
  CK+/MMI only, relief in FERA only. The shared space is therefore
    CROSS_DB_CLASSES = (neutral, anger, fear, happiness, sadness)
  and `cross_db_classes(heldout)` picks the part of it that the held-out test set can contain:
  - heldout "fera" (train CK+ + MMI): (anger, fear, happiness, sadness). FERA has no neutral label, so a
    neutral class would be one the test set can never confirm and that can only cost test accuracy;
    the neutral onset/offset frames of CK+/MMI are dropped from training. They sit at the ends of each
    sequence, so the kept frames stay one contiguous run and the CRF still sees real sequences.
  - heldout "ck_plus" (train MMI + FERA) and "mmi" (train CK+ + FERA): all five. The test sequences
    start neutral (CK+) or start and end neutral (MMI), and the other BASIC7 database teaches neutral.
  Disgust and surprise are dropped in every direction (sequences of those classes vanish), even where
  both the held-out set and one training set have them, so that the three cross-database results are
  over the same four emotions and comparable with each other; FERA's relief always drops out.
  `to_shared(labels, source_classes, shared_classes)` maps labels by class name (joy -> happiness) and
  returns a keep mask for the frames whose class has no counterpart.
"""
from typing import Optional, Sequence

import numpy as np

BASIC7 = ("neutral", "anger", "disgust", "fear", "happiness", "sadness", "surprise")
CONTEMPT = "contempt"
BASIC7_CONTEMPT = BASIC7 + (CONTEMPT,)
FERA5 = ("anger", "fear", "joy", "relief", "sadness")
CROSS_DB_CLASSES = ("neutral", "anger", "fear", "happiness", "sadness")
DATABASES = ("ck_plus", "mmi", "fera")

# CK+ Emotion/*_emotion.txt codes (CK+ README): 0 neutral, 1 anger, 2 contempt, 3 disgust, 4 fear,
# 5 happy, 6 sadness, 7 surprise.
CK_CODES = {0: "neutral", 1: "anger", 2: CONTEMPT, 3: "disgust", 4: "fear", 5: "happiness",
            6: "sadness", 7: "surprise"}
# MMI metadata <Metatag Name="Emotion" Value=".."/> codes (one public loader; see DATASETS.md).
MMI_CODES = {1: "anger", 2: "disgust", 3: "fear", 4: "happiness", 5: "sadness", 6: "surprise"}
# Class words found in FERA label files -> FERA5 names.
FERA_WORDS = {"anger": "anger", "angry": "anger", "fear": "fear", "joy": "joy", "relief": "relief",
              "sadness": "sadness", "sad": "sadness"}
# Names that mean the same class in different databases.
_SYNONYMS = {"joy": "happiness", "happy": "happiness"}


def ck_class_names(keep_contempt: bool = False) -> tuple[str, ...]:
  """CK+ classes: BASIC7, plus contempt as the eighth when `keep_contempt`."""
  return BASIC7_CONTEMPT if keep_contempt else BASIC7


def class_names(database: str, keep_contempt: bool = False) -> tuple[str, ...]:
  """Class list of `database` (ck_plus | mmi | fera)."""
  if database == "ck_plus":
    return ck_class_names(keep_contempt)
  if database == "mmi":
    return BASIC7
  if database == "fera":
    return FERA5
  raise ValueError(f"database={database!r}: expected one of {DATABASES}.")


def parse_ck_code(text: str, source: str, keep_contempt: bool = False) -> Optional[int]:
  """Parses a CK+ emotion file's text ("3.0000000e+00") into a class index, None for dropped contempt.

  Raises:
    ValueError naming `source` when the text is not a number or the code is not 0..7.
  """
  try:
    value = float(text.strip())
  except ValueError:
    raise ValueError(f"{source}: CK+ emotion file must hold one number 0..7, got {text.strip()!r}.")
  code = int(value)
  if code != value or code not in CK_CODES:
    raise ValueError(f"{source}: unknown CK+ emotion code {text.strip()!r}; valid codes are 0..7 "
                     f"({', '.join(f'{k} {v}' for k, v in CK_CODES.items())}).")
  name = CK_CODES[code]
  if name == CONTEMPT and not keep_contempt:
    return None
  return ck_class_names(keep_contempt).index(name)


def parse_fera_word(text: str, source: str) -> int:
  """Parses a FERA label (a class word such as "relief") into a FERA5 index; ValueError naming source."""
  word = text.strip().lower()
  if word not in FERA_WORDS:
    raise ValueError(f"{source}: unknown FERA emotion {text.strip()!r}; expected one of {FERA5}.")
  return FERA5.index(FERA_WORDS[word])


def _check(length: int, label: int, num_classes: int, sequence: str) -> None:
  if int(length) < 1:
    raise ValueError(f"Sequence {sequence!r} has {length} frames; every sequence needs at least one "
                     "frame (remove it or fix its frame folder).")
  if not 0 <= int(label) < num_classes:
    raise ValueError(f"Sequence {sequence!r}: label {label} is outside [0, {num_classes}).")


def ck_frame_labels(length: int, label: int, neutral_head: int, *, num_classes: int = len(BASIC7),
                    sequence: str = "?") -> np.ndarray:
  """CK+ rule: the first `neutral_head` frames neutral (0), the rest `label`; int32 [length]."""
  _check(length, label, num_classes, sequence)
  if neutral_head < 0:
    raise ValueError(f"neutral_head={neutral_head} must be >= 0.")
  out = np.full((length,), label, np.int32)
  out[:min(neutral_head, length - 1)] = BASIC7.index("neutral")
  return out


def mmi_frame_labels(length: int, label: int, neutral_fraction: float, *,
                     onset: Optional[int] = None, offset: Optional[int] = None,
                     num_classes: int = len(BASIC7), sequence: str = "?") -> np.ndarray:
  """MMI rule: neutral at both ends, `label` in the middle; int32 [length].

  Args:
    length: T, number of frames.
    label: the sequence's class index.
    neutral_fraction: fraction of T labelled neutral at each end when onset/offset are not given.
    onset, offset: 1-based first and last frame of the expression (the database's own annotation);
      used when onset is given; offset None means the expression lasts to the last frame.
    num_classes, sequence: for validation messages.
  """
  _check(length, label, num_classes, sequence)
  if onset is not None:
    offset = length if offset is None else offset
    if not 1 <= onset <= offset:
      raise ValueError(f"Sequence {sequence!r}: onset {onset} / offset {offset} must satisfy "
                       "1 <= onset <= offset.")
    start = min(onset - 1, length - 1)
    stop = max(min(offset, length), start + 1)
  else:
    if not 0.0 <= neutral_fraction < 0.5:
      raise ValueError(f"neutral_fraction={neutral_fraction} must be in [0, 0.5).")
    n = min(int(np.floor(neutral_fraction * length)), (length - 1) // 2)
    start, stop = n, length - n
  out = np.zeros((length,), np.int32)
  out[start:stop] = label
  return out


def fera_frame_labels(length: int, label: int, *, num_classes: int = len(FERA5),
                      sequence: str = "?") -> np.ndarray:
  """FERA rule: `label` on every frame; int32 [length]."""
  _check(length, label, num_classes, sequence)
  return np.full((length,), label, np.int32)


def validate_labels(labels: np.ndarray, num_classes: int, sequence: str) -> np.ndarray:
  """Checks per-frame labels [T] (T >= 1, each in [0, num_classes)); returns them as int32."""
  labels = np.asarray(labels)
  if labels.ndim != 1 or labels.shape[0] < 1:
    raise ValueError(f"Sequence {sequence!r}: labels must have shape [T] with T >= 1, got "
                     f"{labels.shape}.")
  bad = (labels < 0) | (labels >= num_classes)
  if bad.any():
    raise ValueError(f"Sequence {sequence!r}: label {labels[bad][0]} is outside [0, {num_classes}).")
  return labels.astype(np.int32)


def cross_db_classes(heldout: str) -> tuple[str, ...]:
  """The label space when testing on `heldout` after training on the other two (see module doc)."""
  if heldout not in DATABASES:
    raise ValueError(f"heldout={heldout!r}: expected one of {DATABASES}.")
  if heldout == "fera":
    return tuple(c for c in CROSS_DB_CLASSES if c != "neutral")
  return CROSS_DB_CLASSES


def to_shared(labels: np.ndarray, source_classes: Sequence[str],
              shared_classes: Sequence[str] = CROSS_DB_CLASSES) -> tuple[np.ndarray, np.ndarray]:
  """Maps per-frame labels of a database into the shared space.

  Args:
    labels: int [T] (or any shape), indices into `source_classes`.
    source_classes: the database's class names (BASIC7, BASIC7_CONTEMPT or FERA5).
    shared_classes: the target space, e.g. `cross_db_classes(heldout)`.

  Returns:
    (shared int32, same shape as labels; 0 where dropped, keep bool, same shape): keep is False for
    frames whose class has no counterpart in `shared_classes` (e.g. relief, disgust, contempt).
  """
  labels = np.asarray(labels)
  lut = np.array([shared_classes.index(_SYNONYMS.get(c, c)) if _SYNONYMS.get(c, c) in shared_classes
                  else -1 for c in source_classes], np.int64)
  if labels.size and (labels.min() < 0 or labels.max() >= len(source_classes)):
    raise ValueError(f"labels must lie in [0, {len(source_classes)}) for classes {tuple(source_classes)}, "
                     f"got range [{labels.min()}, {labels.max()}].")
  mapped = lut[labels]
  keep = mapped >= 0
  return np.where(keep, mapped, 0).astype(np.int32), keep
