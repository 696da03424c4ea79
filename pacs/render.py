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

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, pixel_array
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from pacs.header import first_value

#: VOI LUT functions (PS3.3 C.11.2.1.3).
FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")


class RenderError(ValueError):
    """The frame cannot be rendered (no pixel data, an unknown colour model...)."""


class FrameNotFound(RenderError):
    """The instance has no frame of that number."""


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
        raise FrameNotFound(f"frame {frame} is not in 1..{count}")
    layout = NativeGrayscale.of_dataset(dataset)
    size = layout.frame_size if layout is not None else 0
    if layout is not None and len(dataset.PixelData) >= frame * size:
        return layout.render(dataset.PixelData[(frame - 1) * size:frame * size], window,
                             viewport)
    image = _decoded(dataset, frame, window)
    if viewport is not None:
        image.thumbnail(viewport, Image.Resampling.LANCZOS)
    return image


@dataclass(frozen=True)
class NativeGrayscale:
    """A grayscale image stored natively (uncompressed little endian, one 8- or 16-bit
    sample per pixel, the usual CT and MR): what turns its stored words into display bytes.

    Built from a pydicom dataset (:meth:`of_dataset`) or from the DICOM JSON that ingest
    stored (:meth:`of_json`), which read the same attributes the same way, so a frame read
    straight from the stored object renders exactly as the parsed file would.
    """

    rows: int
    columns: int
    frames: int
    bits_allocated: int
    bits_stored: int
    signed: bool
    slope: float
    intercept: float
    window: Window | None
    """The dataset's own first window, if it has one."""
    invert: bool
    """MONOCHROME1: the lowest value is white."""

    @property
    def frame_size(self) -> int:
        """Bytes per frame."""
        return self.rows * self.columns * (self.bits_allocated // 8)

    @classmethod
    def of_dataset(cls, dataset: Dataset) -> NativeGrayscale | None:
        """The layout of a native grayscale dataset; None for any other kind."""
        meta = getattr(dataset, "file_meta", None)
        syntax = meta.get("TransferSyntaxUID") if meta is not None else None
        if syntax is None or syntax.is_compressed or not syntax.is_little_endian:
            return None
        return cls._of(lambda keyword: _first(dataset.get(keyword)))

    @classmethod
    def of_json(cls, dataset: dict[str, Any], transfer_syntax: str) -> NativeGrayscale | None:
        """The layout from a dataset's DICOM JSON (PS3.18 F.2); None for any other kind."""
        if transfer_syntax not in (ImplicitVRLittleEndian, ExplicitVRLittleEndian):
            return None

        return cls._of(lambda keyword: first_value(dataset, tag_for_keyword(keyword)))

    @classmethod
    def _of(cls, first: Callable[[str], object]) -> NativeGrayscale | None:
        photometric = str(first("PhotometricInterpretation") or "MONOCHROME2").strip()
        try:
            allocated = int(first("BitsAllocated"))  # type: ignore[call-overload]
            stored = int(first("BitsStored") or allocated)  # type: ignore[call-overload]
            rows, columns = int(first("Rows")), int(first("Columns"))  # type: ignore[call-overload]
            samples = int(first("SamplesPerPixel") or 1)  # type: ignore[call-overload]
            frames = int(str(first("NumberOfFrames") or 1).strip())
        except (TypeError, ValueError):
            return None
        if (photometric not in ("MONOCHROME1", "MONOCHROME2") or samples != 1
                or allocated not in (8, 16) or not 1 <= stored <= allocated
                or rows <= 0 or columns <= 0 or frames <= 0):
            return None
        return cls(rows, columns, frames, allocated, stored,
                   signed=first("PixelRepresentation") == 1,
                   slope=_as_number(first("RescaleSlope"), 1),
                   intercept=_as_number(first("RescaleIntercept"), 0),
                   window=_window_of(first("WindowCenter"), first("WindowWidth"),
                                     first("VOILUTFunction")),
                   invert=photometric == "MONOCHROME1")

    def render(self, frame: bytes | memoryview, window: Window | None = None,
               viewport: tuple[int, int] | None = None) -> Image.Image:
        """One frame's stored bytes (:attr:`frame_size` of them) as an 8-bit image.

        The modality LUT, the VOI window (``window``, else the dataset's, else the frame's
        value range) and the MONOCHROME1 inversion are one table lookup per pixel.
        """
        dtype = np.uint8 if self.bits_allocated == 8 else np.dtype("<u2")
        words = np.frombuffer(frame, dtype=dtype, count=self.rows * self.columns)
        layout = (self.bits_allocated, self.bits_stored, self.signed, self.slope,
                  self.intercept)
        window = window or self.window or _range_window(_modality_values(*layout).take(words))
        shown = _display_table(*layout, window, self.invert).take(words)
        image = Image.fromarray(shown.reshape(self.rows, self.columns))
        if viewport is not None:
            image.thumbnail(viewport, Image.Resampling.LANCZOS)
        return image


def _decoded(dataset: Dataset, frame: int, window: Window | None) -> Image.Image:
    """The frame through pydicom's decoders: compressed, colour, big endian, 32-bit..."""
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).strip()
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
    return _window_of(_first(dataset.get("WindowCenter")), _first(dataset.get("WindowWidth")),
                      dataset.get("VOILUTFunction"))


def _window_of(center: object, width: object, function: object) -> Window | None:
    """A window from first values; None when either is missing, malformed or not positive."""
    if center is None or width is None:
        return None
    name = str(function or "LINEAR").strip().upper()
    try:
        if float(width) <= 0:  # type: ignore[arg-type]
            return None
        return Window(float(center), float(width),  # type: ignore[arg-type]
                      name if name in FUNCTIONS else "LINEAR")
    except (TypeError, ValueError):
        return None


def _number(dataset: Dataset, keyword: str, default: float) -> float:
    """A numeric attribute, or ``default`` when absent or not a number (a malformed DS)."""
    return _as_number(_first(dataset.get(keyword)), default)


def _as_number(value: object, default: float) -> float:
    try:
        return float(value or default)  # type: ignore[arg-type]
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
