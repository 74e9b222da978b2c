"""The benchmarks' pipeline simulation against schedules worked out by hand."""

import doctest
import math
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "bench"))
from benchlib import pipeline_sim, tables, timing  # noqa: E402

# two blocks; per block 1 s forward, 0.5 s synthesizer, 2 s backward, 1 s update; no head
COSTS = {"block": {"forward": 1.0, "synthesizer": 0.5, "backward": 2.0, "update": 1.0},
         "head": dict.fromkeys(pipeline_sim.PIECES, 0.0)}


def seconds_per_step(devices, schedule, latency=0.0):
    return 1.0 / pipeline_sim.simulate(COSTS, devices, schedule, math.inf, latency, blocks=2,
                                       batch_size=1, activation_bytes=0)


@pytest.mark.parametrize("schedule,expected", [
    # one device, both blocks: forward 2, (synthesizers 1), backward 4, update 2
    ("backprop", 8.0), ("dni", 9.0), ("pipelined", 9.0)])
def test_one_device_runs_every_piece_in_turn(schedule, expected):
    assert seconds_per_step(1, schedule) == pytest.approx(expected)


def test_two_devices_by_hand():
    # backprop: forward 0-1 | 1-2, backward 2-4 on device 1, then 4-6 on device 0, update 6-7
    assert seconds_per_step(2, "backprop") == pytest.approx(7.0)
    # sync DNI: device 0 forward 0-1, ĝ 1-1.5, backward 1.5-3.5, update 3.5-4.5; device 1
    # forward 1-2, ĝ 2-2.5, backward 2.5-4.5, update 4.5-5.5
    assert seconds_per_step(2, "dni") == pytest.approx(5.5)
    # pipelined: device 1 starts at once on the previous step's activation: 4.5 s each
    assert seconds_per_step(2, "pipelined") == pytest.approx(4.5)


def test_latency_delays_each_transfer():
    # backprop on two devices: the activation and the gradient each wait 0.5 s more
    assert seconds_per_step(2, "backprop", latency=0.5) == pytest.approx(8.0)
    # sync DNI: device 1 starts 0.5 s later; its gradient to device 0 arrives at 5.5 + ...:
    # forward 1.5-2.5, ĝ 2.5-3, backward 3-5, update 5-6; the send back ends at 5.5
    assert seconds_per_step(2, "dni", latency=0.5) == pytest.approx(6.0)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="`schedule`"):
        pipeline_sim.simulate(COSTS, 2, "async", blocks=2, batch_size=1, activation_bytes=0)
    with pytest.raises(ValueError, match="`devices` must divide"):
        pipeline_sim.simulate(COSTS, 3, "dni", blocks=2, batch_size=1, activation_bytes=0)


@pytest.mark.parametrize("module", [pipeline_sim, tables, timing], ids=lambda m: m.__name__)
def test_benchlib_examples(module):
    assert doctest.testmod(module).failed == 0
