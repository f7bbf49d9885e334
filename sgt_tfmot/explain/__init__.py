"""Interpretability evaluation: saliency maps, accuracy-drop curves, agreement, sanity checks.

The paper's evidence that SGT helps is the accuracy-drop curve (Fig. 3 of Maleki et al.,
arXiv 2412.03915); its open question is whether quantization changes what a model looks at.
This package answers both for any saved classifier, float or QAT:

| module        | what it holds                                                             |
|---------------|---------------------------------------------------------------------------|
| `attributions`| methods, one registry: vanilla gradient, SmoothGrad, Grad-CAM, Grad-CAM++ |
|               | (tf-keras-vis), occlusion; `input_gradients`, the batched fast path       |
| `curves`      | removal curves (top/MoRF, bottom/LeRF, random order) and their areas     |
| `protocols`   | removal protocols, one registry: pixel (the trainer's rule), ROAD,        |
|               | deletion/insertion (RISE), region perturbation                            |
| `measures`    | Spearman ρ and top-10 % IoU between maps, concentration, sanity check     |
| `evaluate`    | all of it for a set of models on the same test images                     |
| `report`      | figures, JSON, CSV and markdown of an evaluation                          |
| `__main__`    | the CLI, `python -m sgt_tfmot.explain --model PATH ... --out_dir DIR`:    |
|               | its flags and one call of `sgt_tfmot.explanation.explain_models` (the     |
|               | same files from Python, for saved models or models in memory)            |

Example:

    from sgt_tfmot.explain import attribution_maps, drop_curves, agreement

    curves = drop_curves(qat_model, x_test[:500], y_test[:500], name="pact-4bit")
    road = drop_curves(qat_model, x_test[:500], y_test[:500], protocol="road")
    maps_float = attribution_maps(float_model, x_test[:64], y_test[:64], "gradcam")
    maps_qat = attribution_maps(qat_model, x_test[:64], y_test[:64], "gradcam")
    print(curves.areas(), agreement(maps_float, maps_qat).spearman_mean)
"""

import importlib

_API = {
    "Agreement": "measures", "SanityCheck": "measures", "agreement": "measures",
    "concentration": "measures", "randomize_weights": "measures", "sanity_check": "measures",
    "spearman_per_image": "measures", "top_fraction_iou": "measures",
    "attribution_maps": "attributions", "gradcam_maps": "attributions",
    "input_gradients": "attributions", "last_conv_layer": "attributions",
    "saliency_maps": "attributions",
    "DEFAULT_FRACTIONS": "curves", "ORDERS": "curves", "DropCurves": "curves",
    "accuracy_drop_curve": "curves", "curve_area": "curves", "curves_csv": "curves",
    "drop_curves": "curves",
    "Evaluation": "evaluate", "EvaluationOptions": "evaluate", "ModelEvaluation": "evaluate",
    "evaluate_models": "evaluate",
}  # fmt: skip

__all__ = sorted(_API)


def __getattr__(name: str):
    """Imports the public names on first use (the CLI starts TensorFlow quietly first)."""
    if name in _API:
        value = getattr(importlib.import_module(f"{__name__}.{_API[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_API))
