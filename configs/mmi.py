"""Table I, MMI: subject-independent, 5 folds; the paper's network at 299x299 and its optimiser.

Variants: "--config=configs/mmi.py:tiny" shrinks everything for a CPU smoke run; ":ours" makes our
method (CRF on fused logits + geometry, then joint CNN + CRF fine-tuning) the primary row, the paper's
rows beside it; ":ours,tiny" both.
"""
from configs import default


def get_config(arg=None):
  return default.paper_config("mmi", arg)
