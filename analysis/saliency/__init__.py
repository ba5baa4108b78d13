"""Where a head looks: class activation maps of a trained model, drawn over its input images."""

from .cam import CamResult, cam_support, class_activation_maps, draw_cams

__all__ = ["CamResult", "cam_support", "class_activation_maps", "draw_cams"]
