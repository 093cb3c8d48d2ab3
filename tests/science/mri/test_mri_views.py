"""Views: orthogonal slices and a montage with the segmentation overlaid, as PNG; plots stay apart from computation."""

from __future__ import annotations

import matplotlib.image
import nibabel as nib
import numpy as np
import pytest

from hpclab.mri import plot_montage, plot_ortho, save_figure, segment_tissue, segstats

from support import mri_data


@pytest.fixture(scope="module")
def volume_and_labels():
    img = mri_data.downsample(mri_data.template_t1(), 3)
    data = np.asarray(img.dataobj, dtype=np.float32)
    labels, _ = segment_tissue(data, data > 0)
    return img, nib.Nifti1Image(labels, img.affine)


def test_ortho_view_shows_the_labels_at_the_crossing_point(volume_and_labels, tmp_path):
    img, labels = volume_and_labels
    fig = plot_ortho(img, labels, coords=(30, 40, 25))
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == ["sagittal 30", "coronal 40", "axial 25"]
    seg = np.asarray(labels.dataobj)  # already RAS-ordered (template affine is diagonal, positive)
    for ax, axis, index in zip(axes, (0, 1, 2), (30, 40, 25)):
        base, overlay = ax.get_images()
        np.testing.assert_array_equal(base.get_array(), np.take(np.asarray(img.dataobj), index, axis=axis).T)
        shown = np.ma.filled(overlay.get_array(), 0)
        np.testing.assert_array_equal(shown, np.take(seg, index, axis=axis).T)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["CSF", "Gray-Matter", "White-Matter"]
    png = save_figure(fig, tmp_path / "ortho.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = matplotlib.image.imread(png)
    assert pixels.shape[:2] == (440, 1200)
    reddish = (pixels[..., 0] > pixels[..., 1] + 0.15) & (pixels[..., 0] > pixels[..., 2] + 0.15)
    assert reddish.sum() > 500  # grey matter overlay is drawn


def test_montage_spreads_slices_over_the_brain(volume_and_labels, tmp_path):
    img, labels = volume_and_labels
    fig = plot_montage(img, labels, n_slices=8, columns=4)
    titles = [ax.get_title() for ax in fig.axes if ax.get_images()]
    assert len(titles) == 8
    indices = [int(t.split("=")[1]) for t in titles]
    seg = np.asarray(labels.dataobj)
    present = np.flatnonzero(seg.any(axis=(0, 1)))
    assert indices == sorted(indices) and present[0] < indices[0] and indices[-1] < present[-1]
    assert all(seg[:, :, k].any() for k in indices)
    save_figure(fig, tmp_path / "montage.png")
    assert matplotlib.image.imread(tmp_path / "montage.png").shape[0] > 100


def test_views_without_labels_and_volume_bars(volume_and_labels):
    img, labels = volume_and_labels
    fig = plot_ortho(img)
    assert all(len(ax.get_images()) == 1 for ax in fig.axes)
    stats = segstats(labels, img, "tissue")
    ax = stats.plot()
    assert [t.get_text() for t in ax.get_yticklabels()] == ["CSF", "Gray-Matter", "White-Matter"]
    heights = [p.get_width() for p in ax.patches]
    np.testing.assert_allclose(heights, stats.table["Volume_mm3"] / 1000.0)
