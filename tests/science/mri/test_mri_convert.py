"""DICOM -> NIfTI with real dcm2niix: geometry and data round trips, metadata, bad input, no silent overwrite."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from hpclab.mri import ConversionError, ConversionWarning, convert, read_metadata
from hpclab.mri.dicom_scan import is_dicom

from support import mri_data


@pytest.fixture(scope="module")
def template() -> nib.Nifti1Image:
    return mri_data.template_t1()


@pytest.fixture(scope="module")
def small(template: nib.Nifti1Image) -> nib.Nifti1Image:
    return mri_data.downsample(template, 3)


def _convert_quiet(src: Path, dst: Path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConversionWarning)
        return convert(src, dst, **kw)


def _assert_same_image(out: nib.spatialimages.SpatialImage, data: np.ndarray, affine: np.ndarray,
                       atol_affine: float = 1e-4) -> None:
    """Same grid (up to axis order/flips) and identical voxel values."""
    got_data, got_affine = mri_data.canonical(out)
    want_data, want_affine = mri_data.canonical(nib.Nifti1Image(np.asarray(data, dtype=np.float32), affine))
    assert got_data.shape == want_data.shape
    np.testing.assert_allclose(got_affine, want_affine, atol=atol_affine, rtol=0)
    np.testing.assert_array_equal(got_data, want_data)


@pytest.mark.parametrize("case", ["axial", "sagittal", "oblique"])
def test_series_round_trips_to_the_source_affine_and_voxels(tmp_path, template, case):
    data = np.asarray(template.dataobj)
    affine = template.affine if case != "oblique" else mri_data.rotation(15, 10) @ template.affine
    mri_data.write_series(data, affine, tmp_path / "dicom", slice_axis=0 if case == "sagittal" else 2)
    (series,) = _convert_quiet(tmp_path / "dicom", tmp_path / "out")
    _assert_same_image(series.load(), data, affine)
    assert series.metadata["slice_plane"] == {"axial": "axial", "sagittal": "sagittal", "oblique": "oblique"}[case]
    assert series.metadata["n_slices"] == str({"sagittal": 197}.get(case, 189))


def test_rescale_slope_and_intercept_are_applied(tmp_path, template):
    data = np.asarray(template.dataobj).astype(np.float64)
    mri_data.write_series(data, template.affine, tmp_path / "dicom", slope=0.5, intercept=-10.0)
    stored = pydicom.dcmread(sorted((tmp_path / "dicom").iterdir())[100])
    np.testing.assert_array_equal(stored.pixel_array, ((data[:, :, 100] + 10) * 2).T)  # really stored scaled
    (series,) = _convert_quiet(tmp_path / "dicom", tmp_path / "out")
    _assert_same_image(series.load(), data, template.affine)


def test_rle_compressed_dicom_converts(tmp_path, small):
    data = np.asarray(small.dataobj)
    files = mri_data.write_series(data, small.affine, tmp_path / "dicom", compress=True)
    assert pydicom.dcmread(files[0]).file_meta.TransferSyntaxUID == pydicom.uid.RLELossless
    (series,) = _convert_quiet(tmp_path / "dicom", tmp_path / "out")
    _assert_same_image(series.load(), data, small.affine)


def test_two_series_in_nested_folders_become_two_niftis(tmp_path, small):
    data = np.asarray(small.dataobj)
    study = pydicom.uid.generate_uid()
    mri_data.write_series(data, small.affine, tmp_path / "dicom" / "a" / "b", series_number=3,
                          description="T1w_MPRAGE", study_uid=study)
    mri_data.write_series(data[::-1], small.affine, tmp_path / "dicom" / "a", series_number=7, slice_axis=1,
                          description="T1w_coronal", study_uid=study, prefix="XX")
    series = _convert_quiet(tmp_path / "dicom", tmp_path / "out")
    by_number = {s.metadata["series_number"]: s for s in series}
    assert sorted(by_number) == ["3", "7"]
    _assert_same_image(by_number["3"].load(), data, small.affine)
    _assert_same_image(by_number["7"].load(), data[::-1], small.affine)
    assert by_number["3"].metadata["study_uid"] == by_number["7"].metadata["study_uid"] == study
    assert by_number["7"].metadata["slice_plane"] == "coronal"


def test_metadata_txt_holds_the_experiment_description(tmp_path, small):
    mri_data.write_series(np.asarray(small.dataobj), small.affine, tmp_path / "dicom", tr_ms=2300, te_ms=2.98,
                          flip_deg=9, patient_id="P-17", patient_name="Roe^Richard")
    (series,) = _convert_quiet(tmp_path / "dicom", tmp_path / "out")
    assert series.metadata_file == tmp_path / "out" / f"{series.stem}.txt"
    md = read_metadata(series.metadata_file)
    assert md == series.metadata
    expected = {
        "subject_id": "P-17", "patient_name": "Roe^Richard", "modality": "MR", "scanner_model": "Synthetic3T",
        "field_strength_T": "3", "sequence_name": "tfl3d1", "repetition_time_ms": "2300", "echo_time_ms": "2.98",
        "flip_angle_deg": "9", "matrix": "66 x 78 x 63", "voxel_size_mm": "3 x 3 x 3", "orientation": "RAS",
        "slice_plane": "axial", "n_slices": "63", "n_volumes": "1", "acquisition_date": "2022-10-24",
        "n_dicom_files": "63", "deidentified": "no", "nifti": series.nifti.name,
    }
    assert {k: md.get(k) for k in expected} == expected
    assert json.loads(series.sidecar.read_text())["PatientID"] == "P-17"


def test_deidentify_strips_names_ids_dates_and_hashes_uids(tmp_path, small):
    mri_data.write_series(np.asarray(small.dataobj), small.affine, tmp_path / "dicom", patient_id="P-17",
                          patient_name="Roe^Richard")
    (series,) = _convert_quiet(tmp_path / "dicom", tmp_path / "out", deidentify=True, subject="sub-01")
    md = series.metadata
    assert md["subject_id"] == "sub-01" and md["deidentified"] == "yes"
    assert "patient_name" not in md and "acquisition_date" not in md and "patient_birth_date" not in md
    assert md["series_uid"].startswith("sha256:")
    for path in (series.metadata_file, series.sidecar):
        text = path.read_text()
        for secret in ("P-17", "Roe", "Richard", "2022-10-24", "1980-01-01"):
            assert secret not in text, f"{secret} left in {path.name}"
    with pytest.raises(ValueError, match="patient name"):
        convert(tmp_path / "dicom", tmp_path / "out2", deidentify=True, name_pattern="%n_%s")


def test_missing_slice_gives_eq_file_and_a_warning_naming_the_files(tmp_path, template):
    data = np.asarray(template.dataobj)
    mri_data.write_series(data, template.affine, tmp_path / "dicom", drop_slices=[90])
    with pytest.warns(ConversionWarning) as record:
        (series,) = convert(tmp_path / "dicom", tmp_path / "out")
    message = " ".join(str(w.message) for w in record)
    assert "1 slice(s) missing" in message
    assert "IM01_0090.dcm" in message and "IM01_0092.dcm" in message
    assert series.equalized is not None and "_Eq_" in series.equalized.name
    assert series.load().shape == (197, 233, 188)
    eq = series.load(equalized=True)
    got, got_affine = mri_data.canonical(eq)
    want, want_affine = mri_data.canonical(template)
    np.testing.assert_allclose(got_affine, want_affine, atol=1e-4)
    keep = [k for k in range(189) if k != 90]
    np.testing.assert_array_equal(got[:, :, keep], want[:, :, keep])
    assert "missing" in read_metadata(series.metadata_file)["warnings"]


def test_uneven_slice_spacing_is_reported(tmp_path, small):
    mri_data.write_series(np.asarray(small.dataobj), small.affine, tmp_path / "dicom", shift_from_slice=30,
                          shift_mm=1.2)
    with pytest.warns(ConversionWarning, match=r"uneven slice spacing between IM01_0030\.dcm .* and IM01_0031\.dcm"):
        (series,) = convert(tmp_path / "dicom", tmp_path / "out")
    assert series.equalized is not None


def test_folder_without_dicom_is_an_error_naming_it(tmp_path):
    src = tmp_path / "notes"
    src.mkdir()
    (src / "readme.txt").write_text("not an image")
    with pytest.raises(ConversionError, match=rf"no DICOM files in {src}.*readme\.txt"):
        convert(src, tmp_path / "out")
    with pytest.raises(ConversionError, match="does not exist"):
        convert(tmp_path / "nowhere", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_non_dicom_files_are_skipped_with_a_warning_naming_them(tmp_path, small):
    mri_data.write_series(np.asarray(small.dataobj), small.affine, tmp_path / "dicom")
    (tmp_path / "dicom" / "protocol.pdf").write_bytes(b"%PDF-1.4 not dicom")
    (tmp_path / "dicom" / "Thumbs.db").write_bytes(b"\x00" * 300)
    with pytest.warns(ConversionWarning, match=r"2 file\(s\) .* not DICOM .*Thumbs\.db, protocol\.pdf"):
        (series,) = convert(tmp_path / "dicom", tmp_path / "out")
    _assert_same_image(series.load(), np.asarray(small.dataobj), small.affine)


def test_existing_outputs_are_never_overwritten_silently(tmp_path, small):
    mri_data.write_series(np.asarray(small.dataobj), small.affine, tmp_path / "dicom")
    (first,) = _convert_quiet(tmp_path / "dicom", tmp_path / "out")
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    with pytest.raises(ConversionError, match=rf"already holds {first.nifti.name}.*nothing was changed"):
        convert(tmp_path / "dicom", tmp_path / "out")
    after = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    assert after == before  # no staging left behind, nothing touched
    (again,) = _convert_quiet(tmp_path / "dicom", tmp_path / "out", overwrite=True)
    assert again.nifti == first.nifti and sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(before)


def test_output_under_a_file_is_a_clear_error(tmp_path, small):
    mri_data.write_series(np.asarray(small.dataobj), small.affine, tmp_path / "dicom")
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    with pytest.raises(ConversionError, match=rf"output folder: cannot create folder {blocker}/out"):
        convert(tmp_path / "dicom", blocker / "out")
    with pytest.raises(ConversionError, match=rf"output folder: {blocker} is not a folder"):
        convert(tmp_path / "dicom", blocker)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_unwritable_output_folder_is_a_clear_error_for_a_normal_user(small):
    """Run the CLI as 'nobody' against a root-owned 0755 folder: a real permission error."""
    base = Path(tempfile.mkdtemp(prefix="hpclab-mri-perm-", dir="/tmp"))
    try:
        base.chmod(0o755)
        mri_data.write_series(np.asarray(small.dataobj), small.affine, base / "dicom")
        for p in [base / "dicom", *(base / "dicom").iterdir()]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        (base / "locked").mkdir(mode=0o755)
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m", "hpclab",
               "mri", "convert", str(base / "dicom"), str(base / "locked")]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HOME": "/tmp"})
        assert proc.returncode == 1, proc.stderr
        assert f"output folder: cannot write in {base / 'locked'}: Permission denied" in proc.stderr
        assert list((base / "locked").iterdir()) == []
    finally:
        shutil.rmtree(base)


def test_siemens_dti_mosaic_gives_4d_nifti_bvals_and_bvecs(tmp_path):
    src = tmp_path / "dti"
    src.mkdir()
    for f in mri_data.SIEMENS_DTI:
        shutil.copy(f, src)
    (series,) = convert(src, tmp_path / "out")
    img = series.load()
    assert img.shape == (36, 36, 48, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nibabel: "DICOM readers are highly experimental"
        from nibabel.nicom import dicomwrappers

        wrappers = [dicomwrappers.wrapper_from_file(f) for f in mri_data.SIEMENS_DTI]
    bvals = np.loadtxt(series.bval)
    bvecs = np.loadtxt(series.bvec)
    np.testing.assert_allclose(bvals, [w.b_value for w in wrappers])
    assert bvecs.shape == (3, 2)
    np.testing.assert_allclose(np.abs(bvecs.T), np.abs([np.asarray(w.b_vector, float) for w in wrappers]), atol=1e-4)
    # geometry as read independently by nibabel from the Siemens CSA header of the first file
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ wrappers[0].affine
    got = nib.as_closest_canonical(img.slicer[..., 0]).affine
    want = nib.as_closest_canonical(nib.Nifti1Image(np.zeros(wrappers[0].image_shape, np.float32), ras)).affine
    np.testing.assert_allclose(got, want, atol=1e-3)
    md = series.metadata
    assert md["n_volumes"] == "2" and md["manufacturer"] == "Siemens" and md["bval"] == series.bval.name


def test_pydicom_mr_small_single_slice(tmp_path):
    src = tmp_path / "mr"
    src.mkdir()
    shutil.copy(get_testdata_file("MR_small.dcm"), src / "MR_small.dcm")
    assert is_dicom(src / "MR_small.dcm")
    (series,) = convert(src, tmp_path / "out")
    ds = pydicom.dcmread(src / "MR_small.dcm")
    data = np.asarray(series.load().dataobj)
    assert data.shape[:2] == (64, 64) and series.metadata["n_slices"] == "1"
    assert sorted(data.ravel().tolist()) == sorted(ds.pixel_array.astype(float).ravel().tolist())
