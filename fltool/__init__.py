"""fltool: Focal Loss and RetinaNet on MMDetection — train, evaluate, benchmark and analyse.

The commands are also functions (:mod:`fltool.api`): ``fltool.train``, ``fltool.evaluate``, ``fltool.predict``,
``fltool.export``. They are imported on first use, so ``import fltool`` stays light.
"""
from fltool.about import VERSION as __version__

_API = ("train", "evaluate", "predict", "export")
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from fltool import api

        return getattr(api, name)
    raise AttributeError(f"module 'fltool' has no attribute {name!r}")
