"""MRI pipeline: DICOM -> NIfTI + metadata (dcm2niix), brain mask / N4 / tissue labels, FreeSurfer-style
segmentation statistics, views, and cohorts run in parallel (joblib) or as a SLURM job array.

    from hpclab import mri
    series = mri.convert("dicom/", "nifti/")
    result = mri.process(series[0].nifti, "processed/")
    result.stats.table                      # pandas DataFrame, mri_segstats columns
    mri.plot_ortho(result.outputs["n4"], result.outputs["tissue"])

Names are imported on first use, so ``hpclab`` commands that do not touch MRI never load numpy.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "cohort": ["CohortResult", "SlurmCohort", "find_subjects", "process_cohort", "submit_cohort", "summarize"],
    "conversion": ["Series", "convert", "nifti_stem", "read_series"],
    "errors": ["ConversionError", "ConversionWarning", "MRIError", "ProcessingError"],
    "lut": ["ASEG_LUT", "TISSUE_LUT", "LutEntry", "load_lut"],
    "metadata": ["read_metadata"],
    "processing": ["ProcessResult", "output_paths", "process"],
    "stats": ["SegStats", "read_segstats", "segstats"],
    "brain_extraction": ["brain_mask", "is_skull_stripped"],
    "qc": ["QCReport", "quality_checks"],
    "tissue": ["bias_correct", "dice", "segment_tissue"],
    "views": ["plot_montage", "plot_ortho", "plot_volumes", "save_figure"],
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'hpclab.mri' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
