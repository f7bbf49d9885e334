"""Grad-CAM++: Grad-CAM with higher-order weights (Chattopadhay et al. 2018).

    L = ReLU(Σ_k w_k A_k),   w_k = Σ_ij a_ij^k · ReLU(e^{f_y} ∂f_y/∂A_ijk),
    a_ij^k ∝ g² / (2 g² + Σ_ab A_abk · g³),  g = ∂f_y/∂A_ijk,  Σ_ij a_ij^k = 1

on the same layer A as Grad-CAM (`gradcam`), computed with tf-keras-vis's `GradcamPlusPlus`
(the derivatives of e^{f_y}: the paper's exponential score, whose higher derivatives are
powers of the first).
"""

from __future__ import annotations

from sgt_tfmot.explain.attributions.gradcam import GradCAM


class GradCAMPlusPlus(GradCAM):
    name, title = "gradcampp", "Grad-CAM++"

    @staticmethod
    def _explainer():
        from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus

        return GradcamPlusPlus
