"""DNIOptions: one place that validates every step option; the Mode value object."""

import pytest
import tensorflow as tf

from sg_keras.options import DNIOptions, Mode, OnNonFinite, SGTarget
from sg_keras.validation import ArgumentError


def test_modes_say_what_they_mean_and_equal_their_names():
    assert [(m.decoupled, m.uses_context) for m in Mode] == [(False, False), (True, False),
                                                              (True, True)]
    assert Mode("cdni") is Mode.CDNI and Mode.CDNI == "cdni" and str(Mode.DNI) == "dni"


def test_options_are_parsed_into_values():
    options = DNIOptions("cdni", "true", on_nonfinite="skip", sg_clip_norm=2)
    assert (options.mode, options.sg_target, options.on_nonfinite) == (
        Mode.CDNI, SGTarget.TRUE, OnNonFinite.SKIP)
    assert options.sg_clip_norm == 2.0
    assert options.as_dict()["mode"] == "cdni" and type(options.as_dict()["mode"]) is str


@pytest.mark.parametrize("kwargs, name", [
    ({"mode": "sgd"}, "mode"), ({"sg_target": "x"}, "sg_target"),
    ({"true_gradient_every": -1}, "true_gradient_every"), ({"measure_every": 1.5}, "measure_every"),
    ({"bp_lambda": 1.1}, "bp_lambda"), ({"update_prob": 0.0}, "update_prob"),
    ({"sg_clip_norm": 0.0}, "sg_clip_norm"), ({"on_nonfinite": "stop"}, "on_nonfinite"),
    ({"mode": "backprop", "update_prob": 0.5}, "update_prob"),
    ({"mode": "backprop", "sg_clip_norm": 1.0}, "sg_clip_norm"),
    ({"mode": "backprop", "on_nonfinite": "skip_module"}, "on_nonfinite"),
    ({"on_nonfinite": "skip_modules"}, "on_nonfinite"),
])
def test_bad_options_name_the_argument(kwargs, name):
    with pytest.raises(ArgumentError, match=f"`{name}`") as error:
        DNIOptions(**kwargs)
    assert error.value.argument == name


def test_step_schedule():
    periodic = DNIOptions("dni", true_gradient_every=3, measure_every=2)
    assert [periodic.step_kind(s)[:2] for s in range(5)] == [
        (True, True), (False, False), (True, False), (True, True), (True, False)]
    assert periodic.measures and periodic.step_kind_indices() == [0, 1, 2]
    true = DNIOptions("dni", sg_target="true")
    assert {true.step_kind(s) for s in range(4)} == {(True, True, True)}
    backprop = DNIOptions("backprop", measure_every=1)
    assert backprop.step_kind(0) == (False, False, True) and not backprop.measures


def test_synthesizers_train_every_k_steps_and_on_every_measured_or_true_step():
    every3 = DNIOptions("dni", synth_update_every=3, measure_every=4, true_gradient_every=5)
    trains = [every3.step_kind(s)[2] for s in range(13)]
    # trained: multiples of 3, and the measured (4, 8, 12) and true-target (0, 5, 10) steps
    assert [s for s, t in enumerate(trains) if t] == [0, 3, 4, 5, 6, 8, 9, 10, 12]
    assert every3.step_kind_indices() == [0, 1, 2, 3]
    frozen_only = DNIOptions("dni", synth_update_every=2)
    assert frozen_only.step_kind_indices() == [0, 3] and not frozen_only.measures
    assert [int(frozen_only.step_kind_index(tf.constant(s))) for s in range(4)] == [0, 3, 0, 3]
    with pytest.raises(ArgumentError, match="synth_update_every"):
        DNIOptions("backprop", synth_update_every=2)
    with pytest.raises(ArgumentError, match="synth_update_every"):
        DNIOptions("dni", synth_update_every=0)


def test_mode_must_fit_the_layers():
    with pytest.raises(ValueError, match="needs at least one DecoupledLayer"):
        DNIOptions("dni").check_layers([], None)
    with pytest.raises(ValueError, match="use mode='cdni'"):
        DNIOptions("dni").check_layers(["layer"], 10)
    with pytest.raises(ValueError, match="needs DecoupledLayers built with `context_dim`"):
        DNIOptions("cdni").check_layers(["layer"], None)
