"""Figures, JSON, CSV and the markdown report of an `Evaluation`, as bytes and text.

Nothing here touches a model or the file system: each function turns an `Evaluation` (from
`evaluate_models`) into the content of one file, and the CLI (`python -m sgt_tfmot.explain`)
writes them:

* `maps_figure(evaluation)`: PNG grid, one row per image (the image with its label, then
  one column per model × method, each titled with the model's prediction);
* `curves_figure(evaluation)`: PNG of the accuracy-drop curves, one color per model, solid
  for the most salient features removed first, dashed for the least salient, dotted for
  random order;
* `curves_json(evaluation)` / `curves_csv`: the curves and their areas;
* `markdown_report(evaluation, links)`: tables of every measure with the figures linked.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from sgt_tfmot.explain.curves import curves_csv as _curves_csv
from sgt_tfmot.explain.evaluate import Evaluation
from sgt_tfmot.explain.figures import class_name, drop_axis, drop_legends, new_figure, overlay, png

__all__ = [
    "ORDER_NAMES",
    "curves_csv",
    "curves_figure",
    "curves_json",
    "maps_figure",
    "markdown_report",
]


class _MethodNames(dict):
    """Method name -> its title, read from the attribution registry."""

    def __missing__(self, name: str) -> str:
        from sgt_tfmot.explain.attributions import REGISTRY

        return REGISTRY[name].title if name in REGISTRY else name


ORDER_STYLES = {"top": "-", "bottom": "--", "random": ":"}
ORDER_NAMES = {
    "top": "most salient removed first",
    "bottom": "least salient removed first",
    "random": "random order",
}
METHOD_NAMES = _MethodNames()


def maps_figure(evaluation: Evaluation) -> bytes:
    """PNG: rows are the map images, columns the image and then models × methods.

    Each map is drawn over its image, on its own scale (0 to its maximum, "jet" colours
    with transparency, one colour bar); the title of a map's cell gives the model's
    prediction (class names when the data has them), green when right and red when wrong.

    Args:
      evaluation: From `evaluate_models`.

    Returns:
      The PNG file's bytes.
    """
    names = [model.name for model in evaluation.models]
    classes = evaluation.class_names
    columns = [(name, method) for name in names for method in evaluation.methods]
    rows = len(evaluation.map_images)
    figure = new_figure(1.35 * (len(columns) + 1) + 0.6, 1.45 * rows + 0.6)
    axes = figure.subplots(rows, len(columns) + 1, squeeze=False)
    artist = None
    for row, (index, image, label) in enumerate(
        zip(evaluation.map_indices, evaluation.map_images, evaluation.map_labels, strict=True)
    ):
        cell = axes[row, 0]
        overlay(cell, image, np.zeros(image.shape[:2]), alpha=0.0)
        cell.set_title(f"#{index} {class_name(label, classes)}", fontsize=7)
        for column, (name, method) in enumerate(columns, start=1):
            cell = axes[row, column]
            saliency = evaluation.maps[name, method][row]
            top = float(saliency.max())
            artist = overlay(cell, image, saliency / top if top > 0 else saliency, vmax=1.0)
            predicted = int(evaluation.predictions[name][row])
            title = f"pred {class_name(predicted, classes)}" + (" (zero map)" if top == 0 else "")
            if row == 0:
                title = f"{name}\n{METHOD_NAMES[method]}\n{title}"
            cell.set_title(title, fontsize=7, color="green" if predicted == label else "red")
    figure.suptitle("Saliency of the true class (columns: model, method)", fontsize=9)
    figure.tight_layout(rect=(0, 0, 0.9, 1))
    if artist is not None:  # after the layout: a colour bar in the right margin
        bar = figure.add_axes((0.91, 0.15, 0.012, 0.7))
        figure.colorbar(artist, cax=bar, label="saliency / the map's maximum")
    return png(figure)


def curves_figure(evaluation: Evaluation) -> bytes:
    """PNG: accuracy (%) against the share of features removed (%), one color per model.

    Args:
      evaluation: From `evaluate_models`.

    Returns:
      The PNG file's bytes.
    """
    from matplotlib.lines import Line2D

    figure = new_figure(6.4, 4.4)
    axis = figure.subplots()
    colors = [f"C{i % 10}" for i in range(len(evaluation.models))]
    orders = []
    for color, model in zip(colors, evaluation.models, strict=True):
        x = 100 * np.asarray(model.curves.fractions)
        for order, curve in model.curves.curves.items():
            axis.plot(x, 100 * np.asarray(curve), ORDER_STYLES[order], color=color, marker=".")
            if order not in orders:
                orders.append(order)
    settings = evaluation.settings
    drop_axis(
        axis,
        f"Accuracy-drop curves ({METHOD_NAMES[settings['curve_method']]} ranking, "
        f"{settings['fill']} fill, {settings['curve_images']} images)",
    )
    drop_legends(
        axis,
        {ORDER_NAMES[o]: ORDER_STYLES[o] for o in orders},
        ([Line2D([], [], color=c) for c in colors], [model.name for model in evaluation.models]),
        loc="lower left",
    )
    figure.tight_layout()
    return png(figure)


def curves_json(evaluation: Evaluation) -> dict:
    """The curves of every model with their areas, as a JSON-ready dict.

    Returns:
      {"fractions", "method", "fill", "num_images", "seed", "models": [{"name", "accuracy",
      "curves": {order: [...]}, "areas": {order: area}, "zero_saliency_images"}]}.
    """
    first = evaluation.models[0].curves
    return {
        "fractions": list(first.fractions),
        "method": first.method,
        "fill": first.fill,
        "num_images": first.num_images,
        "seed": evaluation.settings["seed"],
        "models": [
            {
                "name": model.name,
                "accuracy": model.accuracy,
                "curves": {order: list(curve) for order, curve in model.curves.curves.items()},
                "areas": model.curves.areas(),
                "zero_saliency_images": model.curves.zero_saliency_images,
            }
            for model in evaluation.models
        ],
    }


def curves_csv(evaluation: Evaluation) -> str:
    """The curves as CSV (model,order,fraction,accuracy), see `curves.curves_csv`."""
    return _curves_csv([model.curves for model in evaluation.models])


def _number(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _mean_std(mean: float | None, std: float | None) -> str:
    return "n/a" if mean is None else f"{mean:.2f} ± {std:.2f}"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|")


def markdown_report(
    evaluation: Evaluation,
    links: Mapping[str, str] | None = None,
    title: str = "Saliency report",
    context: Mapping[str, str] | None = None,
) -> str:
    """The markdown report: per-model table, curves, maps, concentration, sanity, agreement.

    Args:
      evaluation: From `evaluate_models`.
      links: File kind -> path relative to the report: "maps" and "curves" (PNGs, shown
        inline), "curves_json", "curves_csv", "summary" (listed).
      title: The report's heading.
      context: Lines "key: value" shown under the heading (dataset, model paths, ...).

    Returns:
      The markdown text.
    """
    links = dict(links or {})
    lines = [f"# {title}", ""]
    for key, value in (context or {}).items():
        lines.append(f"- {key}: {value}")
    lines += _models_section(evaluation)
    lines += _curves_section(evaluation, links)
    lines += _maps_section(evaluation, links)
    lines += _sanity_section(evaluation)
    lines += _agreement_section(evaluation)
    if "summary" in links:
        lines += ["", f"All numbers: [{links['summary']}]({links['summary']})"]
    return "\n".join(lines) + "\n"


def _models_section(evaluation: Evaluation) -> list[str]:
    settings, models = evaluation.settings, evaluation.models
    orders = list(models[0].curves.curves)
    lines = [
        f"- accuracy-drop curves: first {settings['curve_images']} test images, features "
        f"ranked by {METHOD_NAMES[settings['curve_method']]} saliency of the true class "
        f"(channel mean of |S| per pixel), removed ones replaced by the {settings['fill']} "
        f"fill (the trainer's masking rule), seed {settings['seed']}",
        f"- maps, concentration, sanity check and agreement: first "
        f"{settings['agreement_images']} test images; figure: {settings['map_images']} images",
        "",
        "## Models",
        "",
        "AUC: trapezoid area under accuracy (0..1) against the share removed "
        f"({settings['fractions'][0]:g}..{settings['fractions'][-1]:g}). A model that relies on "
        "the features its saliency ranks first has a low AUC when they go first (top) and a "
        "high one when they go last (bottom); random order is the baseline.",
        "",
        "| model | accuracy | "
        + " | ".join(f"AUC {order}" for order in orders)
        + " | zero-saliency images |",
        "|---|---:|" + "---:|" * len(orders) + "---:|",
    ]
    for model in models:
        areas = model.curves.areas()
        lines.append(
            f"| {_cell(model.name)} | {100 * model.accuracy:.2f} % | "
            + " | ".join(_number(areas.get(order)) for order in orders)
            + f" | {model.curves.zero_saliency_images} / {model.curves.num_images} |"
        )
    if any(model.curves.zero_saliency_images for model in models):
        lines += [
            "",
            "Zero-saliency images have an all-zero gradient map (on QAT models: the true-class "
            "output lies outside the output quantizer's range); their features are removed in "
            "index order.",
        ]
    return lines


def _curves_section(evaluation: Evaluation, links: Mapping[str, str]) -> list[str]:
    models = evaluation.models
    fractions = models[0].curves.fractions
    lines = ["", "## Accuracy-drop curves", ""]
    if "curves" in links:
        lines += [f"![accuracy-drop curves]({links['curves']})", ""]
    lines += [
        "| model | order | " + " | ".join(f"{100 * f:g} %" for f in fractions) + " |",
        "|---|---|" + "---:|" * len(fractions),
    ]
    for model in models:
        for order, curve in model.curves.curves.items():
            lines.append(
                f"| {_cell(model.name)} | {order} | "
                + " | ".join(f"{100 * a:.1f}" for a in curve)
                + " |"
            )
    files = [f"[{kind}]({links[kind]})" for kind in ("curves_json", "curves_csv") if kind in links]
    if files:
        lines += ["", "Data: " + ", ".join(files)]
    return lines


def _maps_section(evaluation: Evaluation, links: Mapping[str, str]) -> list[str]:
    lines = ["", "## Saliency maps", ""]
    if "maps" in links:
        lines += [f"![saliency maps]({links['maps']})", ""]
    lines += [
        "Rows: test images #" + ", #".join(str(i) for i in evaluation.map_indices) + ". "
        "Each map on its own color scale; titles give the model's prediction.",
        "",
    ]
    return lines


def _sanity_section(evaluation: Evaluation) -> list[str]:
    settings, models = evaluation.settings, evaluation.models
    lines = [
        "## Concentration and sanity check",
        "",
        f"Concentration: share of the total saliency in the top "
        f"{100 * settings['top_fraction']:g} % of the pixels (mean ± std over the maps that "
        "are not all zero; a flat map gives "
        f"{settings['top_fraction']:g}). Sanity check (Adebayo et al. 2018): Spearman ρ "
        "between the maps of the model and of a copy with re-initialised kernels, biases and "
        "BatchNormalization γ/β (quantizer ranges kept); it passes below "
        f"{settings['sanity_threshold']:g}.",
        "",
        "| model | method | concentration | zero maps | sanity ρ | sanity check |",
        "|---|---|---:|---:|---:|---|",
    ]
    for model in models:
        for method in evaluation.methods:
            share = model.concentration[method]
            check = model.sanity.get(method)  # none for a model without weights (a .tflite)
            similarity = (
                "n/a" if check is None else _mean_std(check.similarity_mean, check.similarity_std)
            )
            verdict = "n/a (integer model)" if check is None else check.verdict
            lines.append(
                f"| {_cell(model.name)} | {METHOD_NAMES[method]} | "
                f"{_mean_std(share['mean'], share['std'])} | {share['zero_maps']} | "
                f"{similarity} | {verdict} |"
            )
    return lines


def _agreement_section(evaluation: Evaluation) -> list[str]:
    settings = evaluation.settings
    lines = ["", "## Agreement between models", ""]
    if not evaluation.agreements:
        lines.append("One model: no pair to compare.")
    else:
        lines += [
            f"Each pair of models on the same images: Spearman ρ between their maps per image "
            f"and the IoU of their top {100 * settings['top_fraction']:g} % pixels, mean ± "
            "std over the images (ρ over the images where neither map is constant). A model "
            "agrees with itself at 1.00.",
            "",
            f"| model A | model B | method | Spearman ρ | top-{100 * settings['top_fraction']:g} "
            "% IoU | images (no ρ) |",
            "|---|---|---|---:|---:|---:|",
        ]
        for item in evaluation.agreements:
            lines.append(
                f"| {_cell(item.model_a)} | {_cell(item.model_b)} | {METHOD_NAMES[item.method]} "
                f"| {_mean_std(item.spearman_mean, item.spearman_std)} "
                f"| {_mean_std(item.iou_mean, item.iou_std)} "
                f"| {item.num_images} ({item.undefined}) |"
            )
    return lines
