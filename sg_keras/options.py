"""The training options of a DNI step: validated once, shared by every front end.

`Mode`, `SGTarget` and `OnNonFinite` are string enums: they compare equal to
their values ("dni" == Mode.DNI), and code asks a mode what it means
(`mode.decoupled`, `mode.uses_context`) instead of comparing strings.
`DNIOptions` holds every option of the step, checks it on construction, and
says which kind of step (plain, measured, true-target, synthesizers frozen) a
step number makes.

>>> Mode("cdni").uses_context, Mode.BACKPROP.decoupled
(True, False)
>>> options = DNIOptions("dni", true_gradient_every=3, measure_every=2)
>>> [options.step_kind(step) for step in range(3)]
[(True, True, True), (False, False, True), (True, False, True)]
>>> [options.step_kind(step)[2] for step in range(4)
...  for options in [DNIOptions("dni", synth_update_every=2)]]
[True, False, True, False]
>>> DNIOptions("dni", update_prob=2.0)
Traceback (most recent call last):
...
sg_keras.validation.ArgumentError: `update_prob` must be in (0.0, 1.0], got 2.0.
"""

import dataclasses
import enum
from typing import Optional

from sg_keras.validation import ArgumentError, in_interval, int_at_least, one_of


class _Choice(str, enum.Enum):
    """A string enum whose constructor error names the argument and the choices."""

    @classmethod
    def parse(cls, value, name):
        one_of(value, [member.value for member in cls], name)
        return cls(value)

    def __str__(self):
        return self.value


class Mode(_Choice):
    """How a model trains: plain backprop, DNI, or cDNI (synthesizers see the label)."""

    BACKPROP = "backprop"
    DNI = "dni"
    CDNI = "cdni"

    @property
    def decoupled(self):
        """True when decoupled layers train from synthetic gradients."""
        return self is not Mode.BACKPROP

    @property
    def uses_context(self):
        """True when the synthesizers get the one-hot labels as context."""
        return self is Mode.CDNI


class SGTarget(_Choice):
    """What a synthesizer regresses on: the bootstrapped or the true gradient."""

    BOOTSTRAP = "bootstrap"
    TRUE = "true"


class OnNonFinite(_Choice):
    """What a step holding NaN/Inf does (it never applies a non-finite update).

    "raise" and "skip" decide for the whole step: it applies everything or
    nothing, so every update waits for the check of every part. "skip_module"
    lets each decoupled module decide on its own parts (its gradients, its ĝ,
    its statistics): a module skips only its own non-finite update, and its
    update waits for nothing above its interception (update unlocking: with
    the modules on different devices, a lower one need not wait for those above).
    """

    RAISE = "raise"
    SKIP = "skip"
    SKIP_MODULE = "skip_module"

    @property
    def per_module(self):
        """True when each decoupled module decides on its own update."""
        return self is OnNonFinite.SKIP_MODULE


MODES = tuple(m.value for m in Mode)
SG_TARGETS = tuple(t.value for t in SGTarget)
ON_NONFINITE = tuple(o.value for o in OnNonFinite)

STEP_KINDS = ((False, False, True), (True, False, True), (True, True, True),
              (False, False, False))
"""`(measure, regress_on_true, train_synthesizers)` of a plain, a measured, a
true-target step and a step that leaves the synthesizers as they are."""


def _due(step, every):
    """1 on the steps that are multiples of `every` (never if it is 0), else 0.

    Plain arithmetic, so `step` may be a Python int or an integer tensor.
    """
    return (every - step % every) // every if every else 0


@dataclasses.dataclass
class DNIOptions:
    """Every option of a DNI training step (the `DNITrainer` arguments of the same names).

    Attributes:
        mode: "backprop", "dni" or "cdni" (a `Mode`).
        sg_target: "bootstrap" or "true" (an `SGTarget`).
        true_gradient_every: k > 0 regresses the synthesizers on the true
            gradient every k-th step; 0 never.
        measure_every: N > 0 measures the synthetic-vs-true cosine every N-th
            step; 0 never.
        bp_lambda: BP(λ) mix in [0, 1].
        update_prob: probability in (0, 1] that a decoupled module updates.
        sg_clip_norm: per-example L2 bound of the applied synthetic gradient,
            or None.
        on_nonfinite: "raise", "skip" or "skip_module" (an `OnNonFinite`).
        synth_update_every: k >= 1: the synthesizers train on every k-th step
            (and on every measured or true-target step); on the others they
            only predict ĝ, and their regression target, backward pass and
            update are skipped.
    """

    mode: Mode = Mode.DNI
    sg_target: SGTarget = SGTarget.BOOTSTRAP
    true_gradient_every: int = 0
    measure_every: int = 0
    bp_lambda: float = 0.0
    update_prob: float = 1.0
    sg_clip_norm: Optional[float] = None
    on_nonfinite: OnNonFinite = OnNonFinite.RAISE
    synth_update_every: int = 1

    def __post_init__(self):
        self.mode = Mode.parse(self.mode, "mode")
        self.sg_target = SGTarget.parse(self.sg_target, "sg_target")
        self.on_nonfinite = OnNonFinite.parse(self.on_nonfinite, "on_nonfinite")
        self.true_gradient_every = int_at_least(self.true_gradient_every, 0, "true_gradient_every")
        self.measure_every = int_at_least(self.measure_every, 0, "measure_every")
        self.synth_update_every = int_at_least(self.synth_update_every, 1, "synth_update_every")
        self.bp_lambda = in_interval(self.bp_lambda, 0.0, 1.0, "bp_lambda")
        self.update_prob = in_interval(self.update_prob, 0.0, 1.0, "update_prob", low_open=True)
        if self.sg_clip_norm is not None:
            self.sg_clip_norm = in_interval(self.sg_clip_norm, 0.0, float("inf"), "sg_clip_norm",
                                            low_open=True)
        if not self.mode.decoupled:
            synthetic_only = {"sg_target": self.sg_target != SGTarget.BOOTSTRAP,
                              "true_gradient_every": self.true_gradient_every,
                              "update_prob": self.update_prob < 1.0,
                              "bp_lambda": self.bp_lambda, "sg_clip_norm": self.sg_clip_norm,
                              "on_nonfinite": self.on_nonfinite.per_module,
                              "synth_update_every": self.synth_update_every > 1}
            used = [name for name, value in synthetic_only.items() if value]
            if used:
                raise ArgumentError(used[0], "has no effect with `mode`='backprop' (no synthetic "
                                             "gradients): drop it or pick mode='dni'/'cdni'.")

    @classmethod
    def of(cls, options=None, **given):
        """The options a front end trains with: `options` whole, or `DNIOptions(**given)`.

        `given` holds the option keywords the front end received, None for
        those the caller left out (they take the defaults above). Passing both
        `options` and keywords is ambiguous, hence an error.

        >>> DNIOptions.of(mode="cdni", measure_every=None).mode
        <Mode.CDNI: 'cdni'>
        >>> DNIOptions.of(DNIOptions(measure_every=5), measure_every=None).measure_every
        5
        >>> DNIOptions.of(DNIOptions(), mode="cdni")
        Traceback (most recent call last):
        ...
        sg_keras.validation.ArgumentError: `options` is given with `mode`: pass the DNIOptions or its keywords, not both.
        """
        passed = {name: value for name, value in given.items() if value is not None}
        if options is None:
            return cls(**passed)
        if not isinstance(options, cls):
            raise ArgumentError("options", f"must be a DNIOptions, got {options!r}.")
        if passed:
            raise ArgumentError("options", f"is given with `{'`, `'.join(passed)}`: pass the "
                                           "DNIOptions or its keywords, not both.")
        return options

    def unsupported(self, names, where):
        """Raises `ArgumentError` naming the first of `names` that is not at its default (a
        front end that cannot do it: `where` says which).

        >>> DNIOptions(measure_every=0).unsupported(["measure_every"], "a pipeline")
        >>> DNIOptions(measure_every=5).unsupported(["measure_every"], "a pipeline")
        Traceback (most recent call last):
        ...
        sg_keras.validation.ArgumentError: `measure_every` is not supported by a pipeline (got 5): leave it at its default, 0.
        """
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name in names and value != field.default:
                shown = value.value if isinstance(value, enum.Enum) else value
                default = (field.default.value if isinstance(field.default, enum.Enum)
                           else field.default)
                raise ArgumentError(field.name, f"is not supported by {where} (got {shown!r}): "
                                                f"leave it at its default, {default!r}.")

    def as_dict(self):
        """The options as plain Python values (for saving and printing)."""
        return {field.name: (value.value if isinstance(value, enum.Enum) else value)
                for field in dataclasses.fields(self)
                for value in [getattr(self, field.name)]}

    def check_layers(self, layers, context_dim):
        """Raises ValueError naming `mode` if it does not fit the model's DecoupledLayers.

        Args:
            layers: the model's decoupled layers.
            context_dim: their shared `context_dim` (None for DNI layers).
        """
        if self.mode.decoupled and not layers:
            raise ValueError(f"`mode`={self.mode.value!r} needs at least one DecoupledLayer in the "
                             "model; use mode='backprop' for a plain model.")
        if self.mode is Mode.DNI and context_dim is not None:
            raise ValueError("`mode`='dni' but the model's DecoupledLayers have context_dim="
                             f"{context_dim}: use mode='cdni', or build them without it.")
        if self.mode is Mode.CDNI and context_dim is None:
            raise ValueError("`mode`='cdni' needs DecoupledLayers built with `context_dim` "
                             "(the number of classes).")

    @property
    def measures(self):
        """True when some steps make a true backward pass (cosine or true targets)."""
        return any(STEP_KINDS[kind][0] for kind in self.step_kind_indices())

    def step_kind_index(self, step):
        """Index into `STEP_KINDS` of step number `step` (an int or an integer tensor)."""
        if not self.mode.decoupled:
            return 0
        if self.sg_target is SGTarget.TRUE:
            return 2
        regress = _due(step, self.true_gradient_every)
        kind = 2 * regress + _due(step, self.measure_every) * (1 - regress)
        frozen = (1 - _due(step, self.synth_update_every)) * ((2 - kind) // 2)   # plain steps only
        return kind + 3 * frozen

    def step_kind_indices(self):
        """The indices `step_kind_index` can return, in increasing order."""
        if not self.mode.decoupled:
            return [0]
        if self.sg_target is SGTarget.TRUE:
            return [2]
        return ([0] + [1] * bool(self.measure_every) + [2] * bool(self.true_gradient_every)
                + [3] * (self.synth_update_every > 1))

    def step_kind(self, step):
        """`(measure, regress_on_true, train_synthesizers)` of step number `step`."""
        return STEP_KINDS[self.step_kind_index(step)]
