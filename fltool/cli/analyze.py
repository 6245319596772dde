"""`fltool analyze` command group."""
from __future__ import annotations

from fltool.cli.common import new_app

app = new_app("analyze")
