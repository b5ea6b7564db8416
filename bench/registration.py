"""Face registration on the real face photos installed packages ship: detection, eye error, scale.

    python -m bench.registration            # about a minute on one core

Photos: skimage.data.astronaut(), matplotlib's sample grace_hopper.jpg, and the 100 face crops of
skimage.data.lfw_subset() (Labeled Faces in the Wild, 25x25 grey; upscaled 4x and padded by 30 px
so the detector can see them; its other 100 images are non-faces, a false-positive control).
For each photo:
  detection   a face found (registration.Registrar.detect);
  eye error   the eye centres re-detected in the S x S crop vs the template's EYES * S (% of S);
  scale       the photo with its mouth opened (`open_mouth`: jaw, lower lip and mouth corners moved
              down by 0.3 x the eye distance, piecewise affine), landmarks re-detected: the crop's
              scale change |s'/s - 1| with the rigid template vs the former eyes+mouth template;
  turned      the photo turned 90 degrees: the view search stands it up (orientation 270).
Also the time per frame of Registrar.stream at S=299 (redetect_every 1 and 5) on the astronaut.
"""
import os
import time

from absl import app
from absl import flags
from absl import logging
import matplotlib
import numpy as np
from PIL import Image
import skimage.data
import skimage.transform

from fer_jax.data import registration as R

FLAGS = flags.FLAGS

OLD_TEMPLATE = np.array([[0.3, 0.38], [0.7, 0.38], [0.5, 0.78]])  # Eye centres + mouth centre / S.


def open_mouth(image: np.ndarray, pts: np.ndarray, drop: float) -> np.ndarray:
  """uint8 [H, W, 3] with the jaw, lower lip and mouth corners moved down `drop` px (piecewise affine).

  `pts` are the photo's 68 landmarks [68, 2] (x, y). Only a region around the face is warped; the
  upper face and the region's border stay put.
  """
  x0, y0 = np.maximum(pts.min(0).astype(int) - 40, 0)
  x1, y1 = np.minimum(pts.max(0).astype(int) + 60, image.shape[1::-1])
  region = image[y0:y1, x0:x1]
  src = pts - (x0, y0)
  dst = src.copy()
  dst[list(range(4, 13)) + [55, 56, 57, 58, 59, 65, 66, 67], 1] += drop
  dst[[48, 60], 0] -= 0.3 * drop
  dst[[54, 64], 0] += 0.3 * drop
  dst[[48, 54, 60, 64], 1] += 0.4 * drop
  h, w = region.shape[:2]
  border = [(x, y) for x in np.linspace(0, w - 1, 5) for y in np.linspace(0, h - 1, 5)
            if x in (0, w - 1) or y in (0, h - 1)]
  tform = skimage.transform.PiecewiseAffineTransform.from_estimate(
      np.concatenate([dst, border]), np.concatenate([src, border]))
  out = image.copy()
  out[y0:y1, x0:x1] = np.clip(np.rint(skimage.transform.warp(region, tform, order=1,
                                                             preserve_range=True)), 0, 255)
  return out


def old_transform(pts: np.ndarray, size: int) -> skimage.transform.SimilarityTransform:
  """The former alignment: eye centres and mouth centre onto OLD_TEMPLATE * size."""
  anchors = np.concatenate([R.eye_centres(pts), pts[48:68].mean(0, keepdims=True)])
  return skimage.transform.SimilarityTransform.from_estimate(anchors, OLD_TEMPLATE * size)


def photos() -> tuple[dict, list]:
  """({name: uint8 [H, W, 3]} of real face photos, [non-face images] from the LFW subset)."""
  hopper = os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")
  out = {"astronaut": skimage.data.astronaut(),
         "grace_hopper": np.asarray(Image.open(hopper).convert("RGB"))}
  lfw = (skimage.data.lfw_subset() * 255).astype(np.uint8)

  def prepare(im):
    big = np.asarray(Image.fromarray(im).resize((100, 100), Image.BICUBIC))
    return np.repeat(np.pad(big, 30, mode="edge")[..., None], 3, -1)

  for i in range(100):
    out[f"lfw_{i:03d}"] = prepare(lfw[i])
  return out, [prepare(im) for im in lfw[100:]]


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # Per-sequence view choices and "2 faces" notes.
  s = FLAGS.size
  reg = R.Registrar(s, redetect_every=1, upsample=(0, 1, 2))
  faces, non_faces = photos()
  rows = []
  for name, image in faces.items():
    box = reg.detect(image)
    if box is None:
      rows.append((name, False, np.nan, np.nan, np.nan, False))
      continue
    pts = reg.landmarks(image, box)
    crop = reg.align(image, pts)
    crop_box = reg.detect(crop)
    eye_err = (np.abs(R.eye_centres(reg.landmarks(crop, crop_box)) - R.EYES * s).max() / s
               if crop_box is not None else np.nan)
    eye_distance = np.linalg.norm(np.diff(R.eye_centres(pts), axis=0))
    warped = open_mouth(image, pts, FLAGS.drop * eye_distance)
    wbox = reg.detect(warped)
    new_change = old_change = np.nan
    if wbox is not None:
      moved = reg.landmarks(warped, wbox)
      new_change = reg.transform(moved).scale / reg.transform(pts).scale - 1
      old_change = old_transform(moved, s).scale / old_transform(pts, s).scale - 1
    _, info = reg.register_sequence([np.rot90(image)], source=name)
    rows.append((name, True, eye_err, new_change, old_change, info["orientation"] == 270))
  found = [r for r in rows if r[1]]
  lfw = [r for r in rows if r[0].startswith("lfw")]
  false_pos = sum(reg.detect(im) is not None for im in non_faces)
  print(f"Photos: {len(rows)} real faces (astronaut, grace_hopper, 100 LFW crops); S={s}, mouth "
        f"opened by {FLAGS.drop} x eye distance.")
  print(f"detection: {len(found)}/{len(rows)} faces (LFW {sum(r[1] for r in lfw)}/100); false "
        f"positives on the 100 LFW non-faces: {false_pos}")
  for name in ("astronaut", "grace_hopper"):
    r = next(r for r in rows if r[0] == name)
    print(f"  {name}: eye error {100 * r[2]:.2f}% of S; scale change with the mouth open: rigid "
          f"{100 * r[3]:+.2f}%, old eyes+mouth {100 * r[4]:+.2f}%; turned 90 found: {r[5]}")
  eye = np.array([r[2] for r in found]) * 100
  new = np.abs([r[3] for r in found if np.isfinite(r[3])]) * 100
  old = np.abs([r[4] for r in found if np.isfinite(r[4])]) * 100
  print(f"eye error (% of S) over {np.isfinite(eye).sum()} re-detected crops: median "
        f"{np.nanmedian(eye):.2f}, p90 {np.nanpercentile(eye, 90):.2f}, max {np.nanmax(eye):.2f}")
  for label, x in (("rigid (new)", new), ("eyes+mouth (old)", old)):
    print(f"|scale change| {label:17s} over {len(x)} opened mouths: median {np.median(x):.2f}%, "
          f"p90 {np.percentile(x, 90):.2f}%, max {x.max():.2f}%, > 1%: {(x > 1).sum()}, "
          f"> 5%: {(x > 5).sum()}")
  print(f"turned 90 degrees, stood up by the view search: {sum(r[5] for r in found)}/{len(found)}")

  reg299 = R.Registrar(299, redetect_every=1)
  clip = [np.roll(faces["astronaut"], (t, -t), axis=(0, 1)) for t in range(20)]
  for every in (1, 5):
    reg299.redetect_every = every
    list(reg299.stream(clip[:2]))  # Warm-up.
    start = time.perf_counter()
    out = list(reg299.stream(clip))
    ms = 1000 * (time.perf_counter() - start) / len(clip)
    print(f"stream at S=299, 512x512 frames, redetect_every={every}: {ms:.1f} ms/frame "
          f"({sum(r.status == 'detected' for r in out)} detections)")


def define_flags():
  """Bench flags (defined only when run as a script; tests import the helpers)."""
  flags.DEFINE_integer("size", 128, "Crop side S for the accuracy measurements.")
  flags.DEFINE_float("drop", 0.3, "Mouth opening, as a fraction of the eye distance.")


if __name__ == "__main__":
  define_flags()
  app.run(main)
