"""A bound on the pixels fltool decodes, checked on an image's header before its pixels are decoded.

An 875 KB PNG can declare 30000 x 30000 pixels: decoded whole, it took 5.7 GB at peak and 27 s in ``fltool predict``,
and a few of them, or a larger batch, got the process killed without a word. Every image fltool decodes (training,
eval, predict, the data check) is held to :func:`max_image_pixels`, read from ``FLTOOL_MAX_IMAGE_PIXELS`` (default
100 megapixels, e.g. 10000 x 10000; raise it for large aerial or slide images). An image over it is named and
skipped, or in training reported like any other unreadable image.
"""
from __future__ import annotations

import io
import os
import threading
import warnings
from pathlib import Path
from typing import Optional, Union

from fltool.errors import ConfigError

ENV = "FLTOOL_MAX_IMAGE_PIXELS"
DEFAULT_MAX_PIXELS = 100_000_000
_PILLOW_BOUND = threading.Lock()


class ImageTooLarge(ValueError):
    """An image declares more pixels than fltool decodes; the message names it and the bound."""


def max_image_pixels() -> int:
    """The bound: ``FLTOOL_MAX_IMAGE_PIXELS`` if set (a positive whole number), else 100 megapixels."""
    text = os.environ.get(ENV, "").strip().replace("_", "")
    if not text:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(float(text))
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"{ENV}={os.environ.get(ENV)!r} is not a number of pixels",
                          f"set it to a positive whole number, e.g. {ENV}=400000000, or unset it")
    return value


def check_pixels(width: int, height: int, name: str, limit: Optional[int] = None) -> None:
    """ImageTooLarge where ``width`` x ``height`` is over the bound."""
    limit = limit or max_image_pixels()
    if int(width) * int(height) > limit:
        raise ImageTooLarge(f"{name} is {width}x{height} = {int(width) * int(height) / 1e6:.3g} megapixels, over "
                            f"fltool's bound of {limit / 1e6:.3g} megapixels; not decoded (raise the bound with "
                            f"{ENV}=N if the image is real)")


def _open_size(fp: object) -> tuple[int, int]:
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(fp) as im:
            return int(im.size[0]), int(im.size[1])


def header_size(source: Union[bytes, str, Path], limit: Optional[int] = None) -> Optional[tuple[int, int]]:
    """(width, height) an image file declares in its header (nothing decoded), or None where Pillow cannot tell
    (the decoder then says what is wrong). Pillow itself refuses a header over twice its own bound (about 179
    megapixels): that is ImageTooLarge too, unless ``limit`` is higher (then Pillow's bound is lifted to read it)."""
    from PIL import Image

    def fp() -> object:
        return io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else source

    try:
        return _open_size(fp())
    except Image.DecompressionBombError as exc:
        pillow = Image.MAX_IMAGE_PIXELS
        if limit is None or pillow is None or limit <= 2 * pillow:
            raise ImageTooLarge(str(exc)) from None
        with _PILLOW_BOUND:  # Pillow's bound is a module global: lifted for this one header, then put back
            Image.MAX_IMAGE_PIXELS = None
            try:
                return _open_size(fp())
            finally:
                Image.MAX_IMAGE_PIXELS = pillow
    except Exception:  # noqa: BLE001 - not an image Pillow reads: no size to check here
        return None


def check_image(source: Union[bytes, str, Path], name: str) -> None:
    """ImageTooLarge where the image ``source`` (its bytes or its path) declares more pixels than the bound."""
    limit = max_image_pixels()  # first: a raised bound also raises Pillow's
    try:
        size = header_size(source, limit)
    except ImageTooLarge:
        raise ImageTooLarge(f"{name} declares more pixels than fltool decodes ({limit / 1e6:.3g} megapixels; raise "
                            f"the bound with {ENV}=N if the image is real)") from None
    if size is not None:
        check_pixels(size[0], size[1], name, limit)
