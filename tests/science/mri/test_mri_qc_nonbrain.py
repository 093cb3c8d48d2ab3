"""Quality checks that fail what is not a brain: real public phantoms, a scrambled series and heads whose field
of view cuts the brain go through ``process`` (deepbet and all) and come out "failed" with their reason; every
real head stays "ok"; a cohort leaves failed subjects out of its group statistics unless asked.

The samples and where they come from: tests/science/mri/data/SOURCES.md. Each runs in 3-5 s."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from hpclab.mri import process, process_cohort
from hpclab.mri.brain_shape import face_contacts
from hpclab.mri.qc import FOV_CUT_MM, MAX_OUTSIDE_LARGEST, quality_checks
from support import mri_data

DATA = mri_data.DATA_DIR
HEADS = {**mri_data.REAL_HEADS, "uih-134917": DATA / "uih_134917_head_2p5mm.nii.gz", "mni152": mri_data.MNI152_HEAD}
#: sample -> (check that must fail, words its reason must hold)
NOT_BRAINS = {
    "ge_irspgr_fruit_phantom_2p5mm.nii.gz": ("head_geometry", "% of the head"),
    "xa30i_tfl_cylinder_phantom_2p5mm.nii.gz": ("head_geometry", "not a head"),
    "philips_dualecho_bottle_phantom_2p5mm.nii.gz": ("head_geometry", "not a head"),
    "ge_mprage_scrambled_2p5mm.nii.gz": ("csf_fraction", "not mostly fluid"),
}
CUT = {
    "uih_134917_cut_top_2p5mm.nii.gz": "superior",
    "uih_134917_cut_bottom_2p5mm.nii.gz": "inferior",
}


@pytest.mark.parametrize("name", sorted(HEADS))
def test_every_real_head_is_ok(name, tmp_path):
    result = process(HEADS[name], tmp_path, threads=1)
    assert result.qc.status == "ok", result.qc.reasons
    for check in ("field_of_view", "mask_pieces", "boundary_contrast", "head_geometry", "csf_fraction", "wm_fraction"):
        assert result.qc[check].status == "ok"


def test_a_brain_mask_split_in_two_fails_the_one_piece_check_with_its_reason():
    """FSL's MNI152 head with its published brain mask is one piece; the same mask with a 12 mm sagittal gap
    (its hemispheres apart, as a mask torn by a failed extraction) is two pieces and fails, saying so."""
    img = nib.load(mri_data.MNI152_HEAD)
    data = np.asarray(img.dataobj, dtype=np.float32)
    mask = np.asarray(nib.load(mri_data.MNI152_BRAIN_MASK).dataobj) > 0
    zooms = img.header.get_zooms()
    whole = quality_checks(data, mask, np.where(mask, 2, 0), zooms, affine=img.affine)
    assert whole["mask_pieces"].status == "ok" and whole["mask_pieces"].message == "brain mask in one piece"
    midline = int(round(np.argwhere(mask)[:, 0].mean()))
    split = mask.copy()
    split[midline - 3 : midline + 3] = False  # 6 voxels of 2 mm
    report = quality_checks(data, split, np.where(split, 2, 0), zooms, affine=img.affine)
    pieces = report["mask_pieces"]
    assert pieces.status == "failed" and report.status == "failed"
    assert pieces.value > MAX_OUTSIDE_LARGEST
    assert pieces.message.startswith("the brain mask falls into 2 pieces of 1 mL or more; the largest holds only")
    assert "(a brain is one piece)" in report.reasons


@pytest.mark.parametrize("name", sorted(NOT_BRAINS))
def test_phantoms_and_scrambled_series_fail_with_their_reason(name, tmp_path):
    check, words = NOT_BRAINS[name]
    result = process(DATA / name, tmp_path, threads=1)
    assert result.qc.status == "failed"
    assert result.qc[check].status == "failed" and words in result.qc[check].message, result.qc.reasons
    assert words in result.qc.reasons
    # the segstats file says so too, for whoever reads only the files
    assert "# QC status failed" in result.outputs["segstats"].read_text()


def test_the_scrambled_series_fails_each_not_a_brain_check(tmp_path):
    """Stripes of a de-identified GE MP-RAGE: no tissue classes, no edge, no head around the mask."""
    qc = process(DATA / "ge_mprage_scrambled_2p5mm.nii.gz", tmp_path, threads=1).qc
    failed = {c.name for c in qc.checks if c.status == "failed"}
    assert {"csf_fraction", "wm_fraction", "boundary_contrast", "head_geometry"} <= failed, qc.reasons
    assert "no brain edge there" in qc["boundary_contrast"].message


@pytest.mark.parametrize("name", sorted(CUT))
def test_a_field_of_view_that_cuts_the_brain_fails_naming_the_edge(name, tmp_path):
    qc = process(DATA / name, tmp_path, threads=1).qc
    assert qc.status == "failed"
    assert [c.name for c in qc.checks if c.status == "failed"] == ["field_of_view"], qc.reasons
    assert f"cuts the brain: the brain mask touches the image's {CUT[name]} edge" in qc.reasons
    assert qc["field_of_view"].value >= FOV_CUT_MM


def test_the_field_of_view_band_tells_a_grazed_edge_from_a_cut():
    """FSL's published brain mask: cropped at its own last slice (top or bottom) the band is narrow, cropped
    10 mm into the brain it is wider than the limit."""
    img = nib.load(mri_data.MNI152_BRAIN_MASK)
    mask, zooms = np.asarray(img.dataobj) > 0, img.header.get_zooms()
    rows = np.flatnonzero(mask.any(axis=(0, 1)))  # axis 2 runs inferior -> superior in this file
    step = round(10 / float(zooms[2]))
    for face, crop in (("superior", mask[:, :, : rows[-1] + 1]), ("inferior", mask[:, :, rows[0] :])):
        contacts = face_contacts(crop, zooms, img.affine)
        assert contacts[0].face == face and contacts[0].band_mm < FOV_CUT_MM
    for face, crop in (("superior", mask[:, :, : rows[-1] + 1 - step]), ("inferior", mask[:, :, rows[0] + step :])):
        contacts = face_contacts(crop, zooms, img.affine)
        assert contacts[0].face == face and contacts[0].band_mm > FOV_CUT_MM


@pytest.fixture(scope="module")
def mixed_cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed")
    (root / "sub-head.nii.gz").write_bytes(mri_data.REAL_HEADS["xa30"].read_bytes())
    (root / "sub-phantom.nii.gz").write_bytes((DATA / "xa30i_tfl_cylinder_phantom_2p5mm.nii.gz").read_bytes())
    out = tmp_path_factory.mktemp("out")
    return root, out, process_cohort(root, out, n_jobs=1, progress=False, views=False)


def test_cohort_leaves_failed_subjects_out_of_group_statistics_and_says_so(mixed_cohort):
    result = mixed_cohort[2]
    table = result.table.set_index("subject")
    assert table["status"].to_dict() == {"sub-head": "ok", "sub-phantom": "failed"}
    assert "not a head" in table.loc["sub-phantom", "qc"]
    stats = result.group_stats()
    assert stats.loc["brain_ml", "n"] == 1
    assert stats.loc["brain_ml", "mean"] == pytest.approx(table.loc["sub-head", "brain_ml"])
    note = result.group_note()
    assert "over 1 of 2 subjects" in note and "sub-phantom (quality checks failed)" in note
    assert "--include-failed" in note


def test_cohort_counts_failed_subjects_when_asked_and_keeps_their_status_when_done_before(mixed_cohort):
    root, out, _ = mixed_cohort
    from hpclab.mri.cohort import summarize

    both = summarize(out, include_failed=True)
    assert both.group_stats().loc["brain_ml", "n"] == 2
    assert "over 2 of 2 subjects" in both.group_note()
    again = process_cohort(root, out, n_jobs=1, progress=False, views=False)  # the head is "done before"
    table = again.table.set_index("subject")
    assert table.loc["sub-head", "status"] == "done before" and table.loc["sub-head", "qc_status"] == "ok"
    assert table.loc["sub-phantom", "qc_status"] == "failed"
    assert again.group_stats().loc["brain_ml", "n"] == 1


def test_cohort_command_prints_the_group_statistics_and_who_was_left_out(mixed_cohort, capsys):
    from hpclab.cli import main

    root, out, _ = mixed_cohort
    code = main(["mri", "cohort", str(root), str(out), "--summarize"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "group statistics over 1 of 2 subjects; left out as failed: sub-phantom" in printed
    assert "brain_ml" in printed.split("group statistics")[0]  # the table of means comes first
