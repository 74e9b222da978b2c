"""The paper's networks as the training job builds them."""

import keras
import numpy as np

import sg_keras
from sg_keras.job import networks


def test_fcn_has_a_decoupled_block_per_hidden_layer():
    model = networks.fcn(num_layers=4, units=8, synthesizer_rank=2)
    decoupled = [layer for layer in model.layers if isinstance(layer, sg_keras.DecoupledLayer)]
    assert len(decoupled) == 3
    assert all(layer.synthesizer.rank == 2 for layer in decoupled)


def test_cnn_follows_the_paper_and_trains_its_conv_modules_with_dni():
    model = networks.cnn((12, 12), num_layers=4, filters=4, context=True, synthesizer_filters=4)
    blocks = [layer for layer in model.layers if isinstance(layer, sg_keras.DecoupledLayer)]
    pools = [type(block.layer.layers[-1]).__name__ for block in blocks]
    assert pools == ["MaxPooling2D", "AveragePooling2D", "AveragePooling2D"]
    assert [block.output.shape[1:] for block in blocks] == [(6, 6, 4), (3, 3, 4), (2, 2, 4)]
    assert all(block.layer.layers[0].kernel.shape[:2] == (5, 5) for block in blocks)
    assert all(isinstance(block.synthesizer, sg_keras.synthesizers.ConvSynthesizer)
               for block in blocks)
    trainer = sg_keras.DNITrainer(model, mode="cdni", optimizer=keras.optimizers.Adam(1e-2))
    rng = np.random.default_rng(0)
    x, y = rng.random((8, 12, 12)).astype("float32"), rng.integers(0, 10, 8)
    first = blocks[0].layer.layers[0].kernel.numpy().copy()
    for _ in range(5):   # zero synthesizers: ĝ reaches the lowest of 3 modules at step 4
        logs = trainer.train_step(x, y)
    assert np.abs(blocks[0].layer.layers[0].kernel.numpy() - first).max() > 0
    assert np.isfinite(float(logs["loss"]))
