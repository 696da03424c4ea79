"""HTJ2K lossless renditions of native frames (pacs/renditions.py), checked with OpenJPEG,
a decoder independent of the encoder (OpenJPH)."""

from __future__ import annotations

import struct

import numpy as np
import openjpeg
import pytest

from pacs.renditions import FrameLayout, NoRendition, RenditionCache, encode_htj2k_lossless

SOT, TLM, COD = b"\xff\x90", b"\xff\x55", b"\xff\x52"


def layout_of(pixels: np.ndarray) -> FrameLayout:
    return FrameLayout(rows=pixels.shape[0], columns=pixels.shape[1], samples_per_pixel=1,
                       bits_allocated=pixels.dtype.itemsize * 8,
                       pixel_representation=int(pixels.dtype.kind == "i"))


def ct_slice(seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    body = (np.hypot(*np.mgrid[-256:256, -256:256]) < 200) * 1040 + 24
    return (body + rng.integers(0, 60, size=(512, 512))).astype(np.uint16)


def tile_part_offsets(codestream: bytes) -> list[int]:
    """Where each tile-part starts (its SOT marker), read from the SOT lengths."""
    offsets, position = [], codestream.index(SOT)
    while codestream[position:position + 2] == SOT:
        offsets.append(position)
        (length,) = struct.unpack(">I", codestream[position + 6:position + 10])
        position += length
    return offsets


@pytest.mark.parametrize(("dtype", "low", "high"), [
    (np.uint8, 0, 255), (np.uint16, 0, 65535), (np.int16, -32768, 32767),
    (np.int16, -2048, 2047),  # 12 bits stored, signed (CT)
])
def test_decoding_gives_back_every_stored_word(dtype, low, high):
    pixels = np.random.default_rng(1).integers(low, high, size=(37, 53), endpoint=True)
    pixels = pixels.astype(dtype)
    decoded = openjpeg.decode(encode_htj2k_lossless(pixels.tobytes(), layout_of(pixels)))
    assert decoded.dtype == pixels.dtype
    assert np.array_equal(decoded, pixels)


def test_a_ct_slice_is_lossless_and_smaller_than_half_the_native_frame():
    pixels = ct_slice()
    codestream = encode_htj2k_lossless(pixels.tobytes(), layout_of(pixels))
    assert np.array_equal(openjpeg.decode(codestream), pixels)
    assert len(codestream) < pixels.nbytes / 2


def test_the_codestream_has_the_rpcl_options_dicom_requires():
    """PS3.5 A.4.11: RPCL progression, a TLM marker segment, a tile-part per resolution,
    the reversible wavelet."""
    codestream = encode_htj2k_lossless(ct_slice().tobytes(), layout_of(ct_slice()))
    cod = codestream.index(COD)
    progression, levels, wavelet = codestream[cod + 5], codestream[cod + 9], codestream[cod + 13]
    assert progression == 2  # RPCL
    assert wavelet == 1  # 5/3 reversible
    assert TLM in codestream[:codestream.index(SOT)]
    assert len(tile_part_offsets(codestream)) == levels + 1


def test_its_first_bytes_are_the_whole_image_at_half_resolution():
    """What a viewer that fetched only the first tile-parts draws: exactly the image the
    whole codestream gives at half resolution."""
    import imagecodecs

    codestream = encode_htj2k_lossless(ct_slice().tobytes(), layout_of(ct_slice()))
    last = tile_part_offsets(codestream)[-1]
    assert last < len(codestream) / 3
    preview = imagecodecs.htj2k_decode(codestream[:last] + b"\xff\xd9", skipres=1)
    assert preview.shape == (256, 256)
    assert np.array_equal(preview, imagecodecs.htj2k_decode(codestream, skipres=1))


@pytest.mark.parametrize(("layout", "reason"), [
    (FrameLayout(4, 4, 3, 8, 0), "grayscale"),
    (FrameLayout(4, 4, 1, 32, 0), "32-bit"),
    (FrameLayout(4, 4, 1, 1, 0), "1-bit"),
    (FrameLayout(0, 4, 1, 16, 0), "no pixels"),
])
def test_frames_the_encoder_does_not_take_are_refused(layout, reason):
    with pytest.raises(NoRendition, match=reason):
        encode_htj2k_lossless(b"\0" * 64, layout)


def test_a_frame_of_the_wrong_length_is_refused():
    with pytest.raises(NoRendition, match="bytes was expected"):
        encode_htj2k_lossless(b"\0" * 31, FrameLayout(4, 4, 1, 16, 0))


def test_the_cache_drops_the_least_recently_used_beyond_its_size():
    cache = RenditionCache(max_bytes=10)
    cache.put(("a", 1, "s"), b"12345")
    cache.put(("b", 1, "s"), b"12345")
    assert cache.get(("a", 1, "s")) == b"12345"  # now the most recently used
    cache.put(("c", 1, "s"), b"123")
    assert cache.get(("b", 1, "s")) is None
    assert cache.get(("a", 1, "s")) == b"12345"
    assert cache.get(("c", 1, "s")) == b"123"


def test_the_cache_keeps_nothing_larger_than_itself():
    cache = RenditionCache(max_bytes=4)
    cache.put(("a", 1, "s"), b"12345")
    assert cache.get(("a", 1, "s")) is None
