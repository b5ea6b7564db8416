"""Data: TFDS builders (synthetic, CK+, MMI, GEMEP-FERA), labelling rules, subject splits, input pipeline."""
