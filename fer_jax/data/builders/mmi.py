"""TFDS builder for the MMI Facial Expression Database: frontal videos of the six basic emotions.

A session is used when it holds a video and its metadata names an Emotion 1..6 (anger, disgust, fear,
happiness, sadness, surprise) and, where session.xml gives a view, the view is 0 (frontal) or 2 (dual
view: frontal and profile side by side; registration keeps the half with the frontal face, and turns
view-0 videos stored on their side upright; see registration.Registrar). Sessions of stills, without an
emotion, with another emotion code, or of another view (1: profile) are counted in the log and left out
(they are not part of the six-emotion set). Per-frame labels: neutral -> apex -> neutral, from
the session's onset/offset annotation (-oao_aucs.xml) when present, else data.neutral_fraction.

The -oao_aucs.xml markers. Each <ActionUnit Number=".."> holds <Marker Frame=".." Type=".."/> elements
(1-based frames, not necessarily in frame order) that start a temporal phase of that AU: Type 0 neutral,
1 onset, 2 apex, 3 offset. Most files carry a Type-0 marker at frame 1 and another after the offset
(the return to neutral), so the old min/max over every marker gave frame 1 as the onset and no MMI
sequence a neutral head. The rule (`expression_span`): the expression runs from the earliest Type-1
frame over all AUs to the frame before the latest return to neutral (a Type-0 marker after an offset of
the same AU); without one, to the latest Type-3 frame; without that, to the end of the video.
Sources opened (public loaders; there is no public format document):
  - a public DISFA/CK+/MMI preprocessing script (find_string id 36393159830 in the code index; the
    repository name was not recoverable), `framesToAuDic`: per ActionUnit it reads Type "1", "2", "3"
    as onset, apex and offset frames and the last Type "0" marker whose Frame is not "1" as the return
    to neutral, then keeps frames between onset and apex and between offset and that neutral marker.
    This is the only source found that reads Type; it is single-source, so the meanings above are as
    public code uses them, not confirmed by the database's authors.
  - SyskenGL/cv-project scripts/mmi-parser.py (commit 0569498): reads session.xml only (view 0/2; an
    annotation file named *oao_aucs.xml decides crop vs rotate), never the markers.
  - ShunyuYao/sketch_RL util/vid2pic.py (commit 591567f): reads the session.xml view only (view 2
    split into two 361x576 halves, view 1 rotated, view-0 frames not 480 high rotated).
  - normanrz/face-vid parse_mmi_xml.py: collects every marker's Frame per AU, ignoring Type.
"""
import collections
import os
import re
import xml.etree.ElementTree as ET

from absl import logging

from fer_jax.data import labels as labels_lib
from fer_jax.data.builders import common

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
MMI is licensed: request an account at https://mmifacedb.eu/ and download the sessions with videos of
the six basic emotions. Unpack the download into manual_dir (data.manual_dir), which must then contain,
at any depth, a folder named Sessions with one folder per session:
  Sessions/<n>/S<subject>-<recording>.avi     (the video; n is a session number, S001 the subject)
  Sessions/<n>/S<subject>-<recording>.xml     (metadata: <Metatag Name="Emotion" Value="1..6"/>)
  Sessions/<n>/session.xml                    (optional: <track view="0"> = frontal)
  Sessions/<n>/S<subject>-<recording>-oao_aucs.xml   (optional: onset/apex/offset markers)
Emotion codes: 1 anger, 2 disgust, 3 fear, 4 happiness, 5 sadness, 6 surprise.
Alternatively put an index.csv at the root of manual_dir with columns path,subject,sequence,label
(path: a video file or frame folder relative to manual_dir; label: a class name such as happiness).
"""

_STEM = re.compile(r"^(S\d+)-(\d+)$")


def _parse(path):
  try:
    return ET.parse(path).getroot()
  except (ET.ParseError, OSError) as e:
    raise ValueError(f"Cannot parse MMI XML file {path}: {e}. Replace it from your download.") from e


def read_emotion(path):
  """The Value of <Metatag Name="Emotion"> as an int, or None if absent; ValueError naming the file."""
  for tag in _parse(path).iter():
    if tag.tag.lower() == "metatag" and (tag.get("Name") or "").strip().lower() == "emotion":
      value = (tag.get("Value") or "").strip()
      if not re.fullmatch(r"\d+", value):
        raise ValueError(f"{path}: Emotion value {value!r} is not an integer code (1..6 = "
                         f"{', '.join(labels_lib.MMI_CODES.values())}).")
      return int(value)
  return None


def read_view(path):
  """The first `view` attribute in session.xml (e.g. "0" frontal), or None."""
  for tag in _parse(path).iter():
    if tag.get("view") is not None:
      return tag.get("view").strip()
  return None


MARKER_TYPES = {0: "neutral", 1: "onset", 2: "apex", 3: "offset"}  # <Marker Type=".."> codes.


def read_markers(path):
  """The markers of an -oao_aucs.xml file: {AU number (str): [(frame, type), ...] sorted by frame}.

  Frames are 1-based ints, types 0..3 (MARKER_TYPES). ValueError naming the file for a marker without
  an integer Frame >= 1 or with a Type outside 0..3.
  """
  units = {}
  for unit in _parse(path).iter():
    if unit.tag.lower() != "actionunit":
      continue
    number = (unit.get("Number") or "?").strip()
    markers = units.setdefault(number, [])
    for tag in unit.iter():
      if tag.tag.lower() != "marker":
        continue
      frame, kind = (tag.get("Frame") or "").strip(), (tag.get("Type") or "").strip()
      if not re.fullmatch(r"\d+", frame) or int(frame) < 1:
        raise ValueError(f"{path}: ActionUnit {number}: marker Frame {tag.get('Frame')!r} is not an "
                         "integer >= 1 (1-based frame). Replace the file from your download.")
      if not re.fullmatch(r"\d+", kind) or int(kind) not in MARKER_TYPES:
        raise ValueError(f"{path}: ActionUnit {number}: marker Type {tag.get('Type')!r} is not one of "
                         f"{MARKER_TYPES}. Replace the file from your download.")
      markers.append((int(frame), int(kind)))
    markers.sort()
  return units


def expression_span(units):
  """(onset, last) 1-based frames of the expression in markers from `read_markers`, or None.

  onset: the earliest Type-1 (onset) marker over all action units; no Type-1 anywhere returns None.
  last, the last expressive frame, from the latest return to neutral over all action units: a Type-0
  marker that follows a Type-3 (offset) marker of the same AU starts the neutral phase, so the frame
  before it; without any, the latest Type-3 frame; without any Type-3, None (the end of the video).
  The Type-0 marker most files carry at frame 1 precedes every offset, so it never counts.
  """
  onsets = [f for markers in units.values() for f, kind in markers if kind == 1]
  if not onsets:
    return None
  offsets = [f for markers in units.values() for f, kind in markers if kind == 3]
  returns = [f for markers in units.values() for f, kind in markers
             if kind == 0 and any(k == 3 and g < f for g, k in markers)]
  if returns:
    last = max(returns) - 1
  elif offsets:
    last = max(offsets)
  else:
    last = None
  return min(onsets), (None if last is None else max(last, min(onsets)))


def read_onset_offset(path):
  """(onset, last) 1-based expression frames of an -oao_aucs.xml file (see `expression_span`), or None.

  last is None when the expression lasts to the end of the video.
  """
  return expression_span(read_markers(path))


class Mmi(common.SequenceBuilder, skip_registration=True):
  """MMI frontal sessions of the six basic emotions: registered frames, neutral-apex-neutral labels."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS

  def class_names(self):
    return labels_lib.BASIC7

  def scan(self, manual_dir):
    if os.path.isfile(os.path.join(manual_dir, common.INDEX_FILE)):
      return common.read_index(self, manual_dir, self.class_names())
    roots = common.find_dirs(manual_dir, "Sessions")
    if not roots:
      raise common.missing_error(self, manual_dir, "no Sessions folder")
    items, left_out, missing = [], collections.Counter(), []
    for session in common.visible(os.listdir(roots[0])):
      folder = os.path.join(roots[0], session)
      if not os.path.isdir(folder):
        continue
      names = common.visible(os.listdir(folder))
      stems = [n[:-4] for n in names if n.lower().endswith(".xml") and _STEM.match(n[:-4])]
      if not stems:
        left_out["no metadata"] += 1
        continue
      view = read_view(os.path.join(folder, "session.xml")) if "session.xml" in names else None
      for stem in stems:
        videos = [n for n in names if os.path.splitext(n)[0] == stem
                  and os.path.splitext(n)[1].lower() in common.VIDEO_EXTENSIONS]
        code = read_emotion(os.path.join(folder, stem + ".xml"))
        if not videos and not any(os.path.splitext(n)[1].lower() in common.IMAGE_EXTENSIONS
                                  for n in names):
          missing.append(os.path.relpath(os.path.join(folder, stem), manual_dir))
        elif not videos:
          left_out["stills, no video"] += 1
        elif view not in (None, "0", "2"):
          left_out[f"view {view}"] += 1
        elif code is None:
          left_out["no emotion"] += 1
        elif code not in labels_lib.MMI_CODES:
          left_out[f"emotion code {code}"] += 1
        else:
          oao = f"{stem}-oao_aucs.xml"
          onset_offset = read_onset_offset(os.path.join(folder, oao)) if oao in names else None
          onset, offset = onset_offset or (None, None)
          items.append(common.Item(
              key=f"{session}_{stem}", subject=_STEM.match(stem).group(1), sequence=stem,
              path=os.path.join(folder, videos[0]),
              label=labels_lib.BASIC7.index(labels_lib.MMI_CODES[code]), onset=onset, offset=offset))
    if missing:
      raise common.missing_error(self, manual_dir, f"{len(missing)} sessions have metadata but neither "
                                 f"a video nor stills (partial download?), e.g. {missing[:5]}")
    annotated = sum(i.onset is not None for i in items)
    logging.info("mmi: %d frontal six-emotion sessions of %d subjects (%d labelled from -oao_aucs.xml "
                 "markers, %d by data.neutral_fraction); left out: %s", len(items),
                 len({i.subject for i in items}), annotated, len(items) - annotated,
                 dict(left_out) or "none")
    return items

  def frame_labels(self, item, length):
    return labels_lib.mmi_frame_labels(length, item.label, self.builder_config.neutral_fraction,
                                       onset=item.onset, offset=item.offset,
                                       num_classes=len(self.class_names()), sequence=item.sequence)


def make_builder(data_config) -> Mmi:
  """Mmi builder for config.data (image_size, register, neutral_fraction -> BuilderConfig name)."""
  return common.make(Mmi, common.sequence_config(data_config, nf=data_config.neutral_fraction),
                     data_config)
