"""A small Dockerfile reader for the deploy tests (no Docker engine runs on these machines).

Handles what our Dockerfiles use: comments, backslash line continuations, global ARGs before
the first FROM, `FROM image AS name` stages, and exec (JSON) or shell forms. It does not
expand variables or evaluate heredocs.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

_FROM = re.compile(r"^(?:--platform=\S+\s+)?(?P<image>\S+)(?:\s+AS\s+(?P<name>\S+))?$", re.I)


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: RUN, COPY, ...
    args: str  # the rest of the logical line, continuations joined with a space
    line: int  # 1-based line where the instruction starts

    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form instruction, or None for the shell form."""
        text = self.args.strip()
        if not text.startswith("["):
            return None
        value = json.loads(text)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"line {self.line}: exec form must be a JSON array of strings")
        return value

    def flags(self) -> dict[str, str]:
        """Leading --flag=value options (COPY --from=builder, COPY --chown=...)."""
        out: dict[str, str] = {}
        for token in shlex.split(self.args):
            if not token.startswith("--"):
                break
            key, _, value = token[2:].partition("=")
            out[key] = value
        return out

    def operands(self) -> list[str]:
        """Arguments after the leading --flags (shell-split), or the exec-form array."""
        form = self.exec_form()
        if form is not None:
            return form
        tokens = shlex.split(self.args)
        first = next((i for i, t in enumerate(tokens) if not t.startswith("--")), len(tokens))
        return tokens[first:]


@dataclass
class Stage:
    image: str
    name: str | None
    line: int
    instructions: list[Instruction] = field(default_factory=list)

    def of(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword.upper()]


@dataclass
class Dockerfile:
    global_args: list[Instruction]
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(f"no stage named {name!r}; stages: {[s.name for s in self.stages]}")

    @property
    def final(self) -> Stage:
        return self.stages[-1]


def logical_lines(text: str) -> list[tuple[int, str]]:
    """(start line, joined text) per instruction; comments and blank lines dropped.

    A comment line inside a continuation is skipped, as Docker does.
    """
    out: list[tuple[int, str]] = []
    parts: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not parts):
            continue
        if not parts:
            start = number
        if stripped.endswith("\\"):
            parts.append(stripped[:-1].strip())
            continue
        parts.append(stripped)
        joined = " ".join(p for p in parts if p)
        if joined:
            out.append((start, joined))
        parts = []
    if parts:
        raise ValueError(f"line {start}: file ends inside a line continuation")
    return out


def parse_dockerfile(text: str) -> Dockerfile:
    global_args: list[Instruction] = []
    stages: list[Stage] = []
    for line, content in logical_lines(text):
        keyword, _, rest = content.partition(" ")
        instruction = Instruction(keyword.upper(), rest.strip(), line)
        if instruction.keyword == "FROM":
            match = _FROM.match(instruction.args)
            if match is None:
                raise ValueError(f"line {line}: cannot read FROM {instruction.args!r}")
            stages.append(Stage(match["image"], match["name"], line))
        elif not stages:
            if instruction.keyword != "ARG":
                raise ValueError(f"line {line}: only ARG may come before the first FROM")
            global_args.append(instruction)
        else:
            stages[-1].instructions.append(instruction)
    if not stages:
        raise ValueError("no FROM instruction")
    return Dockerfile(global_args, stages)


def read_dockerfile(path: Path) -> Dockerfile:
    return parse_dockerfile(path.read_text())
