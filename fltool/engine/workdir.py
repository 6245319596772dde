"""From what a user points at (a work dir or a checkpoint) to the config and checkpoint of a trained run.

``fltool train`` leaves in its work dir the checkpoints (``iter_*.pth`` / ``epoch_*.pth``), ``last_checkpoint``
(the path of the newest) and the resolved config that MMEngine dumps there (``<config name>.py``). Commands that
apply a trained model (predict, export) take the work dir or a checkpoint and find the rest here:

- a work dir -> the checkpoint named in its ``last_checkpoint`` (else the newest checkpoint file in it);
- a checkpoint -> the config dumped beside it; failing that, the config text MMEngine stored in the checkpoint's
  ``meta['cfg']``.

A config found this way came with the files the user handed over, so it is read as data and never run
(:mod:`fltool.engine.config_data`); a config the user names with ``--config`` is run as MMEngine runs configs.

The class names come from the checkpoint's ``meta['dataset_meta']['classes']`` (MMEngine saves the training set's
metainfo there) and the config's ``metainfo`` as a fallback.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from fltool.errors import CheckpointError

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt")
_STEP = re.compile(r"^(?:iter|epoch)_(\d+)\.pth$")


@dataclass(frozen=True)
class RunFiles:
    """The config and checkpoint of a trained run, and where the config came from."""

    config: Optional[Path]  # the config file; None where it came from the checkpoint's metadata
    checkpoint: Path
    config_source: str  # "given", "work dir", "checkpoint meta" or "beside model" (an ONNX file's)
    cfg: Any = None  # the config as read (a found config, read as data); None: the file the user named, to load

    @property
    def config_spec(self) -> Any:
        """What :func:`fltool.engine.config.load_config` takes: the config read, or the file the user named."""
        return self.cfg if self.cfg is not None else str(self.config)

    @property
    def config_name(self) -> str:
        """How to name the config to the user."""
        return self.config.name if self.config is not None else f"the config stored in {self.checkpoint.name}"


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


def _config_from_meta(checkpoint: Path, trust: bool) -> Any:
    """The config stored in the checkpoint's ``meta['cfg']``, read as data (run only with ``trust``), or None."""
    from fltool.engine.checkpoint import load_local_checkpoint, trusted
    from fltool.engine.config_data import config_filename, read_found_config, stored_config_text

    with trusted(checkpoint if trust else None):
        ckpt = load_local_checkpoint(str(checkpoint), map_location="cpu")
    text = stored_config_text(ckpt)
    if text is None:
        return None
    return read_found_config(text, f"stored in {checkpoint.name}", config_filename(checkpoint), trust)


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
        from fltool.engine.config_data import read_found_config_file

        return RunFiles(found.resolve(), checkpoint.resolve(), "work dir", read_found_config_file(found, trust))
    from_meta = _config_from_meta(checkpoint, trust)
    if from_meta is not None:
        return RunFiles(None, checkpoint.resolve(), "checkpoint meta", from_meta)
    raise CheckpointError(f"no config found for {checkpoint}: its folder holds no single .py config and the "
                          "checkpoint stores none", "give the config with --config")


def checkpoint_classes(checkpoint: Path, trust: bool = False) -> Optional[tuple[str, ...]]:
    """The class names stored in a checkpoint's meta (MMEngine's ``dataset_meta``), or None."""
    from fltool.engine.checkpoint import load_local_checkpoint, trusted

    with trusted(checkpoint if trust else None):
        ckpt = load_local_checkpoint(str(checkpoint), map_location="cpu")
    meta = ckpt.get("meta") if isinstance(ckpt, dict) else None
    if not isinstance(meta, dict):
        return None
    dataset_meta = meta.get("dataset_meta")
    classes = (dataset_meta.get("classes") if isinstance(dataset_meta, dict) else None) or meta.get("CLASSES")
    if classes is None or (isinstance(classes, (list, tuple)) and not classes):  # 2.x wrote meta['CLASSES']
        return None
    if not isinstance(classes, (list, tuple)) or not all(isinstance(c, (str, int)) and not isinstance(c, bool)
                                                         for c in classes):
        raise CheckpointError(f"checkpoint {checkpoint} stores its class names as {type(classes).__name__} "
                              f"{str(classes)[:60]!r}, not as a list of names",
                              "give the config the model was trained with (--config)")
    return tuple(str(c) for c in classes)


def onnx_config(onnx_file: Path, config: Optional[str], named: Any, trust: bool = False,
                notes: Optional[list] = None) -> Optional[RunFiles]:
    """The config that goes with an exported model: ``config`` if the user gave one (run as named), else the file
    its metadata names (``fltool.source.config``) if that is a plain file name of a config lying beside the model,
    read as data. A name that leaves the model's folder (``../x.py``, an absolute path, a link pointing elsewhere)
    is ignored with a note: the metadata alone runs the model."""
    onnx_file = Path(onnx_file)
    if config is not None:
        from fltool.engine.config import resolve_config

        return RunFiles(resolve_config(config), onnx_file.resolve(), "given")
    if not named:
        return None
    name, folder = str(named), onnx_file.resolve().parent
    candidate = folder / name
    beside = (name == Path(name).name and name not in (".", "..") and name.endswith(".py")
              and candidate.resolve().parent == folder)
    if not beside:
        if notes is not None:
            notes.append(f"ignored the config named in {onnx_file.name}'s metadata ({name[:80]!r}): only a config "
                         "file beside the model is read")
        return None
    if not candidate.is_file():
        return None
    from fltool.engine.config_data import read_found_config_file

    return RunFiles(candidate, onnx_file.resolve(), "beside model", read_found_config_file(candidate, trust))
