"""Table II: cross-database. Train on two databases, test on the third (the argument).

  --config=configs/cross_db.py:mmi        train on CK+ and FERA, test on MMI
  --config=configs/cross_db.py:fera,tiny  CPU smoke run
  --config=configs/cross_db.py:mmi,ours   our method (fused + joint) as the primary row
data.manual_dir is the parent folder holding one sub-folder per database: ck_plus/, mmi/, fera/.
"""
from configs import default


def get_config(arg=None):
  arg = default.parse_arg(arg, ck_plus=False, mmi=False, fera=False, tiny=False, ours=False)
  heldout = [name for name in ("ck_plus", "mmi", "fera") if arg[name]]
  if len(heldout) != 1:
    raise ValueError("Name exactly one held-out database: --config=configs/cross_db.py:ck_plus, "
                     ":mmi or :fera.")
  c = default.get_base_config()
  c.data.name = "cross_db"
  c.protocol.kind = "cross_db"
  c.protocol.heldout = heldout[0]
  c.report.table = "II"
  if arg.tiny:
    default.tiny(c)
  if arg.ours:
    default.ours(c)
  c.lock()
  return c
