"""Reading an analysis file: YAML to plain data plus a map from key paths to line numbers.

Why separate: every validation message must say where in the file the problem is. PyYAML's
`safe_load` forgets positions, so the file is also composed to nodes, whose marks give the
line of every key and list item; a key path that does not exist (a missing key) falls back
to the line of its nearest existing parent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

PathKey = tuple[str | int, ...]


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


def dotted(path: PathKey) -> str:
    """('processes', 'S', 'sample') -> 'processes.S.sample'; list indices as [i]."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


class LineMap:
    """Line numbers (1-based) of every key and list item of a composed YAML document."""

    def __init__(self) -> None:
        self.lines: dict[PathKey, int] = {(): 1}
        self.duplicates: list[tuple[PathKey, int, int]] = []  # (path, line, first line)

    def line(self, path: PathKey) -> int:
        """The line of `path`, or of its nearest parent that exists in the file."""
        p = tuple(path)
        while p not in self.lines:
            p = p[:-1]
        return self.lines[p]

    def walk(self, node: yaml.Node, path: PathKey = (), depth: int = 0) -> None:
        if depth > 100:  # an alias loop cannot come from safe YAML, but do not recurse forever
            return
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key = (
                    str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else str(key_node)
                )
                here = (*path, key)
                line = key_node.start_mark.line + 1
                if here in self.lines and here != ():
                    self.duplicates.append((here, line, self.lines[here]))
                else:
                    self.lines[here] = line
                self.walk(value_node, here, depth + 1)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                here = (*path, i)
                self.lines[here] = item.start_mark.line + 1
                self.walk(item, here, depth + 1)


@dataclass(frozen=True)
class ParsedFile:
    """The file's bytes, its data (None when it did not parse) and the line map."""

    path: Path
    raw_bytes: bytes
    data: Any
    lines: LineMap
    problems: tuple[Problem, ...]


def read_yaml(path: Path) -> ParsedFile:
    """Parse `path`; YAML errors and duplicate keys come back as problems, not exceptions."""
    file = str(path)
    lines = LineMap()
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return ParsedFile(
            path,
            b"",
            None,
            lines,
            (Problem(1, "(file)", f"cannot read the file: {exc.strerror or exc}", file),),
        )
    try:
        text = raw.decode("utf-8")
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except UnicodeDecodeError as exc:
        return ParsedFile(
            path, raw, None, lines, (Problem(1, "(file)", f"not UTF-8 text: {exc}", file),)
        )
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else 1
        what = getattr(exc, "problem", None) or str(exc)
        return ParsedFile(
            path, raw, None, lines, (Problem(line, "(file)", f"not valid YAML: {what}", file),)
        )
    if node is not None:
        lines.walk(node)
    problems = tuple(
        Problem(
            line,
            dotted(p),
            f"duplicate key (first given on line {first}); each key may appear once",
            file,
        )
        for p, line, first in lines.duplicates
    )
    return ParsedFile(path, raw, data, lines, problems)
