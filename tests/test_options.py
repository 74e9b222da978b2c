"""DNIOptions: one place that validates every step option; the Mode value object."""

import pytest

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
    assert [periodic.step_kind(s) for s in range(5)] == [
        (True, True), (False, False), (True, False), (True, True), (True, False)]
    assert periodic.measures and periodic.step_kind_indices() == [0, 1, 2]
    true = DNIOptions("dni", sg_target="true")
    assert {true.step_kind(s) for s in range(4)} == {(True, True)}
    backprop = DNIOptions("backprop", measure_every=1)
    assert backprop.step_kind(0) == (False, False) and not backprop.measures


def test_mode_must_fit_the_layers():
    with pytest.raises(ValueError, match="needs at least one DecoupledLayer"):
        DNIOptions("dni").check_layers([], None)
    with pytest.raises(ValueError, match="use mode='cdni'"):
        DNIOptions("dni").check_layers(["layer"], 10)
    with pytest.raises(ValueError, match="needs DecoupledLayers built with `context_dim`"):
        DNIOptions("cdni").check_layers(["layer"], None)
