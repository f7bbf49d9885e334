"""Deletion and insertion (Petsiuk, Das, Saenko, "RISE", BMVC 2018), blurred-image baseline.

Deletion replaces the k = ⌊x · n⌋ first pixels of the order with the same pixels of a
blurred copy of the image (`sgt_tfmot.imputation.blur`); insertion starts from the blurred
copy and puts the first k pixels of the order back. The curve is the mean probability of the
true class: a faithful map gives a low deletion area and a high insertion area for the most
relevant pixels first. (RISE's deletion used a constant substrate and its insertion the blur;
here both use the blur, so that the two curves share one baseline.)
"""

from __future__ import annotations

from sgt_tfmot.explain.protocols.base import Protocol


class Deletion(Protocol):
    name, title, unit, measure = "deletion", "deletion (RISE)", "pixel", "probability"
    fills = ("blur", "mean", "black")
    reference = "Petsiuk et al., BMVC 2018"


class Insertion(Protocol):
    name, title, unit, measure = "insertion", "insertion (RISE)", "pixel", "probability"
    fills = ("blur", "mean", "black")
    insertion = True
    reference = "Petsiuk et al., BMVC 2018"
