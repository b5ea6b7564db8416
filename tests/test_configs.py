"""Configs: locked (a misspelt key or variant is an error) and validated before any work, on the
command line too."""
import os
import subprocess
import sys
import time
import types

from absl import flags
import ml_collections
import numpy as np
from ml_collections import config_flags
import pytest

from configs import ck_plus
from configs import cross_db
from configs import default
from configs import demo
from configs import fera
from configs import mmi
from fer_jax import config_validation
from fer_jax import errors

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("module,arg", [(default, None), (demo, None), (demo, "smoke"),
                                        (ck_plus, None), (mmi, "tiny"), (fera, None),
                                        (cross_db, "mmi"), (cross_db, "fera,tiny")])
def test_configs_are_locked(module, arg):
  config = module.get_config(arg)
  with pytest.raises(AttributeError):
    config.train.learning_rat = 0.1  # Misspelt: must not create a new field.
  with pytest.raises(AttributeError):
    config.crf.sigma_grid = (1.0,)


def test_paper_configs_follow_the_paper():
  c = ck_plus.get_config()
  assert (c.model.input_size, c.model.width, tuple(c.model.repeats)) == (299, 1.0, (1, 1, 1))
  assert (c.train.learning_rate, c.train.momentum, c.train.weight_decay) == (0.01, 0.9, 1e-4)
  assert (c.train.lr_decay_every, c.train.lr_decay_factor) == (100_000, 0.1)
  assert (c.protocol.num_folds, c.protocol.val_fraction, c.protocol.test_fraction) == (5, 0.1, 0.1)
  assert c.crf.features == "logits" and c.crf.solver == "jaxopt"
  assert fera.get_config().protocol.kind == "official"
  x = cross_db.get_config("ck_plus")
  assert (x.protocol.kind, x.protocol.heldout, x.report.table) == ("cross_db", "ck_plus", "II")


def test_bad_variants_raise():
  with pytest.raises(ValueError, match="tyni"):
    mmi.get_config("tyni")
  with pytest.raises(ValueError, match="exactly one"):
    cross_db.get_config(None)
  with pytest.raises(ValueError, match="exactly one"):
    cross_db.get_config("mmi,fera")


def test_misspelt_command_line_override_fails_before_any_work(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "fer_jax.main", "--config=configs/demo.py",
       f"--workdir={tmp_path}", "--config.train.num_step=3"],
      cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0
  assert "num_step" in proc.stderr
  assert not os.listdir(tmp_path)


# --- Validation (fer_jax/config_validation.py): every field has a rule; mistakes stop before any work.

SHIPPED = [(default, None), (demo, None), (demo, "smoke"), (ck_plus, None), (ck_plus, "tiny"),
           (mmi, None), (mmi, "tiny"), (fera, None), (fera, "tiny"), (cross_db, "ck_plus"),
           (cross_db, "mmi"), (cross_db, "fera,tiny")]


def _config(**fields):
  """demo:smoke with dotted fields replaced, e.g. _config(**{"crf.solver": "x"}), any type allowed."""
  d = demo.get_config("smoke").to_dict()
  for path, value in fields.items():
    holder = d
    *parents, name = path.split(".")
    for p in parents:
      holder = holder[p]
    assert name in holder, path
    holder[name] = value
  return ml_collections.ConfigDict(d)


def _problems(**fields):
  with pytest.raises(errors.ConfigError) as e:
    config_validation.validate(_config(**fields))
  return str(e.value)


def test_every_field_has_a_rule_and_every_rule_a_field():
  fields = set(config_validation.leaves(default.get_config()))
  assert fields == set(config_validation.RULES)
  assert {"seed", "data.synthetic.seed", "data.augment.flip", "report.table"} <= fields  # Every depth.
  for module, arg in SHIPPED:  # Variants change values only.
    assert set(config_validation.leaves(module.get_config(arg))) == fields


def test_a_field_without_a_rule_is_an_error(monkeypatch):
  monkeypatch.delitem(config_validation.RULES, "train.momentum")
  message = _problems()
  assert "config.train.momentum=0.9 has no rule" in message


@pytest.mark.parametrize("module,arg", SHIPPED)
def test_shipped_configs_are_valid(module, arg):
  config_validation.validate(module.get_config(arg), num_devices=8, num_processes=2)


def test_allowed_names_are_the_ones_the_code_accepts():
  from fer_jax import experiment  # pylint: disable=g-import-not-at-top  (TF, JAX: heavy)
  from fer_jax.data import builders  # pylint: disable=g-import-not-at-top
  from fer_jax.models import inception_resnet  # pylint: disable=g-import-not-at-top
  v = config_validation
  assert v.DATA_NAMES == builders.NAMES + ("cross_db",)
  assert v.DATABASES == experiment.DATABASES
  assert set(v.MODEL_DTYPES) == set(inception_resnet._DTYPES)  # pylint: disable=protected-access
  assert v.MIN_INPUT_SIZE == inception_resnet.MIN_INPUT_SIZE
  with pytest.raises(ValueError):  # The network itself refuses one pixel less.
    inception_resnet.InceptionResNet(2, input_size=v.MIN_INPUT_SIZE - 1, width=0.125,
                                     rngs=__import__("flax").nnx.Rngs(0))


@pytest.mark.parametrize("path", sorted(config_validation.RULES))
def test_every_rule_rejects_garbage(path):
  """No rule accepts anything: a junk string (a blank one for free-text paths) is refused."""
  junk = "   " if config_validation.RULES[path].allowed.endswith("a non-empty string") else "junk!"
  message = _problems(**{path: junk})
  assert f"config.{path}={junk!r}; allowed: " in message


@pytest.mark.parametrize("path,bad,good", [
    ("seed", -1, 0), ("seed", True, 1), ("data.image_size", 15, 16),
    ("data.neutral_fraction", 0.5, 0.0), ("data.augment.crop_fraction", 0.0, 1.0),
    ("data.augment.brightness", 1.5, 1.0), ("data.synthetic.min_length", 2, 3),
    ("protocol.num_folds", 1, 2), ("protocol.val_fraction", 0.0, 0.05),
    ("protocol.val_fraction", 1.0, 0.3), ("protocol.test_fraction", 0.0, None),
    ("protocol.test_fraction", 1.0, 0.1), ("protocol.folds", (0, 0), (0,)),
    ("protocol.folds", 0, None), ("protocol.folds", (-1,), (1, 0)), ("protocol.heldout", "ck", None),
    ("model.name", "resnet", "inception_resnet"), ("model.input_size", 74, 75),
    ("model.width", 0.0, 0.01), ("model.repeats", (1, 1), (0, 2, 0)),
    ("model.repeats", (1, -1, 1), (5, 10, 5)), ("model.dropout", 1.0, 0.0),
    ("model.dtype", "float16", "bfloat16"), ("train.batch_size", 0, 8), ("train.num_steps", 0, 1),
    ("train.learning_rate", 0.0, 1e-5), ("train.learning_rate", float("inf"), 10.0),
    ("train.lr_decay_factor", 0.0, 1.0), ("train.momentum", 1.0, 0.0),
    ("train.weight_decay", -1e-4, 0.0), ("train.eval_every", 0, 1), ("crf.features", "fc2", "features"),
    ("crf.solver", "lbfgs", "optax"), ("crf.max_iter", 0, 1), ("crf.tol", 0.0, 1e-9),
    ("crf.sigma2_grid", (), (1.0,)), ("crf.sigma2_grid", (1.0, 0.0), (0.5, 2)),
    ("crf.sigma2_grid", (1.0, 1.0), (1.0, 10.0)), ("crf.sigma2_grid", (float("nan"),), (1e-3,)),
    ("crf.train_features", "crossfit", "cross_fit"), ("crf.cross_fit_folds", 1, 2),
    ("crf.sigma2_selection", "val", "inner_cv"), ("crf.inner_cv_folds", 1, 2),
    ("crf.compare_variants", "yes", True), ("data.register", 1, False),
    ("joint.steps", -1, 0), ("joint.window", 0, 1), ("joint.learning_rate", 0.0, 1e-4),
    ("joint.ce_weight", -0.5, 0.0), ("joint.augment", None, True),
])
def test_ranges_and_choices(path, bad, good):
  message = _problems(**{path: bad})
  assert message.count("\n") == 1  # One problem, named with its value and what is allowed.
  assert f"config.{path}={bad!r}; allowed: " in message
  config_validation.validate(_config(**{path: good}))  # The nearby good value passes.


@pytest.mark.parametrize("fields,expected", [
    ({"protocol.kind": "cross_db"}, "config.data.name='synthetic_expressions': protocol.kind is "
                                    "'cross_db'"),
    ({"protocol.kind": "official"}, "config.protocol.kind='official': data.name is "
                                    "'synthetic_expressions'; allowed: 'official' only with "
                                    "data.name 'fera'"),
    ({"protocol.heldout": "mmi"}, "config.protocol.heldout='mmi': it is used by protocol.kind "
                                  "'cross_db' only"),
    ({"report.table": "II"}, "config.report.table='II': Table I holds"),
    ({"protocol.folds": (0, 5)}, "config.protocol.folds=(0, 5): protocol.kind 'subject_independent' "
                                 "has 5 fold(s)"),
    ({"protocol.val_fraction": 0.5, "protocol.test_fraction": 0.5},
     "config.protocol.val_fraction=0.5: no subjects would be left to train on"),
    ({"protocol.test_fraction": 0.3}, "config.protocol.test_fraction=0.3: 5 disjoint test sets"),
    ({"protocol.num_folds": 11, "protocol.test_fraction": None},
     "config.data.synthetic.num_subjects=10: 10 subjects are too few for 11-fold"),
    ({"data.synthetic.min_length": 12}, "config.data.synthetic.max_length=10; allowed: >= "
                                        "data.synthetic.min_length (12)"),
    ({"crf.inner_cv_folds": 8}, "config.crf.inner_cv_folds=8: 7 subjects are too few for 8-fold"),
    ({"crf.compare_variants": True, "crf.cross_fit_folds": 8},
     "config.crf.cross_fit_folds=8: 7 subjects are too few for 8-fold"),
    ({"data.image_size": 16, "data.augment.crop_fraction": 0.01},
     "config.data.augment.crop_fraction=0.01; allowed: >= 0.03125"),
])
def test_combinations(fields, expected):
  assert expected in _problems(**fields)


def test_combinations_that_pass():
  config_validation.validate(_config(**{"protocol.num_folds": 10, "protocol.test_fraction": None}))
  c = cross_db.get_config("mmi")
  with c.unlocked():
    c.protocol.folds = (0,)
  config_validation.validate(c)
  with c.unlocked():
    c.protocol.folds = (1,)  # Cross-database has one fold.
  with pytest.raises(errors.ConfigError, match=r"has 1 fold\(s\)"):
    config_validation.validate(c)
  c = fera.get_config()
  with c.unlocked():
    c.protocol.kind = "subject_independent"  # FERA's training part in folds: allowed.
  config_validation.validate(c)


def test_device_and_process_split():
  c = _config(**{"train.batch_size": 12, "train.eval_batch_size": 9, "joint.batch_size": 12})
  config_validation.validate(c)  # No device count given: not checked.
  config_validation.validate(c, num_devices=4, num_processes=1)
  config_validation.validate(c, num_devices=12, num_processes=3)
  with pytest.raises(errors.ConfigError, match=r"batch_size=12: .*multiple of the device count \(8\)"):
    config_validation.validate(c, num_devices=8)
  with pytest.raises(errors.ConfigError, match=r"eval_batch_size=9; allowed: a multiple of the "
                                               r"process count \(2\)"):
    config_validation.validate(c, num_devices=2, num_processes=2)
  c = _config(**{"joint.batch_size": 6, "joint.steps": 0})
  config_validation.validate(c, num_devices=4)  # Stage 3 off: not checked.
  with pytest.raises(errors.ConfigError, match=r"joint.batch_size=6: .*device count \(4\)"):
    config_validation.validate(_config(**{"joint.batch_size": 6, "joint.steps": 5}), num_devices=4)


def test_every_problem_is_reported_at_once():
  message = _problems(**{"crf.solver": "x", "model.dtype": "y", "train.num_steps": -3})
  assert message.count("\n") == 3
  for text in ("crf.solver='x'", "model.dtype='y'", "train.num_steps=-3"):
    assert text in message


@pytest.mark.parametrize("flag,field,value", [
    ("--config.protocol.test_fraction=None", "test_fraction", None),
    ("--config.protocol.test_fraction=0.25", "test_fraction", 0.25),
    ("--config.protocol.folds=None", "folds", None),
    ("--config.protocol.folds=1,3", "folds", (1, 3)),
    ("--config.protocol.folds=2,", "folds", (2,)),
])
def test_none_and_tuples_from_the_command_line(flag, field, value):
  argv = ["prog", "--config=configs/demo.py", flag]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=flag_values, lock_config=True,
                                  sys_argv=argv)
  flag_values(argv)
  got = flag_values.config.protocol[field]
  assert got == value and type(got) is type(value)


def _main(tmp_path, *overrides, devices=None):
  env = dict(os.environ)
  if devices:
    env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
  workdir = tmp_path / "work"
  start = time.perf_counter()
  proc = subprocess.run(
      [sys.executable, "-m", "fer_jax.main", "--config=configs/demo.py:smoke", f"--workdir={workdir}",
       f"--config.data.data_dir={tmp_path / 'tfds'}", "--jax_cache="] + list(overrides),
      cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr and "ERROR (ConfigError)" in proc.stderr
  assert not workdir.exists() and not (tmp_path / "tfds").exists()  # No work was done.
  return proc.stderr, time.perf_counter() - start


def test_cli_wrong_values_stop_before_any_import(tmp_path):
  # The reported bug: "crossfit" trained a whole fold, then died with KeyError 'crossfit/validation'.
  stderr, _ = _main(tmp_path, "--config.crf.train_features=crossfit", "--config.train.num_steps=0",
                    "--config.crf.sigma2_grid=0,1", "--config.protocol.test_fraction=None")
  assert "config.crf.train_features='crossfit'; allowed: 'in_sample' | 'cross_fit'." in stderr
  assert "config.train.num_steps=0; allowed: an integer >= 1." in stderr
  assert "config.crf.sigma2_grid=(0, 1); allowed: a tuple of 1 or more distinct items, each a " \
         "number > 0.0." in stderr
  assert "test_fraction" not in stderr  # None is a valid value (plain k-fold).
  assert "JAX process" not in stderr  # Stopped before JAX started.


def test_cli_combinations_and_plain_k_fold(tmp_path):
  # test_fraction=None reaches the k-fold splitter: 10 subjects cannot make 11 folds of 1/11.
  stderr, _ = _main(tmp_path, "--config.protocol.test_fraction=None", "--config.protocol.num_folds=11")
  assert "10 subjects are too few for 11-fold cross-validation" in stderr
  stderr, _ = _main(tmp_path, "--config.protocol.folds=4,5")
  assert "config.protocol.folds=(4, 5): protocol.kind 'subject_independent' has 5 fold(s)" in stderr


def test_cli_batch_must_split_over_the_devices(tmp_path):
  stderr, _ = _main(tmp_path, "--config.train.batch_size=12", devices=8)
  assert "config.train.batch_size=12" in stderr and "multiple of the device count (8)" in stderr
  assert "JAX process 0/1" in stderr  # Checked once JAX knows the devices, before any data.


def test_folds_checked_after_loading_before_training(tmp_path, monkeypatch):
  from fer_jax import experiment  # pylint: disable=g-import-not-at-top  (TF, JAX: heavy)
  from fer_jax import train  # pylint: disable=g-import-not-at-top
  from fer_jax.data import splits  # pylint: disable=g-import-not-at-top
  subjects = np.array(["a", "a", "b", "c", "d", "e"])  # 5 subjects; fold 0 trains on b, c.
  folds = [splits.Fold(train=np.array([2, 3]), val=np.array([4]), test=np.array([0, 1, 5]))]
  config = _config(**{"crf.inner_cv_folds": 2})
  config_validation.validate_folds(config, subjects, folds)  # 2 training subjects, 2 groups: fine.
  config = _config(**{"crf.inner_cv_folds": 3})
  with pytest.raises(errors.ConfigError, match="crf.inner_cv_folds=3: 2 subjects are too few"):
    config_validation.validate_folds(config, subjects, folds)
  config = _config(**{"protocol.folds": (1,)})
  with pytest.raises(errors.ConfigError, match=r"protocol.folds=\(1,\): the protocol gave 1 fold"):
    config_validation.validate_folds(config, subjects, folds)
  # experiment.run checks them right after loading the data: no CNN is trained first.
  monkeypatch.setattr(experiment, "load_data", lambda c: (types.SimpleNamespace(
      subjects=subjects), folds, "x", "y"))
  monkeypatch.setattr(train, "train_and_evaluate", lambda *a, **k: pytest.fail("trained"))
  with pytest.raises(errors.ConfigError, match="protocol.folds"):
    experiment.run(config, str(tmp_path))
