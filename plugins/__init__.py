"""fltool's MMDetection plugins, importable as ``fltool_plugins``.

Importing this package registers everything into MMDetection's registries (``custom_imports`` in configs does it):
the losses (``FocalLossFL``, ``FocalLossStar``), the RetinaNet head (``FLRetinaHead``) and fltool's hooks/transforms.
"""
from . import losses as _losses  # noqa: F401  (registration only)
