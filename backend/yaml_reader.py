"""Reading a YAML file a user wrote, within bounds: plain data, the line of every key, and
every problem with its line instead of an exception.

Why one reader: analysis files (`backend.analysis.spec_yaml`), campaign configs
(`backend.campaigns.load_config`) and the dashboard's uploads (saved, then read as analysis
files) come from people, and a small file can be made to cost a lot: a 250-byte "billion
laughs" document of nested anchors and aliases expands to 10^9 nodes when anything walks it
(the line map below, `json.dumps`). So the reader refuses, each with a message naming the line:

* files larger than `MAX_BYTES` (1 MiB);
* more than `MAX_ALIASES` aliases (``*name``), a document that expands through its aliases to
  more than `MAX_NODES` nodes, a recursive alias, nesting deeper than `MAX_DEPTH`;
* a key given twice in one mapping (YAML would silently keep the last one).

PyYAML's `safe_load` forgets positions, so the document is composed to nodes once; their
marks give the line of every key and list item, and the data is constructed from the same
nodes. A key path that does not exist (a missing key) falls back to its nearest parent's line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

PathKey = tuple[str | int, ...]

MAX_BYTES = 1 << 20  # 1 MiB: real analysis files and campaign configs are a few KiB
MAX_ALIASES = 100  # *name references in one file
MAX_NODES = 200_000  # nodes of the document with every alias expanded
MAX_DEPTH = 64  # nesting of mappings and lists


@dataclass(frozen=True, order=True)
class YamlProblem:
    """Something wrong with the file itself: its line and what (no key path yet)."""

    line: int
    message: str


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

    def walk(self, node: yaml.Node, path: PathKey = ()) -> None:
        """Record the lines below `node` (bounded: `check_size` has accepted the document)."""
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key_node, value_node in node.value:
                key = (
                    str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else str(key_node)
                )
                here = (*path, key)
                line = key_node.start_mark.line + 1
                if key in seen:
                    self.duplicates.append((here, line, seen[key]))
                    continue
                seen[key] = line
                self.lines.setdefault(here, line)
                self.walk(value_node, here)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                here = (*path, i)
                self.lines.setdefault(here, item.start_mark.line + 1)
                self.walk(item, here)


class _TooMuch(Exception):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


class _CountingLoader(yaml.SafeLoader):
    """SafeLoader that counts aliases while composing and stops past `MAX_ALIASES`."""

    aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                mark = self.peek_event().start_mark
                raise _TooMuch(
                    mark.line + 1,
                    f"more than {MAX_ALIASES} aliases (*name); write the repeated parts out",
                )
        return super().compose_node(parent, index)


def check_size(node: yaml.Node) -> None:
    """Raise `_TooMuch` if the document, its aliases expanded, is too large, too deep or
    recursive. Sizes are memoised per node, so this costs one pass over the composed nodes."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(n: yaml.Node, depth: int) -> int:
        if id(n) in sizes:
            return sizes[id(n)]
        line = n.start_mark.line + 1
        if id(n) in active:
            raise _TooMuch(line, "a recursive alias (a node that contains itself) is not allowed")
        if depth > MAX_DEPTH:
            raise _TooMuch(line, f"nested more than {MAX_DEPTH} levels deep")
        active.add(id(n))
        total = 1
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                total += size(k, depth + 1) + size(v, depth + 1)
                if total > MAX_NODES:
                    break
        elif isinstance(n, yaml.SequenceNode):
            for item in n.value:
                total += size(item, depth + 1)
                if total > MAX_NODES:
                    break
        active.discard(id(n))
        if total > MAX_NODES:
            raise _TooMuch(
                line,
                f"the document expands to more than {MAX_NODES} values through its anchors "
                "and aliases (&name / *name); write the repeated parts out",
            )
        sizes[id(n)] = total
        return total

    size(node, 0)


@dataclass(frozen=True)
class ParsedYaml:
    """The file's bytes, its data (None when it did not parse) and the line map."""

    raw_bytes: bytes
    data: Any
    lines: LineMap
    problems: tuple[YamlProblem, ...]
    duplicates: tuple[tuple[PathKey, int, int], ...] = ()


def read_bytes(path: Path) -> tuple[bytes | None, YamlProblem | None]:
    """The bytes of a user's file, or the problem: unreadable, or larger than `MAX_BYTES`."""
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as exc:
        return None, YamlProblem(1, f"cannot read the file: {exc.strerror or exc}")
    if len(raw) > MAX_BYTES:
        return None, YamlProblem(
            1,
            f"the file is larger than {MAX_BYTES // 1024} KiB; analysis files and campaign "
            "configs are small text files (sample data belongs in the sample files)",
        )
    return raw, None


def parse_yaml(raw: bytes) -> ParsedYaml:
    """Parse YAML text within the bounds above; problems come back, never exceptions."""
    lines = LineMap()

    def fail(line: int, message: str) -> ParsedYaml:
        return ParsedYaml(raw, None, lines, (YamlProblem(line, message),))

    if len(raw) > MAX_BYTES:
        return fail(1, f"the file is larger than {MAX_BYTES // 1024} KiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return fail(1, f"not UTF-8 text: {exc}")
    loader = _CountingLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return ParsedYaml(raw, None, lines, ())
        check_size(node)
        lines.walk(node)
        if lines.duplicates:
            return ParsedYaml(raw, None, lines, (), tuple(lines.duplicates))
        data = loader.construct_document(node)
    except _TooMuch as exc:
        return fail(exc.line, exc.message)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        what = getattr(exc, "problem", None) or str(exc)
        return fail(mark.line + 1 if mark is not None else 1, f"not valid YAML: {what}")
    except RecursionError:
        return fail(1, f"nested more than {MAX_DEPTH} levels deep")
    finally:
        loader.dispose()
    return ParsedYaml(raw, data, lines, ())


def read_yaml_file(path: Path) -> ParsedYaml:
    """`parse_yaml` of the file at `path` (size checked before it is read whole)."""
    raw, problem = read_bytes(path)
    if raw is None:
        return ParsedYaml(b"", None, LineMap(), (problem,) if problem else ())
    return parse_yaml(raw)
