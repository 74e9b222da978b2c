"""Stages, devices, and update unlocking checked on the traced training step.

The graph test. A decoupled module's weight update is *update-unlocked* when
it depends only on the module's own forward pass and its `ĝ`, and on nothing
above its interception. We trace the step
(`trainer._train.get_concrete_function(x, y)`), find the module's update ops
(the assign ops whose variable is one of its weights, inside the optimizer's
control flow) and walk back from them through data and control inputs,
entering nested function graphs (`If` branches, calls) through their inputs.

Criterion for "an op of the modules above": an op computed from the value of
a weight of a layer that is neither the module, its synthesizer nor a layer
below it (a data descendant of a read of such a weight; the bare reads wait
for nothing and do not count), or the labels (DNI has no label context; the
loss reads them). Every op of the forward or backward pass above a module is
such an op: the backward pass starts at the loss, computed from the head's
weights. The criterion does not rely on op names, and the tests check that it
can fail (the module's own weights and ĝ are found; the head's update is
found to compute with the layers below it).

Two levels.
* Values (`value_ancestors`): what the update's numbers are computed from.
  In the synchronous `DNITrainer` step a lower module's update is computed
  from its own forward pass and its ĝ only, for Sequential, functional
  branching and nested models.
* Ops (`ancestors`, what an executor waits for: an op runs once all of its
  inputs, control inputs and, inside a cond, its predicate are ready). With
  `on_nonfinite="raise"` or `"skip"` the synchronous step does *not* pass
  this, by design: the guard applies the whole step's update or none of it,
  in one `tf.cond` over a predicate on every part of the step (and Keras'
  `optimizer.apply` passes all its gradients through one `IdentityN` op), so
  a lower module's update waits for the full backward pass. With
  `on_nonfinite="skip_module"` each module has its own optimizer and its own
  guard on its own parts, and it passes. So does the pipelined executor: each
  stage's update waits for no op of another stage.
"""

import os
import subprocess
import sys
import textwrap

import keras
import pytest
import tensorflow as tf

import sg_keras
from conftest import REPO, batch, dense_block, fcn
from sg_keras.pipeline import PipelinedTrainer
from sg_keras.placement import split_stages, stage_devices
from sg_keras.validation import ArgumentError

ASSIGNS = ("AssignVariableOp", "AssignSubVariableOp", "AssignAddVariableOp")
CALLS = {"If": 1, "StatelessIf": 1, "Case": 1, "StatelessCase": 1, "PartitionedCall": 0,
         "StatefulPartitionedCall": 0}


class TracedStep:
    """The ops of a traced step, nested function graphs included, with their dependencies."""

    def __init__(self, concrete):
        self.graph = concrete.graph
        self.caller = {}                 # nested graph -> (calling op, input offset)
        self.ops = []
        self._collect(self.graph)
        handles = {id(external): internal for external, internal in self.graph.captures}
        self.placeholder_of = handles

    def _collect(self, graph):
        for op in graph.get_operations():
            self.ops.append(op)
            offset = CALLS.get(op.type)
            if offset is None:
                continue
            for attr in ("then_branch", "else_branch", "f", "branches"):
                try:
                    value = op.get_attr(attr)
                except ValueError:
                    continue
                for function in value if isinstance(value, list) else [value]:
                    inner = graph._get_function(function.name).graph
                    self.caller[inner] = (op, offset)
                    self._collect(inner)

    def _outer(self, tensor):
        """A nested graph's placeholder → the tensor the calling op received there."""
        while tensor.op.type == "Placeholder" and tensor.graph in self.caller:
            op, offset = self.caller[tensor.graph]
            index = [t.name for t in tensor.graph.inputs].index(tensor.name)
            tensor = op.inputs[index + offset]
        return tensor

    def dependencies(self, op, gates=True):
        """Data and control inputs; with `gates`, also what opens the op's nested graph: the
        calling op's control inputs and the predicate (branch index) of a cond (case)."""
        inputs = [self._outer(t).op for t in op.inputs] + list(op.control_inputs)
        if gates and op.graph in self.caller:
            caller, offset = self.caller[op.graph]
            inputs += list(caller.control_inputs) + [self._outer(t).op
                                                     for t in caller.inputs[:offset]]
        return inputs

    def ancestors(self, ops, gates=True):
        """Every op that `ops` wait for (op level: an op waits for all of its inputs)."""
        seen, stack = set(), list(ops)
        while stack:
            op = stack.pop()
            if op in seen:
                continue
            seen.add(op)
            stack.extend(self.dependencies(op, gates))
        return seen

    def value_ancestors(self, ops):
        """The ops whose values `ops` are computed from: `ancestors` without the gates,
        where output i of an `IdentityN` comes from its input i only."""
        seen, stack = set(), [self._outer(t) for op in ops for t in op.inputs]
        seen.update(ops)
        while stack:
            tensor = stack.pop()
            op = tensor.op
            inputs = ([op.inputs[tensor.value_index]] if op.type == "IdentityN"
                      else list(op.inputs))
            stack.extend(self._outer(t) for t in inputs if self._outer(t).op not in seen)
            stack.extend(c.outputs[0] for c in op.control_inputs if c.outputs and c not in seen)
            seen.add(op)
        return seen

    def computing_with(self, ops, variables):
        """The ops among `ops` (closed under data inputs) computed from a value of `variables`.

        An op computes with a variable when it is a data descendant of a read
        of it; the reads themselves (which wait for nothing) do not count.
        """
        handles = {self.handle(v).name for v in variables}
        tainted = {op for op in ops if op.type == "ReadVariableOp"
                   and self.resource(op).name in handles}
        grown = True
        while grown:   # propagate along data edges to a fixed point
            new = {op for op in ops - tainted
                   if any(self._outer(t).op in tainted for t in op.inputs)}
            tainted |= new
            grown = bool(new)
        return {op for op in tainted if op.type != "ReadVariableOp"}

    def resource(self, op):
        """The outer placeholder of the variable an op reads or assigns, if any."""
        if not op.inputs or op.inputs[0].dtype != tf.resource:
            return None
        tensor = self._outer(op.inputs[0])
        while tensor.op.type == "Identity" and tensor.dtype == tf.resource:
            tensor = self._outer(tensor.op.inputs[0])
        return tensor

    def handle(self, variable):
        tensor = getattr(variable, "value", variable)
        return self.placeholder_of[id(tensor.handle)]

    def updates_of(self, variables):
        handles = {self.handle(v).name for v in variables}
        updates = [op for op in self.ops if op.type in ASSIGNS
                   and self.resource(op) is not None and self.resource(op).name in handles]
        assert updates, "no update op found for the module's variables"
        return updates

def traced_step(trainer, x, y):
    return TracedStep(trainer._train.get_concrete_function(tf.constant(x), tf.constant(y)))


def unlocked_check(traced, model, lower, allowed):
    """Asserts that the values of `lower`'s weight update compute with no variable outside
    `allowed` (the layers below), its own weights and its synthesizer, nor with the labels."""
    lower_variables = lower.layer.trainable_variables
    synthesizer = lower.synthesizer.trainable_variables
    depends_on = traced.value_ancestors(traced.updates_of(lower_variables))
    allowed_ids = {id(v) for v in allowed + lower_variables + synthesizer}
    above = [v for v in model.trainable_variables if id(v) not in allowed_ids]
    assert above, "the check needs layers above the module"
    assert traced.computing_with(depends_on, above) == set()
    labels = traced.graph.inputs[1].name
    assert labels not in {t.name for op in depends_on for t in op.outputs}
    # the check can fail: the update does compute with the module's weights and its ĝ
    assert traced.computing_with(depends_on, lower_variables[:1])
    assert traced.computing_with(depends_on, synthesizer[:1])


def sgd_trainer(model, on_nonfinite="raise"):
    return sg_keras.DNITrainer(model, "dni", optimizer=keras.optimizers.SGD(0.1),
                               sg_optimizer=keras.optimizers.SGD(0.1), on_nonfinite=on_nonfinite)


def waited_for(traced, model, lower, allowed):
    """The ops computing with a variable above `lower` (or with the labels) that `lower`'s
    weight update waits for (op level: every input, control input and cond predicate)."""
    lower_variables = lower.layer.trainable_variables
    allowed_ids = {id(v) for v in allowed + lower_variables + lower.synthesizer.trainable_variables}
    above = [v for v in model.trainable_variables if id(v) not in allowed_ids]
    waits_for = traced.ancestors(traced.updates_of(lower_variables))
    # the check can fail: the update does wait for the module's own weights
    assert traced.computing_with(waits_for, lower_variables[:1])
    labels = {op for op in waits_for
              if traced.graph.inputs[1].name in {t.name for t in op.outputs}}
    return traced.computing_with(waits_for, above) | labels


def waits_check(traced, model, lower, allowed):
    """Asserts that `lower`'s weight update waits for no op above it nor for the labels."""
    assert waited_for(traced, model, lower, allowed) == set()


def test_sequential_lower_update_does_not_wait_for_the_layers_above():
    model = fcn(blocks=2)
    first, second = model.layers[0], model.layers[1]
    traced = traced_step(sgd_trainer(model), *batch())
    unlocked_check(traced, model, first, [])
    # and the middle module may depend on the first one (its input), not on the head
    unlocked_check(traced, model, second, first.trainable_variables)
    # the criterion is not vacuous: the head's update does compute with the layers below it
    head = model.layers[-1].trainable_variables
    head_depends = traced.value_ancestors(traced.updates_of(head))
    assert traced.computing_with(head_depends, second.layer.trainable_variables)
    # op level: the whole-step guard makes every update wait for the full backward pass ...
    assert waited_for(traced, model, first, [])
    # ... the per-module guard does not
    traced = traced_step(sgd_trainer(model, "skip_module"), *batch())
    waits_check(traced, model, first, [])
    waits_check(traced, model, second, first.trainable_variables)


def branching_model():
    keras.utils.set_random_seed(1)
    inputs = keras.Input((8,))
    lower = sg_keras.DecoupledLayer(dense_block(16))
    h = lower(inputs)
    left = sg_keras.DecoupledLayer(dense_block(16))(h)
    right = keras.layers.Dense(16, activation="relu")(h)
    outputs = keras.layers.Dense(5)(keras.layers.Concatenate()([left, right]))
    return keras.Model(inputs, outputs), lower


def nested_model():
    keras.utils.set_random_seed(1)
    lower = sg_keras.DecoupledLayer(dense_block(16))
    inner = keras.Sequential([keras.Input((8,)), lower,
                              sg_keras.DecoupledLayer(dense_block(16))], name="inner")
    return keras.Sequential([keras.Input((8,)), inner, keras.layers.Dense(5)]), lower


@pytest.mark.parametrize("make", [branching_model, nested_model], ids=["branches", "nested"])
def test_lower_update_does_not_wait_for_the_layers_above(make):
    model, lower = make()
    unlocked_check(traced_step(sgd_trainer(model), *batch()), model, lower, [])
    waits_check(traced_step(sgd_trainer(model, "skip_module"), *batch()), model, lower, [])


def test_pipelined_stage_updates_read_no_other_stage():
    model = fcn(blocks=2)
    trainer = PipelinedTrainer(model, "dni", optimizer=keras.optimizers.SGD(0.1))
    traced = traced_step(trainer, *batch())
    for k, stage in enumerate(trainer.stages):
        depends_on = traced.ancestors(traced.updates_of(stage.network_variables))
        others = [v for other in trainer.stages if other is not stage
                  for v in other.network_variables + other.synthesizer_variables]
        assert traced.computing_with(depends_on, others) == set(), f"stage {k}"
        assert traced.computing_with(depends_on, stage.network_variables[:1])


def test_split_stages_and_errors():
    model = fcn(blocks=2)
    stages = split_stages(model)
    assert [stage.boundary for stage in stages] == [model.layers[0], model.layers[1], None]
    assert stages[-1].layers == [model.layers[-1]]
    nested = keras.Sequential([keras.Input((8,)), keras.Sequential(
        [keras.Input((8,)), sg_keras.DecoupledLayer(keras.layers.Dense(4))]),
        keras.layers.Dense(2)])
    with pytest.raises(ArgumentError, match="inside"):
        split_stages(nested)
    with pytest.raises(ArgumentError, match="ends with"):
        split_stages(keras.Sequential([keras.Input((3,)),
                                       sg_keras.DecoupledLayer(keras.layers.Dense(4))]))
    with pytest.raises(ArgumentError, match="no DecoupledLayer"):
        split_stages(keras.Sequential([keras.Input((3,)), keras.layers.Dense(4)]))


def test_stage_devices_spread_evenly_and_check_names():
    assert stage_devices(2, ["cpu:0"]) == ["/device:CPU:0"] * 2
    with pytest.raises(ArgumentError, match="`devices`"):
        stage_devices(2, [])
    with pytest.raises(ArgumentError, match="`devices`.*not a device name"):
        stage_devices(2, ["nonsense:x:y"])
    with pytest.raises(ArgumentError, match="does not see"):
        stage_devices(2, ["/gpu:9"])


TWO_DEVICES = textwrap.dedent("""
    import os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    sys.path.insert(0, "tests")
    import keras, numpy as np
    from conftest import batch, fcn
    from sg_keras.placement import stage_devices
    from sg_keras.pipeline import PipelinedTrainer

    assert stage_devices(4) == ["/device:CPU:0"] * 2 + ["/device:CPU:1"] * 2
    results = []
    for devices in (["/cpu:0"], ["/cpu:0", "/cpu:1"]):
        trainer = PipelinedTrainer(fcn(blocks=2), "dni", optimizer=keras.optimizers.SGD(0.1),
                                   devices=devices)
        for seed in range(3):
            trainer.train_step(*batch(seed=seed))
        results.append([v.numpy() for v in trainer.model.variables])
        graph = trainer._train.get_concrete_function(*map(tf.constant, batch(seed=2))).graph
        placed = {op.device for op in graph.get_operations() if op.type == "If"}
        print(devices, trainer.devices, sorted(placed))
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    print("same")
""")


def test_stages_on_two_logical_cpu_devices_train_as_on_one():
    # logical devices must be configured before TensorFlow starts: a fresh process
    result = subprocess.run([sys.executable, "-c", TWO_DEVICES], cwd=REPO, capture_output=True,
                            text=True, timeout=240, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert lines[-1] == "same"
    # three stages on two devices: the first two on CPU:0, the head on CPU:1
    assert lines[0].endswith("['/device:CPU:0']")
    assert "['/device:CPU:0', '/device:CPU:0', '/device:CPU:1'] ['/device:CPU:0', " \
           "'/device:CPU:1']" in lines[1]


def test_job_flags_name_bad_devices():
    from sg_keras.job.config import Config, ConfigError

    with pytest.raises(ConfigError, match="--devices.*does not see"):
        Config(model_dir="x", mode="dni", schedule="pipelined", devices=["/gpu:9"]).validate()
    with pytest.raises(ConfigError, match="--devices.*pipelined only"):
        Config(model_dir="x", mode="dni", devices=["/cpu:0"]).validate()
    with pytest.raises(ConfigError, match="--schedule"):
        Config(model_dir="x", mode="backprop", schedule="pipelined").validate()
    assert Config(model_dir="x", mode="cdni", schedule="pipelined",
                  devices=["/cpu:0"]).validate().architecture()["schedule"] == "pipelined"
