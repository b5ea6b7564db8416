"""Actor identity from faces: the clustering rule on hand-made points, then real photos of known people."""
import os

import matplotlib.cbook
import numpy as np
import pytest
import skimage.data

from fer_jax.data import actors
from fer_jax.data import media

FACES = os.path.join(os.path.dirname(__file__), "data", "faces")  # See its README.md.


def _line(*xs):
  """Points on one axis of a 128-d space: their distances are |x_i - x_j|."""
  out = np.zeros((len(xs), actors.DESCRIPTOR_SIZE))
  out[:, 0] = xs
  return out


def test_cluster_rule():
  # Distances 0.5, 0.55 and 1.05. Average linkage merges {0, 1} at 0.5, then {0, 1}-{2} is
  # (1.05 + 0.55) / 2 = 0.8 >= 0.6: two actors (single linkage would chain all three at 0.55).
  np.testing.assert_array_equal(actors.cluster(_line(0.0, 0.5, 1.05)), [0, 0, 1])
  # Distances 0.3, 0.4 and 0.7: {0, 1} at 0.3, then (0.7 + 0.4) / 2 = 0.55 < 0.6: one actor
  # (complete linkage would keep the third apart at 0.7).
  np.testing.assert_array_equal(actors.cluster(_line(0.0, 0.3, 0.7)), [0, 0, 0])
  # Strictly below the threshold merges; at it, not.
  np.testing.assert_array_equal(actors.cluster(_line(0.0, 0.5999)), [0, 0])
  np.testing.assert_array_equal(actors.cluster(_line(0.0, 0.6)), [0, 1])
  # Ids in order of each cluster's first member, whatever scipy numbers them.
  np.testing.assert_array_equal(actors.cluster(_line(5.0, 0.0, 5.1, 0.2, 9.0)), [0, 1, 0, 1, 2])
  np.testing.assert_array_equal(actors.cluster(_line(3.0)), [0])
  assert actors.cluster(np.zeros((0, 128))).shape == (0,)


def test_names_and_summaries():
  d = _line(0.0, 0.1, 2.0)
  names = actors.name_actors([d[0], None, d[1], d[2]], ["v1", "actor01", "v3", "v4"])
  # The faceless video keeps its fallback "actor01", so the clusters are actor02 and actor03.
  assert names == ["actor02", "actor01", "actor02", "actor03"]
  assert actors.name_actors([None, None], ["a", "b"]) == ["a", "b"]
  with pytest.raises(ValueError, match="2 descriptors for 1"):
    actors.name_actors([None, None], ["a"])
  summary = actors.split_actors(["a1", "a2", "a2", "a3"], ["a2", "a4", "a4"])
  assert summary == {"train": 3, "test": 2, "shared": 1, "shared_ids": ["a2"]}
  np.testing.assert_array_equal(actors.unseen_in_training(["a2", "a4", "a1"], ["a1", "a2"]),
                                [False, True, False])
  # Clusters {0, 0, 1, 1, 1} over truth {A, A, A, B, B}: majorities 2 (A) + 2 (B) of 5.
  assert actors.purity([0, 0, 1, 1, 1], ["A", "A", "A", "B", "B"]) == pytest.approx(0.8)
  assert actors.purity([0, 1, 2], ["A", "A", "B"]) == 1.0


def _video(tag):
  """The frames a1_0.jpg, a1_1.jpg, ... (or the one photo group_0.jpg) of tests/data/faces."""
  names = sorted(n for n in os.listdir(FACES) if n.split(".")[0] == tag or n.startswith(tag + "_"))
  return [media.read_image(os.path.join(FACES, n)) for n in names]


def real_videos():
  """{name: (frames, true identity)}: real photos, several of the same people (tests/data/faces)."""
  hopper = media.read_image(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
  return {
      "a1": (_video("a1"), "man A"), "a2": (_video("a2"), "man A"),  # Two clips of one man.
      "b1": (_video("b1"), "woman B"), "b2": (_video("b2"), "woman B"),  # Sad, then happy.
      **{f"g{k}": (_video(f"group_{k}"), f"group {k}") for k in range(4)},  # Four people, one photo.
      "astronaut": ([skimage.data.astronaut()], "Eileen Collins"),
      "hopper": ([hopper], "Grace Hopper"),
  }


def test_real_faces():
  describer = actors.FaceDescriber(frames_per_video=2)  # The first and last frame of each clip.
  assert describer.describe(np.full((120, 120, 3), 128, np.uint8)) is None  # No face.
  assert describer.describe_video([]) is None
  videos = real_videos()
  descriptors = np.stack([describer.describe_video(frames, name) for name, (frames, _) in
                          videos.items()])
  assert descriptors.shape == (10, 128) and descriptors.dtype == np.float32
  ids = dict(zip(videos, actors.cluster(descriptors)))
  assert ids["a1"] == ids["a2"] and ids["b1"] == ids["b2"]  # Same person, different clips.
  distinct = ["a1", "b1", "g0", "g1", "astronaut", "hopper"]
  assert len({ids[n] for n in distinct}) == len(distinct)  # Different people stay apart.
  # Two women of the group photo (g2, g3; faces ~110 px) lie 0.52 apart and merge at dlib's 0.6:
  # 10 videos of 8 people in 7 clusters, purity 9 / 10.
  purity = actors.purity([ids[n] for n in videos], [truth for _, truth in videos.values()])
  assert purity >= 0.9
