"""Base config: the paper's method (Hasani & Mahoor, FG 2017) on the synthetic set.

Every field is declared here with a comment; experiment configs import this file and change only what
differs. The returned config is locked: a misspelt key on the command line or in a variant raises.
"""
import ml_collections
from ml_collections import config_dict

PAPER_MODEL = dict(input_size=299, width=1.0, repeats=(1, 1, 1))


def literal_field(value):
  """A field that the command line can set to None, a number or a tuple of numbers.

  A float/tuple-typed field refuses `--config.x=None` (ml_collections parses by the field's type; see
  STYLE.md config traps): an object-typed FieldReference is parsed as a Python literal instead ("None",
  "0.2", "0,1"). fer_jax/config_validation.py checks what the value may be.
  """
  return config_dict.FieldReference(value, field_type=object)


def parse_arg(arg, **spec):
  """Parses a config argument "name1,key=value,..." against defaults (big_vision's habit).

  A bare name sets a bool field True; values are converted to the default's type; a key not in spec
  raises, so a misspelt variant is an error.
  """
  result = ml_collections.ConfigDict(spec)
  for part in (arg or "").split(","):
    if not part:
      continue
    key, _, value = part.partition("=")
    if key not in spec:
      raise ValueError(f"Unknown config argument {key!r}; valid: {sorted(spec)}.")
    if not value:
      if not isinstance(spec[key], bool):
        raise ValueError(f"Config argument {key!r} needs a value: {key}=...")
      value = "True"
    kind = type(spec[key])
    result[key] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
  return result


def tiny(c):
  """Shrinks a config to a CPU smoke run (small input, width, steps); the method is unchanged."""
  c.data.image_size = 75
  c.model.update(input_size=75, width=0.125, fc1_width=32)
  c.train.update(batch_size=16, num_steps=20, log_every=5, eval_every=10, checkpoint_every=10,
                 eval_batch_size=32)
  c.crf.update(sigma2_grid=(0.1, 10.0), max_iter=50, cross_fit_folds=2, inner_cv_folds=2)


def get_base_config():
  """Returns the unlocked base ConfigDict (variants edit it, then call `lock`)."""
  c = ml_collections.ConfigDict()
  c.seed = 0  # Seeds parameter init, dropout, shuffling and fold assignment.

  # --- Data (fer_jax/data): which TFDS builder, where its files live, the per-frame labelling rules.
  c.data = ml_collections.ConfigDict()
  c.data.name = "synthetic_expressions"  # synthetic_expressions | ck_plus | mmi | fera
  c.data.data_dir = config_dict.placeholder(str)  # TFDS data_dir; None: ~/tensorflow_datasets.
  c.data.manual_dir = config_dict.placeholder(str)  # The user's download (licensed sets); None: TFDS default.
  c.data.image_size = 299  # S: registered faces are S x S x 3 uint8.
  c.data.neutral_head = 3  # CK+: the first frames of every sequence labelled neutral (paper: "first few").
  c.data.neutral_fraction = 0.25  # MMI: fraction of each end labelled neutral when no onset/offset notes.
  c.data.keep_contempt = False  # CK+: keep contempt as an eighth class instead of dropping it.
  c.data.use_database_landmarks = True  # CK+: register with the shipped landmarks where present.
  c.data.register = True  # Real sets: dlib face registration; False: frames are already aligned faces.
  c.data.skip_unreadable = False  # Skip (and count in the log) unreadable sequences instead of raising.
  # The synthetic set: its size; deterministic for data.synthetic.seed.
  c.data.synthetic = ml_collections.ConfigDict()
  c.data.synthetic.num_subjects = 60
  c.data.synthetic.sequences_per_subject = 6
  c.data.synthetic.min_length = 12
  c.data.synthetic.max_length = 24
  c.data.synthetic.seed = 0
  # How hard single frames are: pixel noise std (fraction of 255, >= 0), chance of an occluded frame
  # ([0, 1]) and landmark noise std (fraction of the inter-ocular distance, >= 0).
  c.data.synthetic.noise = 0.07
  c.data.synthetic.occlusion_prob = 0.12
  c.data.synthetic.landmark_noise = 0.03
  # Stage-1 augmentation of training frames.
  c.data.augment = ml_collections.ConfigDict()
  c.data.augment.flip = True  # Random horizontal flip.
  c.data.augment.crop_fraction = 0.9  # Random crop of this side fraction, resized back to S; 1.0: none.
  c.data.augment.brightness = 0.1  # Max random brightness change (images in [0, 1]).

  # --- Protocol (fer_jax/data/splits.py).
  c.protocol = ml_collections.ConfigDict()
  c.protocol.kind = "subject_independent"  # subject_independent | official (FERA) | cross_db
  c.protocol.num_folds = 5
  c.protocol.val_fraction = 0.1  # Of all subjects, per fold.
  # Of all subjects, per fold (paper); None: plain k-fold (1/num_folds, every subject tested once).
  c.protocol.test_fraction = literal_field(0.1)
  c.protocol.folds = literal_field(None)  # Which folds to run, e.g. (0, 1) or "0,1"; None: all.
  c.protocol.heldout = config_dict.placeholder(str)  # cross_db: the test database (ck_plus | mmi | fera).

  # --- Model (fer_jax/models/inception_resnet.py).
  c.model = ml_collections.ConfigDict()
  c.model.name = "inception_resnet"
  c.model.input_size = PAPER_MODEL["input_size"]  # Network input side; frames are resized to it.
  c.model.width = PAPER_MODEL["width"]  # Multiplier on every conv's channel count (1.0: the paper).
  c.model.repeats = PAPER_MODEL["repeats"]  # Inception-ResNet-A, -B, -C blocks (paper 1/1/1; v2 5/10/5).
  c.model.fc1_width = 1024  # FC1 units; FC2 has num_classes units (the CRF input).
  c.model.dropout = 0.2  # Dropout rate before FC1.
  c.model.dtype = "float32"  # Compute dtype; "bfloat16" on GPU. Parameters stay float32.

  # --- Stage 1: CNN training (fer_jax/train.py). Durations in steps.
  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 64  # Global batch, split over all devices of all hosts.
  c.train.num_steps = 300_000
  c.train.learning_rate = 0.01
  c.train.lr_decay_every = 100_000  # Learning rate divided by 10 (lr_decay_factor) every this many steps.
  c.train.lr_decay_factor = 0.1
  c.train.momentum = 0.9
  c.train.weight_decay = 1e-4  # On conv and dense kernels only (not BN scale/bias or biases).
  c.train.log_every = 100
  c.train.eval_every = 2_000  # Validation accuracy; the best checkpoint is kept for stage 2.
  c.train.checkpoint_every = 2_000
  c.train.eval_batch_size = 128

  # --- Stage 2: CRF (fer_jax/crf/).
  c.crf = ml_collections.ConfigDict()
  # The CRF's input (the primary row): "logits" (FC2, the paper), "features" (FC1), "geometry" (landmark
  # geometry, fer_jax/geometry.py) joined by "+", e.g. "logits+geometry" (fused); each dimension
  # standardised with training-frame statistics saved with the CRF.
  c.crf.features = "logits"
  # More CRF rows fitted and reported beside the primary one (same CNN, same folds; the primary is
  # not fitted twice); () for none.
  c.crf.compare_features = ("logits", "geometry", "logits+geometry")
  c.crf.geometry_reference = "first"  # Geometry: displacement from the first frame too; "none": not.
  c.crf.solver = "jaxopt"  # jaxopt | optax (both L-BFGS).
  c.crf.max_iter = 500
  c.crf.tol = 1e-5  # crf.fit tol: certified relative gap (objective - optimum) / optimum (crf.fit).
  c.crf.sigma2_grid = (0.01, 0.1, 1.0, 10.0, 100.0)
  c.crf.train_features = "in_sample"  # in_sample (paper) | cross_fit (out-of-fold CNN outputs).
  c.crf.cross_fit_folds = 3  # cross_fit: CNNs trained for this many splits of the training subjects.
  c.crf.sigma2_selection = "validation"  # validation (paper) | inner_cv (over the training subjects).
  c.crf.inner_cv_folds = 3
  # Also run the other variants (cross_fit costs cross_fit_folds more CNN trainings per fold) and
  # report all four (training features x sigma^2 selection) side by side.
  c.crf.compare_variants = True

  # --- Stage 3: joint CNN + CRF fine-tuning on windows of frames (fer_jax/joint.py); 0 steps: off.
  c.joint = ml_collections.ConfigDict()
  c.joint.steps = 0  # Training steps (>= 0); 0 skips stage 3 and its "joint" row.
  c.joint.window = 8  # W: consecutive frames per window (>= 1; shorter sequences are padded).
  c.joint.batch_size = 8  # Windows per global batch (a multiple of the device count).
  # Constant SGD rate (> 0), stage 1's momentum and weight decay: a tenth of stage 1's final rate
  # (0.01 * 0.1**2 after 300K steps), as for fine-tuning; at stage 1's final rate the demo's test
  # accuracy swung by up to 10 points between evaluations (fer_jax/joint.py).
  c.joint.learning_rate = 1e-5
  c.joint.ce_weight = 0.0  # Weight (>= 0) of the per-frame cross-entropy added to the window NLL.
  c.joint.augment = False  # Windows get data.augment (one draw per window); False: frames as stage 2.
  # Refit the CRF by stage 2's procedure on the fine-tuned CNN's outputs (experiment.joint_stage);
  # False: the CRF trained beside the CNN labels the test set.
  c.joint.refit_crf = True
  c.joint.log_every = 50
  c.joint.eval_every = 200  # Validation: Viterbi frame accuracy on whole sequences; best step kept.
  c.joint.checkpoint_every = 200

  # --- Outputs.
  c.report = ml_collections.ConfigDict()
  c.report.table = "I"  # The paper's table to print beside ours: I (subject-independent) or II (cross-db).
  return c


def ours(c):
  """Our method as the primary row: the CRF on fused [FC2 logits, geometry] inputs, then stage 3 (joint
  CNN + CRF fine-tuning). The paper's rows (CNN, CNN + CRF) stay in the table beside it."""
  c.crf.features = "logits+geometry"
  if c.joint.steps == 0:  # A config that tunes stage 3 keeps its own cadence.
    steps = max(1, c.train.num_steps // 10)
    c.joint.update(steps=steps, eval_every=max(1, steps // 5), checkpoint_every=max(1, steps // 5),
                   log_every=max(1, min(c.joint.log_every, steps // 5)))


def paper_config(database: str, arg=None, protocol: str = "subject_independent"):
  """Table I config for one database: the paper's network, optimiser and protocol.

  Variants: ":tiny" shrinks it for a CPU smoke run; ":ours" makes our method (fused + joint) the
  primary row; ":ours,tiny" both.
  """
  arg = parse_arg(arg, tiny=False, ours=False)
  c = get_base_config()
  c.data.name = database
  c.protocol.kind = protocol
  c.report.table = "I"
  if arg.tiny:
    tiny(c)
  if arg.ours:
    ours(c)
  c.lock()
  return c


def get_config(arg=None):
  del arg
  config = get_base_config()
  config.lock()
  return config
