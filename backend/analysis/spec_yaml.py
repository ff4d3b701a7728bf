"""Reading an analysis file: YAML to plain data plus a map from key paths to line numbers.

Why separate: every validation message must say where in the file the problem is
(``file:line: key.path: message``). The file is read by the bounded reader shared with
campaign configs (`backend.yaml_reader`: size, aliases, nesting and duplicate keys), which
also records the line of every key and list item; a key path that does not exist (a missing
key) falls back to the line of its nearest existing parent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend.yaml_reader import LineMap, PathKey, read_yaml_file
from sbi_engine.config_model import dotted

__all__ = ["AnalysisError", "LineMap", "ParsedFile", "PathKey", "Problem", "dotted", "read_yaml"]


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with an analysis file: where (file, line, dotted key path) and what."""

    line: int
    path: str
    message: str
    file: str = ""

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.path}: {self.message}"


class AnalysisError(ValueError):
    """An analysis file that does not validate; `.problems` lists every problem found."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass(frozen=True)
class ParsedFile:
    """The file's bytes, its data (None when it did not parse) and the line map."""

    path: Path
    raw_bytes: bytes
    data: Any
    lines: LineMap
    problems: tuple[Problem, ...]


def read_yaml(path: Path) -> ParsedFile:
    """Parse `path` with the bounded reader (`backend.yaml_reader`): YAML errors, oversized
    files, alias bombs and duplicate keys come back as problems, not exceptions."""
    file = str(path)
    parsed = read_yaml_file(path)
    problems = [Problem(p.line, "(file)", p.message, file) for p in parsed.problems]
    problems += [
        Problem(
            line,
            dotted(p),
            f"duplicate key (first given on line {first}); each key may appear once",
            file,
        )
        for p, line, first in parsed.duplicates
    ]
    return ParsedFile(path, parsed.raw_bytes, parsed.data, parsed.lines, tuple(problems))
