"""Figures, JSON, CSV and the markdown report of an `Evaluation`, as bytes and text.

Nothing here touches a model or the file system: each function turns an `Evaluation` (from
`evaluate_models`) into the content of one file, and the CLI (`python -m sgt_tfmot.explain`)
writes them:

* `maps_figure(evaluation)`: PNG grid, one row per image (the image with its label, then
  one column per model × method, each titled with the model's prediction);
* `curves_figure(evaluation, protocol)`: PNG of one protocol's removal curves (its own
  measure: accuracy or true-class probability), one color per model, solid for the most
  salient units removed first (MoRF), dashed for the least salient (LeRF), dotted for random
  order; the title names the protocol, the unit and the fill;
* `curves_json(evaluation)` / `curves_csv`: the curves of every protocol and their areas;
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
        from sgt_tfmot.explain import attributions

        return attributions.get(name).title if attributions.supports(name) else name


ORDER_STYLES = {"top": "-", "bottom": "--", "random": ":"}
ORDER_TITLES = {"top": "MoRF", "bottom": "LeRF", "random": "random"}
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


def _protocol_curves(evaluation: Evaluation, protocol: str | None):
    """(protocol name, each model's `DropCurves` under it); None: the first protocol."""
    protocol = protocol or evaluation.models[0].curves.protocol
    return protocol, [model.protocols.get(protocol, model.curves) for model in evaluation.models]


def protocol_title(curves) -> str:
    """ "ROAD (pixels, noisy linear imputation (noise 0.01))": what a table or figure shows."""
    from sgt_tfmot.explain import protocols

    title = protocols.get(curves.protocol).title if protocols.supports(curves.protocol) else ""
    return f"{title or curves.protocol} ({curves.unit}, {curves.fill} fill)"


def curves_figure(evaluation: Evaluation, protocol: str | None = None) -> bytes:
    """PNG: the protocol's measure (%) against the share of units removed (%), one color
    per model.

    Args:
      evaluation: From `evaluate_models`.
      protocol: A protocol of the evaluation; None: the first.

    Returns:
      The PNG file's bytes.
    """
    from matplotlib.lines import Line2D

    protocol, measured = _protocol_curves(evaluation, protocol)
    figure = new_figure(6.4, 4.4)
    axis = figure.subplots()
    colors = [f"C{i % 10}" for i in range(len(evaluation.models))]
    orders = []
    probability = measured[0].measure == "probability"
    for color, curves in zip(colors, measured, strict=True):
        x = 100 * np.asarray(curves.fractions)
        series = curves.probabilities if probability else curves.curves
        for order, curve in series.items():
            axis.plot(x, 100 * np.asarray(curve), ORDER_STYLES[order], color=color, marker=".")
            if order not in orders:
                orders.append(order)
    settings = evaluation.settings
    drop_axis(
        axis,
        f"{protocol_title(measured[0])}\n{METHOD_NAMES[settings['curve_method']]} ranking, "
        f"{settings['curve_images']} images",
        ylabel="true-class probability (%)" if probability else "test accuracy (%)",
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
      {"fractions", "method", "protocol", "fill", "num_images", "seed", "models": [{"name",
      "accuracy", "curves": {order: [...]}, "areas": {order: area}, "zero_saliency_images"}],
      "protocols": {protocol: {"title", "unit", "fill", "measure", "models": [{"name",
      "sanity_failed", "accuracy": {order: [...]}, "probability": {order: [...]}, "areas",
      "probability_areas", "aopc", "top_below_random"}]}}}; the top level is the first
      protocol, as before protocols.
    """
    first = evaluation.models[0].curves
    return {
        "protocol": first.protocol,
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
        "protocols": {
            name: _protocol_json(evaluation, name) for name in evaluation.settings["protocols"]
        },
    }


def _protocol_json(evaluation: Evaluation, protocol: str) -> dict:
    _, measured = _protocol_curves(evaluation, protocol)
    method = evaluation.settings["curve_method"]
    first = measured[0]
    return {
        "title": protocol_title(first),
        "unit": first.unit,
        "fill": first.fill,
        "measure": first.measure,
        "models": [
            {
                "name": curves.name,
                "ranking": method,
                "sanity_failed": model.sanity_failed(method),
                "accuracy": {order: list(c) for order, c in curves.curves.items()},
                "probability": {o: list(c) for o, c in (curves.probabilities or {}).items()},
                "areas": curves.areas(),
                "probability_areas": curves.probability_areas(),
                "aopc": curves.aopc(),
                "top_below_random": top_below_random(curves),
            }
            for model, curves in zip(evaluation.models, measured, strict=True)
        ],
    }


def top_below_random(curves) -> bool | None:
    """Whether the MoRF area of the protocol's measure is below the random-order one (a
    faithful ranking's sign for a deletion protocol; for insertion the reverse), or None
    without both orders."""
    areas = curves.headline_areas()
    if "top" not in areas or "random" not in areas:
        return None
    return areas["top"] < areas["random"]


def curves_csv(evaluation: Evaluation) -> str:
    """The curves of every model and protocol as CSV, see `curves.curves_csv`."""
    return _curves_csv(
        [curves for model in evaluation.models for curves in model.protocols.values()]
    )


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


def _ranking(evaluation: Evaluation, model) -> str:
    """The ranking method of the curves, marked when its sanity check failed on `model`."""
    method = evaluation.settings["curve_method"]
    mark = " (**sanity FAILED**)" if model.sanity_failed(method) else ""
    return METHOD_NAMES[method] + mark


def _models_section(evaluation: Evaluation) -> list[str]:
    settings, models = evaluation.settings, evaluation.models
    lines = [
        f"- removal curves: {settings['curve_images_chosen']}, units ranked by "
        f"{METHOD_NAMES[settings['curve_method']]} saliency of the true class (channel mean "
        f"of |S| per pixel), protocols: "
        + ", ".join(protocol_title(models[0].protocols[name]) for name in settings["protocols"])
        + f", seed {settings['seed']}",
        f"- maps, concentration, sanity check and agreement: "
        f"{settings['agreement_images_chosen']}; figure: {settings['map_images']} images",
        "",
        "## Models",
        "",
        "AUC: trapezoid area under the protocol's measure (accuracy, or the mean probability "
        "of the true class; 0..1) against the share removed "
        f"({settings['fractions'][0]:g}..{settings['fractions'][-1]:g}). A ranking that is "
        "faithful to the model has a low AUC when the most relevant units go first (MoRF) and "
        "a high one when they go last (LeRF); random order is the baseline (for insertion, "
        "where the ranked units are put back, the reverse). A ranking whose sanity check "
        "failed is marked: its curves say nothing about the model.",
    ]
    for name in settings["protocols"]:
        lines += _protocol_table(evaluation, name)
    if any(model.curves.zero_saliency_images for model in models):
        lines += [
            "",
            "Zero-saliency images have an all-zero gradient map (on QAT models: the true-class "
            "output lies outside the output quantizer's range); their units are removed in "
            "index order.",
        ]
    return lines


def _protocol_table(evaluation: Evaluation, protocol: str) -> list[str]:
    _, measured = _protocol_curves(evaluation, protocol)
    first = measured[0]
    orders = list(first.curves)
    lines = [
        "",
        f"### {protocol_title(first)}, {first.measure}",
        "",
        "| model | accuracy | ranking | "
        + " | ".join(f"AUC {ORDER_TITLES[order]}" for order in orders)
        + " | MoRF below random | zero-saliency images |",
        "|---|---:|---|" + "---:|" * len(orders) + "---|---:|",
    ]
    for model, curves in zip(evaluation.models, measured, strict=True):
        areas = curves.headline_areas()
        below = top_below_random(curves)
        lines.append(
            f"| {_cell(model.name)} | {100 * model.accuracy:.2f} % | "
            f"{_cell(_ranking(evaluation, model))} | "
            + " | ".join(_number(areas.get(order)) for order in orders)
            + f" | {'n/a' if below is None else 'yes' if below else 'no'}"
            + f" | {curves.zero_saliency_images} / {curves.num_images} |"
        )
    return lines


def _curves_section(evaluation: Evaluation, links: Mapping[str, str]) -> list[str]:
    lines = ["", "## Removal curves"]
    for index, name in enumerate(evaluation.settings["protocols"]):
        _, measured = _protocol_curves(evaluation, name)
        first = measured[0]
        link = links.get("curves") if index == 0 else links.get(f"curves_{name}")
        lines += ["", f"### {protocol_title(first)}", ""]
        if link:
            lines += [f"![removal curves: {first.protocol}]({link})", ""]
        lines += [
            "| model | order | measure | "
            + " | ".join(f"{100 * f:g} %" for f in first.fractions)
            + " |",
            "|---|---|---|" + "---:|" * len(first.fractions),
        ]
        for model, curves in zip(evaluation.models, measured, strict=True):
            series = [("accuracy", curves.curves)]
            if curves.probabilities:
                series.append(("probability", curves.probabilities))
            for measure, values in series:
                for order, curve in values.items():
                    lines.append(
                        f"| {_cell(model.name)} | {ORDER_TITLES[order]} | {measure} | "
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
        for method in dict.fromkeys((*evaluation.methods, settings["curve_method"])):
            share = model.concentration.get(method, {"mean": None, "std": None, "zero_maps": "-"})
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


def _marked(evaluation: Evaluation, method: str, names) -> str:
    """The method's title, marked with the models (of `names`) whose sanity check it failed."""
    failed = [m.name for m in evaluation.models if m.name in names and m.sanity_failed(method)]
    return METHOD_NAMES[method] + (f" (**sanity FAILED**: {', '.join(failed)})" if failed else "")


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
                f"| {_cell(item.model_a)} | {_cell(item.model_b)} | "
                f"{_cell(_marked(evaluation, item.method, (item.model_a, item.model_b)))} "
                f"| {_mean_std(item.spearman_mean, item.spearman_std)} "
                f"| {_mean_std(item.iou_mean, item.iou_std)} "
                f"| {item.num_images} ({item.undefined}) |"
            )
    return lines
