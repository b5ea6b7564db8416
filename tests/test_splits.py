"""Evaluation protocols: subject-independent, k-fold, official (FERA) and cross-database folds."""
import numpy as np
import pytest

from fer_jax.data import splits


def _ids(num_subjects, per_subject=3, string=False, seed=0):
  """One id per sequence, subjects interleaved and with varying sequence counts."""
  rng = np.random.default_rng(seed)
  ids = np.repeat(np.arange(num_subjects) * 7 + 5, rng.integers(1, per_subject + 1, num_subjects))
  ids = ids[rng.permutation(len(ids))]
  return [f"S{i:03d}" for i in ids] if string else ids.tolist()


def _check_fold(fold, ids):
  ids = np.asarray(ids)
  parts = (fold.train, fold.val, fold.test)
  for p in parts:
    assert p.dtype == np.int64 and np.all(np.diff(p) > 0)  # Sorted, unique.
  # Every sequence in exactly one part.
  np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(len(ids)))
  subjects = [set(ids[p].tolist()) for p in parts]
  assert not subjects[0] & subjects[1] and not subjects[0] & subjects[2] and not subjects[1] & subjects[2]
  # Whole subjects: every sequence of a part's subjects is in that part.
  for p, s in zip(parts, subjects):
    assert len(p) == np.isin(ids, list(s)).sum()
  return subjects


@pytest.mark.parametrize("string", [False, True])
def test_paper_protocol(string):
  ids = _ids(40, string=string)
  folds = splits.subject_independent_folds(ids)
  assert len(folds) == 5
  tested = []
  for fold in folds:
    train, val, test = _check_fold(fold, ids)
    assert len(test) == 4 and len(val) == 4 and len(train) == 32  # 10% / 10% of 40 subjects.
    tested.append(test)
  union = set().union(*tested)
  assert len(union) == 20  # Test sets disjoint: half the subjects ever tested.


def test_kfold_tests_every_subject_once():
  ids = _ids(23)
  folds = splits.subject_independent_folds(ids, num_folds=5, test_fraction=None, val_fraction=0.1)
  counts = {}
  for fold in folds:
    _, val, test = _check_fold(fold, ids)
    assert len(val) == 2 and len(test) in (4, 5)
    for s in test:
      counts[s] = counts.get(s, 0) + 1
  assert sorted(counts) == sorted(set(ids)) and set(counts.values()) == {1}


def test_deterministic_and_seeded():
  ids = _ids(30)
  a, b = splits.subject_independent_folds(ids, seed=3), splits.subject_independent_folds(ids, seed=3)
  c = splits.subject_independent_folds(ids, seed=4)
  for fa, fb in zip(a, b):
    for k in ("train", "val", "test"):
      np.testing.assert_array_equal(getattr(fa, k), getattr(fb, k))
  assert any(not np.array_equal(fa.test, fc.test) for fa, fc in zip(a, c))


def test_rounding_and_zero_validation():
  ids = _ids(12)
  folds = splits.subject_independent_folds(ids, num_folds=2, val_fraction=0.0, test_fraction=0.25)
  for fold in folds:
    train, val, test = _check_fold(fold, ids)
    assert len(fold.val) == 0 and len(test) == 3 and len(train) == 9


def test_too_few_subjects():
  with pytest.raises(ValueError, match="too few"):
    splits.subject_independent_folds(_ids(4))  # 5 disjoint test sets of 1 subject need 5.
  with pytest.raises(ValueError, match="too few"):
    splits.subject_independent_folds(_ids(4), num_folds=5, test_fraction=None)
  with pytest.raises(ValueError, match="too few"):
    splits.subject_independent_folds(_ids(3), num_folds=3, test_fraction=None, val_fraction=0.5)
  with pytest.raises(ValueError, match="test_fraction"):
    splits.subject_independent_folds(_ids(20), test_fraction=1.5)


def test_official_folds_fera():
  train = ["A1", "A1", "A2", "A3", "A3", "A4", "A5", "A6", "A7"]
  test = ["A1", "A8", "A8", "A9", "A10"]  # The official split shares actors.
  (fold,) = splits.official_folds(train, test, val_fraction=0.3, seed=1)
  np.testing.assert_array_equal(fold.test, np.arange(9, 14))
  ids = np.asarray(train)
  np.testing.assert_array_equal(np.sort(np.concatenate([fold.train, fold.val])), np.arange(9))
  val_subjects = set(ids[fold.val])
  assert len(val_subjects) == 2 and not val_subjects & set(ids[fold.train])


def test_cross_database_folds():
  train = [f"ck_plus/{s}" for s in _ids(10, string=True)] + [f"mmi/{s}" for s in _ids(6, string=True)]
  test = [f"fera/{s}" for s in _ids(5, string=True)]
  (fold,) = splits.cross_database_folds(train, test, val_fraction=0.25, seed=0)
  ids = np.asarray(train + test)
  train_s, val_s, test_s = _check_fold(fold, ids)
  np.testing.assert_array_equal(fold.test, np.arange(len(train), len(ids)))
  assert len(val_s) == 4 and len(train_s) == 12 and test_s == set(test)
  with pytest.raises(ValueError, match="prefix"):
    splits.cross_database_folds(_ids(10, string=True), _ids(5, string=True))
