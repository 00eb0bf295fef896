"""Data files as published -> product events + labels, for ``prodcat publish`` and training."""

from prodcat.sources.formats import FORMATS, SourceError, normalise_title, taxonomy_levels
from prodcat.sources.reader import SourceRow, detect_format, media_type, read_source

__all__ = [
    "FORMATS",
    "SourceError",
    "SourceRow",
    "detect_format",
    "media_type",
    "normalise_title",
    "read_source",
    "taxonomy_levels",
]
