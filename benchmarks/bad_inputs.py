"""Bad-input study (issue 16, finding 7): feed hostile or broken inputs to the real entry points.

    python -m benchmarks.bad_inputs --json out.json --markdown out.md [--only NAME,...]

Every input runs in its own child process in a fresh folder (its own ``NSBI_HOME``, SQLite
database and store) under a wall-clock limit (``--timeout``, default 20 s):

- analysis files through ``nsbi analysis validate`` (``--no-data``: the static checks, which
  still look for the sample files; without it for the feature expressions, which are
  evaluated on the samples' columns);
- campaign configs through ``nsbi campaign create``;
- workspaces through ``nsbi fit``;
- store keys through ``LocalStore`` (list, get, put, delete);
- dashboard form values through the backend functions the dashboard calls
  (``service.create_campaign`` and ``service.analysis_file_problems``).

For each input it records the exit status, the time, whether the message names the file and
the line or key (``located``), and whether anything was stored: campaign or job rows in the
database, or any new file in the input's folder other than the database itself. The outcome is
``refused`` (exit 2, located, nothing stored), ``refused-unlocated``, ``accepted`` (exit 0: the
input slipped through), ``crashed`` (another exit status, e.g. a traceback) or ``timeout``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
EXIT_REFUSED = 2

# ----------------------------------------------------------------------------- base inputs

ANALYSIS = """\
name: bad-input-base
samples:
  S: {demo: {process: S, n: 2000, seed: 1}}
  B: {demo: {process: B, n: 2000, seed: 3}}
processes:
  S: {sample: S, coefficient: "mu"}
  B: {sample: B, coefficient: "1"}
reference: B
poi: {init: 1.0, bounds: [0.0, 20.0]}
training:
  defaults: {ensemble_size: 1, members_per_job: 1, max_steps: 20}
data:
  asimov: {mu: 1.0}
compute: {fit: true}
backend: {launcher: local}
"""

CAMPAIGN = """\
name: bad-input-base
backend: {launcher: local, machine_type: local, max_concurrency: 1, retry_limit: 1}
processes:
  S: {demo: {process: S, n: 2000, seed: 1}}
  B: {demo: {process: B, n: 2000, seed: 3}}
reference: B
training:
  ensemble_size: 1
  members_per_job: 1
  params: {hidden_layers: 1, width: 8, max_steps: 20}
fit: {enabled: true, data: asimov, mu_true: 1.0}
"""

CAMPAIGN_DICT: dict[str, Any] = {
    "name": "form-values",
    "backend": {"launcher": "local", "machine_type": "local", "max_concurrency": 1},
    "processes": {
        "S": {"demo": {"process": "S", "n": 2000, "seed": 1}},
        "B": {"demo": {"process": "B", "n": 2000, "seed": 3}},
    },
    "reference": "B",
    "training": {"ensemble_size": 1, "members_per_job": 1, "params": {"max_steps": 20}},
    "fit": {"enabled": False},
}

BOMB = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def _sub(text: str, old: str, new: str) -> str:
    if old not in text:
        raise AssertionError(f"base input lacks {old!r}")
    return text.replace(old, new, 1)


def _sum_terms(n: int) -> str:
    return " + ".join(["mu"] * n)


# ----------------------------------------------------------------------------- the cases


@dataclass
class Case:
    """One bad input. ``files``: name -> text or bytes written into the case's folder (a
    callable gets the folder and writes them itself); ``argv``: the nsbi command (``{dir}``
    is the folder) or ``func``: a name in FUNCS run in the child. ``where``: regexes, all of
    which the message must match to count as located (the file, the line or key)."""

    kind: str
    name: str
    summary: str
    argv: list[str] | None = None
    func: str | None = None
    files: dict[str, str | bytes] = field(default_factory=dict)
    setup: Callable[[Path], None] | None = None
    where: list[str] = field(default_factory=list)


def _analysis(name: str, summary: str, text: str | bytes, where: list[str]) -> Case:
    return Case(
        "analysis file",
        name,
        summary,
        argv=["analysis", "validate", "--no-data", "{dir}/a.yaml"],
        files={"a.yaml": text},
        where=[r"a\.yaml", *where],
    )


def _campaign(name: str, summary: str, text: str | bytes, where: list[str], file="c.yaml") -> Case:
    return Case(
        "campaign config",
        name,
        summary,
        argv=["campaign", "create", "{dir}/" + file],
        files={file: text},
        where=[re.escape(file), *where],
    )


def _npz(folder: Path, name: str = "s.npz") -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    np.savez(folder / name, x=rng.normal(size=200), y=rng.normal(size=200))


def _file_sample_analysis(feature: str) -> str:
    """Both samples read s.npz (columns x, y): S with the feature `feature`, B with plain x."""
    hostile = json.dumps({"path": "s.npz", "features": {"f": feature}})
    plain = json.dumps({"path": "s.npz", "features": {"f": "x"}})
    text = _sub(ANALYSIS, "S: {demo: {process: S, n: 2000, seed: 1}}", f"S: {hostile}")
    return _sub(text, "B: {demo: {process: B, n: 2000, seed: 3}}", f"B: {plain}")


LINE = r":\d+:"

A = ANALYSIS
C = CAMPAIGN


def analysis_cases() -> list[Case]:
    cases = [
        _analysis("yaml-unclosed", "unclosed flow mapping", A + "extra: {a: 1\n", [LINE]),
        _analysis("yaml-tab", "tab indentation", A.replace("  S: {sample", "\tS: {sample"), [LINE]),
        _analysis("alias-bomb", "billion laughs (9 levels of 9 aliases)", BOMB, [LINE]),
        _analysis("huge-file", "2 MiB file (a long comment)", A + "#" + "x" * (2 << 20), [LINE]),
        _analysis("duplicate-key", "reference given twice", A + "reference: S\n", ["reference"]),
        _analysis("unknown-key", "unknown top-level key", A + "colour: blue\n", ["colour"]),
        _analysis(
            "unknown-nested-key",
            "unknown key in a process",
            _sub(A, '{sample: S, coefficient: "mu"}', '{sample: S, coefficient: "mu", wat: 1}'),
            ["wat"],
        ),
        _analysis(
            "wrong-type-bounds",
            "poi.bounds a string",
            _sub(A, "bounds: [0.0, 20.0]", 'bounds: "0 to 20"'),
            ["bounds"],
        ),
        _analysis(
            "wrong-type-samples",
            "samples a list",
            _sub(A, "samples:\n", "samples: [1, 2]\nxsamples:\n"),
            ["samples"],
        ),
        _analysis("nan-init", "poi.init .nan", _sub(A, "init: 1.0", "init: .nan"), ["init"]),
        _analysis(
            "inf-bound", "poi.bounds [0, .inf]", _sub(A, "[0.0, 20.0]", "[0.0, .inf]"), ["bounds"]
        ),
        _analysis(
            "absurd-n", "demo n: 1e30", _sub(A, "n: 2000, seed: 1", "n: 1e30, seed: 1"), ["n"]
        ),
        _analysis(
            "absurd-ensemble",
            "ensemble_size 10**9",
            _sub(A, "ensemble_size: 1,", "ensemble_size: 1000000000,"),
            ["ensemble_size"],
        ),
        _analysis(
            "missing-sample",
            "sample file that does not exist",
            _sub(
                A,
                "S: {demo: {process: S, n: 2000, seed: 1}}",
                "S: {path: nowhere.npz, features: [x]}",
            ),
            ["samples.S.path", "file not found"],
        ),
        _analysis(
            "sample-is-dir",
            "sample path a folder",
            _sub(A, "S: {demo: {process: S, n: 2000, seed: 1}}", "S: {path: /tmp, features: [x]}"),
            ["samples.S.path"],
        ),
        _analysis(
            "coef-1-over-mu", "coefficient 1/mu", _sub(A, '"mu"}', '"1/mu"}'), ["coefficient"]
        ),
        _analysis(
            "coef-div-zero", "coefficient mu/0", _sub(A, '"mu"}', '"mu/0"}'), ["coefficient"]
        ),
        _analysis(
            "coef-tower",
            "coefficient mu**9**9**9",
            _sub(A, '"mu"}', '"mu**9**9**9"}'),
            ["coefficient"],
        ),
        _analysis(
            "coef-20000-terms",
            "coefficient: a 20,000-term sum",
            _sub(A, '"mu"}', f'"{_sum_terms(20000)}"}}'),
            ["coefficient"],
        ),
        _analysis(
            "coef-import",
            "coefficient __import__('os')",
            _sub(A, '"mu"}', "\"__import__('os').getcwd()\"}"),
            ["coefficient"],
        ),
        _analysis(
            "coef-unknown-name",
            "coefficient names kappa",
            _sub(A, '"mu"}', '"kappa*mu"}'),
            ["coefficient"],
        ),
    ]
    feature_cases = [
        ("feature-tower", "feature x + 9**9**9", "x + 9**9**9"),
        (
            "feature-import",
            "feature __import__('os').system('id')",
            "__import__('os').system('id')",
        ),
        ("feature-long", "feature: a 20,000-term sum", " + ".join(["x"] * 20000)),
        ("feature-unknown-column", "feature names column z", "z * 2"),
    ]
    for name, summary, feature in feature_cases:
        c = _analysis(
            name, summary, _file_sample_analysis(feature), [LINE, r"samples\.S\b.*feature"]
        )
        c.argv = ["analysis", "validate", "{dir}/a.yaml"]  # reads the samples: evaluates features
        c.setup = _npz
        cases.append(c)
    cases += [
        _analysis("empty-file", "an empty file", "", [LINE]),
        _analysis("top-level-list", "a list instead of a mapping", "- 1\n- 2\n", [LINE]),
        _analysis("binary", "binary garbage (not UTF-8)", bytes(range(256)) * 4, [LINE]),
        _analysis(
            "deep-nesting", "10,000 nested lists", "a: " + "[" * 10000 + "]" * 10000 + "\n", [LINE]
        ),
        _analysis(
            "name-path-escape",
            "name: ../../escape",
            _sub(A, "name: bad-input-base", "name: ../../escape"),
            ["name"],
        ),
    ]
    return cases


def campaign_cases() -> list[Case]:
    demo_s = "S: {demo: {process: S, n: 2000, seed: 1}}"
    return [
        _campaign("yaml-unclosed", "unclosed flow mapping", C + "extra: {a: 1\n", [LINE]),
        _campaign("alias-bomb", "billion laughs", BOMB, [LINE]),
        _campaign("huge-file", "2 MiB file", C + "#" + "x" * (2 << 20), [LINE]),
        _campaign("duplicate-key", "reference given twice", C + "reference: S\n", ["reference"]),
        _campaign("unknown-key", "unknown top-level key", C + "colour: blue\n", ["colour"]),
        _campaign(
            "wrong-type",
            "max_concurrency: many",
            _sub(C, "max_concurrency: 1", "max_concurrency: many"),
            ["max_concurrency"],
        ),
        _campaign(
            "absurd-n", "demo n: 1e30", _sub(C, "n: 2000, seed: 1", "n: 1e30, seed: 1"), ["n"]
        ),
        _campaign(
            "absurd-n-float",
            "demo n: 1.0e+30 (a float)",
            _sub(C, "n: 2000, seed: 1", "n: 1.0e+30, seed: 1"),
            ["n"],
        ),
        _campaign(
            "nan-mu-true",
            "fit.mu_true: .nan",
            _sub(C, "mu_true: 1.0", "mu_true: .nan"),
            ["mu_true"],
        ),
        _campaign(
            "inf-budget",
            "backend.budget_usd: .inf",
            _sub(C, "retry_limit: 1", "retry_limit: 1, budget_usd: .inf"),
            ["budget_usd"],
        ),
        _campaign(
            "missing-sample",
            "sample file that does not exist",
            _sub(C, demo_s, "S: {path: nowhere.npz, features: [x]}"),
            ["processes.S.path", "file not found"],
        ),
        _campaign(
            "remote-sample",
            "gs:// sample path",
            _sub(C, demo_s, "S: {path: 'gs://bucket/s.npz', features: [x]}"),
            ["processes.S.path"],
        ),
        _campaign(
            "job-explosion",
            "ensemble_size 10**12",
            _sub(C, "ensemble_size: 1", "ensemble_size: 1000000000000"),
            ["ensemble_size|training"],
        ),
        _campaign(
            "bad-reference",
            "reference not a process",
            _sub(C, "reference: B", "reference: Z"),
            ["reference"],
        ),
        _campaign(
            "coef-div-zero",
            "fit.coefficients S: mu/0",
            _sub(C, "mu_true: 1.0}", "mu_true: 1.0, coefficients: {S: 'mu/0', B: '1'}}"),
            ["coefficients"],
        ),
        _campaign(
            "coef-tower",
            "fit.coefficients S: mu**9**9**9",
            _sub(C, "mu_true: 1.0}", "mu_true: 1.0, coefficients: {S: 'mu**9**9**9', B: '1'}}"),
            ["coefficients"],
        ),
        _campaign(
            "coef-20000-terms",
            "fit.coefficients S: 20,000-term sum",
            _sub(
                C,
                "mu_true: 1.0}",
                f"mu_true: 1.0, coefficients: {{S: '{_sum_terms(20000)}', B: '1'}}}}",
            ),
            ["coefficients"],
        ),
        _campaign(
            "toml-syntax",
            "TOML syntax error",
            'name = "x"\n[backend\n',
            [r"c\.toml"],
            file="c.toml",
        ),
        _campaign(
            "toml-nan",
            "TOML fit.mu_true = nan",
            'name = "x"\nreference = "B"\n[processes.B.demo]\nprocess = "B"\nn = 100\nseed = 1\n'
            "[fit]\nmu_true = nan\n",
            ["mu_true"],
            file="c.toml",
        ),
        _campaign("wrong-suffix", "a .json config", "{}", ["json"], file="c.json"),
        _campaign(
            "deep-nesting", "10,000 nested lists", "a: " + "[" * 10000 + "]" * 10000 + "\n", [LINE]
        ),
    ]


def _workspace(folder: Path, edit: Callable[[dict, Path], None] | None = None) -> None:
    import numpy as np

    n = 50
    arrays = folder / "ws.arrays"
    arrays.mkdir()
    np.save(arrays / "ratio_S.npy", np.linspace(0.5, 2.0, n))
    np.save(arrays / "ratio_B.npy", np.ones(n))
    np.save(arrays / "weights.npy", np.full(n, 2.0))
    doc = {
        "format": "nsbi-workspace",
        "version": 1,
        "parameters": {"pois": [{"name": "mu", "init": 1.0, "bounds": [0.0, 10.0]}]},
        "processes": [
            {
                "name": "S",
                "yield": 10.0,
                "coefficient": "mu",
                "ratio": {"file": "ws.arrays/ratio_S.npy"},
            },
            {
                "name": "B",
                "yield": 90.0,
                "coefficient": "1",
                "ratio": {"file": "ws.arrays/ratio_B.npy"},
            },
        ],
        "data": {
            "kind": "asimov",
            "weights": {"file": "ws.arrays/weights.npy"},
            "generated_at": {"mu": 1.0},
        },
    }
    if edit is not None:
        edit(doc, folder)
    (folder / "ws.json").write_text(json.dumps(doc))


def _ws_case(name: str, summary: str, edit: Callable[[dict, Path], None], where: list[str]) -> Case:
    return Case(
        "workspace",
        name,
        summary,
        argv=["fit", "{dir}/ws.json"],
        setup=lambda folder: _workspace(folder, edit),
        where=[r"ws\.json|ws\.arrays", *where],
    )


def _set_ratio(value: Any) -> Callable[[dict, Path], None]:
    def edit(doc: dict, folder: Path) -> None:
        doc["processes"][0]["ratio"] = value

    return edit


def _save_array(name: str, values: Any) -> Callable[[dict, Path], None]:
    def edit(doc: dict, folder: Path) -> None:
        import numpy as np

        np.save(folder / "ws.arrays" / name, np.asarray(values))
        doc["processes"][0]["ratio"] = {"file": f"ws.arrays/{name}"}

    return edit


def workspace_cases() -> list[Case]:
    nan = [float("nan")] + [1.0] * 49
    return [
        _ws_case("nan-ratio", "ratio array with a NaN", _save_array("nan.npy", nan), ["ratio"]),
        _ws_case(
            "short-ratio",
            "ratio array of the wrong length",
            _save_array("short.npy", [1.0] * 7),
            ["ratio"],
        ),
        _ws_case(
            "2d-ratio", "2-D ratio array", _save_array("two.npy", [[1.0] * 50] * 2), ["ratio"]
        ),
        _ws_case(
            "absolute-path",
            "ratio file /etc/passwd",
            _set_ratio({"file": "/etc/passwd"}),
            ["ratio"],
        ),
        _ws_case(
            "dotdot-path", "ratio file ../../x.npy", _set_ratio({"file": "../../x.npy"}), ["ratio"]
        ),
        _ws_case(
            "missing-array",
            "ratio file that does not exist",
            _set_ratio({"file": "ws.arrays/none.npy"}),
            ["ratio"],
        ),
        _ws_case(
            "nan-yield",
            "yield NaN (JSON NaN)",
            lambda doc, _f: doc["processes"][0].update({"yield": math.nan}),
            ["yield"],
        ),
        _ws_case(
            "coef-div-zero",
            "coefficient mu/0",
            lambda doc, _f: doc["processes"][0].update(coefficient="mu/0"),
            ["coefficient"],
        ),
        _ws_case(
            "coef-tower",
            "coefficient mu**9**9**9",
            lambda doc, _f: doc["processes"][0].update(coefficient="mu**9**9**9"),
            ["coefficient"],
        ),
        Case(
            "workspace",
            "not-json",
            "a workspace file that is not JSON",
            argv=["fit", "{dir}/ws.json"],
            files={"ws.json": "{not json"},
            where=[r"ws\.json"],
        ),
    ]


def store_cases() -> list[Case]:
    return [
        Case("store key", name, summary, func=name, files={"outside.txt": "secret"}, where=[key])
        for name, summary, key in [
            ("store-list-dotdot", "LocalStore.list('../')", re.escape("'../'")),
            ("store-get-dotdot", "LocalStore.get_bytes('../outside.txt')", r"\.\./outside"),
            ("store-put-absolute", "LocalStore.put_bytes('/tmp/x', ...)", "/tmp/x"),
            ("store-put-nested-dotdot", "LocalStore.put_bytes('a/../../x', ...)", r"a/\.\./\.\./x"),
            ("store-put-nul", "LocalStore.put_bytes('a\\x00b', ...)", r"a\\x00b"),
            ("store-delete-dotdot", "LocalStore.delete('../outside.txt')", r"\.\./outside"),
        ]
    ]


def dashboard_cases() -> list[Case]:
    return [
        Case(
            "dashboard form",
            name,
            summary,
            func=name,
            files={"a.yaml": BOMB} if name == "form-analysis-bomb" else {},
            where=[key],
        )
        for name, summary, key in [
            ("form-negative-concurrency", "max_concurrency -1", "max_concurrency"),
            ("form-nan-budget", "budget_usd float('nan')", "budget_usd"),
            ("form-inf-mu", "fit.mu_true float('inf')", "mu_true"),
            ("form-absurd-n", "demo n 10**30", r"processes\.S\.demo\.n"),
            ("form-string-retry", "retry_limit 'three'", "retry_limit"),
            ("form-missing-sample", "sample path that does not exist", r"processes\.S\.path"),
            ("form-no-processes", "processes {}", "processes|reference"),
            ("form-analysis-bomb", "analysis file check of an alias bomb", r"a\.yaml:\d+:"),
        ]
    ]


def all_cases() -> list[Case]:
    return (
        analysis_cases() + campaign_cases() + workspace_cases() + store_cases() + dashboard_cases()
    )


# ----------------------------------------------------------------------------- in-child functions


def _store_fn(name: str, folder: Path) -> None:
    from backend.stores import open_store

    store = open_store((folder / "store").as_uri(), create=True)
    ops: dict[str, Callable[[], Any]] = {
        "store-list-dotdot": lambda: store.list("../"),
        "store-get-dotdot": lambda: store.get_bytes("../outside.txt"),
        "store-put-absolute": lambda: store.put_bytes("/tmp/x", b"x"),
        "store-put-nested-dotdot": lambda: store.put_bytes("a/../../x", b"x"),
        "store-put-nul": lambda: store.put_bytes("a\x00b", b"x"),
        "store-delete-dotdot": lambda: store.delete("../outside.txt"),
    }
    got = ops[name]()
    print(f"accepted: {got!r}"[:500])


def _form_fn(name: str, folder: Path) -> None:
    import copy

    from backend import service
    from backend.db import get_engine, init_db

    engine = init_db(get_engine(os.environ["DATABASE_URL"]))
    cfg = copy.deepcopy(CAMPAIGN_DICT)
    if name == "form-analysis-bomb":
        problems = service.analysis_file_problems(str(folder / "a.yaml"))
        if problems:
            raise _Refused("\n".join(problems))
        return
    edits: dict[str, Callable[[dict], None]] = {
        "form-negative-concurrency": lambda c: c["backend"].update(max_concurrency=-1),
        "form-nan-budget": lambda c: c["backend"].update(budget_usd=float("nan")),
        "form-inf-mu": lambda c: c["fit"].update(enabled=True, mu_true=float("inf")),
        "form-absurd-n": lambda c: c["processes"]["S"]["demo"].update(n=10**30),
        "form-string-retry": lambda c: c["backend"].update(retry_limit="three"),
        "form-missing-sample": lambda c: c["processes"].update(
            S={"path": str(folder / "nowhere.npz"), "features": ["x"]}
        ),
        "form-no-processes": lambda c: c.update(processes={}),
    }
    edits[name](cfg)
    cid = service.create_campaign(cfg, owner="dashboard", engine=engine)
    print(f"accepted: created campaign {cid}")


class _Refused(Exception):
    pass


def run_child(name: str, folder: Path) -> int:
    """Run one function case in this (child) process: 2 and the message on stderr when the
    backend refused it with its validation error, 0 when accepted, 1 with a traceback else."""
    from backend.campaigns import CampaignConfigError
    from backend.stores import StoreError

    try:
        if name.startswith("store-"):
            _store_fn(name, folder)
        else:
            _form_fn(name, folder)
    except (_Refused, CampaignConfigError, StoreError) as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_REFUSED
    return 0


# ----------------------------------------------------------------------------- the runner


@dataclass
class Outcome:
    kind: str
    name: str
    summary: str
    exit_status: int | None
    seconds: float
    located: bool
    stored: bool
    outcome: str
    message: str
    stored_what: list[str] = field(default_factory=list)


def _db_rows(db: Path) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(db) as con:
        total = 0
        for table in ("campaign", "job"):
            try:
                total += con.execute(f"select count(*) from {table}").fetchone()[0]
            except sqlite3.OperationalError:
                pass
        return total


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def run_case(case: Case, timeout: float = 20.0) -> Outcome:
    with tempfile.TemporaryDirectory(prefix="nsbi-bad-") as tmp:
        folder = Path(tmp)
        for fname, content in case.files.items():
            path = folder / fname
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content)
        if case.setup is not None:
            case.setup(folder)
        (folder / "store").mkdir(exist_ok=True)
        db = folder / "db.sqlite"
        env = dict(os.environ)
        env.update(
            NSBI_HOME=str(folder / "home"),
            DATABASE_URL=f"sqlite:///{db}",
            NSBI_STORE=(folder / "store").as_uri(),
            PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
        )
        before = _files(folder)
        if case.argv is not None:
            cmd = [sys.executable, "-m", "backend.cli", *(a.format(dir=folder) for a in case.argv)]
        else:
            cmd = [
                sys.executable,
                "-m",
                "benchmarks.bad_inputs",
                "--child",
                str(case.func),
                str(folder),
            ]
        t0 = time.monotonic()
        try:
            proc = subprocess.run(
                cmd, cwd=folder, env=env, capture_output=True, timeout=timeout, check=False
            )
            code: int | None = proc.returncode
            message = (proc.stderr or b"").decode("utf-8", "replace") + (proc.stdout or b"").decode(
                "utf-8", "replace"
            )
        except subprocess.TimeoutExpired as exc:
            code = None
            message = f"(timed out after {timeout:.0f} s) " + (exc.stderr or b"").decode(
                "utf-8", "replace"
            )
        seconds = time.monotonic() - t0
        rows = _db_rows(db)
        new = sorted(f for f in _files(folder) - before if not f.startswith("db.sqlite"))
        stored_what = ([f"{rows} campaign/job rows"] if rows else []) + new
        located = all(re.search(w, message) for w in case.where) if case.where else False
        if code is None:
            outcome = "timeout"
        elif code == 0:
            outcome = "accepted"
        elif code == EXIT_REFUSED:
            outcome = "refused" if located and not stored_what else "refused-unlocated"
            if stored_what:
                outcome = "refused-but-stored"
        else:
            outcome = "crashed"
        return Outcome(
            case.kind,
            case.name,
            case.summary,
            code,
            round(seconds, 2),
            located,
            bool(stored_what),
            outcome,
            _short(message.replace(str(folder), "<dir>")),
            stored_what,
        )


def _short(message: str, limit: int = 400) -> str:
    lines = [ln for ln in message.strip().splitlines() if ln.strip() and "%|" not in ln]
    if any(ln.startswith("Traceback") for ln in lines):  # the exception, not the frames
        raised = [ln for ln in lines if re.match(r"[\w.]+(Error|Exception|Overflow)\b", ln)]
        lines = ["traceback: " + (raised[-1] if raised else lines[-1])]
    text = " | ".join(lines[:2] + lines[-1:] if len(lines) > 3 else lines)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def markdown(results: list[Outcome], timeout: float) -> str:
    kinds = list(dict.fromkeys(r.kind for r in results))
    outcomes = [
        "refused",
        "refused-unlocated",
        "refused-but-stored",
        "accepted",
        "crashed",
        "timeout",
    ]
    counts = Counter((r.kind, r.outcome) for r in results)
    used = [o for o in outcomes if any(counts[(k, o)] for k in kinds)]
    out = [
        f"| kind | inputs | {' | '.join(used)} | slowest |",
        "| --- | --- | " + " | ".join("---" for _ in used) + " | --- |",
    ]
    for k in kinds:
        rs = [r for r in results if r.kind == k]
        out.append(
            f"| {k} | {len(rs)} | "
            + " | ".join(str(counts[(k, o)]) for o in used)
            + f" | {max(r.seconds for r in rs):.1f} s |"
        )
    total = Counter(r.outcome for r in results)
    out.append(
        f"| **all** | **{len(results)}** | "
        + " | ".join(f"**{total[o]}**" for o in used)
        + f" | {max(r.seconds for r in results):.1f} s |"
    )
    out += ["", f"Every input (limit {timeout:.0f} s each):", ""]
    out += [
        "| kind | input | exit | time | located | stored | outcome |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        summary = r.summary.replace("|", "\\|")
        out.append(
            f"| {r.kind} | `{r.name}`: {summary} | {r.exit_status if r.exit_status is not None else '-'} "
            f"| {r.seconds:.1f} s | {'yes' if r.located else 'no'} | {'yes' if r.stored else 'no'} | {r.outcome} |"
        )
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="write every outcome as JSON here")
    parser.add_argument("--markdown", help="write the tables as Markdown here")
    parser.add_argument("--only", help="comma-separated case names (default: all)")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds per input (20)")
    parser.add_argument("--child", nargs=2, metavar=("CASE", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return run_child(args.child[0], Path(args.child[1]))
    cases = all_cases()
    if args.only:
        wanted = set(args.only.split(","))
        cases = [c for c in cases if c.name in wanted or f"{c.kind}:{c.name}" in wanted]
    results = []
    for case in cases:
        r = run_case(case, args.timeout)
        results.append(r)
        print(
            f"{r.kind:16} {r.name:28} exit {r.exit_status!s:>4} {r.seconds:6.1f} s  {r.outcome}",
            flush=True,
        )
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=2))
    if args.markdown:
        Path(args.markdown).write_text(markdown(results, args.timeout))
    print(dict(Counter(r.outcome for r in results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
