"""fltool's detection heads."""
from .retina_head import FocalRetinaHead  # noqa: F401  (registration)

__all__ = ["FocalRetinaHead"]
