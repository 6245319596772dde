"""Weights named by URL or model-zoo name (``torchvision://resnet50``, ``open-mmlab://...``, ``https://...``).

MMEngine resolves these names to URLs and lets ``torch.hub`` download the file into its cache,
``$TORCH_HOME/hub/checkpoints/<file name of the URL>``, then unpickles it with ``weights_only=False``. fltool
registers these loaders in their place (see :mod:`fltool.engine.compat`, item 5): the same names and URL tables
(MMEngine's own ``hub/*.json``), the same cache file, but the file is read by
:func:`fltool.engine.checkpoint.load_local_checkpoint`
(tensors only unless trusted), and ``torchvision://`` works without torchvision installed. A file already in the cache
is never downloaded again, so weights can be put there by hand on a machine without network access.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional, Union
from urllib.parse import urlparse

from fltool.errors import CheckpointError

TORCHVISION, OPEN_MMLAB = "torchvision://", ("open-mmlab://", "openmmlab://")


def hub_checkpoint_dir() -> Path:
    """torch.hub's checkpoint cache (``$TORCH_HOME/hub/checkpoints``, read at each call)."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def cached_file(url: str) -> Path:
    return hub_checkpoint_dir() / os.path.basename(urlparse(url).path)


def _mmengine_table(name: str) -> dict:
    import mmengine

    return dict(mmengine.load(os.path.join(mmengine.__path__[0], "hub", name)))


def model_url(spec: str) -> str:
    """The URL (or, for a few open-mmlab names, the path under MMEngine's home) that a zoo name stands for."""
    if spec.startswith(TORCHVISION):
        name = spec[len(TORCHVISION):]
        table = _mmengine_table("torchvision_0.12.json")
        if name not in table:
            try:
                from mmengine.runner.checkpoint import get_torchvision_models

                table.update(get_torchvision_models())  # newer names, when torchvision is installed
            except ImportError:
                pass
        if name not in table:
            close = ", ".join(sorted(k for k in table if k.startswith(name[:6]))[:6]) or ", ".join(sorted(table)[:6])
            raise CheckpointError(f"unknown torchvision model '{name}' in {spec}", f"known names include {close}")
        return table[name]
    for prefix in OPEN_MMLAB:
        if spec.startswith(prefix):
            name = spec[len(prefix):]
            table = _mmengine_table("openmmlab.json")
            name = _mmengine_table("deprecated.json").get(name, name)
            if name not in table:
                raise CheckpointError(f"unknown open-mmlab model '{name}' in {spec}",
                                      "see mmengine/hub/openmmlab.json for the names")
            return table[name]
    return spec


def _download(url: str, dest: Path) -> None:
    import torch.hub

    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".partial")
    os.close(fd)
    try:
        torch.hub.download_url_to_file(url, tmp, progress=os.isatty(2))
        os.replace(tmp, dest)
    except Exception as exc:  # noqa: BLE001 - no network, HTTP errors, a full disk: all one message
        reason = " ".join(str(getattr(exc, "reason", exc)).split())[:120]
        raise CheckpointError(f"cannot download {url} ({type(exc).__name__}: {reason})",
                              f"without network access, put the file there by hand: {dest} "
                              "(torch.hub's cache; $TORCH_HOME moves it)") from None
    finally:
        Path(tmp).unlink(missing_ok=True)


def load_from_url(spec: str, map_location: Union[str, Callable, None] = None) -> Any:
    """MMEngine ``CheckpointLoader`` scheme for zoo names and URLs (see the module docstring)."""
    from fltool.engine.checkpoint import is_trusted, load_local_checkpoint, trusted

    url = model_url(spec)
    if not url.startswith(("http://", "https://")):
        from mmengine.runner.checkpoint import _get_mmengine_home

        path = Path(_get_mmengine_home()) / url
    else:
        path = cached_file(url)
        if not path.is_file():
            _download(url, path)
    with trusted(path if is_trusted(spec) else None):
        return load_local_checkpoint(str(path), map_location)


def local_path(spec: str) -> Optional[Path]:
    """Where the weights a spec names lie (or would lie) on this machine."""
    if spec.startswith((TORCHVISION, *OPEN_MMLAB, "http://", "https://")):
        url = model_url(spec)
        return cached_file(url) if url.startswith(("http://", "https://")) else None
    return Path(spec).expanduser()
