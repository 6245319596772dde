"""From what a user points at (a work dir or a checkpoint) to the config and checkpoint of a trained run.

``fltool train`` leaves in its work dir the checkpoints (``iter_*.pth`` / ``epoch_*.pth``), ``last_checkpoint``
(the path of the newest) and the resolved config that MMEngine dumps there (``<config name>.py``). Commands that
apply a trained model (predict, export) take the work dir or a checkpoint and find the rest here:

- a work dir -> the checkpoint named in its ``last_checkpoint`` (else the newest checkpoint file in it);
- a checkpoint -> the config dumped beside it; failing that, the config text MMEngine stored in the checkpoint's
  ``meta['cfg']``, written to a temporary file (the checkpoint's folder may be read-only).

The class names come from the checkpoint's ``meta['dataset_meta']['classes']`` (MMEngine saves the training set's
metainfo there) and the config's ``metainfo`` as a fallback.
"""
from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from fltool.errors import CheckpointError

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt")
_STEP = re.compile(r"^(?:iter|epoch)_(\d+)\.pth$")


@dataclass(frozen=True)
class RunFiles:
    """The config and checkpoint of a trained run, and where the config came from."""

    config: Path
    checkpoint: Path
    config_source: str  # "given", "work dir" or "checkpoint meta"


def _newest_checkpoint(folder: Path) -> Optional[Path]:
    last = folder / "last_checkpoint"
    if last.is_file():
        named = Path(last.read_text().strip())
        for candidate in (named, folder / named.name):  # the work dir may have moved since
            if candidate.is_file():
                return candidate
    steps = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _STEP.match(p.name))]
    return max(steps)[1] if steps else None


def _dumped_config(folder: Path) -> Optional[Path]:
    """The config MMEngine dumped into a work dir: the one top-level .py file there."""
    configs = sorted(p for p in folder.glob("*.py") if p.is_file())
    if len(configs) == 1:
        return configs[0]
    return None


def _config_from_meta(checkpoint: Path, trust: bool) -> Optional[Path]:
    from fltool.engine.checkpoint import load_local_checkpoint, trusted

    with trusted(checkpoint if trust else None):
        ckpt = load_local_checkpoint(str(checkpoint), map_location="cpu")
    text = (ckpt.get("meta") or {}).get("cfg") if isinstance(ckpt, dict) else None
    if not isinstance(text, str) or not text.strip():
        return None
    out = Path(tempfile.mkdtemp(prefix="fltool-cfg-")) / f"{checkpoint.stem}_config.py"
    out.write_text(text)
    return out


def resolve_run(target: Path, config: Optional[str] = None, trust: bool = False) -> RunFiles:
    """The (config, checkpoint) of a work dir or checkpoint file; ``config`` given by the user wins."""
    target = Path(target).expanduser()
    if not target.exists():
        raise CheckpointError(f"no such checkpoint or work dir: {target}",
                              "give a .pth file or the work dir that fltool train wrote")
    if target.is_dir():
        checkpoint = _newest_checkpoint(target)
        if checkpoint is None:
            raise CheckpointError(f"work dir {target} holds no checkpoint (no last_checkpoint, no iter_*.pth)",
                                  "train first, or give the .pth file")
    else:
        if target.suffix not in CHECKPOINT_SUFFIXES:
            raise CheckpointError(f"{target} is not a checkpoint (.pth) or a work dir",
                                  "give the .pth file or the work dir that fltool train wrote")
        checkpoint = target
    if config is not None:
        from fltool.engine.config import resolve_config

        return RunFiles(resolve_config(config), checkpoint.resolve(), "given")
    found = _dumped_config(checkpoint.parent)
    if found is not None:
        return RunFiles(found.resolve(), checkpoint.resolve(), "work dir")
    from_meta = _config_from_meta(checkpoint, trust)
    if from_meta is not None:
        return RunFiles(from_meta, checkpoint.resolve(), "checkpoint meta")
    raise CheckpointError(f"no config found for {checkpoint}: its folder holds no single .py config and the "
                          "checkpoint stores none", "give the config with --config")


def checkpoint_classes(checkpoint: Path, trust: bool = False) -> Optional[tuple[str, ...]]:
    """The class names stored in a checkpoint's meta (MMEngine's ``dataset_meta``), or None."""
    from fltool.engine.checkpoint import load_local_checkpoint, trusted

    with trusted(checkpoint if trust else None):
        ckpt = load_local_checkpoint(str(checkpoint), map_location="cpu")
    meta = ckpt.get("meta") if isinstance(ckpt, dict) else None
    dataset_meta = (meta or {}).get("dataset_meta") or {}
    classes = dataset_meta.get("classes") or (meta or {}).get("CLASSES")  # MMDetection 2.x wrote meta['CLASSES']
    return tuple(str(c) for c in classes) if classes else None
