"""``fltool sweep``."""
from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the sweep command to the root app."""
