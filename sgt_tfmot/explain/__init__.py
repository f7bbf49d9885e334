"""Interpretability evaluation: saliency maps, accuracy-drop curves, agreement, sanity checks.

The paper's evidence that SGT helps is the accuracy-drop curve (Fig. 3 of Maleki et al.,
arXiv 2412.03915); its open question is whether quantization changes what a model looks at.
This package answers both for any saved classifier, float or QAT:

| module        | what it holds                                                             |
|---------------|---------------------------------------------------------------------------|
| `attribution` | maps: vanilla gradient, SmoothGrad, Grad-CAM, Grad-CAM++ (tf-keras-vis),   |
|               | and `input_gradients`, the batched graph-function fast path               |
| `curves`      | accuracy-drop curves (top, bottom, random order) and their areas          |
| `agreement`   | Spearman ρ and top-10 % IoU between maps, concentration, sanity check     |
| `evaluate`    | all of it for a set of models on the same test images                     |
| `report`      | figures, JSON, CSV and markdown of an evaluation                          |
| `__main__`    | the CLI, `python -m sgt_tfmot.explain --model PATH ... --out_dir DIR`     |

Example:

    from sgt_tfmot.explain import attribution_maps, drop_curves, agreement

    curves = drop_curves(qat_model, x_test[:500], y_test[:500], name="pact-4bit")
    maps_float = attribution_maps(float_model, x_test[:64], y_test[:64], "gradcam")
    maps_qat = attribution_maps(qat_model, x_test[:64], y_test[:64], "gradcam")
    print(curves.areas(), agreement(maps_float, maps_qat).spearman_mean)
"""

from sgt_tfmot.explain.agreement import (
    Agreement,
    SanityCheck,
    agreement,
    concentration,
    randomize_weights,
    sanity_check,
    spearman_per_image,
    top_fraction_iou,
)
from sgt_tfmot.explain.attribution import (
    CAM_METHODS,
    MAP_METHODS,
    METHODS,
    attribution_maps,
    gradcam_maps,
    input_gradients,
    last_conv_layer,
    saliency_maps,
)
from sgt_tfmot.explain.curves import (
    DEFAULT_FRACTIONS,
    ORDERS,
    DropCurves,
    accuracy_drop_curve,
    curve_area,
    curves_csv,
    drop_curves,
)
from sgt_tfmot.explain.evaluate import Evaluation, ModelEvaluation, evaluate_models

__all__ = [
    "CAM_METHODS",
    "DEFAULT_FRACTIONS",
    "MAP_METHODS",
    "METHODS",
    "ORDERS",
    "Agreement",
    "DropCurves",
    "Evaluation",
    "ModelEvaluation",
    "SanityCheck",
    "accuracy_drop_curve",
    "agreement",
    "attribution_maps",
    "concentration",
    "curve_area",
    "curves_csv",
    "drop_curves",
    "evaluate_models",
    "gradcam_maps",
    "input_gradients",
    "last_conv_layer",
    "randomize_weights",
    "saliency_maps",
    "sanity_check",
    "spearman_per_image",
    "top_fraction_iou",
]
