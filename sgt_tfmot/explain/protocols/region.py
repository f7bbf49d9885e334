"""Region perturbation (Samek, Binder, Montavon, Lapuschkin, Müller, IEEE TNNLS 2017).

The image is cut into square patches of `patch` pixels (a grid from the top-left corner;
edge patches cut by the border), each ranked by the sum of its pixels' relevance; the first
k = ⌊x · n⌋ patches of the order are replaced by the fill, uniform noise in the image's range
by default (the paper's "uniform distribution"), or the image's minimum ("black", Quantus's
default), its mean, its blur or ROAD's imputation. The curve is the mean probability of the
true class; Samek et al.'s AOPC is the mean drop from the unperturbed probability over the
steps, `DropCurves.aopc()`.
"""

from __future__ import annotations

from sgt_tfmot.explain.protocols.base import Protocol


class RegionPerturbation(Protocol):
    name, title, unit, measure = "region", "region perturbation", "patch", "probability"
    fills = ("uniform", "black", "mean", "blur", "imputation")
    reference = "Samek et al., IEEE TNNLS 2017"
