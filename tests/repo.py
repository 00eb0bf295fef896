"""Where the source checkout is, for tests that read its files (Dockerfile, docs, bench/)."""

import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def tracked(pattern: str) -> list[Path]:
    """The checkout's files matching ``pattern`` that git tracks or would (not ignored ones)."""
    out = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", pattern],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [REPO_ROOT / name for name in out.splitlines() if (REPO_ROOT / name).is_file()]
