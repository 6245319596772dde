"""Loading checkpoints safely.

Every checkpoint MMEngine reads from local disk (resume, ``load_from``, ``fltool eval``) goes through
:func:`load_local_checkpoint` (registered by :mod:`fltool.engine.compat`). It uses ``torch.load(weights_only=True)``:
tensors and plain Python values only, so a file carrying a pickled payload cannot execute code. fltool's own
checkpoints are written in that form (``fltool_plugins.hooks.checkpoint``); MMEngine checkpoints from elsewhere
hold ``HistoryBuffer``/numpy objects, which are allow-listed here because unpickling them runs no code of the
file's choosing. Anything else is refused with a :class:`~fltool.errors.CheckpointError` unless the user trusted
the file explicitly (``--trust-checkpoint``), which falls back to full unpickling for that file only.
"""
from __future__ import annotations

import os
import pickle
import pickletools
import struct
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Union

import torch

from fltool.errors import CheckpointError

_trusted: set[str] = set()


def _key(path: Union[str, os.PathLike]) -> str:
    return str(Path(path).resolve())


@contextmanager
def trusted(path: Union[str, os.PathLike, None]) -> Iterator[None]:
    """Within the block, ``path`` may be fully unpickled (the user vouched for it)."""
    if path is None:
        yield
        return
    key = _key(path)
    _trusted.add(key)
    try:
        yield
    finally:
        _trusted.discard(key)


def is_trusted(path: Union[str, os.PathLike]) -> bool:
    """Whether ``path`` (a file, or a name such as ``torchvision://resnet50``) is being trusted."""
    return _key(path) in _trusted


def _mmengine_safe_globals() -> list:
    """Classes MMEngine (and numpy 1/2) put into checkpoints whose unpickling runs no file-chosen code."""
    import numpy as np
    from mmengine.logging import HistoryBuffer

    found: list = [HistoryBuffer, np.ndarray, np.dtype]
    for mod_name in ("numpy.core.multiarray", "numpy._core.multiarray"):
        try:
            mod = __import__(mod_name, fromlist=["_reconstruct", "scalar"])
            found += [mod._reconstruct, mod.scalar]
        except (ImportError, AttributeError):
            pass
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        found += [getattr(dtypes, name) for name in dir(dtypes) if name.endswith("DType")]
    return found


def _unsafe_globals(filename: str) -> str:
    """Names of what a checkpoint would import and call, beyond the allow-list (read without unpickling it)."""
    try:
        allowed = {f"{g.__module__}.{g.__qualname__}" for g in _mmengine_safe_globals()}
        names = [n for n in torch.serialization.get_unsafe_globals_in_checkpoint(filename) if n not in allowed]
    except Exception:  # noqa: BLE001 - only used to word the message
        names = []
    return ", ".join(names[:3]) if names else "objects other than tensors"


#: The first object a legacy (pre-zip) ``torch.save`` file pickles.
_LEGACY_TORCH_MAGIC = 0x1950A86A20F9469CFC6C


def _file_kind(path: Path) -> str:
    """'zip' (torch.save since 1.6), 'legacy' (older torch.save), 'truncated zip', 'pickle' or 'other'.

    Read from the file's first bytes and first pickle opcodes: nothing is unpickled.
    """
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(b"PK"):
        return "zip" if zipfile.is_zipfile(path) else "truncated zip"
    if not head.startswith(b"\x80"):  # pickle protocol 2+ opens with PROTO
        return "other"
    try:
        with open(path, "rb") as f:
            for op, arg, _ in pickletools.genops(f):
                if op.name in ("PROTO", "FRAME"):
                    continue
                return "legacy" if isinstance(arg, int) and arg == _LEGACY_TORCH_MAGIC else "pickle"
    except Exception:  # noqa: BLE001 - a malformed opcode stream is simply not a torch file
        return "other"
    return "other"


#: What ``torch.load`` raises on a damaged file (a bad zip, a cut or altered pickle stream: the unpickler fails on
#: whatever it then reads, e.g. a string that is not UTF-8, an opcode with too few operands, a short length field).
_CORRUPT = (zipfile.BadZipFile, EOFError, RuntimeError, pickle.UnpicklingError, ValueError, IndexError, KeyError,
            TypeError, AttributeError, OverflowError, struct.error)


def _not_a_checkpoint(filename: str, why: str) -> CheckpointError:
    return CheckpointError(f"{filename} is not a checkpoint of this model: {why}",
                           "give the .pth file that fltool train (or MMDetection) wrote, e.g. the work dir's "
                           "last_checkpoint")


def load_local_checkpoint(filename: str, map_location: Union[str, Callable, None] = None) -> Any:
    """MMEngine ``CheckpointLoader`` scheme for local files: ``weights_only=True`` unless the file is trusted."""
    path = Path(filename)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {filename}", "check the path (or the work dir's last_checkpoint)")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {filename} is empty (an interrupted write?)", "use an earlier checkpoint")
    try:
        kind = _file_kind(path)
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {filename}: {exc.strerror or exc}",
                              "check the file's permissions") from None
    if kind == "pickle":
        raise _not_a_checkpoint(filename, "it is a plain Python pickle, not a file written by torch.save")
    if kind == "other":
        raise _not_a_checkpoint(filename, "it is not a PyTorch file (neither a torch.save archive nor a pickle)")
    if kind == "truncated zip":
        raise CheckpointError(f"checkpoint {filename} is truncated or corrupt (an incomplete zip archive)",
                              "use another checkpoint (an earlier iter_*.pth of the work dir)")
    try:
        if _key(path) in _trusted:
            return torch.load(filename, map_location=map_location, weights_only=False)
        try:
            with torch.serialization.safe_globals(_mmengine_safe_globals()):
                return torch.load(filename, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError:
            raise CheckpointError(
                f"checkpoint {filename} needs arbitrary unpickling ({_unsafe_globals(filename)}); fltool refused to "
                "execute it",
                "if you trust where this file came from, rerun with --trust-checkpoint") from None
    except _CORRUPT as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"checkpoint {filename} is corrupt or not a PyTorch checkpoint ({first[:120]})",
                              "use another checkpoint") from None


def checkpoint_state_dict(filename: Union[str, os.PathLike], trust: bool = False) -> dict:
    """The model weights of a checkpoint (``state_dict`` if present, else the whole mapping of tensors)."""
    with trusted(filename if trust else None):
        ckpt = load_local_checkpoint(str(filename), map_location="cpu")
    if not isinstance(ckpt, dict):
        raise _not_a_checkpoint(str(filename), f"it holds a {type(ckpt).__name__}, not a dict of weights")
    state = ckpt.get("state_dict", ckpt)
    if not isinstance(state, dict) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        keys = ", ".join(map(str, list(ckpt)[:5]))
        raise _not_a_checkpoint(str(filename), f"it holds no weights (top-level keys: {keys or 'none'})")
    return state
