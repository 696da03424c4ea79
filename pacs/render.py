"""Rendering a frame for a screen: pixel data to an 8-bit image (PS3.18 8.3.5, PS3.3 C.11).

The steps, in the order of the standard's pipeline:

1. decode the frame (pydicom with the pylibjpeg / openjpeg / RLE handlers; YBR colour comes
   out as RGB);
2. grayscale only: the modality LUT, ``value * RescaleSlope + RescaleIntercept`` (Hounsfield
   units for CT);
3. grayscale only: the VOI window, from the request (``window=center,width,function``), else
   the dataset's first Window Center/Width, else the frame's own value range, with the
   LINEAR, LINEAR_EXACT or SIGMOID function (C.11.2.1.2);
4. MONOCHROME1 is inverted, so that the image always shows as MONOCHROME2 would;
5. palette colour through pydicom's LUT, to RGB;
6. scaled to fit ``viewport`` (width, height) keeping the aspect ratio, never enlarged.

The result is a Pillow image; the web layer encodes it as JPEG or PNG.

Grayscale frames stored natively in 8 or 16 bits (the usual CT and MR) skip the per-pixel
arithmetic: steps 2-4 are computed once for every possible stored word, as a lookup table of
at most 65,536 entries, and the frame goes through it in one gather. That is several times
cheaper than rescaling and windowing a 512×512 frame in floating point.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, pixel_array

#: VOI LUT functions (PS3.3 C.11.2.1.3).
FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")


class RenderError(ValueError):
    """The frame cannot be rendered (no pixel data, an unknown colour model...)."""


@dataclass(frozen=True)
class Window:
    """A VOI window: its center and width, and the function that maps it."""

    center: float
    width: float
    function: str = "LINEAR"


def render_frame(dataset: Dataset, frame: int = 1, *, window: Window | None = None,
                 viewport: tuple[int, int] | None = None) -> Image.Image:
    """Frame ``frame`` (from 1) of ``dataset`` as an 8-bit grayscale or RGB image.

    Raises
    ------
    RenderError
        If the frame does not exist or its pixel data cannot be decoded or shown.
    """
    count = frame_count(dataset)
    if "PixelData" not in dataset:
        raise RenderError("the instance has no pixel data")
    if not 1 <= frame <= count:
        raise RenderError(f"frame {frame} is not in 1..{count}")
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    words = _native_grayscale_words(dataset, frame, photometric)
    if words is not None:
        image = Image.fromarray(_lookup_table(dataset, words, window, photometric)
                                .take(words))
    else:
        image = _decoded(dataset, frame, photometric, window)
    if viewport is not None:
        image.thumbnail(viewport, Image.Resampling.LANCZOS)
    return image


def _decoded(dataset: Dataset, frame: int, photometric: str,
             window: Window | None) -> Image.Image:
    """The frame through pydicom's decoders: compressed, colour, big endian, 32-bit..."""
    try:
        pixels = pixel_array(dataset, index=frame - 1)
    except Exception as exc:
        raise RenderError(f"cannot decode the pixel data: {exc}") from exc
    if photometric == "PALETTE COLOR":
        image = Image.fromarray(_to_8_bits(apply_color_lut(pixels, dataset)))
    elif pixels.ndim == 3 and pixels.shape[-1] == 3:
        image = Image.fromarray(_to_8_bits(pixels))
    elif pixels.ndim == 2:
        # float32 is exact for stored values of up to 24 bits and halves the arithmetic.
        values = pixels.astype(np.float32) * np.float32(_number(dataset, "RescaleSlope", 1)) \
            + np.float32(_number(dataset, "RescaleIntercept", 0))
        shown = _voi(values, window or dataset_window(dataset) or _range_window(values))
        if photometric == "MONOCHROME1":
            shown = 255 - shown
        image = Image.fromarray(shown)  # uint8, two dimensions: mode L
    else:
        raise RenderError(f"cannot show {photometric} pixel data of shape {pixels.shape}")
    return image


def _native_grayscale_words(dataset: Dataset, frame: int,
                            photometric: str) -> np.ndarray | None:
    """The frame's stored words (uint8 or uint16, rows × columns) read straight from native
    little-endian pixel data, or None when the frame needs pydicom's decoders."""
    meta = getattr(dataset, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if (photometric not in ("MONOCHROME1", "MONOCHROME2") or syntax is None
            or syntax.is_compressed or not syntax.is_little_endian
            or dataset.get("SamplesPerPixel", 1) != 1
            or dataset.get("BitsAllocated") not in (8, 16)):
        return None
    rows, columns = dataset.get("Rows"), dataset.get("Columns")
    stored = dataset.get("BitsStored") or dataset.BitsAllocated
    if not rows or not columns or not 1 <= stored <= dataset.BitsAllocated:
        return None
    dtype = np.uint8 if dataset.BitsAllocated == 8 else np.dtype("<u2")
    pixel_data = dataset.PixelData
    size = rows * columns * np.dtype(dtype).itemsize
    if len(pixel_data) < frame * size:
        return None  # short pixel data: pydicom's decoder says what is wrong
    return np.frombuffer(pixel_data, dtype=dtype, count=rows * columns,
                         offset=(frame - 1) * size).reshape(rows, columns)


def _lookup_table(dataset: Dataset, words: np.ndarray, window: Window | None,
                  photometric: str) -> np.ndarray:
    """The display byte of every possible stored word (see :func:`_display_table`)."""
    layout = (dataset.BitsAllocated, dataset.get("BitsStored") or dataset.BitsAllocated,
              dataset.get("PixelRepresentation", 0) == 1,
              _number(dataset, "RescaleSlope", 1), _number(dataset, "RescaleIntercept", 0))
    window = window or dataset_window(dataset) or _range_window(
        _modality_values(*layout).take(words))
    return _display_table(*layout, window, photometric == "MONOCHROME1")


# The slices of a series share their layout, rescale and window: their tables are reused.
@lru_cache(maxsize=64)
def _modality_values(allocated: int, stored: int, signed: bool, slope: float,
                     intercept: float) -> np.ndarray:
    """The modality value of every possible stored word: unused high bits masked, the sign
    extended (PixelRepresentation 1), then ``word * slope + intercept``."""
    raw = np.arange(1 << allocated, dtype=np.int64) & ((1 << stored) - 1)
    if signed:
        raw = np.where(raw >= 1 << (stored - 1), raw - (1 << stored), raw)
    values = raw.astype(np.float32) * np.float32(slope) + np.float32(intercept)
    values.flags.writeable = False
    return values


@lru_cache(maxsize=64)
def _display_table(allocated: int, stored: int, signed: bool, slope: float, intercept: float,
                   window: Window, invert: bool) -> np.ndarray:
    """The display byte of every possible stored word: the modality values through the VOI
    window, inverted for MONOCHROME1."""
    table = _voi(_modality_values(allocated, stored, signed, slope, intercept), window)
    if invert:
        table = 255 - table
    table.flags.writeable = False
    return table


def frame_count(dataset: Dataset) -> int:
    """NumberOfFrames (1 when absent).

    Raises
    ------
    RenderError
        If the value is not a whole number (a malformed header).
    """
    try:
        element = dataset.get("NumberOfFrames")
        return int(str(element).strip()) if element not in (None, "") else 1
    except (ValueError, TypeError) as exc:
        raise RenderError(f"NumberOfFrames is not a whole number: {exc}") from None


def dataset_window(dataset: Dataset) -> Window | None:
    """The first window the dataset carries (Window Center/Width, VOI LUT Function)."""
    center, width = _first(dataset.get("WindowCenter")), _first(dataset.get("WindowWidth"))
    if center is None or width is None:
        return None
    function = str(dataset.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
    try:
        if float(width) <= 0:
            return None
        return Window(float(center), float(width),
                      function if function in FUNCTIONS else "LINEAR")
    except (TypeError, ValueError):
        return None


def _number(dataset: Dataset, keyword: str, default: float) -> float:
    """A numeric attribute, or ``default`` when absent or not a number (a malformed DS)."""
    try:
        return float(_first(dataset.get(keyword)) or default)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default


def _first(value: object) -> object:
    return value[0] if isinstance(value, MultiValue | list | tuple) and value else value


def _range_window(values: np.ndarray) -> Window:
    """A window over the frame's own values (ignoring the extreme 0.5 % at each end)."""
    low, high = (float(v) for v in np.percentile(values, (0.5, 99.5)))
    if high <= low:
        low, high = float(values.min()), float(values.max())
    return Window((low + high) / 2, max(high - low, 1.0))


def _voi(values: np.ndarray, window: Window) -> np.ndarray:
    """PS3.3 C.11.2.1.2: the window to 0..255."""
    center, width = window.center, window.width
    if window.function == "SIGMOID":
        out = 255.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    elif window.function == "LINEAR_EXACT":
        out = ((values - center) / width + 0.5) * 255.0
    elif width <= 1:  # LINEAR with the narrowest window: a threshold at the center
        out = np.where(values > center - 0.5, 255.0, 0.0)
    else:
        out = ((values - (center - 0.5)) / (width - 1) + 0.5) * 255.0
    return np.clip(out, 0, 255).astype(np.uint8)


def _to_8_bits(pixels: np.ndarray) -> np.ndarray:
    if pixels.dtype == np.uint8:
        return pixels
    top = float(pixels.max()) or 1.0
    return np.clip(pixels.astype(np.float64) * (255.0 / top), 0, 255).astype(np.uint8)
