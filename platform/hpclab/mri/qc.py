"""Quality checks of one processed T1: does the brain mask look like an adult brain, are tissues plausible.

Brain extraction fails quietly on real heads (scalp kept, cortex lost, a field of view that cuts the
brain); these checks make it speak up. Each check has a value, a status (``ok``, ``warning``,
``failed``) and a one-line reason; the report's status is the worst of them. ``process`` writes them
to the segstats file, ``cohort`` to its table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

#: Adult brain mask volume (mL, cerebrum + cerebellum + brainstem): outside -> warning. Published
#: intracranial/brain volumes of adults lie within about 1,000-1,900 mL; the margins allow for
#: children, atrophy and masks that stop at different levels of the brainstem.
ADULT_BRAIN_ML = (850.0, 2100.0)
#: Outside this, the mask is not a brain (whole head, a ring of scalp, a fragment): failed.
PLAUSIBLE_BRAIN_ML = (400.0, 3000.0)
#: Tissue fractions within the mask (CSF, GM, WM): outside -> warning.
TISSUE_FRACTIONS = {"CSF": (0.03, 0.40), "GM": (0.25, 0.65), "WM": (0.20, 0.60)}
#: Fraction of the mask's voxels allowed on the image's outer faces before it "touches the border".
BORDER_FRACTION = 0.002
#: White-matter mean / standard deviation below this: too noisy (or the WM class is not WM).
MIN_WM_SNR = 4.0

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
        """"ok", "warning" or "failed": the worst status of the checks."""
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


def _range_check(name: str, value: float, warn: tuple[float, float], fail: tuple[float, float] | None,
                 what: str, unit: str) -> Check:
    if fail is not None and not fail[0] <= value <= fail[1]:
        return Check(name, value, "failed", f"{what} {value:.0f} {unit} is not a brain's "
                                            f"(expected {warn[0]:.0f}-{warn[1]:.0f} {unit})")
    if not warn[0] <= value <= warn[1]:
        return Check(name, value, "warning", f"{what} {value:.0f} {unit} is outside the adult range "
                                             f"{warn[0]:.0f}-{warn[1]:.0f} {unit}")
    return Check(name, value, "ok", f"{what} {value:.0f} {unit}")


def border_fraction(mask: np.ndarray) -> float:
    """Fraction of the mask's voxels that lie on the volume's six outer faces."""
    total = int(np.count_nonzero(mask))
    if total == 0:
        return 0.0
    on_faces = np.zeros(mask.shape, dtype=bool)
    for axis in range(3):
        for index in (0, -1):
            picked = [slice(None)] * 3
            picked[axis] = index
            on_faces[tuple(picked)] = True
    return float(np.count_nonzero(mask & on_faces)) / total


def quality_checks(data: np.ndarray, mask: np.ndarray, labels: np.ndarray, zooms: Sequence[float], *,
                   interpolated_slices: bool = False) -> QCReport:
    """Check a processed T1: mask volume, border contact, tissue fractions (labels 1 CSF, 2 GM, 3 WM), WM SNR."""
    voxel_ml = float(np.prod([float(z) for z in zooms[:3]])) / 1000.0
    mask = np.asarray(mask, dtype=bool)
    checks = [_range_check("brain_volume_ml", float(np.count_nonzero(mask) * voxel_ml), ADULT_BRAIN_ML,
                           PLAUSIBLE_BRAIN_ML, "brain mask volume", "mL")]
    border = border_fraction(mask)
    checks.append(Check("mask_on_border", border, "warning" if border > BORDER_FRACTION else "ok",
                        f"{100 * border:.1f} % of the brain mask lies on the image border (field of view cuts "
                        "the brain, or the mask took in the neck)" if border > BORDER_FRACTION
                        else "brain mask clear of the image border"))
    in_mask = labels[mask]
    counted = max(int(np.count_nonzero(in_mask)), 1)
    for label, name in ((1, "CSF"), (2, "GM"), (3, "WM")):
        fraction = float(np.count_nonzero(in_mask == label)) / counted
        low, high = TISSUE_FRACTIONS[name]
        ok = low <= fraction <= high
        checks.append(Check(f"{name.lower()}_fraction", fraction, "ok" if ok else "warning",
                            f"{name} is {100 * fraction:.0f} % of the brain"
                            + ("" if ok else f" (expected {100 * low:.0f}-{100 * high:.0f} %)")))
    wm = data[(labels == 3) & mask]
    snr = float(wm.mean() / wm.std()) if wm.size > 1 and wm.std() > 0 else float("inf")
    checks.append(Check("wm_snr", snr, "ok" if snr >= MIN_WM_SNR else "warning",
                        f"white-matter SNR {snr:.1f}" + ("" if snr >= MIN_WM_SNR else f" (below {MIN_WM_SNR:g})")))
    if interpolated_slices:
        checks.append(Check("interpolated_slices", 1.0, "warning",
                            "the series has missing slices: dcm2niix's _Eq_ file fills them by interpolation"))
    return QCReport(tuple(checks))
