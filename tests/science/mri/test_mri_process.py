"""process(): brain mask, N4, CSF/GM/WM labels on the MNI template (Dice against its own GM/WM maps), outputs."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from hpclab.mri import ProcessingError, dice, output_paths, process, read_segstats
from hpclab.mri.tissue import segment_tissue

from support import mri_data

GM_WM_DICE = 0.85


@pytest.fixture(scope="module")
def reference():
    return mri_data.probability_map("gm") > 0.5, mri_data.probability_map("wm") > 0.5


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("clean")
    return process(mri_data.T1_FILE, out), out


def _labels(result) -> np.ndarray:
    return np.asarray(nib.load(result.outputs["tissue"]).dataobj)


def test_outputs_have_the_documented_names_and_the_input_grid(clean_run):
    result, out = clean_run
    stem = "mni_icbm152_t1_tal_nlin_sym_09a_converted"
    assert result.outputs == output_paths(mri_data.T1_FILE, out)
    assert {p.name for p in result.outputs.values()} == {
        f"{stem}_brainmask.nii.gz", f"{stem}_n4.nii.gz", f"{stem}_tissue.nii.gz", f"{stem}_segstats.txt"}
    source = mri_data.template_t1()
    for role in ("brainmask", "tissue", "n4"):
        img = nib.load(result.outputs[role])
        assert img.shape == source.shape
        np.testing.assert_array_equal(img.affine, source.affine)
    tissue = _labels(result)
    assert tissue.dtype == np.uint8 and set(np.unique(tissue)) == {0, 1, 2, 3}
    mask = np.asarray(nib.load(result.outputs["brainmask"]).dataobj).astype(bool)
    np.testing.assert_array_equal(tissue > 0, mask)


def test_segstats_file_counts_the_tissue_labels(clean_run):
    result, _ = clean_run
    table = read_segstats(result.outputs["segstats"])
    tissue = _labels(result)
    assert table["StructName"].tolist() == ["CSF", "Gray-Matter", "White-Matter"]
    assert table["NVoxels"].tolist() == [int((tissue == k).sum()) for k in (1, 2, 3)]
    means = table["normMean"].tolist()
    assert means[0] < means[1] < means[2]  # T1: CSF darker than GM darker than WM


def test_gm_and_wm_dice_on_the_template(clean_run, reference):
    result, _ = clean_run
    gm, wm = reference
    tissue = _labels(result)
    assert dice(tissue == 2, gm) >= GM_WM_DICE
    assert dice(tissue == 3, wm) >= GM_WM_DICE


def test_gm_and_wm_dice_with_a_bias_field(tmp_path, reference):
    gm, wm = reference
    img = mri_data.template_t1()
    data = np.asarray(img.dataobj, dtype=np.float32) * mri_data.bias_field(img.shape)
    nib.save(nib.Nifti1Image(data, img.affine), tmp_path / "biased.nii.gz")
    corrected = process(tmp_path / "biased.nii.gz", tmp_path / "n4")
    tissue = _labels(corrected)
    tissue_raw, _ = segment_tissue(data, data > 0)  # the same k-means without N4
    assert dice(tissue == 2, gm) >= GM_WM_DICE
    assert dice(tissue == 3, wm) >= GM_WM_DICE
    # the field really hurts without N4, so the check above measures the correction
    assert dice(tissue_raw == 3, wm) < dice(tissue == 3, wm) - 0.02


def test_process_refuses_to_overwrite_and_rejects_4d(tmp_path):
    small = mri_data.downsample(mri_data.template_t1(), 3)
    nib.save(small, tmp_path / "t1.nii.gz")
    process(tmp_path / "t1.nii.gz", tmp_path / "out")
    before = (tmp_path / "out" / "t1_tissue.nii.gz").read_bytes()
    with pytest.raises(ProcessingError, match=r"already holds t1_brainmask\.nii\.gz.*nothing was changed"):
        process(tmp_path / "t1.nii.gz", tmp_path / "out")
    assert (tmp_path / "out" / "t1_tissue.nii.gz").read_bytes() == before
    four_d = nib.Nifti1Image(np.zeros((5, 5, 5, 3), np.float32), np.eye(4))
    nib.save(four_d, tmp_path / "bold.nii.gz")
    with pytest.raises(ProcessingError, match=r"bold\.nii\.gz has shape \(5, 5, 5, 3\)"):
        process(tmp_path / "bold.nii.gz", tmp_path / "out4")
    with pytest.raises(FileNotFoundError, match="nope.nii.gz does not exist"):
        process(tmp_path / "nope.nii.gz", tmp_path / "out5")
