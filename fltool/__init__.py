"""fltool: Focal Loss and RetinaNet on MMDetection — train, evaluate, benchmark and analyse."""
from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("fltool")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
