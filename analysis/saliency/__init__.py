"""Where a head looks: class activation maps of a trained model, drawn over its input images.

Exact CAM for gap and nin heads (cam), Grad-CAM through captum for every head (gradcam), one
entry choosing between them (maps), and the figures (cam.draw_cams, cam.draw_runs).
"""

from .cam import (
    CamResult,
    cam_support,
    class_activation_maps,
    draw_cams,
    draw_runs,
    flat_map_warning,
)
from .gradcam import grad_cam, has_captum
from .maps import METHODS, ZERO_GRADCAM, HeadMaps, choose_method, flat_maps, head_maps

__all__ = ["METHODS", "ZERO_GRADCAM", "CamResult", "HeadMaps", "flat_maps", "cam_support", "choose_method",
           "class_activation_maps", "draw_cams", "draw_runs", "flat_map_warning", "grad_cam",
           "has_captum", "head_maps"]
