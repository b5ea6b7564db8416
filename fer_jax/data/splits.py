"""Evaluation protocols as folds of sequence indices: subject-independent, official (FERA), cross-database.

Every function takes one subject id per sequence and returns folds whose `.train`, `.val`, `.test` are
sorted int64 arrays of sequence indices. No subject appears in two parts of a fold (except where the
official FERA split itself shares actors between its train and test parts).
"""
import dataclasses
from typing import Optional, Sequence

import numpy as np


@dataclasses.dataclass(frozen=True, eq=False)
class Fold:
  """Sequence indices of one fold: train, val, test, each sorted int64 [n]."""
  train: np.ndarray
  val: np.ndarray
  test: np.ndarray


def _ids(subject_ids, name) -> np.ndarray:
  ids = np.asarray(list(subject_ids))
  if ids.ndim != 1 or ids.size == 0:
    raise ValueError(f"{name} must be a non-empty 1-D sequence of subject ids (one per sequence), "
                     f"got shape {ids.shape}.")
  return ids


def _indices(ids: np.ndarray, subjects) -> np.ndarray:
  return np.flatnonzero(np.isin(ids, np.asarray(list(subjects), dtype=ids.dtype))).astype(np.int64)


def _count(fraction, num_subjects, name) -> int:
  """round(fraction * num_subjects), at least 1 when fraction > 0."""
  if not 0.0 <= fraction < 1.0:
    raise ValueError(f"{name}={fraction} must lie in [0, 1).")
  return 0 if fraction == 0 else max(1, int(round(fraction * num_subjects)))


def subject_independent_folds(subject_ids: Sequence, num_folds: int = 5, val_fraction: float = 0.1,
                              test_fraction: Optional[float] = 0.1, seed: int = 0) -> list[Fold]:
  """Subject-independent folds (Hasani & Mahoor: 5 folds, 10% test and 10% val subjects each).

  Args:
    subject_ids: one id per sequence, ints or strings (e.g. CK+ "S005").
    num_folds: number of folds.
    val_fraction: validation subjects per fold, as a fraction of all subjects (rounded, at least 1;
      0 gives an empty validation set). Drawn at random from the fold's non-test subjects.
    test_fraction: test subjects per fold, as a fraction of all subjects (rounded, at least 1); test
      sets of different folds are disjoint, so num_folds * test_fraction of the subjects are ever
      tested (half, by default). None: standard k-fold, the subjects split into num_folds near-equal
      test groups, every subject tested exactly once.
    seed: the subject shuffle; the same seed gives the same folds.

  Returns:
    num_folds Folds over sequence indices.
  """
  ids = _ids(subject_ids, "subject_ids")
  if num_folds < 1:
    raise ValueError(f"num_folds={num_folds} must be >= 1.")
  subjects = np.unique(ids)
  n = len(subjects)
  rng = np.random.default_rng(seed)
  order = subjects[rng.permutation(n)]
  n_val = _count(val_fraction, n, "val_fraction")
  if test_fraction is None:
    if n < num_folds:
      raise ValueError(f"{n} subjects are too few for {num_folds}-fold cross-validation: need at "
                       "least num_folds subjects; lower num_folds.")
    test_groups = np.array_split(order, num_folds)
  else:
    n_test = _count(test_fraction, n, "test_fraction")
    if n_test == 0:
      raise ValueError("test_fraction=0 leaves no test subjects; use a positive fraction or None.")
    if num_folds * n_test > n:
      raise ValueError(f"{n} subjects are too few for {num_folds} disjoint test sets of {n_test} "
                       f"subjects (test_fraction={test_fraction}); lower num_folds or test_fraction.")
    test_groups = [order[f * n_test:(f + 1) * n_test] for f in range(num_folds)]
  folds = []
  for f, test in enumerate(test_groups):
    rest = np.setdiff1d(order, test)
    if len(rest) - n_val < 1:
      raise ValueError(f"{n} subjects are too few: fold {f} has {len(test)} test and {n_val} "
                       "validation subjects and none left to train on; lower val_fraction, "
                       "test_fraction or num_folds.")
    val = np.random.default_rng([seed, f]).choice(rest, n_val, replace=False) if n_val else rest[:0]
    train = np.setdiff1d(rest, val)
    folds.append(Fold(train=_indices(ids, train), val=_indices(ids, val), test=_indices(ids, test)))
  return folds


def _train_test_fold(train_ids, test_ids, val_fraction, seed, allow_shared) -> Fold:
  train_ids, test_ids = _ids(train_ids, "train_subject_ids"), _ids(test_ids, "test_subject_ids")
  subjects = np.unique(train_ids)
  if not allow_shared:
    shared = np.intersect1d(subjects, np.unique(test_ids))
    if len(shared):
      raise ValueError(f"Subject ids {shared[:5].tolist()} occur in both the training and the test "
                       "databases; prefix each database's ids with its name (e.g. 'ck_plus/S005').")
  n_val = _count(val_fraction, len(subjects), "val_fraction")
  if len(subjects) - n_val < 1:
    raise ValueError(f"{len(subjects)} training subjects are too few for {n_val} validation "
                     "subjects; lower val_fraction.")
  val = np.random.default_rng(seed).choice(subjects, n_val, replace=False) if n_val else subjects[:0]
  return Fold(train=_indices(train_ids, np.setdiff1d(subjects, val)),
              val=_indices(train_ids, val),
              test=len(train_ids) + np.arange(len(test_ids), dtype=np.int64))


def official_folds(train_subjects: Sequence, test_subjects: Sequence, val_fraction: float = 0.1,
                   seed: int = 0) -> list[Fold]:
  """The one fold of a given train/test split (GEMEP-FERA).

  Args:
    train_subjects: subject id per sequence of the official training part.
    test_subjects: subject id per sequence of the official test part (FERA shares some actors with
      the training part; that is the official protocol and is allowed here).
    val_fraction: validation = this fraction of the training subjects (at least 1), subject-disjoint
      from the rest of the training part.
    seed: which training subjects validate.

  Returns:
    [Fold] with indices over the concatenation train + test.
  """
  return [_train_test_fold(train_subjects, test_subjects, val_fraction, seed, allow_shared=True)]


def cross_database_folds(train_subject_ids: Sequence, test_subject_ids: Sequence,
                         val_fraction: float = 0.1, seed: int = 0) -> list[Fold]:
  """Train on the (already concatenated) training databases, test on the held-out one.

  Subject ids of different databases must not collide: prefix them with the database name before
  calling (e.g. "mmi/S001"); ids shared by the training and test databases raise ValueError.

  Args:
    train_subject_ids: subject id per sequence of the training databases, concatenated.
    test_subject_ids: subject id per sequence of the held-out database.
    val_fraction: validation = this fraction of the training subjects (at least 1).
    seed: which training subjects validate.

  Returns:
    [Fold] with indices over the concatenation train + test.
  """
  return [_train_test_fold(train_subject_ids, test_subject_ids, val_fraction, seed,
                           allow_shared=False)]
