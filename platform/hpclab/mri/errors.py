"""Exceptions and warnings of the MRI pipeline; each message names the offending file or folder."""

from __future__ import annotations


class MRIError(Exception):
    """Base class for errors of ``hpclab.mri``."""


class ConversionError(MRIError):
    """DICOM -> NIfTI conversion could not be done (bad input, unwritable output, name clash)."""


class ProcessingError(MRIError):
    """A volume could not be processed (wrong dimensionality, empty brain mask, ...)."""


class ConversionWarning(UserWarning):
    """Conversion went ahead, but something needs a look (skipped files, slice gaps, ...)."""
