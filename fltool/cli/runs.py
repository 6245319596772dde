"""``fltool train`` and ``fltool eval``."""
from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the train/eval commands to the root app."""
