"""segstats: mri_segstats' numbers (checked against a per-label reference) and its file format, line by line."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from hpclab.mri import ASEG_LUT, TISSUE_LUT, load_lut, read_segstats, segstats
from hpclab.mri.stats import format_segstats

# Rows of the seed's aseg.stats table laid out by mri_segstats' printf ('%3d %3d  %8d %10.1f  %-30s ' then
# five '%10.4f '), written out here by hand as fixed text.
SEED_ROWS = "\n".join([
    '# ColHeaders  Index SegId NVoxels Volume_mm3 StructName normMean normStdDev normMin normMax normRange  ',
    '  1   4      7424     7766.0  Left-Lateral-Ventricle            26.6416    12.7145     8.0000    88.0000    80.0000 ',  # noqa: E501
    '  2   5       219      279.7  Left-Inf-Lat-Vent                 48.2466    13.1143    16.0000    77.0000    61.0000 ',  # noqa: E501
    ' 33  72         0        0.0  5th-Ventricle                      0.0000     0.0000     0.0000     0.0000     0.0000 ',  # noqa: E501
    ' 45 255       907      853.0  CC_Anterior                      102.6648    12.9003    28.0000   124.0000    96.0000 ',  # noqa: E501
]) + "\n"


@pytest.fixture
def volumes(tmp_path):
    rng = np.random.default_rng(7)
    labels = rng.choice([0, 4, 5, 17, 255], size=(20, 24, 18), p=[0.5, 0.2, 0.15, 0.149, 0.001]).astype(np.int16)
    labels[0, 0, 0] = 255  # at least one voxel
    intensity = rng.normal(80, 15, labels.shape).astype(np.float32)
    affine = np.diag([0.9, 1.1, 1.3, 1.0])
    seg_path, in_path = tmp_path / "aseg.nii.gz", tmp_path / "norm.nii.gz"
    nib.save(nib.Nifti1Image(labels, affine), seg_path)
    nib.save(nib.Nifti1Image(intensity, affine), in_path)
    return labels, intensity, seg_path, in_path


def test_numbers_match_a_per_label_reference(volumes):
    labels, intensity, seg_path, in_path = volumes
    stats = segstats(seg_path, in_path, "aseg")
    voxel_volume = 0.9 * 1.1 * 1.3
    assert stats.voxel_volume == pytest.approx(voxel_volume)
    assert stats.table["SegId"].tolist() == [4, 5, 17, 255]  # 0 excluded, sorted, only present ids
    for row in stats.table.itertuples(index=False):
        values = intensity[labels == row.SegId].astype(np.float64)
        assert row.NVoxels == values.size
        assert row.Volume_mm3 == pytest.approx(values.size * voxel_volume)
        assert row.StructName == ASEG_LUT[row.SegId].name
        assert row.normMean == pytest.approx(values.mean(), rel=1e-9)
        assert row.normStdDev == pytest.approx(values.std(ddof=1) if values.size > 1 else 0.0, rel=1e-9, abs=1e-12)
        assert (row.normMin, row.normMax) == (values.min(), values.max())
        assert row.normRange == pytest.approx(values.max() - values.min())
    assert list(stats.table["Index"]) == [1, 2, 3, 4]


def test_file_format_is_mri_segstats(volumes, tmp_path):
    _, _, seg_path, in_path = volumes
    stats = segstats(seg_path, in_path, "aseg")
    text = stats.to_text()
    lines = text.splitlines()
    assert lines[0] == "# Title Segmentation Statistics "
    assert f"# SegVolFile {seg_path} " in lines and f"# InVolFile  {in_path} " in lines
    assert "# ExcludeSegId 0 " in lines and "# Only reporting non-empty segmentations" in lines
    assert "# VoxelVolume_mm3 1.287 " in lines
    assert "# TableCol  6 ColHeader normMean " in lines and "# TableCol  7 FieldName Itensity normStdDev" in lines
    assert "# NRows 4 " in lines and "# NTableCols 10 " in lines
    header = ("# ColHeaders  Index SegId NVoxels Volume_mm3 StructName normMean normStdDev normMin normMax "
              "normRange  ")
    rows = lines[lines.index(header) + 1:]
    assert len(rows) == 4
    for line, row in zip(rows, stats.table.itertuples(index=False)):
        expected = "%3d %3d  %8d %10.1f  %-30s %10.4f %10.4f %10.4f %10.4f %10.4f " % (
            row.Index, row.SegId, row.NVoxels, row.Volume_mm3, row.StructName, row.normMean, row.normStdDev,
            row.normMin, row.normMax, row.normRange)
        assert line == expected
    assert rows[0].startswith("  1   4  ")
    out = stats.write(tmp_path / "aseg.stats")
    back = read_segstats(out)
    pd.testing.assert_series_equal(back["NVoxels"], stats.table["NVoxels"], check_names=False)
    np.testing.assert_allclose(back["normMean"], stats.table["normMean"], atol=5e-5)


def test_freesurfer_layout_is_reproduced_byte_for_byte(tmp_path):
    """Rows built from the seed's numbers print exactly as FreeSurfer printed them."""
    seed = read_segstats(_write(tmp_path / "seed.stats", SEED_ROWS))
    table = seed.copy()
    from hpclab.mri import SegStats

    text = format_segstats(SegStats(table=table, voxel_volume=1.0, excluded=(), non_empty_only=False))
    ours = text.splitlines()[-5:]
    theirs = SEED_ROWS.splitlines()
    assert ours == theirs


def test_no_lut_gives_seg_names_and_empty_lists_lut_labels(volumes):
    labels, intensity, _, _ = volumes
    plain = segstats(labels, intensity, voxel_size=(1, 1, 1))
    assert plain.table["StructName"].tolist() == ["Seg0004", "Seg0005", "Seg0017", "Seg0255"]
    full = segstats(labels, intensity, "aseg", voxel_size=(1, 1, 1), empty=True)
    assert len(full.table) == len(ASEG_LUT) - 1  # every aseg label but 0
    row = full.table[full.table["SegId"] == 72].iloc[0]
    assert (row.StructName, row.NVoxels, row.Volume_mm3, row.normMean) == ("5th-Ventricle", 0, 0.0, 0.0)
    assert "# Only reporting non-empty segmentations" not in full.to_text()


def test_lut_file_and_tissue_table(tmp_path):
    lut_file = tmp_path / "MyLUT.txt"
    lut_file.write_text("#No. Label Name: R G B A\n\n  0  Unknown 0 0 0 0\n  7  Blob 10 20 30 0\n")
    assert load_lut(lut_file)[7].name == "Blob"
    labels = np.zeros((4, 4, 4), np.uint8)
    labels[:2] = 7
    stats = segstats(labels, None, lut_file, voxel_size=(2, 2, 2))
    assert stats.table[["SegId", "NVoxels", "Volume_mm3", "StructName"]].values.tolist() == [[7, 32, 256.0, "Blob"]]
    assert "normMean" not in stats.table.columns and f"# ColorTable {lut_file} " in stats.to_text()
    assert stats.volume("Blob") == 256.0 and stats.volume(7) == 256.0
    assert TISSUE_LUT[2].name == "Gray-Matter"
    (tmp_path / "bad.txt").write_text("3 Thing red green blue\n")
    with pytest.raises(ValueError, match=r"bad\.txt:1: not a colour-table row"):
        load_lut(tmp_path / "bad.txt")


def test_bad_inputs_name_the_files(volumes, tmp_path):
    _, _, seg_path, _ = volumes
    other = tmp_path / "other.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((3, 3, 3), np.float32), np.eye(4)), other)
    with pytest.raises(ValueError, match=rf"intensity {other} has shape \(3, 3, 3\), labels {seg_path}"):
        segstats(seg_path, other)
    with pytest.raises(FileNotFoundError, match="labels file .*missing.nii.gz does not exist"):
        segstats(tmp_path / "missing.nii.gz")
    with pytest.raises(ValueError, match="non-integer"):
        segstats(np.full((2, 2, 2), 1.5), voxel_size=(1, 1, 1))


def test_full_size_volume_with_many_labels():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 40, size=(197, 233, 189)).astype(np.uint8)
    intensity = rng.normal(100, 10, labels.shape).astype(np.float32)
    stats = segstats(labels, intensity, voxel_size=(1, 1, 1))
    counts = np.bincount(labels.ravel(), minlength=40)
    assert stats.table["NVoxels"].tolist() == counts[1:].tolist()
    sums = np.bincount(labels.ravel(), weights=intensity.ravel().astype(np.float64), minlength=40)
    np.testing.assert_allclose(stats.table["normMean"], sums[1:] / counts[1:], rtol=1e-9)


def _write(path, text):
    path.write_text(text)
    return path
