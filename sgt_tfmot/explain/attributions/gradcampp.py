"""Grad-CAM++: Grad-CAM with higher-order weights (Chattopadhay et al. 2018), tf-keras-vis."""

from __future__ import annotations

from sgt_tfmot.explain.attributions.gradcam import GradCAM


class GradCAMPlusPlus(GradCAM):
    name, title = "gradcampp", "Grad-CAM++"
    _method = "gradcampp"
