"""A small Dockerfile reader for the deployment tests: stages, instructions, pip installs."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field

from repo import REPO_ROOT

DOCKERFILE = REPO_ROOT / "Dockerfile"


@dataclass
class Stage:
    """One ``FROM`` stage: its instructions in order, as (KEYWORD, argument text)."""

    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        return [text for key, text in self.instructions if key == keyword]

    def env(self) -> dict[str, str]:
        """``ENV a=b c=d`` pairs (the only form this Dockerfile uses)."""
        pairs: dict[str, str] = {}
        for text in self.args("ENV"):
            for token in shlex.split(text):
                name, _, value = token.partition("=")
                pairs[name] = value
        return pairs


def parse_dockerfile(text: str) -> list[Stage]:
    """Logical instructions (continuations joined, comments dropped), grouped by stage."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "Dockerfile ends inside a line continuation"
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            stages.append(Stage(base=rest.split()[0]))
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].instructions.append((keyword, rest))
    return stages


def exec_form(text: str) -> list[str]:
    """The JSON array of an exec-form instruction (CMD, ENTRYPOINT, VOLUME...)."""
    value = json.loads(text)
    assert isinstance(value, list), f"not exec form: {text}"
    return value


def pip_installs(stages: list[Stage]) -> list[list[str]]:
    """Every ``pip install`` command line in every RUN, as tokens after ``install``."""
    found = []
    for stage in stages:
        for run in stage.args("RUN"):
            for command in re.split(r"&&|;", run):
                tokens = shlex.split(command)
                if len(tokens) > 1 and tokens[0].endswith("pip") and tokens[1] == "install":
                    found.append(tokens[2:])
    return found


def prodcat_env(env: dict[str, str]) -> dict[str, str]:
    """The ``PRODCAT_*`` variables of an environment, as strings."""
    return {k: str(v) for k, v in env.items() if k.startswith("PRODCAT_")}
