"""Rendering a frame (pacs.render): the lookup-table path for native grayscale frames gives
exactly what pydicom's decoders and the floating-point pipeline give."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, RLELossless

from pacs.render import RenderError, Window, render_frame


def grayscale(pixels: np.ndarray, *, bits_stored: int, signed: bool, **attributes) -> Dataset:
    """A native little-endian grayscale dataset holding ``pixels`` (frames × rows × columns)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    frames, ds.Rows, ds.Columns = pixels.shape
    ds.NumberOfFrames = frames
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits_stored, bits_stored - 1, int(signed)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    ds.PixelData = pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()
    return ds


def rle_copy(ds: Dataset) -> Dataset:
    """The same dataset RLE-compressed: rendering it goes through pydicom's decoders."""
    compressed = copy.deepcopy(ds)
    compressed.compress(RLELossless, encoding_plugin="pydicom")
    return compressed


RNG = np.random.default_rng(7)
CASES = {
    "CT unsigned 12 of 16 bits, rescaled, own window": grayscale(
        RNG.integers(0, 4096, (2, 64, 48), dtype=np.uint16), bits_stored=12, signed=False,
        RescaleSlope=1, RescaleIntercept=-1024, WindowCenter=40, WindowWidth=400),
    "signed 16 bits, no window (the frame's range)": grayscale(
        RNG.integers(-2000, 3000, (1, 40, 40), dtype=np.int16), bits_stored=16, signed=True),
    "signed 12 of 16 bits, negative values, slope 2": grayscale(
        RNG.integers(-2048, 2048, (1, 32, 32), dtype=np.int16), bits_stored=12, signed=True,
        RescaleSlope=2, RescaleIntercept=-10, WindowCenter=0, WindowWidth=3000),
    "8 bits, MONOCHROME1, sigmoid": grayscale(
        RNG.integers(0, 256, (1, 30, 20), dtype=np.uint8), bits_stored=8, signed=False,
        PhotometricInterpretation="MONOCHROME1", WindowCenter=128, WindowWidth=100,
        VOILUTFunction="SIGMOID"),
}


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("window", [None, Window(100, 700), Window(-50, 1, "LINEAR_EXACT")])
def test_a_native_frame_renders_as_its_decoded_copy_does(name, window):
    native = CASES[name]
    frame = int(native.NumberOfFrames)
    expected = np.asarray(render_frame(rle_copy(native), frame, window=window))
    assert np.array_equal(np.asarray(render_frame(native, frame, window=window)), expected)


def test_a_monochrome1_frame_is_the_inverse_of_its_monochrome2_twin():
    mono1 = CASES["8 bits, MONOCHROME1, sigmoid"]
    mono2 = copy.deepcopy(mono1)
    mono2.PhotometricInterpretation = "MONOCHROME2"
    assert np.array_equal(np.asarray(render_frame(mono1)),
                          255 - np.asarray(render_frame(mono2)))


def test_a_frame_beyond_short_pixel_data_is_a_render_error():
    short = copy.deepcopy(CASES["signed 16 bits, no window (the frame's range)"])
    short.PixelData = short.PixelData[:100]
    with pytest.raises(RenderError, match="cannot decode"):
        render_frame(short, 1)


@pytest.mark.parametrize("name", CASES)
def test_the_layout_read_from_stored_json_is_the_one_read_from_the_dataset(name):
    from io import BytesIO

    from pacs.header import read_header
    from pacs.render import NativeGrayscale

    native = copy.deepcopy(CASES[name])
    native.SOPClassUID = native.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    native.SOPInstanceUID = native.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    out = BytesIO()
    native.save_as(out, enforce_file_format=True)
    header = read_header(out.getvalue())
    layout = NativeGrayscale.of_json(header.dataset, header.transfer_syntax_uid)
    assert layout is not None
    assert layout == NativeGrayscale.of_dataset(native)
