"""Writing a synthetic dataset to disk (PNG images, COCO JSON, ``meta.json``) and the cache that holds the
default one."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from fltool.data.synth.render import RenderedImage, render_image
from fltool.data.synth.spec import GENERATOR_VERSION, SIZE_NAMES, SPLITS, SynthSpec, size_name
from fltool.errors import DataError

_IMAGE_NAME = re.compile(r"^(train|val)_\d{6}\.png$")

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class SynthDataset:
    """A generated dataset on disk."""

    root: Path
    train_json: Path
    val_json: Path
    img_dir: Path
    spec: SynthSpec
    classes: tuple[str, ...]

    @classmethod
    def load(cls, root: Path) -> "SynthDataset":
        """The dataset generated in ``root`` (reads its ``meta.json``)."""
        root = Path(root)
        meta_file = root / "meta.json"
        try:
            meta = json.loads(meta_file.read_text())
            spec = SynthSpec(**meta["spec"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{meta_file} is missing or not an fltool synthetic dataset's meta.json ({exc})",
                            "generate the dataset again") from None
        return cls(root, root / "train.json", root / "val.json", root / "images", spec, tuple(spec.classes))

    def meta(self) -> dict[str, Any]:
        """The contents of ``meta.json``: spec, counts per class/split, size histogram, content hash."""
        return json.loads((self.root / "meta.json").read_text())



# ---------------------------------------------------------------------------------------------- the dataset

def _coco_categories(spec: SynthSpec) -> list[dict[str, Any]]:
    return [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(spec.classes)]


def _save_png(pixels: np.ndarray, path: Path) -> None:
    from PIL import Image

    # Fixed settings, no metadata chunks: the same pixels give the same bytes with the same Pillow/zlib. Level 1:
    # the noisy backgrounds barely compress anyway, and level 6 spent more time encoding than drawing (measured).
    Image.fromarray(pixels, "RGB").save(path, format="PNG", compress_level=1, optimize=False)


def _render_and_save(spec: SynthSpec, split: str, index: int, img_dir: Path) -> tuple[str, bytes, RenderedImage]:
    """Draw one image and write its PNG; returns (file name, pixel bytes, the drawing without its pixels)."""
    drawn = render_image(spec, split, index)
    file_name = f"{split}_{index:06d}.png"
    _save_png(drawn.pixels, img_dir / file_name)
    pixels, drawn.pixels = drawn.pixels.tobytes(), np.empty(0, np.uint8)
    return file_name, pixels, drawn


def _rendered(spec: SynthSpec, split: str, img_dir: Path) -> Iterator[tuple[str, bytes, RenderedImage]]:
    """The images of ``split`` in index order, drawn and written by one worker process per core.

    Every image depends only on (spec, split, index), so the workers' output is the sequential one, in order.
    """
    count = spec.num_images(split)
    workers = min(os.cpu_count() or 1, 4, max(count // 16, 1))
    if workers > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        try:
            context = multiprocessing.get_context("fork")
        except ValueError:  # no fork on this platform: draw in this process
            workers = 1
    if workers <= 1:
        for index in range(count):
            yield _render_and_save(spec, split, index, img_dir)
        return
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        yield from pool.map(_render_and_save, [spec] * count, [split] * count, range(count), [img_dir] * count,
                            chunksize=8)


def _dump(data: Any) -> bytes:
    return (json.dumps(data, separators=(",", ":")) + "\n").encode()


def generate(spec: SynthSpec, out_dir: Path, progress: Progress | None = None) -> SynthDataset:
    """Write the dataset of ``spec`` into ``out_dir``: ``images/*.png``, ``train.json``, ``val.json``, ``meta.json``.

    Earlier generated images in ``out_dir/images`` that this spec does not produce are removed, so the folder
    always holds exactly one dataset. ``progress(done, total)`` is called after every image.
    """
    out_dir = Path(out_dir)
    img_dir = out_dir / "images"
    try:
        img_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create {img_dir}: {exc.strerror or exc}", "choose a writable folder") from None
    (out_dir / "meta.json").unlink(missing_ok=True)  # an interrupted rewrite must not look finished

    total = spec.num_train + spec.num_val
    done = 0
    content = hashlib.sha256()  # over file names, decoded pixels and annotation files
    written: set[str] = set()
    meta_splits: dict[str, Any] = {}
    for split in SPLITS:
        coco: dict[str, Any] = {
            "info": {"description": "fltool synthetic shapes", "generator_version": GENERATOR_VERSION,
                     "spec_hash": spec.short_hash()},
            "images": [], "annotations": [], "categories": _coco_categories(spec)}
        class_counts = dict.fromkeys(spec.classes, 0)
        sizes = dict.fromkeys(SIZE_NAMES, 0)
        n_distractors = 0
        for index, (file_name, pixels, drawn) in enumerate(_rendered(spec, split, img_dir)):
            image_id = index + 1
            written.add(file_name)
            content.update(file_name.encode())
            content.update(pixels)
            coco["images"].append({
                "id": image_id, "file_name": file_name, "width": spec.image_size, "height": spec.image_size,
                # Not annotations: where the unlabelled look-alikes were drawn (for false-positive analysis).
                "distractors": [{"bbox": b, "shape": s}
                                for b, s in zip(drawn.distractor_boxes, drawn.distractor_shapes)]})
            for box, label in zip(drawn.boxes, drawn.labels):
                area = box[2] * box[3]
                coco["annotations"].append({
                    "id": len(coco["annotations"]) + 1, "image_id": image_id, "category_id": label + 1,
                    "bbox": box, "area": area, "iscrowd": 0})
                class_counts[spec.classes[label]] += 1
                sizes[size_name(area)] += 1
            n_distractors += len(drawn.distractor_boxes)
            done += 1
            if progress is not None:
                progress(done, total)
        data = _dump(coco)
        content.update(data)
        (out_dir / f"{split}.json").write_bytes(data)
        n_boxes = len(coco["annotations"])
        meta_splits[split] = {
            "images": spec.num_images(split), "boxes": n_boxes, "distractors": n_distractors,
            "class_counts": class_counts, "size_histogram": sizes,
            "size_fractions": {k: round(v / max(n_boxes, 1), 4) for k, v in sizes.items()}}

    for stale in img_dir.iterdir():
        if _IMAGE_NAME.match(stale.name) and stale.name not in written:
            stale.unlink()
    meta = {"generator_version": GENERATOR_VERSION, "spec_hash": spec.short_hash(), "spec": spec.to_dict(),
            "splits": meta_splits, "content_hash": content.hexdigest()}
    # Written last, atomically: a folder with meta.json holds a finished dataset.
    tmp = out_dir / "meta.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, out_dir / "meta.json")
    return SynthDataset.load(out_dir)


# ---------------------------------------------------------------------------------------------- the cache

def cache_root(cache_dir: Path | None = None) -> Path:
    """``cache_dir``, else ``$FLTOOL_CACHE``, else ``~/.cache/fltool``."""
    if cache_dir is not None:
        return Path(cache_dir)
    return Path(os.environ.get("FLTOOL_CACHE") or Path.home() / ".cache" / "fltool").expanduser()


@contextlib.contextmanager
def _exclusive_lock(path: Path) -> Iterator[bool]:
    """Hold an exclusive lock on ``path`` (blocking). Yields False where file locks are unavailable."""
    try:
        import fcntl
    except ImportError:  # not POSIX: fall back on the atomic rename alone
        yield False
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _is_complete(root: Path) -> bool:
    return (root / "meta.json").is_file()


def default_dataset(spec: SynthSpec | None = None, cache_dir: Path | None = None,
                    progress: Progress | None = None) -> SynthDataset:
    """The dataset of ``spec`` (default: ``SynthSpec()``) from the cache, generated there on first use.

    It lives in ``<cache>/synth-<spec hash>/``. Generation writes a temporary sibling folder and renames it into
    place, so an interrupted run never leaves a folder that looks complete; a file lock makes a concurrent second
    process wait for the first instead of generating again, and leftovers of interrupted runs are removed.
    """
    spec = spec or SynthSpec()
    root = cache_root(cache_dir)
    name = f"synth-{spec.short_hash()}"
    final = root / name
    if _is_complete(final):
        return SynthDataset.load(final)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create the dataset cache {root}: {exc.strerror or exc}",
                        "set FLTOOL_CACHE to a writable folder") from None

    with _exclusive_lock(root / f"{name}.lock") as locked:
        if _is_complete(final):  # another process finished it while we waited
            return SynthDataset.load(final)
        if locked:  # nobody else is generating this spec: temporary folders are leftovers
            for leftover in root.glob(f".{name}.tmp-*"):
                shutil.rmtree(leftover, ignore_errors=True)
            if final.exists():  # not ours to trust without meta.json
                shutil.rmtree(final, ignore_errors=True)
        tmp = root / f".{name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            generate(spec, tmp, progress)
            try:
                os.rename(tmp, final)
            except OSError:
                if not _is_complete(final):  # not a lost race: a real failure
                    raise
        except OSError as exc:
            raise DataError(f"cannot write the synthetic dataset into {root}: {exc.strerror or exc}",
                            "set FLTOOL_CACHE to a writable folder with some free space") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return SynthDataset.load(final)
