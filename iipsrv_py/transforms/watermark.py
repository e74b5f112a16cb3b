"""The watermark (WATERMARK, WATERMARK_PROBABILITY, WATERMARK_OPACITY): an image added to outputs.

As in iipsrv, the watermark is added (not blended) to the pixels, scaled by the opacity and
clipped at the largest value, at a random position inside each block of the output: a tile is
one block, a CVT view is cut into blocks of twice the source's tile size, and each block gets
the watermark with probability WATERMARK_PROBABILITY.

"Random" here is a hash of a seed the request determines (the plan's canonical text and the
source identity) and the block's index: the same request always gets the same bytes, so a
cached answer, one rendered by another worker and a fresh one are equal, and the ETag names
one rendering.

The image is read once per worker.  A file that is missing or cannot be read costs one log
line when the worker starts and leaves outputs unwatermarked: a misconfigured watermark must
not turn every image request into an error.
"""

from __future__ import annotations

import hashlib
import logging

import numpy as np

log = logging.getLogger(__name__)

_UINT16_SCALE = 257  # 0..255 -> 0..65535


def _read(path: str) -> np.ndarray:
    """The file's pixels as H x W x C uint8 (C 1-4), by tifffile or else Pillow."""
    try:
        import tifffile

        data = np.asarray(tifffile.imread(path))
    except Exception:  # noqa: BLE001 - not a TIFF (or one tifffile cannot decode): try Pillow
        from PIL import Image

        with Image.open(path) as opened:
            image: Image.Image = opened
            image.load()
            if image.mode not in ("L", "LA", "RGB", "RGBA"):
                has_alpha = "A" in image.getbands() or "transparency" in image.info
                image = image.convert("RGBA" if has_alpha else "RGB")
            data = np.asarray(image)
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim != 3 or not 1 <= data.shape[2] <= 4 or data.size == 0:
        raise ValueError(f"unusable watermark shape {data.shape}")
    if data.dtype == np.uint16:
        data = data // _UINT16_SCALE
    elif data.dtype != np.uint8:
        raise ValueError(f"unusable watermark sample type {data.dtype}")
    return data.astype(np.uint8)


def _amounts(image: np.ndarray, opacity: float) -> tuple[np.ndarray, np.ndarray]:
    """What the watermark adds to grey and to colour pixels, on the 8-bit scale (int32).

    A watermark's own alpha weighs its colours: its transparent parts add nothing.
    """
    data = image.astype(np.float64)
    bands = data.shape[2]
    if bands in (2, 4):
        colour, alpha = data[:, :, : bands - 1], data[:, :, bands - 1 :] / 255.0
        data = colour * alpha
    if data.shape[2] == 1:
        grey, rgb = data, np.repeat(data, 3, axis=2)
    else:
        rgb = data
        # The same luminance weights as COL=grey (transforms/colour.py).
        grey = (rgb[:, :, :1] * 1254097 + rgb[:, :, 1:2] * 2462056 + rgb[:, :, 2:3] * 478151) / (1 << 22)
    # Rounded half up, so a test can compute the same amounts from the file with plain numpy.
    return (
        np.floor(grey * opacity + 0.5).astype(np.int32),
        np.floor(rgb * opacity + 0.5).astype(np.int32),
    )


def block_choice(seed: bytes, block: int, probability: float, room_x: int, room_y: int) -> tuple[int, int] | None:
    """Where the watermark goes in block ``block`` (offsets within ``room`` + 1 positions on
    each axis), or None when this block gets none: a pure function of its arguments."""
    digest = hashlib.blake2b(seed + b"\0" + block.to_bytes(8, "big"), digest_size=16).digest()
    draw = int.from_bytes(digest[:8], "big") / float(1 << 64)
    if draw >= probability:
        return None
    x = int.from_bytes(digest[8:12], "big") % (room_x + 1)
    y = int.from_bytes(digest[12:16], "big") % (room_y + 1)
    return x, y


class Watermark:
    """The configured watermark of a worker; ``active`` is False when there is none."""

    def __init__(self, path: str, probability: float = 1.0, opacity: float = 1.0) -> None:
        self.path = path
        self.probability = probability
        self.opacity = opacity
        self._grey: np.ndarray | None = None
        self._rgb: np.ndarray | None = None
        self.token = ""
        if not path or probability <= 0 or opacity <= 0:
            return
        try:
            image = _read(path)
        except Exception as exc:  # noqa: BLE001 - a bad watermark never fails a request
            log.warning("watermark %s not used: %s: %s", path, type(exc).__name__, exc)
            return
        self._grey, self._rgb = _amounts(image, opacity)
        # Names the watermark's pixels, for cache keys: replacing the file (same name, same
        # settings) must not let the old renderings be served.
        self.token = hashlib.blake2b(image.tobytes() + repr(image.shape).encode(), digest_size=8).hexdigest()

    @property
    def active(self) -> bool:
        return self._rgb is not None

    def apply(self, pixels: np.ndarray, seed: bytes, block: int) -> np.ndarray:
        """``pixels`` (H x W x C, uint8 or uint16) with the watermark in blocks of ``block`` x
        ``block`` pixels (0: the whole output is one block).  Alpha is left as it is."""
        if self._rgb is None or self._grey is None:
            return pixels
        height, width, bands = pixels.shape
        colour = 3 if bands >= 3 else 1
        amount = self._rgb if colour == 3 else self._grey
        if pixels.dtype == np.uint16:
            amount, top = amount * _UINT16_SCALE, 65535
        elif pixels.dtype == np.uint8:
            top = 255
        else:
            return pixels  # other sample types are never encoded (outputs are 8 or 16 bits)
        bw = width if block <= 0 else block
        bh = height if block <= 0 else block
        out: np.ndarray | None = None
        index = 0
        for by in range(0, height, bh):
            for bx in range(0, width, bw):
                cw, ch = min(bw, width - bx), min(bh, height - by)
                ww, wh = min(amount.shape[1], cw), min(amount.shape[0], ch)
                spot = block_choice(seed, index, self.probability, cw - ww, ch - wh)
                index += 1
                if spot is None:
                    continue
                if out is None:
                    out = pixels.copy()
                x, y = bx + spot[0], by + spot[1]
                area = out[y : y + wh, x : x + ww, :colour]
                area[...] = np.minimum(area.astype(np.int32) + amount[:wh, :ww], top)
        return pixels if out is None else out
