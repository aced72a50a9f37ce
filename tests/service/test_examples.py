"""The sample inputs in ``examples/`` are what their README says they are."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pydicom

from service.imaging import decode_image

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_the_digit_examples_are_what_the_script_writes(tmp_path):
    spec = importlib.util.spec_from_file_location("make_examples", EXAMPLES / "make_examples.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.write_digit_examples(tmp_path)
    for name in ("digit.png", "digit.npy"):
        assert (tmp_path / name).read_bytes() == (EXAMPLES / name).read_bytes(), name


def test_the_dicom_example_is_pydicoms_ct_slice_unchanged():
    shipped = Path(pydicom.__file__).parent / "data" / "test_files" / "CT_small.dcm"
    assert (EXAMPLES / "CT_small.dcm").read_bytes() == shipped.read_bytes()


def test_every_example_decodes_to_the_digits_models_input():
    for name in ("digit.png", "digit.npy", "CT_small.dcm"):
        decoded = decode_image((EXAMPLES / name).read_bytes(), (1, 8, 8), max_pixels=4096**2)
        assert decoded.tensor.shape == (1, 8, 8), name
