"""fltool's detection heads."""
from .ohem_head import OHEMRetinaHead  # noqa: F401  (registration)
from .retina_head import FocalRetinaHead  # noqa: F401  (registration)

__all__ = ["FocalRetinaHead", "OHEMRetinaHead"]
