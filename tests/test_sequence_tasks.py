"""Copy / Repeat Copy batches, the curriculum and the character-LM text streams."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from sg_keras.job import sequence_tasks as tasks
from sg_keras.validation import ArgumentError


def test_copy_batch_asks_for_the_pattern_after_the_delimiter():
    x, y, w = tasks.copy_batch(np.random.default_rng(0), batch=3, length=4, bits=2)
    assert x.shape == (3, 9, 4) and y.shape == (3, 9, 2)
    np.testing.assert_array_equal(y[:, 5:], x[:, :4, :2])
    np.testing.assert_array_equal(x[:, 4, 2], 1.0)              # delimiter channel
    assert x[:, 5:].sum() == 0 and x[:, :4, 2:].sum() == 0      # blank while recalling
    np.testing.assert_array_equal(w, np.repeat([[0] * 5 + [1] * 4], 3, axis=0))


def test_repeat_copy_batch_repeats_the_pattern_r_times_then_an_end_marker():
    length, bits, max_repeats = 3, 2, 3
    x, y, w = tasks.repeat_copy_batch(np.random.default_rng(1), 16, length, bits, max_repeats)
    seen = set()
    for i in range(16):
        r = int(round(x[i, length, bits + 1] * max_repeats))
        seen.add(r)
        pattern = x[i, :length, :bits]
        out = y[i, length + 1:length + 1 + r * length, :bits]
        np.testing.assert_array_equal(out, np.tile(pattern, (r, 1)))
        end = length + 1 + r * length
        assert y[i, end, bits] == 1 and y[i, :, bits].sum() == 1
        assert w[i].sum() == r * length + 1 and w[i, end] == 1 and w[i, end + 1:].sum() == 0
    assert seen == {1, 2, 3}


def test_unknown_task_names_the_argument():
    with pytest.raises(ArgumentError, match="task"):
        tasks.task_batch("reverse", np.random.default_rng(0), 2, 2, 2)


def test_curriculum_raises_only_after_a_full_window_below_threshold():
    curriculum = tasks.Curriculum(threshold=0.15, window=3)
    assert not any(curriculum.update(e) for e in (0.1, 0.1, 0.5, 0.1, 0.1))
    assert curriculum.update(0.1)              # last three: 0.1, 0.1, 0.1
    assert (curriculum.level, curriculum.solved, curriculum.recent) == (2, 1, [])
    restored = tasks.Curriculum(threshold=0.15, window=3)
    curriculum.update(0.2)
    restored.restore(curriculum.state())
    assert restored.state() == curriculum.state()


def test_per_symbol_error_is_bits_per_scored_step():
    weights = np.array([[0, 1, 1], [1, 1, 1]], "float32")    # 2.5 scored steps per example
    assert tasks.per_symbol_error(5.0, weights) == 2.0


def test_streams_continue_across_batches_and_resume():
    ids = np.arange(100, dtype="int32")
    batches = tasks.stream_batches(ids, batch=3, length=5)
    (x0, y0), (x1, y1) = next(batches), next(batches)
    np.testing.assert_array_equal(y0, x0 + 1)                # next character
    np.testing.assert_array_equal(x1[:, 0], y0[:, -1])       # stream k continues
    np.testing.assert_array_equal(x0[:, 0], [0, 33, 66])
    resumed = next(tasks.stream_batches(ids, batch=3, length=5, start=1))
    np.testing.assert_array_equal(resumed[0], x1)
    np.testing.assert_array_equal(resumed[1], y1)


def test_local_text_and_its_errors(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text("abcab", encoding="utf-8")
    text = tasks.load_text(str(path))
    assert text.vocabulary == "abc" and text.ids.tolist() == [0, 1, 2, 0, 1]
    with pytest.raises(ArgumentError, match="text_path"):
        tasks.load_text(str(tmp_path / "missing.txt"))
    with pytest.raises(ArgumentError, match="too short"):
        next(tasks.stream_batches(text.ids, batch=2, length=5))


def test_tiny_shakespeare_through_tfds(tmp_path):
    with tfds.testing.mock_data(num_examples=2):
        text = tasks.load_text(data_dir=str(tmp_path))
    assert len(text.ids) > 0 and len(text.vocabulary) > 1
    decoded = "".join(text.vocabulary[i] for i in text.ids)
    assert tasks.encode(decoded).ids.tolist() == text.ids.tolist()
