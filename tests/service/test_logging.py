"""Logs are key=value lines without pixel data or DICOM patient tags."""

from __future__ import annotations

import base64
import io
import logging

import pydicom
import pytest
from pydicom.data import get_testdata_file

from tests.service.conftest import wait_until_finished
from tests.workers.small_models import SMALL_MODEL_ID

PATIENT_NAME = "Sentinel^Jane^Q"
PATIENT_ID = "PID-SENTINEL-4711"
BIRTH_DATE = "19230417"


def dicom_with_patient() -> bytes:
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm", download=False))
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = BIRTH_DATE
    ds.InstitutionName = "Sentinel General Hospital"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_a_dicom_certification_logs_no_patient_tags_and_no_pixels(client, caplog, capfd):
    data = dicom_with_patient()
    caplog.set_level(logging.DEBUG)
    response = client.post(
        "/v1/certify",
        files={"file": ("study.dcm", data, "application/dicom")},
        data={"model": SMALL_MODEL_ID, "n": "100"},
    )
    assert response.status_code == 202, response.text
    job = wait_until_finished(client, response.json()["id"])
    assert job["status"] == "succeeded"

    records = [record.getMessage() for record in caplog.records]
    captured = capfd.readouterr()
    logs = "\n".join([*records, captured.out, captured.err])
    assert any(r.startswith("event=job_queued ") for r in records)
    assert any(r.startswith("event=job_finished ") for r in records)
    assert any(r.startswith("event=http_request ") for r in records)
    for secret in ("Sentinel", "Jane", PATIENT_ID, BIRTH_DATE, "study.dcm"):
        assert secret not in logs
    pixel_bytes = pydicom.dcmread(io.BytesIO(data)).PixelData
    assert base64.b64encode(pixel_bytes[:48]).decode() not in logs
    assert "PixelData" not in logs
    assert all(len(message) < 1000 for message in records)
    for secret in ("Sentinel", PATIENT_ID, BIRTH_DATE):
        assert secret not in response.text and secret not in str(job)


@pytest.mark.parametrize("name", ["badVR.dcm", "rtplan.dcm"])
def test_refused_or_odd_dicom_files_log_no_patient_tags(client, caplog, capfd, name):
    """badVR.dcm makes pydicom warn about an element value; rtplan.dcm has no pixels."""
    caplog.set_level(logging.DEBUG)
    path = get_testdata_file(name, download=False)
    ds = pydicom.dcmread(path, force=True)
    patient = str(ds.get("PatientName", ""))
    with open(path, "rb") as file:
        response = client.post(
            "/v1/certify",
            files={"file": (name, file.read(), "application/dicom")},
            data={"model": SMALL_MODEL_ID, "n": "50"},
        )
    assert response.status_code in (202, 415, 422), response.text
    logs = "\n".join(record.getMessage() for record in caplog.records)
    assert not [record for record in caplog.records if record.name.startswith("pydicom")]
    assert "Invalid value" not in capfd.readouterr().err  # pydicom's warnings quote values
    assert patient and patient.split("^")[0] not in logs
    assert patient.split("^")[0] not in response.text
