"""`biases_aligned` tells a model `align_biases` left aligned, within float32 precision.

The convert report's hint "the Keras model's biases are not on the integer model's int32
grid" came on models `train` had aligned: aligning again moved a β by one float32 ulp of the
folded bias (1.2e-7 on a bias of 1.2), which the check compared against β's own size.
"""

from pathlib import Path

import numpy as np
import pytest

from sgt_tfmot import saving
from sgt_tfmot._graph import inbound_layer
from sgt_tfmot.export import (
    _output_step,
    align_biases,
    biases_aligned,
    export_model,
)
from sgt_tfmot.keras import keras

ZOO_RUN = Path(__file__).resolve().parents[1] / "zoo" / "mnist-w8a8-sgt-1ep"


def aligned_copy(model):
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    align_biases(copy)
    return copy


@pytest.mark.slow
def test_a_run_that_train_aligned_is_reported_aligned():
    """The zoo's train-made ResNet-20 (mixed_bfloat16, 23 layers aligned by the run)."""
    model = saving.float32_model(saving.load_model(ZOO_RUN))
    assert biases_aligned(model)


@pytest.mark.slow
def test_one_ulp_of_the_folded_bias_is_aligned_half_a_grid_unit_is_not(residual_qat):
    model = aligned_copy(residual_qat(8))
    assert biases_aligned(model)
    bn = model.get_layer("quant_conv_bn").layer
    beta = bn.beta.numpy()
    bn.beta.assign(np.zeros_like(beta))  # a small β: its own ulps are far below the bias's
    align_biases(model)
    assert biases_aligned(model)
    grid = export_model(model).get_layer("quant_conv").layer.bias.numpy()
    assert np.abs(bn.beta.numpy()).max() < 0.1 * np.abs(grid).max()
    # One float32 ulp of the folded bias (what storing β and the grid value in float32 cost).
    nudged = bn.beta.numpy() + np.spacing(np.abs(grid).astype(np.float32))
    bn.beta.assign(nudged)
    assert biases_aligned(model)
    # A third of each channel's int32 unit (input step x weight step): off the grid.
    exported = export_model(model).get_layer("quant_conv")
    kernel = next(w for w in exported.weights if w.name.endswith("kernel:0")).numpy()
    unit = _output_step(inbound_layer(exported)) * (
        exported.quantize_config.weight_quantizer.steps(kernel)
    )
    bn.beta.assign((nudged + unit / 3).astype(np.float32))
    assert not biases_aligned(model)


@pytest.mark.slow
def test_a_dead_batchnorm_channel_with_a_tiny_offset_is_aligned(residual_qat):
    """A channel that died in training (moving variance ~1e-20, EfficientNetB0 has three)
    folds into a bias of ~1e-12 on grid value 0: no float32 ulp of its operands covers the
    gap, but it is a millionth of an int32 unit, which no integer can see."""
    model = aligned_copy(residual_qat(8))
    bn = model.get_layer("quant_conv_bn").layer
    for variable, value in ((bn.moving_variance, 1e-20), (bn.moving_mean, 0.0), (bn.beta, 5e-12)):
        values = variable.numpy()
        values[0] = value
        variable.assign(values)
    assert export_model(model).get_layer("quant_conv").layer.bias.numpy()[0] == 0.0
    assert biases_aligned(model)
