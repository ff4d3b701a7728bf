"""Write intents from the dashboard: create, estimate, launch, cancel, retry, start a fit.

Each is one `backend.service` call (the controller acts on the intent later); no Streamlit
here so the pages stay thin and these stay testable.
"""

from __future__ import annotations

import copy
import datetime as dt
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dashboard.queries import as_dict


def _service():
    from backend import service

    return service


def estimate(config: Mapping[str, Any]) -> dict:
    """Cost and GPU-hour estimate of a config before it is created (validates it too)."""
    return as_dict(_service().estimate_campaign(dict(config)))


def create(config: Mapping[str, Any], *, launch: bool = False, owner: str = "dashboard") -> int:
    """Create a campaign from a config; optionally request its launch at once."""
    service = _service()
    campaign_id = service.create_campaign(dict(config), owner=owner)
    if launch:
        service.request_launch(campaign_id)
    return int(campaign_id)


def create_demo(*, launch: bool = True) -> int:
    """The one-click demo campaign (the backend's built-in config, named uniquely)."""
    from backend.campaigns import DEMO_CONFIG

    config = copy.deepcopy(DEMO_CONFIG)
    config["name"] = f"demo-{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}"
    return create(config, launch=launch)


ANALYSIS_SUFFIXES = (".yaml", ".yml")
MAX_ANALYSIS_BYTES = 1 << 20  # an analysis file is a few kB; anything larger is not one


class AnalysisPathError(ValueError):
    """A path the dashboard will not open as an analysis file (the message says why, never
    what the file holds)."""


def analysis_folder() -> Path:
    """The one folder whose files the dashboard opens by path (NSBI_ANALYSIS_DIR, else
    <NSBI_HOME>/analyses), resolved."""
    from backend.settings import get_settings

    return get_settings().analysis_dir.resolve()


def resolve_analysis_path(given: str, folder: Path | None = None) -> Path:
    """The analysis file `given` names inside `folder` (default: `analysis_folder()`).

    `given` is relative to the folder (an absolute path must lie inside it). The resolved path
    (every symlink followed) must stay inside the resolved folder, be a regular file with a
    .yaml/.yml suffix and at most MAX_ANALYSIS_BYTES; otherwise AnalysisPathError. So the
    path field reads no file outside the folder: not through `..`, an absolute path or a
    symlink pointing out of it.
    """
    root = (folder or analysis_folder()).resolve()
    text = given.strip()
    if not text:
        raise AnalysisPathError("give the name of an analysis file in the analysis folder")
    if "\x00" in text:
        raise AnalysisPathError(f"{text!r}: not a file name")
    candidate = Path(text).expanduser()
    if not candidate.is_absolute():
        candidate = root / candidate
    outside = AnalysisPathError(
        f"{text}: only files inside the analysis folder {root} can be opened "
        "(NSBI_ANALYSIS_DIR); upload the file instead"
    )
    try:
        resolved = candidate.resolve(strict=False)
    except (OSError, RuntimeError):  # a symlink loop
        raise outside from None
    if not resolved.is_relative_to(root) or resolved == root:
        raise outside
    if resolved.suffix.lower() not in ANALYSIS_SUFFIXES:
        raise AnalysisPathError(f"{text}: an analysis file ends in .yaml or .yml")
    if not resolved.is_file():
        raise AnalysisPathError(f"{text}: no such file in the analysis folder {root}")
    if resolved.stat().st_size > MAX_ANALYSIS_BYTES:
        raise AnalysisPathError(
            f"{text}: larger than {MAX_ANALYSIS_BYTES // 1024} kB, not an analysis file"
        )
    return resolved


def analysis_files(folder: Path | None = None, limit: int = 200) -> list[str]:
    """The .yaml/.yml files in the analysis folder (relative names, sorted), for the form."""
    root = (folder or analysis_folder()).resolve()
    found: list[str] = []
    if not root.is_dir():
        return found
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() not in ANALYSIS_SUFFIXES:
            continue
        name = str(path.relative_to(root))
        try:
            resolve_analysis_path(name, root)
        except AnalysisPathError:  # e.g. a symlink out of the folder: not offered
            continue
        found.append(name)
        if len(found) >= limit:
            break
    return found


def save_upload(name: str, data: bytes) -> str:
    """Keep an uploaded analysis file under <NSBI_HOME>/analyses/ (named by its content hash,
    so the same upload is one file) and return its path. Relative sample paths inside it are
    read relative to that folder: for file samples, give the path of the file instead."""
    import hashlib

    from backend.settings import get_settings

    if len(data) > MAX_ANALYSIS_BYTES:
        raise AnalysisPathError(
            f"{Path(name).name}: larger than {MAX_ANALYSIS_BYTES // 1024} kB, not an analysis file"
        )
    folder = get_settings().home / "analyses"
    folder.mkdir(parents=True, exist_ok=True)
    stem = Path(name).name or "analysis.yaml"
    if Path(stem).suffix.lower() not in ANALYSIS_SUFFIXES:
        stem += ".yaml"
    path = folder / f"{hashlib.sha256(data).hexdigest()[:12]}-{stem}"
    if not path.exists():
        path.write_bytes(data)
    return str(path)


# A quoted value in a problem message (Python's repr of a string, as the checks write them).
_QUOTED = re.compile(r"'(?:[^'\\\n]|\\.)*'|\"(?:[^\"\\\n]|\\.)*\"")
# The same, or a quote that never closes (a value the check cut short): to the end of the line.
_QUOTED_OR_UNCLOSED = re.compile(_QUOTED.pattern + r"|(?<!\w)['\"][^\n]*")
# A quoted word that may stay: a key, process, sample or task name (what makes a message useful).
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.+-]{0,31}")
# What a YAML syntax error quotes: one punctuation character or escape, or '<unicode string>'.
_TOKEN = re.compile(r"[^\w\s]|\\[a-z0-9]{1,4}|<[a-z ]{1,20}>")
# "got a string '...'": what a check found, after the kind of value it is (if it says).
_GOT = re.compile(
    r"\bgot (?P<kind>(?:a string|a boolean|an integer|a number|a mapping|a list|nothing \(null\))(?=\W|$) ?)?"
)


def _kept(literal: str) -> bool:
    return bool(_NAME.fullmatch(literal) or _TOKEN.fullmatch(literal))


def _redact_quoted(m: re.Match[str]) -> str:
    text = m.group(0)
    closed = len(text) > 1 and text[-1] == text[0]
    return text if closed and _kept(text[1:-1]) else "'…'" if closed else "'…"


def _redact_got(body: str) -> str:
    """Replace the value after each "got [kind]" by …, up to the end of its quote or clause."""
    out, pos = [], 0
    for m in _GOT.finditer(body):
        if m.start() < pos:
            continue
        rest = body[m.end() :]
        quoted = _QUOTED.match(rest)
        if quoted:
            taken = 0 if _TOKEN.fullmatch(quoted.group(0)[1:-1]) else quoted.end()
        elif (m.group("kind") or "").strip() in ("a mapping", "a list", "nothing (null)"):
            taken = 0  # the kind alone: no value follows
        else:
            stop = rest.find("; ")
            taken = len(rest) if stop < 0 else stop
        if taken:
            out += [body[pos : m.end()].rstrip(" "), " …"]
        else:
            out.append(body[pos : m.end()])
        pos = m.end() + taken
    out.append(body[pos:])
    return "".join(out)


def redact_problem(message: str) -> str:
    """A problem message without the file's values: what a check says it `got` and every
    quoted literal that is not a plain name become `…`; the file, line and key path stay.

    The analysis checks quote what they found ("expected a mapping, got a string '...'"):
    shown as is, any file that parses as YAML would be echoed back to the browser.
    """
    head, sep, body = message.partition(": ")
    if not (sep and ":" in head):  # no 'FILE:LINE: ' in front: redact it all
        head, sep, body = "", "", message
    body = _redact_got(body)
    body = _QUOTED_OR_UNCLOSED.sub(_redact_quoted, body)
    return head + sep + " ".join(body.split("\n"))


def analysis_problems(path: str) -> list[str]:
    """Every problem of an analysis file ('FILE:LINE: key: message', values redacted by
    `redact_problem`); [] when it is valid."""
    return [redact_problem(p) for p in _service().analysis_file_problems(path)]


def create_from_analysis(path: str, *, launch: bool = True, owner: str = "dashboard") -> int:
    """Create (and by default launch) the campaign of an analysis file; jobs an earlier run
    already did are reused. Raises AnalysisError (`.problems`) for an invalid file."""
    return int(_service().create_campaign_from_analysis_file(path, owner=owner, launch=launch))


def launch(campaign_ids: Sequence[int]) -> None:
    for cid in campaign_ids:
        _service().request_launch(int(cid))


def cancel(campaign_ids: Sequence[int] = (), job_ids: Sequence[int] = ()) -> None:
    service = _service()
    for cid in campaign_ids:
        service.request_cancel(campaign_id=int(cid))
    if job_ids:
        service.request_cancel(job_ids=[int(j) for j in job_ids])


def retry(campaign_ids: Sequence[int] = (), job_ids: Sequence[int] = ()) -> None:
    service = _service()
    for cid in campaign_ids:
        service.request_retry(campaign_id=int(cid))
    if job_ids:
        service.request_retry(job_ids=[int(j) for j in job_ids])


FIT_KINDS = ("fit", "impacts", "scan", "toys")


def start_fit(campaign_id: int, request: Mapping[str, Any]) -> int:
    """Start fit / impacts / scan / toys jobs on a campaign's trained ensembles; returns how many.

    `service.start_fit(campaign_id, request)` adds a new fit run (request keys: data, mu_true,
    steps, scan {low, high, points}, toys). A backend without it falls back to releasing the
    campaign's own still-PENDING fit-stage jobs with a launch request.
    """
    service = _service()
    fn = getattr(service, "start_fit", None)
    if fn is not None:
        return len(fn(campaign_id, dict(request)) or [])
    steps = set(request.get("steps") or FIT_KINDS)
    pending = [
        j
        for kind in steps & set(FIT_KINDS)
        for j in service.list_jobs(
            campaign_id=campaign_id, states=["PENDING"], kind=kind, limit=10_000
        )[0]
    ]
    if not pending:
        raise RuntimeError(
            f"campaign {campaign_id} has no pending {'/'.join(sorted(steps))} jobs to start; enable the fit, "
            "impacts, scan or toys stages in the campaign config (new fits on finished ensembles need "
            "backend.service.start_fit)"
        )
    service.request_launch(campaign_id)
    return len(pending)
