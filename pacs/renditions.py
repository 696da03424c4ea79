"""Compressed lossless renditions of native frames, for viewers on slow links.

An archive stores what the modality sent, and most CT and MR arrives uncompressed: a 512×512
CT slice is 512 KB, about 0.4 s of a 10 Mbit/s provincial link. A viewer that accepts it gets
the frame as **HTJ2K lossless with RPCL options** (transfer syntax 1.2.840.10008.1.2.4.202,
PS3.5 A.4.11) instead:

* *lossless*: the reversible 5/3 wavelet; decoding gives back every stored word, so it is the
  same image, only fewer bytes (0.44 of the native frame on the viewer benchmark's noisy
  512×512 CT slice, where ``gzip`` reaches 0.51; 0.40 on the sample CT);
* *RPCL*: the codestream is ordered resolution first, with one tile-part per resolution and a
  TLM marker segment, so its first bytes are a complete image at a lower resolution. A viewer
  that fetches a frame in two byte ranges (Cornerstone3D's progressive loading) draws a
  reduced-resolution preview from the first ~64 KB, labelled as such, and the lossless image
  once the rest has arrived; no byte is sent twice.

Only grayscale frames of 8 or 16 bits are encoded (CT, MR, CR/DX, PET, NM: nearly every
slice a radiologist scrolls through); anything else is sent as stored. The encoder is OpenJPH
through ``imagecodecs``: about 5 ms of one core for a 512×512 16-bit frame. Renditions are
made on request and kept in a per-process :class:`RenditionCache`, not stored: they cost
CPU, not disk, and are deterministic, so every worker sends the same bytes for a frame and a
byte range asked of one worker continues what another sent.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from pydicom.uid import UID

#: High-Throughput JPEG 2000 with RPCL Options Image Compression (Lossless Only).
HTJ2K_LOSSLESS_RPCL = UID("1.2.840.10008.1.2.4.202")
#: High-Throughput JPEG 2000 Image Compression (Lossless Only): an RPCL codestream is one.
HTJ2K_LOSSLESS = UID("1.2.840.10008.1.2.4.201")
#: The syntaxes a frame can be asked for in, besides as stored and uncompressed.
RENDITION_SYNTAXES = (HTJ2K_LOSSLESS_RPCL, HTJ2K_LOSSLESS)


class NoRendition(ValueError):
    """The frame is not one the encoder takes (colour, 1-bit, 32-bit...): send it as stored."""


@dataclass(frozen=True)
class FrameLayout:
    """What the encoder needs to know of a native frame (from the instance's attributes)."""

    rows: int
    columns: int
    samples_per_pixel: int
    bits_allocated: int
    pixel_representation: int

    def dtype(self) -> np.dtype:
        """The frame's little-endian word type; :class:`NoRendition` if not encodable."""
        if self.samples_per_pixel != 1:
            raise NoRendition("only grayscale frames are encoded")
        if self.bits_allocated not in (8, 16):
            raise NoRendition(f"{self.bits_allocated}-bit frames are not encoded")
        if self.rows < 1 or self.columns < 1:
            raise NoRendition("the frame has no pixels")
        signed = "i" if self.pixel_representation == 1 else "u"
        return np.dtype(f"<{signed}{self.bits_allocated // 8}")

    @property
    def frame_bytes(self) -> int:
        return self.rows * self.columns * self.samples_per_pixel * self.bits_allocated // 8


def encode_htj2k_lossless(frame: bytes, layout: FrameLayout) -> bytes:
    """The native ``frame`` as an HTJ2K lossless RPCL codestream (PS3.5 A.4.11).

    Raises
    ------
    NoRendition
        The layout is not grayscale 8/16-bit, or ``frame`` is not exactly one frame of it.
    """
    import imagecodecs

    dtype = layout.dtype()
    if len(frame) != layout.frame_bytes:
        raise NoRendition(f"a frame of {layout.frame_bytes} bytes was expected, "
                          f"not {len(frame)}")
    pixels = np.frombuffer(frame, dtype=dtype).reshape(layout.rows, layout.columns)
    return bytes(imagecodecs.htj2k_encode(
        pixels, reversible=True, tlm=True,
        tilepart=imagecodecs.HTJ2K.TILEPART.RESOLUTIONS))


class RenditionCache:
    """Encoded frames by (instance SHA-256, frame number, syntax), least recently used
    dropped beyond ``max_bytes``; safe from many threads. A viewer's second byte range of a
    frame arrives within a second of its first, so a small cache spares most re-encoding."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[str, int, str], bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, key: tuple[str, int, str]) -> bytes | None:
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def put(self, key: tuple[str, int, str], value: bytes) -> None:
        if len(value) > self.max_bytes:
            return
        with self._lock:
            previous = self._entries.pop(key, None)
            if previous is not None:
                self._size -= len(previous)
            self._entries[key] = value
            self._size += len(value)
            while self._size > self.max_bytes:
                _, dropped = self._entries.popitem(last=False)
                self._size -= len(dropped)
