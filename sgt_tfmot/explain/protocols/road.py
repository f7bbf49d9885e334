"""ROAD: RemOve And Debias (Rong, Leemann, Nguyen, Fiedler, Kasneci, ICML 2022).

The k = ⌊x · n⌋ most relevant (MoRF) or least relevant (LeRF) pixels are replaced by noisy
linear imputation (`sgt_tfmot.imputation.noisy_linear_imputation`): each removed pixel is
the weighted mean of its eight neighbours (1/6 direct, 1/12 diagonal) plus Gaussian noise of
0.01 of the value range, so the perturbed image stays close to the data and the removal
pattern no longer tells the class. Faithful attributions give a MoRF curve that falls below
random order and a LeRF curve that stays above it. The curve is the accuracy, as in the
paper; at least one pixel must stay (the imputation needs a neighbour), so x < 1.
"""

from __future__ import annotations

from sgt_tfmot.explain.protocols.base import Protocol


class ROAD(Protocol):
    name, title, unit, measure = "road", "ROAD", "pixel", "accuracy"
    fills = ("imputation",)
    reference = "Rong et al., ICML 2022"
