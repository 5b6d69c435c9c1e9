"""Reading and writing image files as float tensors in [0, 1].

Any format Pillow reads is accepted (JPEG, PNG, WebP, BMP, TIFF, ...). Every
image becomes RGB: grayscale and palette images are expanded, CMYK and other
colour spaces converted, transparent images composited onto white, 16-bit
images scaled by 1/65535 rather than clipped, and the EXIF orientation tag is
applied so that the pixels are the way up a viewer shows them.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

if TYPE_CHECKING:
    import torch

DEFAULT_MAX_PIXELS = 50_000_000
"""Largest image accepted by default (width x height), about 8200 x 6100."""

MIN_IMAGE_SIDE = 8
"""Smallest accepted width and height in pixels."""

VIEW_SIDE = 256
"""The shorter side the classifiers' view resizes an image to (224 / 0.875) before its centre crop."""

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def load_image(
    path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS, view_side: int = VIEW_SIDE
) -> torch.Tensor:
    """Read an image file as an RGB float tensor.

    Parameters
    ----------
    path : str or path-like
        The image file.
    max_pixels : int
        Refused after reading the header only, before any pixel data is
        decoded: images with more pixels than this, and images so elongated
        that resizing their shorter side to ``view_side`` (the classifier's
        view) would make more pixels than this. Memory then stays within a
        small multiple of ``12 * max_pixels`` bytes (float32 RGB) for every
        input.
    view_side : int
        The shorter side of the classifier's view before its crop
        (``round(S / 0.875)``; 256 for 224 px classifiers).

    Returns
    -------
    torch.Tensor
        Shape ``(3, H, W)``, dtype float32, values in [0, 1].

    Raises
    ------
    ImageError
        If the file is missing, empty, not an image, truncated or corrupt
        (whatever Pillow raises while decoding it), smaller than
        ``MIN_IMAGE_SIDE`` on a side, or larger than ``max_pixels`` (itself or
        in the classifier's view).
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: file is empty")
    try:
        with warnings.catch_warnings():
            # Pillow warns about oddities it works around (corrupt EXIF, oversized tags, decompression-bomb
            # sizes below the error limit): the image then loads, or fails with an error we report.
            warnings.simplefilter("ignore")
            array = _decode(path, max_pixels, view_side)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image file Pillow can read") from None
    except Image.DecompressionBombError as error:
        raise ImageError(f"{path}: refused by Pillow's decompression-bomb limit ({error})") from None
    except MemoryError:
        raise ImageError(f"{path}: not enough memory to decode it") from None
    except Exception as error:
        raise ImageError(f"{path}: corrupt or truncated image ({type(error).__name__}: {error})") from None
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def pixel_count(path: str | os.PathLike) -> int | None:
    """Width times height from the image file's header (nothing decoded); None if it cannot be read."""
    try:
        with Image.open(path) as image:
            return image.size[0] * image.size[1]
    except Exception:  # a header Pillow cannot read: the run records that image's error itself
        return None


def _decode(path: Path, max_pixels: int, view_side: int) -> np.ndarray:
    """Check the header's size against the limits, then decode to a float32 ``(H, W, 3)`` array."""
    image = Image.open(path)
    with image:
        width, height = image.size
        if width * height > max_pixels:
            raise ImageError(
                f"{path}: {width}x{height} image has {width * height:,} pixels, "
                f"more than the limit of {max_pixels:,}"
            )
        if min(width, height) < MIN_IMAGE_SIDE:
            raise ImageError(
                f"{path}: {width}x{height} image is too small "
                f"(at least {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} pixels needed)"
            )
        view_pixels = view_side * view_side * max(width, height) / min(width, height)
        if view_pixels > max_pixels:
            raise ImageError(
                f"{path}: {width}x{height} image is too elongated: the classifier's view (shorter side "
                f"{view_side}) would have {view_pixels:,.0f} pixels, more than the limit of {max_pixels:,}"
            )
        image.load()
        array = _to_rgb_array(ImageOps.exif_transpose(image))
    return array


def _to_rgb_array(image: Image.Image) -> np.ndarray:
    """Convert a decoded Pillow image to a float32 ``(H, W, 3)`` array in [0, 1]."""
    if image.mode in _SIXTEEN_BIT_MODES:
        gray = np.asarray(image, dtype=np.float32) / 65535.0
        return np.repeat(np.clip(gray, 0.0, 1.0)[..., None], 3, axis=2)
    if image.mode == "F":
        gray = np.asarray(image, dtype=np.float32)
        if not np.isfinite(gray).all() or gray.min() < 0.0 or gray.max() > 1.0:
            raise ValueError("floating-point image with values outside [0, 1]")
        return np.repeat(gray[..., None], 3, axis=2)
    has_alpha = image.mode in ("RGBA", "LA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info
    )
    if has_alpha:
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return rgb


def save_image(image: torch.Tensor, path: str | os.PathLike | BinaryIO, format: str | None = None) -> None:
    """Write a ``(3, H, W)`` tensor in [0, 1] as an 8-bit image.

    ``path`` is a file name (the format from its suffix) or an open binary
    file (then give ``format``, e.g. ``"PNG"``).
    """
    import torch

    array = image.detach().to("cpu", torch.float32).clamp(0, 1).permute(1, 2, 0).numpy()
    Image.fromarray(np.round(array * 255.0).astype(np.uint8)).save(path, format=format)


def find_images(paths: list[str | os.PathLike]) -> list[Path]:
    """Expand folders into the image files they hold (sorted); keep files as given.

    Raises
    ------
    ImageError
        If a folder holds no image file (by suffix: :data:`IMAGE_SUFFIXES`).
    """
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            held = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not held:
                raise ImageError(f"{path}: holds no image files ({', '.join(IMAGE_SUFFIXES)})")
            found.extend(held)
        else:
            found.append(path)
    return found
