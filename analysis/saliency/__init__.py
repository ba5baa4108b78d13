"""Where a head looks: class activation maps of a trained model, drawn over its input images."""

from .cam import CamResult, cam_support, class_activation_maps, draw_cams, flat_map_warning

__all__ = ["CamResult", "cam_support", "class_activation_maps", "draw_cams", "flat_map_warning"]
