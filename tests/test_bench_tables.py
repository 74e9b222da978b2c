"""The benchmarks' result tables against counts worked out by hand.

These functions turn run records into the numbers the results pages report (who beat
whom on how many seeds, the 6 − 3 layer gap, the ratio of N to BPTT's), so a miscount
here would misreport a result.
"""

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "bench"))
import depth  # noqa: E402
import rnn  # noqa: E402
import rnn_scale  # noqa: E402


def _run(method, seed, solved, task="copy", t=3, cosine=None):
    return {"task": task, "T": t, "method": method, "seed": seed, "solved": solved,
            "boundary_cosine": cosine}


def test_curriculum_table_counts_dni_wins_and_aux_ties_per_seed():
    records = [
        _run("bptt", 0, 4), _run("dni", 0, 7), _run("dni_aux", 0, 8, cosine=0.1),
        _run("bptt", 1, 7), _run("dni", 1, 7), _run("dni_aux", 1, 7, cosine=0.3),
        _run("bptt", 2, 3), _run("dni", 2, 6), _run("dni_aux", 2, 5),
        _run("bptt", 3, 3), _run("dni", 3, 5),           # no Aux run on seed 3
    ]
    (row,) = rnn.curriculum_table(records)
    assert row["bptt"] == "4/7/3/3" and row["dni_aux"] == "8/7/5/-"
    assert row["DNI > BPTT (seeds)"] == "3/4"            # seed 1 ties BPTT
    assert row["Aux ≥ DNI (seeds)"] == "2/3"             # a tie counts, seed 2 does not
    assert row["cos dni_aux"] == pytest.approx(0.2)
    assert row["paper dni"] == rnn.PAPER["copy"]["dni"][3]


def _depth(variant, layers, seed, error, epochs=30.0):
    return {"variant": variant, "layers": layers, "seed": seed, "epochs": epochs,
            "test error %": error, "wall s": 1.0, "final cosine": [0.1]}


def test_depth_table_gives_one_row_per_variant_and_budget_with_the_mean_gap():
    records = [_depth("baseline", 3, 0, 4.0), _depth("baseline", 3, 1, 5.0),
               _depth("baseline", 6, 0, 10.0), _depth("baseline", 6, 1, 12.0),
               _depth("baseline", 6, 0, 13.0, epochs=10.0),
               _depth("true every 20", 3, 0, 3.0), _depth("true every 20", 6, 0, 4.5)]
    rows = depth.table(records)
    assert [(r["variant"], r["epochs"]) for r in rows] == [
        ("baseline", 10.0), ("baseline", 30.0), ("true every 20", 30.0)]
    assert "6 − 3 (pp)" not in rows[0]                  # no 3-layer run at 10 epochs
    assert rows[1]["6 − 3 (pp)"] == pytest.approx(11.0 - 4.5)
    assert rows[1]["6: per seed"] == "0: 10.00, 1: 12.00"
    assert rows[2]["6 − 3 (pp)"] == pytest.approx(1.5)


def test_rnn_scale_rows_join_seeds_and_divide_by_bptt_per_seed():
    curves = {("bptt", 0): [(1000, 1), (5000, 2)], ("dni", 0): [(1000, 2), (5000, 5)],
              ("dni_aux", 0): [(1000, 3)],
              ("bptt", 2): [(1000, 2), (5000, 2)], ("dni", 2): [(1000, 4), (5000, 4)],
              ("dni_aux", 2): []}
    rows = rnn_scale.rows_of(curves, [0, 2], steps=5000)
    assert [r["batches"] for r in rows] == [1000, 2500, 5000]
    first, middle, last = rows
    assert first["dni"] == "2/4" and first["DNI / BPTT"] == "2/2"
    assert middle["dni"] == "2/4"                        # the last value reached by then
    assert last["dni_aux"] == "-/-"                      # not run that far
    assert last["DNI / BPTT"] == "2.5/2" and last["Aux / BPTT"] == "-/-"
    assert last["sequences"] == rnn_scale.BATCH * 5000
