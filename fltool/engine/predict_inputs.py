"""What ``fltool predict`` reads: image files, folders, globs and videos, one frame every ``stride``.

:func:`expand` turns the command-line inputs into :class:`Source` files (images and videos, folders searched
recursively, a name that matches nothing is a failure, not an error); :func:`frames` yields one :class:`Frame` per
image and per kept video frame, each with an output name unique within the run (a video's frames are
``<video name>_f<index>``, and no image is given such a name).

Predict never reads its own outputs: folders and globs skip every folder holding predict's manifest (an earlier
run's output) and this run's output folder, and :func:`check_apart` refuses an output folder that is an input folder
or holds an input file, whose drawings and label files would replace the inputs.
"""
from __future__ import annotations

import glob
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

from fltool.data.formats.common import IMAGE_SUFFIXES
from fltool.data.image_limits import ImageTooLarge, check_pixels
from fltool.engine.predict_output import MANIFEST
from fltool.errors import DataError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")


@dataclass(frozen=True)
class Source:
    path: Path
    kind: str  # "image" | "video"
    name: str  # output name (stem), unique within the run
    given: Optional[Path] = None  # the path as found, symbolic links not resolved


@dataclass
class Frame:
    source: Source
    name: str  # output name of this image/frame
    frame: Optional[int] = None  # video frame index
    image: object = None  # the decoded frame (BGR ndarray) for videos; image files are loaded by the pipeline


def _kind(path: Path) -> str:
    return "video" if path.suffix.lower() in VIDEO_SUFFIXES else "image"


class _Outputs:
    """Which folders are predict's outputs, not inputs: this run's ``out_dir``, and earlier runs' (they hold the
    manifest)."""

    def __init__(self, out_dir: Optional[Path]) -> None:
        self.out = os.path.realpath(out_dir) if out_dir is not None else None
        self.known: dict[str, bool] = {}

    def earlier(self, folder: Path) -> bool:
        real = os.path.realpath(folder)
        if real not in self.known:
            self.known[real] = os.path.isfile(os.path.join(real, MANIFEST))
        return self.known[real]

    def folder(self, folder: Path) -> bool:
        return os.path.realpath(folder) == self.out or self.earlier(folder)

    def under(self, folder: Path) -> bool:
        """``folder`` or a folder above it is an earlier run's output. (This run's ``out_dir`` given as an input,
        or holding one, is left to :func:`check_apart`, whose refusal says what is wrong.)"""
        real = Path(os.path.realpath(folder))
        return any(self.earlier(f) for f in (real, *real.parents))


def _in_folder(folder: Path, outputs: _Outputs) -> list[Path]:
    """Image and video files under ``folder``: hidden ones, and output folders, left out (symlinked folders not
    followed, as rglob does)."""
    wanted = IMAGE_SUFFIXES + VIDEO_SUFFIXES
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not outputs.folder(Path(root) / d))
        found += [Path(root) / f for f in files if not f.startswith(".") and Path(f).suffix.lower() in wanted
                  and (Path(root) / f).is_file()]
    return sorted(found)


def _named(paths: Sequence[Path]) -> dict[Path, str]:
    """An output name per file: its stem (``<folder>_<stem>`` where stems repeat, then ``_2``, ``_3`` ...);
    a video's is chosen after the images' so that no image is named ``<video name>_f<digits>`` like its frames."""
    stems = Counter(p.stem for p in paths)
    used: set[str] = set()
    names: dict[Path, str] = {}
    images = [p for p in paths if _kind(p) == "image"]
    for p in images + [p for p in paths if _kind(p) == "video"]:
        base = p.stem if stems[p.stem] == 1 else f"{p.parent.name}_{p.stem}"
        name, n = base, 2
        while name in used or (_kind(p) == "video" and any(
                re.fullmatch(re.escape(name) + r"_f\d+", names[i]) for i in images)):
            name, n = f"{base}_{n}", n + 1
        used.add(name)
        names[p] = name
    return names


def expand(inputs: Sequence[str], out_dir: Optional[Path] = None
           ) -> tuple[list[Source], list[tuple[str, str]]]:
    """(sources in the order given, failures as (input, reason)). A file given by name is tried whatever its
    extension; folders and globs contribute image and video files only, none from ``out_dir`` or an earlier
    predict's output folder (a second ``fltool predict RUN .`` must not predict on the first one's drawings)."""
    paths: list[Path] = []
    failures: list[tuple[str, str]] = []
    outputs = _Outputs(out_dir)
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir() and outputs.under(path):
            failures.append((item, "an fltool predict output folder: predict does not read its own outputs"))
        elif path.is_dir():
            found = _in_folder(path, outputs)
            if not found:
                failures.append((item, "folder holds no image or video file"))
            paths += found
        elif path.is_file():
            paths.append(path)
        elif any(ch in item for ch in "*?["):
            matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True))
            matches = [p for p in matches if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES
                       and not outputs.under(p.parent)]
            if not matches:
                failures.append((item, "no image or video file matches"))
            paths += matches
        else:
            failures.append((item, "no such file or folder"))
    given: dict[Path, Path] = {}
    for p in paths:
        given.setdefault(p.resolve(), p)
    names = _named(list(given))
    return [Source(p, _kind(p), names[p], given[p]) for p in given], failures


def _folders_of(source: Source) -> list[Path]:
    """The folders holding ``source``: those of its resolved path, and those of the path given (a symbolic link
    in a folder that predict would write)."""
    folders = [source.path.parent]
    if source.given is not None:
        folders.append(Path(os.path.realpath(os.path.dirname(os.path.abspath(source.given)))))
    return [f for folder in folders for f in (folder, *folder.parents)]


def check_apart(out_dir: Path, inputs: Sequence[str], sources: Sequence[Source]) -> None:
    """A DataError, before anything is loaded or written, for an output folder that is an input folder or holds an
    input file (paths resolved, symbolic links too): its drawings (an image's own name, ``.png`` for ``.png``) and
    label files would replace the inputs, or a dataset's ground truth beside them."""
    out = Path(os.path.realpath(out_dir))
    hint = "choose another --out-dir, outside the input folders"
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir() and Path(os.path.realpath(path)) == out:
            raise DataError(f"--out-dir {out_dir} is the input folder {item}: predict would write over its files",
                            hint)
    for source in sources:
        if out in _folders_of(source):
            raise DataError(f"--out-dir {out_dir} holds the input file {source.given or source.path}: predict "
                            "would write over the inputs", hint)


def count(sources: Sequence[Source], stride: int) -> int:
    """Images plus the video frames that will be read (from the videos' frame counts; 0 if unknown)."""
    import cv2

    total = 0
    for s in sources:
        if s.kind == "image":
            total += 1
            continue
        cap = cv2.VideoCapture(str(s.path))
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if cap.isOpened() else 0
        cap.release()
        total += (n + stride - 1) // stride
    return total


def frames(sources: Sequence[Source], stride: int, failures: list) -> Iterator[Frame]:
    """One Frame per image file and per ``stride``-th video frame; unreadable videos go to ``failures``."""
    import cv2

    for s in sources:
        if s.kind == "image":
            yield Frame(s, s.name)
            continue
        cap = cv2.VideoCapture(str(s.path))
        if not cap.isOpened():
            failures.append((str(s.path), "OpenCV cannot open it as a video"))
            continue
        try:  # the frame size the container declares, before a frame is decoded
            check_pixels(int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                         f"video {s.path}")
        except ImageTooLarge as exc:
            cap.release()
            failures.append((str(s.path), str(exc)))
            continue
        index, read = 0, 0
        try:
            while True:
                ok = cap.grab()
                if not ok:
                    break
                if index % stride == 0:
                    ok, image = cap.retrieve()
                    if not ok or image is None:
                        failures.append((f"{s.path} frame {index}", "cannot decode the frame"))
                    else:
                        read += 1
                        yield Frame(s, f"{s.name}_f{index:06d}", index, image)
                index += 1
        finally:
            cap.release()
        if read == 0:
            failures.append((str(s.path), "no frame could be read"))
