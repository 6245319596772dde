"""Writing results so that a crash or a full disk never leaves a half-written file under the final name."""
from __future__ import annotations

import json
import os
import platform
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Union

PathLike = Union[str, os.PathLike]


@contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write; it replaces ``path`` only when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        if exc.filename in (None, str(tmp)):  # name the file the user asked for, not the temporary sibling
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_bytes(path: PathLike, data: bytes) -> Path:
    """``data`` to ``path`` through :func:`atomic_path`: a full disk leaves the old file or none, never a truncated
    one under the final name."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_json(path: PathLike, data: Any, indent: Union[int, None] = 2) -> Path:
    """JSON with a trailing newline; values JSON does not know (paths, numpy scalars) become strings."""
    return write_text(path, json.dumps(data, indent=indent, default=str) + "\n")


def read_json(path: PathLike) -> Any:
    """The JSON value in ``path``, or None where there is no such file; a damaged file is a ConfigError naming it
    (the records fltool keeps beside its runs: run.json, metrics.json, sweep.json)."""
    from fltool.errors import ConfigError

    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RecursionError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}", "delete the damaged file and run again") from None


def json_digest(data: Any) -> str:
    """A short stable fingerprint of a JSON-like value (keys sorted; values JSON does not know as strings): what
    fltool records beside a run to tell later whether the same settings made it."""
    import hashlib

    return hashlib.sha1(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def save_figure(fig: Any, path: PathLike, **savefig_kwargs: Any) -> Path:
    """Save a matplotlib figure atomically, then close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", **savefig_kwargs)
    plt.close(fig)
    return path


def cpu_name() -> str:
    """The CPU model as /proc/cpuinfo names it (else what platform knows)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
