"""Terminal cell widths: a Chinese character takes two columns, so padding by characters
misaligns every column after a CJK label. Padding here counts cells (as rich does)."""

from __future__ import annotations

from rich.cells import cell_len


def pad_cells(text: str, width: int) -> str:
    """``text`` followed by spaces up to ``width`` terminal cells (never cut)."""
    return text + " " * max(0, width - cell_len(text))
