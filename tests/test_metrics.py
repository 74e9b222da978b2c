"""Step metrics: cosine, accuracy, unique keys and the per-part finiteness sums."""

import keras
import numpy as np
import tensorflow as tf

from sg_keras.interception import Interception
from sg_keras.guard import finiteness_parts, part_sum
from sg_keras.metrics import (cosine_from_parts, cosine_parts, cosine_similarity, interception_keys,
                              sparse_accuracy)


class Named:
    def __init__(self, name):
        self.name = name


def test_cosine_similarity_matches_numpy_and_is_zero_for_zero():
    a, b = np.random.default_rng(0).normal(size=(2, 3, 4))
    expected = (a * b).sum() / np.linalg.norm(a) / np.linalg.norm(b)
    np.testing.assert_allclose(float(cosine_similarity(a, b)), expected, rtol=1e-5)
    assert float(cosine_similarity(np.zeros(3), np.ones(3))) == 0.0



def test_cosine_from_parts_that_add_up_is_the_whole_cosine():
    a, b = np.random.default_rng(1).normal(size=(2, 6, 3)).astype("float32")
    summed = cosine_parts(a[:2], b[:2]) + cosine_parts(a[2:], b[2:])   # two replicas' parts
    np.testing.assert_allclose(float(cosine_from_parts(summed)), float(cosine_similarity(a, b)),
                               rtol=1e-5)
    assert float(cosine_from_parts(cosine_parts(np.zeros(3), np.ones(3)))) == 0.0

def test_sparse_accuracy():
    predictions = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    assert float(sparse_accuracy(np.array([1, 1, 1]), predictions)) == np.float32(2 / 3)


def test_repeated_layers_get_indexed_keys():
    calls = [Interception(Named(n), i, None, None) for i, n in enumerate(["a", "b", "a"])]
    assert interception_keys(calls) == ["a_0", "b", "a_2"]


def test_finiteness_parts_name_the_bad_part_and_its_owner():
    bad = tf.constant([1.0, np.nan])
    layer = Named("dni1")
    calls = [Interception(layer, 0, None, bad)]
    variable = keras.Variable([1.0, np.inf], name="kernel")
    parts = finiteness_parts(tf.constant(0.5), calls, [variable], [tf.ones(2)], state=[variable])
    flags = {name: bool(np.isfinite(part_sum(value))) for name, _, value in parts}
    assert flags == {"loss": True, "synthetic gradient of dni1": False,
                     "gradient of kernel": True, "statistic kernel": False}
    assert [owner for _, owner, _ in parts] == [None, layer, variable, variable]
