"""fltool's version, from the installed package's metadata."""
from importlib.metadata import PackageNotFoundError, version

try:
    VERSION = version("fltool")
except PackageNotFoundError:  # running from a source tree that was never installed
    VERSION = "0+unknown"
