"""The training job's settings: one dataclass, its command-line flags and checks.

Every field of `Config` is a flag of `train.py` (same name, same default, its
help from the field's metadata), so flagfiles, the library and the tests
speak the same language. The DNI options carry the names and values of the
library's arguments (`--true_gradient_every`, `--on_nonfinite=raise|skip|skip_module`,
...): `Config.dni_options()` builds the library's `DNIOptions`, which checks
them. `Config.validate()` checks the job's own values, builds the options
and raises `ConfigError` naming the flag.

Example:

>>> config = Config(model_dir="runs/x", mode="dni", epochs=1)
>>> config.validate().total_steps(steps_per_epoch=234)
234
"""

import dataclasses
import json
from typing import List, Optional

from absl import flags

from sg_keras.distribute import STRATEGIES
from sg_keras.options import MODES, ON_NONFINITE, SG_TARGETS, DNIOptions
from sg_keras.placement import stage_devices
from sg_keras.recurrent import AUX_WEIGHT
from sg_keras.validation import ArgumentError

# The flags that shape the network and its checkpoint: a run directory keeps them.
ARCHITECTURE = ("mode", "num_layers", "units", "synth_layers", "synth_units", "synth_rank")
SCHEDULES = ("sync", "pipelined")
# --task: the image classifier, or a sequence task of recurrent DNI (sg_keras.job.tasks).
TASKS = ("classify", "copy", "repeat_copy", "char_lm")
# The flags that shape a sequence task's network and its checkpoint.
SEQUENCE_ARCHITECTURE = ("task", "mode", "units", "synth_layers", "synth_units", "truncation",
                         "aux", "bits", "max_repeats")
# The flags that are the library's DNIOptions, same names and values.
DNI_OPTIONS = ("mode", "sg_target", "true_gradient_every", "measure_every", "bp_lambda",
               "update_prob", "sg_clip_norm", "on_nonfinite", "synth_update_every")
# The DNI options of the update-decoupled image classifier only (not of complete unlock; of
# these the sequence tasks take sg_clip_norm, which bounds δ̂ and so its bootstrapped targets).
CLASSIFY_ONLY = ("sg_target", "true_gradient_every", "bp_lambda", "update_prob", "sg_clip_norm",
                 "on_nonfinite", "synth_update_every")


class ConfigError(ValueError):
    """A flag has a bad value; the message names it."""


def _field(default, help, **extra):
    return dataclasses.field(default=default, metadata={"help": help, **extra})


@dataclasses.dataclass
class Config:
    """All settings of one training run (see `python train.py --help`)."""

    model_dir: str = _field("", "Directory for checkpoints, TensorBoard logs, metrics and plots. "
                                "Re-running with the same directory resumes.")
    mode: str = _field("cdni", "Training mode.", choices=MODES)
    model: str = _field("fcn", "fcn: the paper's fully connected network (--units); cnn: its "
                               "CNN (--filters 5x5 filters per layer, conv synthesizers).",
                        choices=("fcn", "cnn"))
    filters: int = _field(128, "--model=cnn: filters per convolutional layer (and per hidden "
                               "layer of its synthesizers).")
    num_layers: int = _field(3, "Layers of the MNIST FCN, head included (>= 2).")
    units: int = _field(256, "Units per hidden layer.")
    synth_layers: int = _field(0, "Hidden layers of each synthesizer (0 = linear).")
    synth_units: int = _field(1024, "Units per synthesizer hidden layer.")
    synth_rank: Optional[int] = _field(None, "Rank of each synthesizer's output layer "
                                             "(unset = full rank).")
    synth_batch_norm: bool = _field(True, "BatchNorm in the synthesizers' hidden layers (the "
                                          "paper's).")
    sg_target: str = _field("bootstrap", "Synthesizer regression target.", choices=SG_TARGETS)
    true_gradient_every: int = _field(0, "Every k steps regress synthesizers on the true "
                                         "gradient (0 = never).")
    update_prob: float = _field(1.0, "Probability that a decoupled layer updates at a step.")
    synth_update_every: int = _field(1, "Train the synthesizers every k steps (and on measured "
                                        "steps); in between they only predict (cheaper step).")
    bp_lambda: float = _field(0.0, "BP(lambda): pass down lambda*true + (1-lambda)*synthetic.")
    sg_clip_norm: Optional[float] = _field(None, "Clip each example's synthetic gradient to "
                                                 "this L2 norm (unset = off).")
    on_nonfinite: str = _field("raise", "On NaN/Inf in a step: stop the run (raise), skip "
                                        "the step, or skip only the decoupled modules (and "
                                        "rest) that hold it (skip_module).",
                                 choices=ON_NONFINITE)
    batch_size: int = _field(256, "Training batch size.")
    learning_rate: float = _field(1e-3, "Adam learning rate of the network.")
    sg_learning_rate: Optional[float] = _field(None, "Adam learning rate of the synthesizers "
                                                     "(default: --learning_rate).")
    lr_decay_steps: List[str] = dataclasses.field(default_factory=list, metadata={
        "help": "Steps at which both learning rates are multiplied by --lr_decay_factor, "
                "e.g. 300000,400000."})
    lr_decay_factor: float = _field(0.1, "Learning-rate decay factor at each --lr_decay_steps.")
    train_steps: int = _field(0, "Training steps (0: use --epochs).")
    epochs: float = _field(3.0, "Training epochs when --train_steps is 0.")
    log_every: int = _field(100, "Print progress and write train summaries every N steps.")
    eval_every: int = _field(1000, "Evaluate on the test set every N steps (and at the end).")
    measure_every: int = _field(100, "Measure synthetic-vs-true gradient cosine every N steps "
                                     "(0 = never).")
    checkpoint_every: int = _field(1000, "Save a checkpoint every N steps (and at the end).")
    keep_checkpoints: int = _field(3, "Checkpoints to keep.")
    dataset: str = _field("mnist", "TFDS image-classification dataset, e.g. mnist, fashion_mnist, "
                                   "kmnist, cifar10 (input shape and classes from its info).")
    data_dir: Optional[str] = _field(None, "TFDS data directory.")
    data_path: Optional[str] = _field(None, "Local .npz in Keras' mnist.npz layout (x_train, "
                                            "y_train, x_test, y_test) of any image dataset: the "
                                            "offline route; shapes and classes read from it.")
    seed: int = _field(0, "Random seed (initialisation, data order, update draws).")
    deterministic: bool = _field(False, "Seeded, deterministic TensorFlow ops "
                                        "(bit-identical reruns and resumes).")
    jit_compile: bool = _field(False, "Compile the training step with XLA.")
    strategy: str = _field("default", "Data parallelism (tf.distribute): default (one device), "
                                      "mirrored (this machine's devices) or multi_worker (the "
                                      "machines in TF_CONFIG); --batch_size is the global batch.",
                           choices=STRATEGIES)
    schedule: str = _field("sync", "sync: every module in lock-step in one step; pipelined: "
                                   "stage k trains on the activation stage k-1 made one step "
                                   "earlier (dni/cdni; --measure_every is ignored).",
                           choices=SCHEDULES)
    devices: List[str] = dataclasses.field(default_factory=list, metadata={
        "help": "Devices of the pipelined stages, e.g. /gpu:0,/gpu:1 (default: all visible, "
                "stages spread evenly)."})
    unlock: str = _field("none", "complete: every module trains on a synthetic input "
                                 "predicted from x and a synthetic gradient (complete unlock, "
                                 "dni/cdni, linear input models).", choices=("none", "complete"))
    plots: bool = _field(True, "Draw PNG plots into --model_dir at each evaluation.")
    task: str = _field("classify", "classify: the image classifier above; copy, repeat_copy, "
                                   "char_lm: an LSTM (--units) trained with truncated BPTT "
                                   "(--mode=backprop) or recurrent DNI (--mode=dni).",
                       choices=TASKS)
    truncation: int = _field(3, "Sequence tasks: truncated-BPTT chunk length T.")
    aux: bool = _field(False, "Sequence tasks, --mode=dni: DNI + Aux (the core also predicts "
                              "the synthetic gradient at its chunk's end).")
    aux_weight: float = _field(AUX_WEIGHT, "Weight of the DNI + Aux regression loss.")
    bits: int = _field(1, "Copy / Repeat Copy: bits per symbol.")
    max_repeats: int = _field(2, "Repeat Copy: repeats drawn uniformly from 1..max_repeats.")
    curriculum_threshold: float = _field(0.15, "Copy / Repeat Copy: raise N when the mean "
                                               "per-symbol error (bits) of the last "
                                               "--curriculum_window batches is below this.")
    curriculum_window: int = _field(10, "Training batches averaged by the curriculum.")
    text_path: Optional[str] = _field(None, "char_lm: a local UTF-8 text file (default: TFDS "
                                            "tiny_shakespeare).")
    sequence_length: int = _field(60, "char_lm: characters per stream per training batch.")

    def dni_options(self):
        """The library's `DNIOptions` for these flags (raises ValueError naming a bad one)."""
        return DNIOptions(**{name: getattr(self, name) for name in DNI_OPTIONS})

    def architecture(self):
        """The settings a checkpoint depends on (per-module optimizers exist when p < 1)."""
        if self.task != "classify":
            return {name: getattr(self, name) for name in SEQUENCE_ARCHITECTURE}
        return {**{name: getattr(self, name) for name in ARCHITECTURE},
                "update_prob<1": self.update_prob < 1.0,
                **({"on_nonfinite": self.on_nonfinite}
                   if self.on_nonfinite == "skip_module" else {}),
                **({"synth_batch_norm": False} if not self.synth_batch_norm else {}),
                **({"schedule": self.schedule} if self.schedule != "sync" else {}),
                **({"unlock": self.unlock} if self.unlock != "none" else {}),
                **({"model": self.model, "filters": self.filters} if self.model == "cnn" else {})}

    def decay_boundaries(self):
        return [int(step) for step in self.lr_decay_steps]

    def total_steps(self, steps_per_epoch):
        if self.train_steps:
            return self.train_steps
        return max(1, round(self.epochs * steps_per_epoch))

    def validate(self):
        """Checks every value; returns self or raises `ConfigError` naming the flag."""
        def fail(flag, message):
            raise ConfigError(f"--{flag}={getattr(self, flag)!r}: {message}")

        if not self.model_dir:
            fail("model_dir", "a directory for this run is required.")
        if self.synth_rank is not None and not (isinstance(self.synth_rank, int)
                                                and self.synth_rank >= 1):
            fail("synth_rank", "must be an integer >= 1 (unset = full rank).")
        minimums = {"num_layers": 2, "units": 1, "synth_layers": 0, "synth_units": 1, "filters": 1,
                    "batch_size": 1, "train_steps": 0, "log_every": 1, "eval_every": 1,
                    "checkpoint_every": 1, "keep_checkpoints": 1}
        for name, minimum in minimums.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                fail(name, f"must be an integer >= {minimum}.")
        try:
            self.dni_options()
        except ArgumentError as error:   # the library's argument names are the flags' names
            fail(error.argument, error.problem)
        if not self.learning_rate > 0:
            fail("learning_rate", "must be > 0.")
        if self.sg_learning_rate is not None and not self.sg_learning_rate > 0:
            fail("sg_learning_rate", "must be > 0.")
        if not 0.0 < self.lr_decay_factor <= 1.0:
            fail("lr_decay_factor", "must be in (0, 1].")
        try:
            boundaries = self.decay_boundaries()
        except ValueError:
            fail("lr_decay_steps", "must be a comma-separated list of step numbers.")
        if any(b <= 0 for b in boundaries) or boundaries != sorted(set(boundaries)):
            fail("lr_decay_steps", "steps must be positive and increasing.")
        if self.schedule == "pipelined":
            if self.mode == "backprop":
                fail("schedule", "needs --mode=dni or cdni (backprop stages are not decoupled).")
            for flag in self._set_flags("sg_target", "true_gradient_every", "bp_lambda"):
                fail(flag, "is not supported with --schedule=pipelined (it needs a true "
                           "backward pass through every stage).")
            if self._set_flags("synth_update_every"):
                fail("synth_update_every", "is not supported with --schedule=pipelined (its "
                                           "synthesizers train at every step).")
            if self._set_flags("on_nonfinite"):
                fail("on_nonfinite", "is not supported with --schedule=pipelined: its step has "
                                     "no per-step guard (NaN/Inf in the weights stops the run "
                                     "before the next checkpoint is saved).")
            if self.devices:
                try:
                    stage_devices(1, self.devices)
                except ArgumentError as error:
                    fail("devices", error.problem)
        elif self.devices:
            fail("devices", "places the stages of --schedule=pipelined only.")
        if self.model == "cnn" and (self.synth_rank is not None or self.unlock != "none"):
            fail("model", "cnn has convolutional synthesizers: --synth_rank and --unlock are for "
                          "the fcn.")
        if self.unlock == "complete":
            if self.mode == "backprop" or self.schedule != "sync":
                fail("unlock", "needs --mode=dni or cdni and --schedule=sync.")
            for flag in self._set_flags(*CLASSIFY_ONLY):
                fail(flag, "is not supported with --unlock=complete.")
        if self.strategy not in STRATEGIES:
            fail("strategy", f"must be one of {', '.join(STRATEGIES)}.")
        if self.strategy != "default" and (self.jit_compile or self.schedule != "sync"
                                           or self.unlock != "none"):
            fail("strategy", "needs --schedule=sync, --unlock=none and no --jit_compile.")
        if self.train_steps == 0 and not self.epochs > 0:
            fail("epochs", "must be > 0 when --train_steps is 0.")
        if self.task != "classify":
            self._validate_sequence(fail)
        return self

    def _set_flags(self, *names):
        """Those of the flags `names` that are not at their default value."""
        return [name for name in names
                if getattr(self, name) != Config.__dataclass_fields__[name].default]

    def _validate_sequence(self, fail):
        if self.mode not in ("backprop", "dni"):
            fail("mode", f"--task={self.task} trains with backprop (truncated BPTT) or dni.")
        if self.train_steps < 1:
            fail("train_steps", f"--task={self.task} needs the number of training batches.")
        for flag in self._set_flags(*(f for f in CLASSIFY_ONLY if f != "sg_clip_norm")):
            fail(flag, f"is an option of --task=classify; --task={self.task} does not use it.")
        for name in ("truncation", "bits", "max_repeats", "curriculum_window", "sequence_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                fail(name, "must be an integer >= 1.")
        if self.aux and self.mode != "dni":
            fail("aux", "DNI + Aux needs --mode=dni.")
        if self.sg_clip_norm is not None and self.mode != "dni":
            fail("sg_clip_norm", "bounds the synthetic gradient of --mode=dni.")
        if not self.aux_weight >= 0:
            fail("aux_weight", "must be >= 0.")
        if not self.curriculum_threshold > 0:
            fail("curriculum_threshold", "must be > 0.")

    def to_json(self):
        """The settings as JSON (`lr_decay_steps` as numbers) for `flags.json`."""
        return json.dumps({**dataclasses.asdict(self), "lr_decay_steps": self.decay_boundaries()},
                          indent=2, sort_keys=True)


def define_flags(flag_values=flags.FLAGS):
    """Defines one absl flag per `Config` field."""
    for field in dataclasses.fields(Config):
        help_text, default = field.metadata["help"], field.default
        if field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        if "choices" in field.metadata:
            flags.DEFINE_enum(field.name, default, field.metadata["choices"], help_text,
                              flag_values=flag_values)
        elif field.type is bool:
            flags.DEFINE_bool(field.name, default, help_text, flag_values=flag_values)
        elif field.type in (int, Optional[int]):
            flags.DEFINE_integer(field.name, default, help_text, flag_values=flag_values)
        elif field.type in (float, Optional[float]):
            flags.DEFINE_float(field.name, default, help_text, flag_values=flag_values)
        elif field.type == List[str]:
            flags.DEFINE_list(field.name, default, help_text, flag_values=flag_values)
        else:
            flags.DEFINE_string(field.name, default, help_text, flag_values=flag_values)


def config_from_flags(flag_values=flags.FLAGS):
    """The validated `Config` of parsed flags."""
    config = Config(**{field.name: flag_values[field.name].value
                       for field in dataclasses.fields(Config)})
    return config.validate()
