"""Every reference in the docs resolves inside the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from repo import REPO_ROOT, tracked

TOP_LEVEL = ("stream_app", "plugins", "training", "tests", "bench", "deploy", "docs", "schemas")
LINK = re.compile(r"\]\(([^)\s]+)\)")
CODE_PATH = re.compile(r"`((?:" + "|".join(TOP_LEVEL) + r")/[\w./-]+)`")


PAGES = [p for p in tracked("*.md") if ".pytest_cache" not in p.parts]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO_ROOT).as_posix())
def test_links_and_paths_resolve(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    broken = []
    for target in LINK.findall(text):
        if target.startswith(("http://", "https://", "mailto:", "#")):
            continue
        path = target.split("#")[0]
        if path and not (page.parent / path).exists():
            broken.append(target)
    for path in CODE_PATH.findall(text):
        if not (REPO_ROOT / path.rstrip("/").split("#")[0]).exists():
            broken.append(path)
    assert broken == []


def test_nothing_cites_files_outside_the_repository() -> None:
    citing = [
        path.relative_to(REPO_ROOT).as_posix()
        for pattern in ("*.py", "*.md", "*.sh", "*.toml", "*.yml", "Dockerfile")
        for path in tracked(pattern)
        if "DESIGN.md" in path.read_text(encoding="utf-8", errors="replace")
        and path.name != "test_docs.py"
    ]
    assert citing == []


def test_gpu_instructions_are_a_users_steps() -> None:
    """No workplace jargon: a user has a machine with a GPU and copies a folder there."""
    for path in (REPO_ROOT / "bench" / "gpu.sh", REPO_ROOT / "docs" / "benchmarks.md"):
        text = path.read_text(encoding="utf-8").lower()
        assert "device tool" not in text and "carry" not in text, path.name
    steps = (REPO_ROOT / "bench" / "gpu.sh").read_text(encoding="utf-8")
    assert "NVIDIA GPU" in steps and "bench/gpu.sh run" in steps and "copy" in steps
