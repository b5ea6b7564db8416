"""Per-frame labelling rules, label-file parsing and the cross-database label space."""
import numpy as np
import pytest

from fer_jax.data import labels as L


def test_class_lists():
  assert L.BASIC7 == ("neutral", "anger", "disgust", "fear", "happiness", "sadness", "surprise")
  assert L.ck_class_names(True) == L.BASIC7 + ("contempt",)
  assert L.class_names("fera") == ("anger", "fear", "joy", "relief", "sadness")
  with pytest.raises(ValueError, match="ckplus"):
    L.class_names("ckplus")


def test_ck_codes():
  assert L.parse_ck_code("   3.0000000e+00\n", "f") == 2  # disgust
  assert L.parse_ck_code("5.00000000e+00", "f") == 4  # happy -> happiness
  assert L.parse_ck_code("7.0000000e+00", "f") == 6  # surprise
  assert L.parse_ck_code("2.0000000e+00", "f") is None  # contempt dropped by default
  assert L.parse_ck_code("2.0000000e+00", "f", keep_contempt=True) == 7
  with pytest.raises(ValueError, match="S005_001_emotion.txt.*unknown CK\\+ emotion code"):
    L.parse_ck_code("9.0000000e+00", "S005_001_emotion.txt")
  with pytest.raises(ValueError, match="bad.txt"):
    L.parse_ck_code("happy", "bad.txt")
  with pytest.raises(ValueError, match="bad.txt"):
    L.parse_ck_code("2.5", "bad.txt")


def test_fera_words():
  assert L.parse_fera_word("Relief\n", "f") == 3
  with pytest.raises(ValueError, match="x.dat"):
    L.parse_fera_word("contempt", "x.dat")


def test_ck_rule():
  np.testing.assert_array_equal(L.ck_frame_labels(6, 4, 3), [0, 0, 0, 4, 4, 4])
  np.testing.assert_array_equal(L.ck_frame_labels(3, 4, 3), [0, 0, 4])  # Peak frame keeps the label.
  np.testing.assert_array_equal(L.ck_frame_labels(1, 4, 3), [4])  # One frame is valid.
  np.testing.assert_array_equal(L.ck_frame_labels(4, 2, 0), [2, 2, 2, 2])
  assert L.ck_frame_labels(4, 2, 1).dtype == np.int32
  with pytest.raises(ValueError, match="'S005/001'.*0 frames"):
    L.ck_frame_labels(0, 4, 3, sequence="S005/001")
  with pytest.raises(ValueError, match="'S005/001'.*label 7"):
    L.ck_frame_labels(5, 7, 3, sequence="S005/001")
  assert L.ck_frame_labels(5, 7, 3, num_classes=8)[-1] == 7


def test_mmi_rule():
  # 10 frames, fraction 0.25: floor(2.5) = 2 neutral at each end.
  np.testing.assert_array_equal(L.mmi_frame_labels(10, 5, 0.25), [0, 0, 5, 5, 5, 5, 5, 5, 0, 0])
  np.testing.assert_array_equal(L.mmi_frame_labels(1, 5, 0.25), [5])
  np.testing.assert_array_equal(L.mmi_frame_labels(3, 5, 0.45), [0, 5, 0])
  np.testing.assert_array_equal(L.mmi_frame_labels(2, 5, 0.45), [5, 5])  # (2-1)//2 = 0 per end.
  # Annotated onset 3 .. offset 5 (1-based) overrides the fraction.
  np.testing.assert_array_equal(L.mmi_frame_labels(7, 6, 0.25, onset=3, offset=5),
                                [0, 0, 6, 6, 6, 0, 0])
  # Offset past the end clips; onset past the end keeps the last frame.
  np.testing.assert_array_equal(L.mmi_frame_labels(4, 1, 0.25, onset=2, offset=9), [0, 1, 1, 1])
  np.testing.assert_array_equal(L.mmi_frame_labels(3, 1, 0.25, onset=8, offset=9), [0, 0, 1])
  # Onset without offset: the expression lasts to the last frame.
  np.testing.assert_array_equal(L.mmi_frame_labels(5, 1, 0.25, onset=3), [0, 0, 1, 1, 1])
  with pytest.raises(ValueError, match="onset"):
    L.mmi_frame_labels(5, 1, 0.25, onset=4, offset=2)
  with pytest.raises(ValueError, match="neutral_fraction"):
    L.mmi_frame_labels(5, 1, 0.5)
  with pytest.raises(ValueError, match="'S001-002'"):
    L.mmi_frame_labels(0, 1, 0.25, sequence="S001-002")


def test_fera_rule():
  np.testing.assert_array_equal(L.fera_frame_labels(3, 4), [4, 4, 4])
  with pytest.raises(ValueError, match="'v1'.*label 5"):
    L.fera_frame_labels(3, 5, sequence="v1")


def test_validate_labels():
  assert L.validate_labels([0, 6], 7, "s").dtype == np.int32
  with pytest.raises(ValueError, match="'s'.*label 7"):
    L.validate_labels([0, 7], 7, "s")
  with pytest.raises(ValueError, match="'s'.*T >= 1"):
    L.validate_labels([], 7, "s")


def test_cross_db_spaces():
  assert L.CROSS_DB_CLASSES == ("neutral", "anger", "fear", "happiness", "sadness")
  assert L.cross_db_classes("fera") == ("anger", "fear", "happiness", "sadness")
  assert L.cross_db_classes("ck_plus") == L.CROSS_DB_CLASSES
  assert L.cross_db_classes("mmi") == L.CROSS_DB_CLASSES
  with pytest.raises(ValueError, match="heldout"):
    L.cross_db_classes("jaffe")


def test_to_shared_fera():
  # FERA5: anger fear joy relief sadness -> shared: anger 1, fear 2, happiness 3, (drop), sadness 4.
  shared, keep = L.to_shared(np.array([0, 1, 2, 3, 4]), L.FERA5)
  np.testing.assert_array_equal(shared, [1, 2, 3, 0, 4])
  np.testing.assert_array_equal(keep, [True, True, True, False, True])


def test_to_shared_basic7_heldout_fera():
  space = L.cross_db_classes("fera")
  # A CK+ sequence neutral, neutral, happiness x3: the neutral head drops, the rest stays contiguous.
  shared, keep = L.to_shared(np.array([0, 0, 4, 4, 4]), L.BASIC7, space)
  np.testing.assert_array_equal(keep, [False, False, True, True, True])
  np.testing.assert_array_equal(shared[keep], [2, 2, 2])  # happiness is index 2 of the 4.
  # Disgust, surprise and contempt have no counterpart anywhere.
  _, keep = L.to_shared(np.array([2, 6, 7]), L.BASIC7_CONTEMPT)
  assert not keep.any()
  # A brute-force check of every BASIC7 class by name.
  shared, keep = L.to_shared(np.arange(7), L.BASIC7)
  for i, name in enumerate(L.BASIC7):
    assert keep[i] == (name in L.CROSS_DB_CLASSES)
    if keep[i]:
      assert L.CROSS_DB_CLASSES[shared[i]] == name
  with pytest.raises(ValueError, match="\\[0, 5\\)"):
    L.to_shared(np.array([5]), L.FERA5)
