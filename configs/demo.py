"""Demo: the paper's method and ours on the synthetic set, on a CPU in a few minutes.

A tiny Inception-ResNet (input 75, width 1/8) on procedurally drawn face sequences, two folds. Every
row of the report: CNN, CNN + CRF (the paper: CRF over FC2 outputs, sigma^2 chosen on validation),
geometry + CRF and fused + CRF (the drawn landmarks' geometry), joint CNN + CRF (stage 3 fine-tunes CNN
and CRF together on windows of 8 frames, 100 steps, then refits the CRF). No download.
Variants: ":smoke" (tests: a few steps, one fold); ":hard" (single frames harder: more pixel noise,
occlusion and landmark noise); ":ours" (fused + joint as the primary row); combine with commas.
"""
from configs import default


def get_config(arg=None):
  arg = default.parse_arg(arg, smoke=False, hard=False, ours=False)
  c = default.get_base_config()
  c.data.image_size = 75
  c.data.synthetic.update(num_subjects=30, sequences_per_subject=6, min_length=12, max_length=24)
  c.protocol.update(num_folds=5, test_fraction=0.2, val_fraction=0.1, folds=(0, 1))
  c.model.update(input_size=75, width=0.125, fc1_width=64, dropout=0.2)
  c.train.update(batch_size=32, num_steps=2000, learning_rate=0.01, lr_decay_every=1500,
                 log_every=100, eval_every=500, checkpoint_every=500, eval_batch_size=128)
  # Cross-fitting (cross_fit_folds more CNNs per fold) would triple the run: off in the demo; the
  # report still compares sigma^2 chosen on validation and by inner cross-validation.
  c.crf.update(sigma2_grid=(0.1, 1.0, 10.0), cross_fit_folds=2, inner_cv_folds=3,
               compare_variants=False)
  # Stage 3: joint CNN + CRF fine-tuning on windows of 8 frames (64 frames a step), at a tenth of
  # stage 1's final rate (0.01 * 0.1 after step 1500), then the CRF refitted (default.py).
  c.joint.update(steps=100, window=8, batch_size=8, learning_rate=1e-4, log_every=25,
                 eval_every=50, checkpoint_every=50)
  if arg.hard:
    c.data.synthetic.update(noise=0.15, occlusion_prob=0.3, landmark_noise=0.06)
  if arg.ours:
    default.ours(c)
  if arg.smoke:
    c.data.synthetic.update(num_subjects=10, sequences_per_subject=2, min_length=6, max_length=10)
    c.protocol.update(folds=(0,))
    c.train.update(batch_size=16, num_steps=6, eval_every=3, checkpoint_every=3, log_every=2)
    c.crf.update(sigma2_grid=(1.0,), max_iter=20, compare_variants=False)
    c.joint.update(steps=2, window=4, eval_every=2, checkpoint_every=2, log_every=1)
  c.lock()
  return c
