"""Checks a whole experiment config before any work: every field's value or range, then combinations.

`validate(config)` runs first thing in fer_jax.main (before TensorFlow, JAX or any data), so a typo such
as `--config.crf.train_features=crossfit` stops the run at once instead of after a fold of training.
Every problem found is reported in one errors.ConfigError naming the field, the value and the allowed
values; main prints it and exits with status 2. main checks the device split once JAX is up, and
experiment.run calls `validate_folds` right after loading the data, before any training.

Extending it:
- A new config field needs one line in RULES: its dotted path and a rule built from the helpers below
  (one_of, integer, number, boolean, text, optional, tuple_of, check). tests/test_configs.py fails for a
  field of configs/default.py without a rule, and for a rule naming no field.
- A rule across fields is a function `(config) -> None` that calls `_fail(...)`, decorated with
  `@combination`; it runs only when every field passed its own rule.

Imports nothing heavy (numpy and fer_jax.data.splits only): it must fail fast.
"""
import dataclasses
import math
from typing import Any, Callable

from fer_jax import errors
from fer_jax.data import splits

# The names other modules accept; tests/test_configs.py checks these against those modules (which import
# TensorFlow / JAX, too heavy to import here).
DATABASES = ("ck_plus", "mmi", "fera")  # experiment.DATABASES: the cross-database protocol's sets.
DATA_NAMES = ("synthetic_expressions",) + DATABASES + ("cross_db",)  # builders.NAMES + "cross_db".
MODEL_NAMES = ("inception_resnet",)  # models.create_model.
MODEL_DTYPES = ("float32", "bfloat16", "float64")  # inception_resnet._DTYPES; float64: numerics only.
MIN_INPUT_SIZE = 75  # models.inception_resnet.MIN_INPUT_SIZE.
CRF_FEATURES = ("logits", "features")  # Keys of the model's outputs fed to the CRF.
CRF_INPUT_PARTS = CRF_FEATURES + ("geometry",)  # crf_inputs.PARTS: joined by "+" in crf.features.
GEOMETRY_REFERENCES = ("first", "none")  # geometry.REFERENCES.


def _feature_set(v) -> bool:
  parts = v.split("+") if isinstance(v, str) else []
  return bool(parts) and all(p in CRF_INPUT_PARTS for p in parts) and len(set(parts)) == len(parts)


@dataclasses.dataclass(frozen=True)
class Rule:
  """`ok(value) -> bool`; `allowed` says in words what passes (shown in the error)."""
  ok: Callable[[Any], bool]
  allowed: str


def _is_int(v) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
  return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def one_of(*values) -> Rule:
  return Rule(lambda v: isinstance(v, type(values[0])) and v in values,
              " | ".join(repr(x) for x in values))


def integer(lo: int | None = None, hi: int | None = None) -> Rule:
  """An int in [lo, hi] (None: unbounded)."""
  words = ("an integer" + (f" >= {lo}" if lo is not None else "")
           + (f" and <= {hi}" if hi is not None else ""))
  return Rule(lambda v: _is_int(v) and (lo is None or v >= lo) and (hi is None or v <= hi), words)


def number(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
           hi_open: bool = False) -> Rule:
  """A finite int or float in the interval lo..hi ([ or ( by lo_open / hi_open; None: unbounded)."""
  def ok(v):
    if not _is_number(v):
      return False
    above = lo is None or (v > lo if lo_open else v >= lo)
    below = hi is None or (v < hi if hi_open else v <= hi)
    return above and below
  if lo is not None and hi is not None:
    words = f"a number in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
  elif lo is not None:
    words = f"a number {'>' if lo_open else '>='} {lo}"
  else:
    words = "a finite number" if hi is None else f"a number {'<' if hi_open else '<='} {hi}"
  return Rule(ok, words)


def boolean() -> Rule:
  return Rule(lambda v: isinstance(v, bool), "True | False")


def text() -> Rule:
  """A non-empty string (a path)."""
  return Rule(lambda v: isinstance(v, str) and bool(v.strip()), "a non-empty string")


def optional(rule: Rule) -> Rule:
  return Rule(lambda v: v is None or rule.ok(v), f"None or {rule.allowed}")


def tuple_of(rule: Rule, *, min_len: int = 1, length: int | None = None, unique: bool = False) -> Rule:
  """A tuple (or list) whose every item passes `rule`."""
  def ok(v):
    if not isinstance(v, (tuple, list)) or not all(rule.ok(x) for x in v):
      return False
    if (length is not None and len(v) != length) or len(v) < min_len:
      return False
    return not unique or len(set(v)) == len(v)
  size = f"{length}" if length is not None else f"{min_len} or more"
  return Rule(ok, f"a tuple of {size} {'distinct ' if unique else ''}items, each {rule.allowed}")


def check(ok: Callable[[Any], bool], allowed: str) -> Rule:
  """Any other rule: a predicate and its description."""
  return Rule(ok, allowed)


_FRACTION = number(0.0, 1.0, hi_open=True)

# Every leaf of configs/default.py, by dotted path.
RULES: dict[str, Rule] = {
    "seed": integer(0),
    # data
    "data.name": one_of(*DATA_NAMES),
    "data.data_dir": optional(text()),
    "data.manual_dir": optional(text()),
    "data.image_size": integer(16),
    "data.neutral_head": integer(0),
    "data.neutral_fraction": number(0.0, 0.5, hi_open=True),
    "data.keep_contempt": boolean(),
    "data.use_database_landmarks": boolean(),
    "data.register": boolean(),
    "data.skip_unreadable": boolean(),
    "data.synthetic.num_subjects": integer(1),
    "data.synthetic.sequences_per_subject": integer(1),
    "data.synthetic.min_length": integer(3),
    "data.synthetic.max_length": integer(3),
    "data.synthetic.seed": integer(0),
    "data.synthetic.noise": number(0.0),
    "data.synthetic.occlusion_prob": number(0.0, 1.0),
    "data.synthetic.landmark_noise": number(0.0),
    "data.augment.flip": boolean(),
    "data.augment.crop_fraction": number(0.0, 1.0, lo_open=True),
    "data.augment.brightness": number(0.0, 1.0),
    # protocol
    "protocol.kind": one_of("subject_independent", "official", "cross_db"),
    "protocol.num_folds": integer(2),
    "protocol.val_fraction": number(0.0, 1.0, lo_open=True, hi_open=True),
    "protocol.test_fraction": optional(number(0.0, 1.0, lo_open=True, hi_open=True)),
    "protocol.folds": optional(tuple_of(integer(0), unique=True)),
    "protocol.heldout": optional(one_of(*DATABASES)),
    # model
    "model.name": one_of(*MODEL_NAMES),
    "model.input_size": integer(MIN_INPUT_SIZE),
    "model.width": number(0.0, lo_open=True),
    "model.repeats": tuple_of(integer(0), length=3),
    "model.fc1_width": integer(1),
    "model.dropout": number(0.0, 1.0, hi_open=True),
    "model.dtype": one_of(*MODEL_DTYPES),
    # train
    "train.batch_size": integer(1),
    "train.num_steps": integer(1),
    "train.learning_rate": number(0.0, lo_open=True),
    "train.lr_decay_every": integer(1),
    "train.lr_decay_factor": number(0.0, 1.0, lo_open=True),
    "train.momentum": number(0.0, 1.0, hi_open=True),
    "train.weight_decay": number(0.0),
    "train.log_every": integer(1),
    "train.eval_every": integer(1),
    "train.checkpoint_every": integer(1),
    "train.eval_batch_size": integer(1),
    # crf
    "crf.features": check(_feature_set, f"one or more of {CRF_INPUT_PARTS} joined by '+', each once"),
    "crf.compare_features": check(
        lambda v: isinstance(v, (tuple, list)) and all(_feature_set(x) for x in v),
        f"a tuple of feature sets, each one or more of {CRF_INPUT_PARTS} joined by '+'"),
    "crf.geometry_reference": one_of(*GEOMETRY_REFERENCES),
    "crf.solver": one_of("jaxopt", "optax"),
    "crf.max_iter": integer(1),
    "crf.tol": number(0.0, lo_open=True),
    "crf.sigma2_grid": tuple_of(number(0.0, lo_open=True), unique=True),
    "crf.train_features": one_of("in_sample", "cross_fit"),
    "crf.cross_fit_folds": integer(2),
    "crf.sigma2_selection": one_of("validation", "inner_cv"),
    "crf.inner_cv_folds": integer(2),
    "crf.compare_variants": boolean(),
    # joint (stage 3, fer_jax/joint.py)
    "joint.steps": integer(0),
    "joint.window": integer(1),
    "joint.batch_size": integer(1),
    "joint.learning_rate": number(0.0, lo_open=True),
    "joint.ce_weight": number(0.0),
    "joint.augment": boolean(),
    "joint.refit_crf": boolean(),
    "joint.log_every": integer(1),
    "joint.eval_every": integer(1),
    "joint.checkpoint_every": integer(1),
    # report
    "report.table": one_of("I", "II"),
}

COMBINATIONS: list[Callable[[Any], None]] = []


def combination(fn: Callable[[Any], None]) -> Callable[[Any], None]:
  """Registers a cross-field rule `fn(config)`; it reports a problem with `_fail`."""
  COMBINATIONS.append(fn)
  return fn


class _Problem(Exception):
  pass


def _fail(field: str, value, allowed: str, why: str = ""):
  why = f": {why.rstrip('.')}" if why else ""
  raise _Problem(f"config.{field}={value!r}{why}; allowed: {allowed}.")


@combination
def _data_matches_protocol(c):
  kind, name = c.protocol.kind, c.data.name
  if (kind == "cross_db") != (name == "cross_db"):
    _fail("data.name", name, "'cross_db' exactly when protocol.kind is 'cross_db'",
          f"protocol.kind is {kind!r} (use --config=configs/cross_db.py:<heldout> for Table II)")
  if kind == "official" and name != "fera":
    _fail("protocol.kind", kind, "'official' only with data.name 'fera' (the only official "
          "train/test split)", f"data.name is {name!r}")


@combination
def _heldout_with_cross_db(c):
  kind, heldout = c.protocol.kind, c.protocol.heldout
  if kind == "cross_db" and heldout is None:
    _fail("protocol.heldout", heldout, " | ".join(map(repr, DATABASES)),
          "the cross-database protocol needs the test database (configs/cross_db.py:mmi sets it)")
  if kind != "cross_db" and heldout is not None:
    _fail("protocol.heldout", heldout, "None", f"it is used by protocol.kind 'cross_db' only, and "
          f"protocol.kind is {kind!r}")


@combination
def _report_table_matches_protocol(c):
  want = "II" if c.protocol.kind == "cross_db" else "I"
  if c.report.table != want:
    _fail("report.table", c.report.table, repr(want),
          f"Table {want} holds the paper's numbers for protocol.kind {c.protocol.kind!r}")


@combination
def _folds_exist(c):
  p = c.protocol
  count = p.num_folds if p.kind == "subject_independent" else 1
  if p.folds is not None and any(k >= count for k in p.folds):
    _fail("protocol.folds", tuple(p.folds), f"None (all) or distinct fold numbers 0..{count - 1}",
          f"protocol.kind {p.kind!r} has {count} fold(s) (protocol.num_folds={p.num_folds})")


@combination
def _fractions_leave_training_subjects(c):
  p = c.protocol
  if p.kind == "subject_independent" and p.test_fraction is not None:
    if p.val_fraction + p.test_fraction >= 1.0:
      _fail("protocol.val_fraction", p.val_fraction, f"< 1 - protocol.test_fraction "
            f"({1.0 - p.test_fraction:g})", "no subjects would be left to train on")
    if p.num_folds * p.test_fraction > 1.0 + 1e-9:
      _fail("protocol.test_fraction", p.test_fraction, f"<= 1 / protocol.num_folds "
            f"({1.0 / p.num_folds:g}) or None (plain k-fold)",
            f"{p.num_folds} disjoint test sets of that size do not fit in the subjects")


@combination
def _synthetic_set_fits_the_protocol(c):
  s = c.data.synthetic
  if s.min_length > s.max_length:
    _fail("data.synthetic.max_length", s.max_length, f">= data.synthetic.min_length ({s.min_length})")
  p = c.protocol
  if c.data.name == "synthetic_expressions" and p.kind == "subject_independent":
    subjects = [f"S{i}" for i in range(s.num_subjects)]  # The set is known before it is drawn.
    try:  # The same splitter experiment.load_data will call.
      folds = splits.subject_independent_folds(subjects, num_folds=p.num_folds,
                                               val_fraction=p.val_fraction,
                                               test_fraction=p.test_fraction, seed=c.seed)
    except ValueError as e:
      _fail("data.synthetic.num_subjects", s.num_subjects,
            "enough subjects for the protocol's folds (raise it, or lower protocol.num_folds, "
            "val_fraction or test_fraction)", str(e))
    _check_folds(c, subjects, folds)


def _check_folds(c, subjects, folds):
  """The folds to run exist, and each fold's training subjects suffice for the CRF stage's splits."""
  subjects = list(subjects)
  wanted = range(len(folds)) if c.protocol.folds is None else c.protocol.folds
  for k in wanted:
    if not 0 <= k < len(folds):
      _fail("protocol.folds", tuple(c.protocol.folds), f"None (all) or fold numbers 0..{len(folds) - 1}",
            f"the protocol gave {len(folds)} fold(s)")
    train_subjects = [subjects[i] for i in folds[k].train]
    n = len(set(train_subjects))
    # Inner CV (experiment.crf_variants fits sigma^2 both ways) and cross-fitting split the fold's
    # training subjects as below; failing here saves training the fold's CNN first.
    inner = [("crf.inner_cv_folds", c.crf.inner_cv_folds, 0.0)]
    if c.crf.train_features == "cross_fit" or c.crf.compare_variants:
      inner.append(("crf.cross_fit_folds", c.crf.cross_fit_folds, c.protocol.val_fraction))
    for field, num_folds, val_fraction in inner:
      try:
        splits.subject_independent_folds(train_subjects, num_folds=num_folds,
                                         val_fraction=val_fraction, test_fraction=None)
      except ValueError as e:
        _fail(field, num_folds, f"a split of fold {k}'s {n} training subjects (lower it, or "
              "give the fold more training subjects)", str(e))


def validate_folds(config, subjects, folds) -> None:
  """Checks what depends on the loaded data, before any training: the folds named in protocol.folds
  exist, and every fold's training subjects can be split for inner CV and cross-fitting.

  Args:
    config: the experiment ConfigDict (already through `validate`).
    subjects: one subject id per sequence.
    folds: the protocol's folds (indices into `subjects`).

  Raises:
    errors.ConfigError: naming the field, its value and the fix.
  """
  try:
    _check_folds(config, subjects, folds)
  except _Problem as e:
    raise errors.ConfigError(str(e)) from None


@combination
def _crop_keeps_a_pixel(c):
  if round(c.data.augment.crop_fraction * c.data.image_size) < 1:
    _fail("data.augment.crop_fraction", c.data.augment.crop_fraction,
          f">= {0.5 / c.data.image_size:g} (the crop of a {c.data.image_size}-pixel frame is empty)")


def _devices(c, num_devices: int, num_processes: int):
  t = c.train
  if t.batch_size % num_devices:
    _fail("train.batch_size", t.batch_size, f"a multiple of the device count ({num_devices})",
          "the global batch is split evenly over all devices")
  if c.joint.steps and c.joint.batch_size % num_devices:
    _fail("joint.batch_size", c.joint.batch_size, f"a multiple of the device count ({num_devices})",
          "stage 3's global batch of windows is split evenly over all devices")
  if t.eval_batch_size % num_processes:
    _fail("train.eval_batch_size", t.eval_batch_size,
          f"a multiple of the process count ({num_processes})")


def leaves(config, prefix: str = "") -> dict[str, Any]:
  """{dotted path: value} of every non-ConfigDict field of `config` (a ConfigDict or dict)."""
  out = {}
  for key, value in config.items():
    path = f"{prefix}{key}"
    if hasattr(value, "items"):
      out.update(leaves(value, path + "."))
    else:
      out[path] = value
  return out


def validate(config, *, num_devices: int | None = None, num_processes: int = 1) -> None:
  """Checks every field of `config` against RULES, then the COMBINATIONS (and the device split).

  Args:
    config: the experiment ConfigDict (configs/*.py).
    num_devices: jax.device_count(); None skips the check that the batch splits over the devices.
    num_processes: jax.process_count().

  Raises:
    errors.ConfigError: listing every problem, each naming the field, the value and what is allowed.
  """
  problems = []
  for path, value in leaves(config).items():
    rule = RULES.get(path)
    if rule is None:
      problems.append(f"config.{path}={value!r} has no rule; add one to RULES in "
                      "fer_jax/config_validation.py.")
    elif not rule.ok(value):
      problems.append(f"config.{path}={value!r}; allowed: {rule.allowed}.")
  if not problems:
    checks = list(COMBINATIONS)
    if num_devices is not None:
      checks.append(lambda c: _devices(c, num_devices, num_processes))
    for fn in checks:
      try:
        fn(config)
      except _Problem as e:
        problems.append(str(e))
  if problems:
    head = "Invalid config (set fields with --config.<field>=<value>):"
    raise errors.ConfigError("\n  ".join([head] + problems))

