"""fltool's dataset transforms."""
from .transforms import ImageLoadError, LoadImageChecked, PackDetInputsFast  # noqa: F401  (registration)

__all__ = ["ImageLoadError", "LoadImageChecked", "PackDetInputsFast"]
