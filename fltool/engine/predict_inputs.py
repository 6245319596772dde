"""What ``fltool predict`` reads: image files, folders, globs and videos, one frame every ``stride``.

:func:`expand` turns the command-line inputs into :class:`Source` files (images and videos, folders searched
recursively, a name that matches nothing is a failure, not an error); :func:`frames` yields one :class:`Frame` per
image and per kept video frame, each with an output name unique within the run.
"""
from __future__ import annotations

import glob
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

from fltool.data.formats.common import IMAGE_SUFFIXES

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")


@dataclass(frozen=True)
class Source:
    path: Path
    kind: str  # "image" | "video"
    name: str  # output name (stem), unique within the run


@dataclass
class Frame:
    source: Source
    name: str  # output name of this image/frame
    frame: Optional[int] = None  # video frame index
    image: object = None  # the decoded frame (BGR ndarray) for videos; image files are loaded by the pipeline


def _kind(path: Path) -> str:
    return "video" if path.suffix.lower() in VIDEO_SUFFIXES else "image"


def _in_folder(folder: Path) -> list[Path]:
    wanted = IMAGE_SUFFIXES + VIDEO_SUFFIXES
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in wanted
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def expand(inputs: Sequence[str]) -> tuple[list[Source], list[tuple[str, str]]]:
    """(sources in the order given, failures as (input, reason)). A file given by name is tried whatever its
    extension; folders and globs contribute image and video files only."""
    paths: list[Path] = []
    failures: list[tuple[str, str]] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            found = _in_folder(path)
            if not found:
                failures.append((item, "folder holds no image or video file"))
            paths += found
        elif path.is_file():
            paths.append(path)
        elif any(ch in item for ch in "*?["):
            matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True))
            matches = [p for p in matches if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES]
            if not matches:
                failures.append((item, "no image or video file matches"))
            paths += matches
        else:
            failures.append((item, "no such file or folder"))
    unique = list(dict.fromkeys(p.resolve() for p in paths))
    stems = Counter(p.stem for p in unique)
    sources, used = [], set()
    for p in unique:
        name = p.stem if stems[p.stem] == 1 else f"{p.parent.name}_{p.stem}"
        base, n = name, 2
        while name in used:
            name, n = f"{base}_{n}", n + 1
        used.add(name)
        sources.append(Source(p, _kind(p), name))
    return sources, failures


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
