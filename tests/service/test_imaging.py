"""Decoding real files to the model's input: PNG, JPEG, NPY and pydicom's bundled DICOM files."""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from service.errors import (
    ImageTooLarge,
    InvalidImage,
    MissingDICOMCodec,
    NotAnImage,
    ServiceError,
    TruncatedImage,
    UnsupportedMediaType,
)
from service.imaging import apply_window, decode_array, decode_image
from tests.service.conftest import png_bytes

LIMIT = 4096 * 4096


def bundled(name: str) -> bytes:
    """A DICOM file shipped inside the pydicom wheel (never one that would be downloaded)."""
    path = get_testdata_file(name, download=False)
    assert path is not None, f"{name} is not bundled with this pydicom"
    with open(path, "rb") as file:
        return file.read()


def dicom_bytes(dataset: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def cut_before_pixel_data(data: bytes) -> bytes:
    return data[: data.rindex(b"\xe0\x7f\x10\x00")]


def encode(image: Image.Image, format_name: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format_name)
    return buffer.getvalue()


def check_model_input(decoded, shape):
    assert decoded.tensor.shape == shape and decoded.tensor.dtype == np.float32
    assert decoded.tensor.min() >= 0.0 and decoded.tensor.max() <= 1.0
    assert decoded.description.shape == shape


def test_ct_rescale_is_applied_and_the_full_range_scaled():
    decoded = decode_image(bundled("CT_small.dcm"), (1, 128, 128), max_pixels=LIMIT)
    check_model_input(decoded, (1, 128, 128))
    ds = pydicom.dcmread(io.BytesIO(bundled("CT_small.dcm")))
    hounsfield = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    expected = (hounsfield - hounsfield.min()) / (hounsfield.max() - hounsfield.min())
    np.testing.assert_allclose(decoded.tensor[0], expected, atol=1e-6)
    steps = " | ".join(decoded.description.transforms)
    assert "rescale slope 1 intercept -1024" in steps and "resized" not in steps
    assert decoded.description.format == "dicom"


def test_mr_window_from_the_file_maps_to_unit_range():
    data = bundled("MR_small.dcm")
    decoded = decode_image(data, (1, 64, 64), max_pixels=LIMIT)
    ds = pydicom.dcmread(io.BytesIO(data))
    center, width = float(ds.WindowCenter), float(ds.WindowWidth)
    raw = ds.pixel_array.astype(np.float64)
    low, high = center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2
    expected = np.clip((raw - low) / (high - low), 0, 1)
    np.testing.assert_allclose(decoded.tensor[0], expected, atol=1e-6)
    assert f"window center {center:g} width {width:g}" in " ".join(decoded.description.transforms)


def test_window_functions_follow_the_standard():
    values = np.array([-1.0, 49.5, 100.0, 1000.0])
    np.testing.assert_allclose(apply_window(values, 50, 101, "LINEAR"), [0.0, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(apply_window(values, 50, 100, "LINEAR_EXACT")[:2], [0.0, 0.495])
    assert apply_window(np.array([50.0]), 50, 100, "SIGMOID")[0] == pytest.approx(0.5)


def test_a_window_of_width_one_is_a_threshold():
    values = np.array([48.0, 49.5, 49.6, 51.0])
    np.testing.assert_array_equal(apply_window(values, 50, 1, "LINEAR"), [0, 0, 1, 1])
    dataset = pydicom.dcmread(io.BytesIO(bundled("MR_small.dcm")))
    dataset.WindowCenter, dataset.WindowWidth = 600, 1
    decoded = decode_image(dicom_bytes(dataset), (1, 64, 64), max_pixels=LIMIT)
    assert "width 1 (LINEAR)" in " ".join(decoded.description.transforms)
    assert set(np.unique(decoded.tensor)) <= {0.0, 1.0}


def test_a_voi_lut_sequence_is_applied_when_there_is_no_window():
    dataset = pydicom.dcmread(io.BytesIO(bundled("CT_small.dcm")))
    for keyword in ("WindowCenter", "WindowWidth"):
        if keyword in dataset:
            delattr(dataset, keyword)
    values = pydicom.pixels.apply_modality_lut(dataset.pixel_array, dataset)
    first = int(np.percentile(values, 10))
    # An 8-bit LUT of 256 entries: a ramp from the 10th percentile upwards, 2 units a step.
    item = pydicom.Dataset()
    item.LUTDescriptor = [256, first, 8]
    item.LUTData = list(range(256))
    item["LUTData"].VR = "US"
    dataset.VOILUTSequence = pydicom.Sequence([item])
    decoded = decode_image(dicom_bytes(dataset), (1, 128, 128), max_pixels=LIMIT)
    assert "applied the VOI LUT (256 entries, scaled by 1/255)" in decoded.description.transforms
    expected = np.clip(values - first, 0, 255) / 255.0
    np.testing.assert_allclose(decoded.tensor[0], expected, atol=1e-6)

    item.LUTDescriptor = [300, first, 8]  # says 300 entries, holds 256
    with pytest.raises(InvalidImage, match="does not match its LUT Descriptor"):
        decode_image(dicom_bytes(dataset), (1, 128, 128), max_pixels=LIMIT)


def test_concurrent_decodes_leave_the_warning_filters_as_they_were():
    import threading
    import warnings

    before = list(warnings.filters)
    files = [bundled("MR_small.dcm"), bundled("CT_small.dcm"), png_bytes()]

    def decode_many() -> None:
        for _ in range(30):
            for data in files:
                decode_image(data, (1, 8, 8), max_pixels=LIMIT)

    threads = [threading.Thread(target=decode_many) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert list(warnings.filters) == before


def test_monochrome1_is_inverted():
    ds = pydicom.dcmread(io.BytesIO(bundled("MR_small.dcm")))
    as_mono2 = decode_image(dicom_bytes(ds), (1, 64, 64), max_pixels=LIMIT)
    ds.PhotometricInterpretation = "MONOCHROME1"
    as_mono1 = decode_image(dicom_bytes(ds), (1, 64, 64), max_pixels=LIMIT)
    np.testing.assert_allclose(as_mono1.tensor, 1.0 - as_mono2.tensor, atol=1e-6)
    assert "inverted MONOCHROME1" in " ".join(as_mono1.description.transforms)


@pytest.mark.parametrize("name", ["rtdose.dcm", "SC_rgb_rle_2frame.dcm"])
def test_multi_frame_uses_the_first_frame(name):
    data = bundled(name)
    ds = pydicom.dcmread(io.BytesIO(data))
    frames = int(ds.NumberOfFrames)
    decoded = decode_image(data, (3, int(ds.Rows), int(ds.Columns)), max_pixels=LIMIT)
    check_model_input(decoded, (3, int(ds.Rows), int(ds.Columns)))
    assert f"used frame 1 of {frames}" in decoded.description.transforms
    first = ds.pixel_array[0].astype(np.float64)
    if first.ndim == 2:
        first = (first - first.min()) / (first.max() - first.min())
        np.testing.assert_allclose(decoded.tensor[0], first, atol=1e-6)
    else:
        np.testing.assert_allclose(decoded.tensor, np.moveaxis(first, -1, 0) / 255, atol=1e-6)


def test_compressed_dicom_decodes_with_a_codec_or_says_which_extra_is_missing():
    data = bundled("MR_small_jpeg_ls_lossless.dcm")
    have_codec = any(
        importlib.util.find_spec(name) is not None for name in ("libjpeg", "jpeg_ls", "gdcm")
    )
    if have_codec:
        decoded = decode_image(data, (1, 64, 64), max_pixels=LIMIT)
        reference = decode_image(bundled("MR_small.dcm"), (1, 64, 64), max_pixels=LIMIT)
        np.testing.assert_allclose(decoded.tensor, reference.tensor, atol=1e-6)
    else:
        with pytest.raises(MissingDICOMCodec, match=r"JPEG-LS.*hycas-certify\[dicom\]"):
            decode_image(data, (1, 64, 64), max_pixels=LIMIT)


def test_rle_compressed_dicom_decodes_like_the_uncompressed_file():
    rle = decode_image(bundled("MR_small_RLE.dcm"), (1, 64, 64), max_pixels=LIMIT)
    plain = decode_image(bundled("MR_small.dcm"), (1, 64, 64), max_pixels=LIMIT)
    np.testing.assert_array_equal(rle.tensor, plain.tensor)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (lambda: bundled("MR_truncated.dcm"), TruncatedImage),
        (lambda: cut_before_pixel_data(bundled("CT_small.dcm")), TruncatedImage),
        (lambda: bundled("rtplan.dcm"), NotAnImage),
        (lambda: bundled("examples_palette.dcm"), UnsupportedMediaType),
    ],
    ids=["truncated pixel data", "cut before pixel data", "no pixel data", "palette colour"],
)
def test_bad_dicom_is_refused_clearly(data, error):
    with pytest.raises(error):
        decode_image(data(), (1, 8, 8), max_pixels=LIMIT)


def test_dicom_frame_size_is_checked_before_decoding():
    with pytest.raises(ImageTooLarge, match="128×128"):
        decode_image(bundled("CT_small.dcm"), (1, 8, 8), max_pixels=100 * 100)


def test_png_modes_convert_to_the_model_channels():
    rgba = Image.fromarray(np.full((10, 12, 4), (255, 0, 0, 7), dtype=np.uint8), mode="RGBA")
    decoded = decode_image(encode(rgba, "PNG"), (1, 10, 12), max_pixels=LIMIT)
    np.testing.assert_allclose(decoded.tensor, 0.299, atol=1e-6)
    assert "converted to RGB (alpha dropped)" in decoded.description.transforms
    gray16 = Image.fromarray(np.full((6, 6), 65535, dtype=np.uint16))
    decoded = decode_image(encode(gray16, "PNG"), (3, 6, 6), max_pixels=LIMIT)
    np.testing.assert_allclose(decoded.tensor, 1.0)
    assert "replicated grayscale to 3 channels" in decoded.description.transforms


def test_jpeg_and_resizing():
    image = Image.fromarray(np.full((40, 30, 3), 128, dtype=np.uint8))
    decoded = decode_image(encode(image, "JPEG"), (1, 8, 8), max_pixels=LIMIT)
    check_model_input(decoded, (1, 8, 8))
    np.testing.assert_allclose(decoded.tensor, 128 / 255, atol=2 / 255)
    assert "resized 30×40 to 8×8 (bilinear, antialiased; aspect ratio not kept)" in (
        decoded.description.transforms
    )
    assert decoded.description.original_shape == (40, 30, 3)


def test_npy_float_and_uint8_and_refusals():
    buffer = io.BytesIO()
    values = np.random.default_rng(0).random((3, 8, 8)).astype(np.float32)
    np.save(buffer, values)
    decoded = decode_image(buffer.getvalue(), (3, 8, 8), max_pixels=LIMIT)
    np.testing.assert_array_equal(decoded.tensor, values)
    buffer = io.BytesIO()
    np.save(buffer, np.full((8, 8, 3), 255, dtype=np.uint8))
    decoded = decode_image(buffer.getvalue(), (3, 8, 8), max_pixels=LIMIT)
    np.testing.assert_array_equal(decoded.tensor, 1.0)
    assert "moved channels first" in decoded.description.transforms
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InvalidImage, match="pickle"):
        decode_image(buffer.getvalue(), (1, 8, 8), max_pixels=LIMIT)
    buffer = io.BytesIO()
    np.save(buffer, np.full((8, 8), 2.0))
    with pytest.raises(InvalidImage, match=r"\[0, 1\]"):
        decode_image(buffer.getvalue(), (1, 8, 8), max_pixels=LIMIT)


@pytest.mark.parametrize("dtype", ["<u2", ">u2", ">f4", ">f8", "<f4"])
def test_npy_in_either_byte_order_gives_the_same_tensor(dtype):
    values = np.random.default_rng(1).random((8, 8))
    if dtype.endswith("u2"):
        values = np.round(values * 65535)
    native = io.BytesIO()
    np.save(native, values.astype(dtype.replace(">", "<")))
    swapped = io.BytesIO()
    np.save(swapped, values.astype(dtype))
    expected = decode_image(native.getvalue(), (1, 8, 8), max_pixels=LIMIT).tensor
    decoded = decode_image(swapped.getvalue(), (1, 8, 8), max_pixels=LIMIT)
    np.testing.assert_array_equal(decoded.tensor, expected)


def test_arrays_and_hashes():
    decoded = decode_array([[0.0, 1.0], [0.5, 0.25]], (1, 2, 2), max_pixels=LIMIT)
    np.testing.assert_array_equal(decoded.tensor[0], [[0.0, 1.0], [0.5, 0.25]])
    again = decode_array([[0.0, 1.0], [0.5, 0.25]], (1, 2, 2), max_pixels=LIMIT)
    assert decoded.description.sha256 == again.description.sha256
    other = decode_array([[0.0, 1.0], [0.5, 0.5]], (1, 2, 2), max_pixels=LIMIT)
    assert other.description.tensor_sha256 != decoded.description.tensor_sha256


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"GIF89a" + b"\x00" * 20, UnsupportedMediaType),
        (b"II*\x00" + b"\x00" * 20, UnsupportedMediaType),
        (b"%PDF-1.4 ...", UnsupportedMediaType),
        (b"<html>not an image</html>", NotAnImage),
        (b"", NotAnImage),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 30, TruncatedImage),
    ],
)
def test_content_is_sniffed_not_the_file_name(data, error):
    with pytest.raises(error):
        decode_image(data, (1, 8, 8), max_pixels=LIMIT)


def test_decompression_bomb_is_refused_before_decoding():
    bomb = encode(Image.new("1", (20_000, 20_000)), "PNG")
    assert len(bomb) < 200_000
    with pytest.raises(ImageTooLarge, match="decompression bomb"):
        decode_image(bomb, (1, 8, 8), max_pixels=LIMIT)


def test_deflated_dicom_bomb_is_refused_before_pydicom_inflates_it(monkeypatch):
    dataset = pydicom.dcmread(io.BytesIO(bundled("image_dfl.dcm")))
    assert dataset.file_meta.TransferSyntaxUID == pydicom.uid.DeflatedExplicitVRLittleEndian
    pixels = int(dataset.Rows) * int(dataset.Columns)
    honest = dicom_bytes(dataset)
    decode_image(honest, (1, 8, 8), max_pixels=pixels)  # the real deflated file is accepted

    dataset.add_new(0x00091000, "OB", bytes(64 << 20))  # 64 MiB of zeros in a private element
    bomb = dicom_bytes(dataset)
    assert len(bomb) < len(honest) + 200_000

    def refuse_to_inflate(*args, **kwargs):
        raise AssertionError("pydicom was asked to read the bomb")

    monkeypatch.setattr(pydicom, "dcmread", refuse_to_inflate)
    with pytest.raises(ImageTooLarge, match="inflates to more than"):
        decode_image(bomb, (1, 8, 8), max_pixels=pixels)


def test_corrupt_deflated_dicom_is_refused():
    data = bundled("image_dfl.dcm")
    # The data set starts after the file meta group: 128 + 4 bytes, the 12-byte group length
    # element (0002,0000) and the group length it states (PS3.10 7.1).
    start = 144 + int.from_bytes(data[140:144], "little")
    corrupt = data[:start] + b"\xff" * 8 + data[start + 8 :]  # BTYPE 11: a reserved block type
    with pytest.raises(InvalidImage, match="deflated DICOM data set is corrupt"):
        decode_image(corrupt, (1, 8, 8), max_pixels=LIMIT)


def test_png_round_trip_values():
    decoded = decode_image(png_bytes(size=(8, 8), seed=3), (1, 8, 8), max_pixels=LIMIT)
    expected = np.asarray(Image.open(io.BytesIO(png_bytes(size=(8, 8), seed=3)))) / 255
    np.testing.assert_allclose(decoded.tensor[0], expected, atol=1e-7)


BUNDLED_DICOM = sorted((Path(pydicom.data.__file__).parent / "test_files").glob("*.dcm"))


@pytest.mark.parametrize("path", BUNDLED_DICOM, ids=[p.name for p in BUNDLED_DICOM])
def test_every_bundled_dicom_file_decodes_or_is_refused_with_a_4xx(path):
    try:
        decoded = decode_image(path.read_bytes(), (1, 16, 16), max_pixels=LIMIT)
    except ServiceError as error:
        assert 400 <= error.status_code < 500
    else:
        check_model_input(decoded, (1, 16, 16))


def npy_header_only(shape: tuple[int, ...], descr: str = "<f8") -> bytes:
    """An ``.npy`` header declaring ``shape``, followed by a few bytes instead of the data."""
    header = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}".encode()
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + b"\x00" * 16


@pytest.mark.parametrize(
    ("shape", "error"),
    [
        ((100_000, 100_000), ImageTooLarge),
        ((2, 100_000, 100_000), ImageTooLarge),
        ((64, 64), TruncatedImage),
        ((1, 2, 3, 4), InvalidImage),
        ((3, 0, 8), InvalidImage),
        ((9_999_999_999_999, 0, 8), InvalidImage),
        ((True, 8), InvalidImage),
    ],
)
def test_npy_header_is_checked_before_the_array_is_allocated(shape, error):
    """A 100 000 × 100 000 float64 header would make NumPy allocate 75 GiB."""
    with pytest.raises(error):
        decode_image(npy_header_only(shape), (1, 8, 8), max_pixels=LIMIT)


def test_json_numbers_too_large_for_a_float_are_refused():
    with pytest.raises(InvalidImage):
        decode_array([[10**400, 0.5]], (1, 8, 8), max_pixels=LIMIT)


def _without_photometric(ds: pydicom.Dataset) -> None:
    del ds.PhotometricInterpretation


def _empty_pixel_data(ds: pydicom.Dataset) -> None:
    ds.PixelData = b""


def _three_samples_without_planar_configuration(ds: pydicom.Dataset) -> None:
    ds.SamplesPerPixel = 3


def _rows_of_one_byte(ds: pydicom.Dataset) -> None:
    tag = pydicom.tag.Tag("Rows")
    ds._dict[tag] = pydicom.dataelem.RawDataElement(tag, "US", 1, b"\x01", 0, False, True)


def _empty_modality_lut(ds: pydicom.Dataset) -> None:
    ds.ModalityLUTSequence = [pydicom.Dataset()]


def _nan_window_center(ds: pydicom.Dataset) -> None:
    tag = pydicom.tag.Tag("WindowCenter")
    ds._dict[tag] = pydicom.dataelem.RawDataElement(tag, "DS", 4, b"NaN ", 0, False, True)


@pytest.mark.parametrize(
    "damage",
    [
        _without_photometric,
        _empty_pixel_data,
        _three_samples_without_planar_configuration,
        _rows_of_one_byte,
        _empty_modality_lut,
        _nan_window_center,
    ],
)
def test_malformed_dicom_headers_are_refused_not_crashed(damage):
    ds = pydicom.dcmread(io.BytesIO(bundled("MR_small.dcm")))
    damage(ds)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=False)
    with pytest.raises(InvalidImage) as refused:
        decode_image(buffer.getvalue(), (1, 8, 8), max_pixels=LIMIT)
    assert str(ds.PatientName) not in refused.value.message


@pytest.mark.parametrize("name", ["image_dfl.dcm", "SC_rgb_jls_lossy_sample.dcm"])
def test_dicom_cut_where_pydicom_fails_inside_its_reader_is_refused(name):
    """A deflated file cut short makes pydicom raise zlib.error; another one struct.error."""
    data = bundled(name)
    with pytest.raises(InvalidImage):
        decode_image(data[: len(data) // 2], (1, 8, 8), max_pixels=LIMIT)
