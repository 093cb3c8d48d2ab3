"""Quality checks of one processed T1: does the brain mask look like an adult brain, are tissues plausible.

Brain extraction fails quietly on real heads (scalp kept, cortex lost, a field of view that cuts the
brain), and deepbet returns a brain-sized mask even on a phantom or scrambled pixels; these checks make
it speak up. Those that say "this is not a brain" (mask volume, field of view, pieces, CSF majority, no
white matter, no edge at the boundary, head-to-mask geometry; measures in :mod:`.brain_shape`) fail the
subject; the others warn. Each check has a value, a status (``ok``, ``warning``,
``failed``) and a one-line reason; the report's status is the worst of them. ``process`` writes them
to the segstats file, ``cohort`` to its table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from .brain_shape import (
    Coarse,
    boundary_contrast,
    coarse,
    face_contacts,
    head_geometry,
    piece_volumes_ml,
)

#: Adult brain mask volume (mL, cerebrum + cerebellum + brainstem): outside -> warning. Published
#: intracranial/brain volumes of adults lie within about 1,000-1,900 mL; the margins allow for
#: children, atrophy and masks that stop at different levels of the brainstem.
ADULT_BRAIN_ML = (850.0, 2100.0)
#: Outside this, the mask is not a brain (whole head, a ring of scalp, a fragment): failed.
PLAUSIBLE_BRAIN_ML = (400.0, 3000.0)
#: Tissue fractions within the mask (CSF, GM, WM): outside -> warning.
TISSUE_FRACTIONS = {"CSF": (0.03, 0.40), "GM": (0.25, 0.65), "WM": (0.20, 0.60)}
#: Not a brain: CSF the majority of the mask, or (almost) no white matter. Real heads: CSF 16-36 %,
#: WM 23-42 % (docs/mri.md, "What is not a brain").
MAX_CSF_FRACTION = 0.50
MIN_WM_FRACTION = 0.10
#: White-matter mean / standard deviation below this: too noisy (or the WM class is not WM).
MIN_WM_SNR = 4.0
#: Share of the mask outside its largest piece above this: not one brain.
MAX_OUTSIDE_LARGEST = 0.05
#: Kolmogorov-Smirnov distance between 6 mm shells inside and outside the mask below this: no edge
#: there (real heads 0.16-0.70, scrambled pixels 0.03-0.08).
MIN_BOUNDARY_CONTRAST = 0.10
#: A whole head's brain is at most this share of the head's volume (real heads 0.25-0.46, phantoms 0.68-0.98) ...
MAX_MASK_TO_HEAD = 0.60
#: ... and lies inside the head (real heads 1.00, scrambled pixels 0.41-0.52, a bottle phantom 0.70).
MIN_INSIDE_HEAD = 0.90
#: The mask touching an edge of the volume over a band this wide (mm) or wider: the field of view cuts
#: the brain. A mask's own last slice is 5-34 mm wide; 10 mm into the brain, 55-95 mm.
FOV_CUT_MM = 40.0

STATUSES = ("ok", "warning", "failed")


@dataclass(frozen=True)
class Check:
    """One quality check: its name, measured value, status and a sentence saying why."""

    name: str
    value: float
    status: str
    message: str


@dataclass(frozen=True)
class QCReport:
    """All checks of one subject; ``status`` is the worst."""

    checks: tuple[Check, ...]

    @property
    def status(self) -> str:
        """ "ok", "warning" or "failed": the worst status of the checks."""
        return max((c.status for c in self.checks), key=STATUSES.index, default="ok")

    @property
    def reasons(self) -> str:
        """The messages of the checks that are not ok, joined by "; " ("" when all are ok)."""
        return "; ".join(c.message for c in self.checks if c.status != "ok")

    def as_dict(self) -> dict[str, dict[str, object]]:
        """name -> {value, status, message}, for JSON summaries."""
        return {c.name: {k: v for k, v in asdict(c).items() if k != "name"} for c in self.checks}

    def __getitem__(self, name: str) -> Check:
        for check in self.checks:
            if check.name == name:
                return check
        raise KeyError(name)


def _range_check(
    name: str, value: float, warn: tuple[float, float], fail: tuple[float, float] | None, what: str, unit: str
) -> Check:
    if fail is not None and not fail[0] <= value <= fail[1]:
        return Check(
            name, value, "failed", f"{what} {value:.0f} {unit} is not a brain's (expected {warn[0]:.0f}-{warn[1]:.0f} {unit})"
        )
    if not warn[0] <= value <= warn[1]:
        return Check(
            name, value, "warning", f"{what} {value:.0f} {unit} is outside the adult range {warn[0]:.0f}-{warn[1]:.0f} {unit}"
        )
    return Check(name, value, "ok", f"{what} {value:.0f} {unit}")


def _fov_check(mask: np.ndarray, zooms: Sequence[float], affine: np.ndarray | None) -> Check:
    contacts = face_contacts(mask, zooms, affine)
    if not contacts:
        return Check("field_of_view", 0.0, "ok", "brain mask clear of the image's edges")
    widest = contacts[0]
    where = f"the brain mask touches the image's {widest.face} edge over a band of {widest.band_mm:.0f} mm"
    if widest.band_mm >= FOV_CUT_MM:
        return Check(
            "field_of_view",
            widest.band_mm,
            "failed",
            f"the field of view cuts the brain: {where} (a cut brain's volumes are wrong; limit {FOV_CUT_MM:.0f} mm)",
        )
    return Check("field_of_view", widest.band_mm, "ok", f"{where} (only the mask's last few mm: brainstem or vertex)")


def _pieces_check(mask: np.ndarray, zooms: Sequence[float] | np.ndarray) -> Check:
    volumes = piece_volumes_ml(mask, zooms)
    outside = float(1.0 - volumes[0] / volumes.sum()) if volumes.size else 0.0
    large = int(np.count_nonzero(volumes >= 1.0))
    if outside > MAX_OUTSIDE_LARGEST:
        return Check(
            "mask_pieces",
            outside,
            "failed",
            f"the brain mask falls into {large} pieces of 1 mL or more; the largest holds only "
            f"{100 * (1 - outside):.0f} % of it (a brain is one piece)",
        )
    return Check(
        "mask_pieces",
        outside,
        "ok",
        "brain mask in one piece" if volumes.size <= 1 else f"brain mask in one main piece ({100 * (1 - outside):.1f} % of it)",
    )


def _tissue_checks(mask: np.ndarray, labels: np.ndarray) -> list[Check]:
    in_mask = labels[mask]
    counted = max(int(np.count_nonzero(in_mask)), 1)
    checks = []
    for label, name in ((1, "CSF"), (2, "GM"), (3, "WM")):
        fraction = float(np.count_nonzero(in_mask == label)) / counted
        low, high = TISSUE_FRACTIONS[name]
        text = f"{name} is {100 * fraction:.0f} % of the brain"
        if name == "CSF" and fraction > MAX_CSF_FRACTION:
            checks.append(
                Check(
                    "csf_fraction",
                    fraction,
                    "failed",
                    f"{text}: a brain is not mostly fluid (limit {100 * MAX_CSF_FRACTION:.0f} %)",
                )
            )
        elif name == "WM" and fraction < MIN_WM_FRACTION:
            checks.append(
                Check(
                    "wm_fraction",
                    fraction,
                    "failed",
                    f"{text}: a brain has white matter (at least {100 * MIN_WM_FRACTION:.0f} %)",
                )
            )
        else:
            ok = low <= fraction <= high
            checks.append(
                Check(
                    f"{name.lower()}_fraction",
                    fraction,
                    "ok" if ok else "warning",
                    text + ("" if ok else f" (expected {100 * low:.0f}-{100 * high:.0f} %)"),
                )
            )
    return checks


def _contrast_check(grid: Coarse) -> Check:
    contrast = boundary_contrast(grid)
    if contrast < MIN_BOUNDARY_CONTRAST:
        return Check(
            "boundary_contrast",
            contrast,
            "failed",
            f"the image is alike on both sides of the mask's boundary (contrast {contrast:.2f}, "
            f"expected at least {MIN_BOUNDARY_CONTRAST:.2f}): no brain edge there",
        )
    return Check("boundary_contrast", contrast, "ok", f"contrast across the mask's boundary {contrast:.2f}")


def _geometry_check(grid: Coarse) -> Check:
    geometry = head_geometry(grid)
    share, inside = geometry.mask_to_head, geometry.inside_head
    text = f"the brain mask is {100 * share:.0f} % of the head and {100 * inside:.0f} % of it lies inside the head"
    if share > MAX_MASK_TO_HEAD or inside < MIN_INSIDE_HEAD:
        return Check(
            "head_geometry",
            share,
            "failed",
            f"{text} (a brain is at most {100 * MAX_MASK_TO_HEAD:.0f} % of a head, with scalp and "
            "skull around it): not a head, or the mask is not on the brain",
        )
    return Check("head_geometry", share, "ok", text)


def quality_checks(
    data: np.ndarray,
    mask: np.ndarray,
    labels: np.ndarray,
    zooms: Sequence[float],
    *,
    interpolated_slices: bool = False,
    affine: np.ndarray | None = None,
    image: np.ndarray | None = None,
    whole_head: bool = True,
) -> QCReport:
    """Check a processed T1: is the mask a brain, and are its tissues plausible.

    ``data`` is the bias-corrected image, ``labels`` 1 CSF, 2 GM, 3 WM. ``image`` (the image as
    acquired, default ``data``) is what the boundary contrast and head geometry are measured on;
    ``affine`` names the image's edges (superior, left, ...). ``whole_head=False`` (input that was
    already skull-stripped) skips the head geometry: there is no head around the mask.
    """
    voxel_ml = float(np.prod([float(z) for z in zooms[:3]])) / 1000.0
    mask = np.asarray(mask, dtype=bool)
    checks = [
        _range_check(
            "brain_volume_ml",
            float(np.count_nonzero(mask) * voxel_ml),
            ADULT_BRAIN_ML,
            PLAUSIBLE_BRAIN_ML,
            "brain mask volume",
            "mL",
        ),
        _fov_check(mask, zooms, affine),
    ]
    grid = coarse(data if image is None else image, mask, zooms) if mask.any() else None
    if grid is not None:
        checks.append(_pieces_check(grid.mask, grid.zooms))
    checks += _tissue_checks(mask, labels)
    wm = data[(labels == 3) & mask]
    snr = float(wm.mean() / wm.std()) if wm.size > 1 and wm.std() > 0 else float("inf")
    checks.append(
        Check(
            "wm_snr",
            snr,
            "ok" if snr >= MIN_WM_SNR else "warning",
            f"white-matter SNR {snr:.1f}" + ("" if snr >= MIN_WM_SNR else f" (below {MIN_WM_SNR:g})"),
        )
    )
    if grid is not None:
        checks.append(_contrast_check(grid))
        if whole_head:
            checks.append(_geometry_check(grid))
    if interpolated_slices:
        checks.append(
            Check(
                "interpolated_slices",
                1.0,
                "warning",
                "the series has missing slices: dcm2niix's _Eq_ file fills them by interpolation",
            )
        )
    return QCReport(tuple(checks))
