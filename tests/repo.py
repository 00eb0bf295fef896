"""Where the source checkout is, for tests that read its files (Dockerfile, docs, bench/)."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
