"""Configs are locked: a misspelt key or variant is an error, on the command line too."""
import os
import subprocess
import sys

import pytest

from configs import ck_plus
from configs import cross_db
from configs import default
from configs import demo
from configs import fera
from configs import mmi

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
