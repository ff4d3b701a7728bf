"""`nsbi closure`: learned ratios against the exact likelihood on benchmark problems, and coverage.

For each chosen problem (`nsbi problems list`) this runs the whole user path -- samples and
analysis file written, `nsbi analysis run` (campaign, training, fit, report) with observed
pseudo-data at mu = 1 -- then, with the trained ensembles, fits fresh pseudo-data from the true
simulator at every --mu-true with the learned and the exact ratios (`sbi_engine.closure`), and
runs --toys fresh pseudo-experiments per --coverage-mu value fitted with both. Writes JSON and
a markdown table. Exit status 0 when every comparison and coverage meets the criteria, 1 if not.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}"
        ) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "problems", nargs="*", help="benchmark problems (default: all; see `nsbi problems list`)"
    )
    parser.add_argument(
        "--mu-true",
        type=_floats,
        default=[0.5, 1.0, 2.0],
        help="POI values of the closure fits (default 0.5,1,2)",
    )
    parser.add_argument(
        "--coverage-mu",
        type=_floats,
        default=[1.0, 2.0],
        help="POI values of the coverage study (default 1,2)",
    )
    parser.add_argument(
        "--model-toys-mu",
        type=_floats,
        default=[1.5, 3.0],
        help="POI values of toys drawn from the exact-ratio model (its normalisation sample), default 1.5,3",
    )
    parser.add_argument(
        "--toys",
        type=int,
        default=300,
        help="fresh pseudo-experiments per coverage point (default 300; 0 skips)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where samples, analysis files and reports go (default <NSBI_HOME>/closure)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of samples and pseudo-data")
    parser.add_argument(
        "--events-scale",
        type=float,
        default=1.0,
        help="scale of the simulated sample sizes (smoke runs: 0.1)",
    )
    parser.add_argument(
        "--training",
        type=json.loads,
        default=None,
        help="JSON overrides of the training defaults, e.g. '{\"max_steps\": 200}' (smoke runs)",
    )
    parser.add_argument(
        "--no-intervals", action="store_true", help="skip the profile intervals (faster)"
    )
    parser.add_argument(
        "--shrink-noise",
        action="store_true",
        help="closure and coverage fits with the noise shrinkage of the learned ratios "
        "(fit option shrink_noise; docs/validation.md)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument(
        "--markdown", type=Path, default=None, help="write the table as markdown here"
    )


def _analysis_file(
    problem: Any, folder: Path, seed: int, scale: float, training: dict | None
) -> Path:
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    problem.write_samples(folder, seed=seed, events_scale=scale)
    problem.write_pseudo_data(folder / "pseudo_data_mu1.parquet", 1.0, seed=seed + 7)
    config = problem.analysis_config(
        folder, mu_true=1.0, observed="pseudo_data_mu1.parquet", relative_to=folder
    )
    config["compute"] = {"fit": True, "impacts": False, "scan": False, "toys": False}
    if training:
        config.setdefault("training", {}).setdefault("defaults", {}).update(training)
    path = folder / "analysis.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _fit_spec(campaign_id: int) -> dict[str, Any]:
    from backend import service

    jobs = [j for j in service.campaign_job_records(campaign_id) if j["kind"] == "fit"]
    if not jobs:
        raise RuntimeError(f"campaign {campaign_id} has no fit job")
    return dict(jobs[-1]["spec"])


def _local(uris: dict[str, list[str]]) -> dict[str, list[str]]:
    from backend.stores.local import path_from_uri

    return {task: [str(path_from_uri(u)) for u in us] for task, us in uris.items()}


def study_problem(name: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Train through the analysis path once, then the closure fits and coverage of one problem."""
    import copy

    import numpy as np

    from backend.analysis.run import run_analysis
    from sbi_engine import closure as cl
    from sbi_engine.fit import fit
    from sbi_engine.fit_jobs import bootstrapped as ensembles_bootstrapped
    from sbi_engine.fit_jobs import build_learned_fit
    from sbi_engine.learned_uncertainty import components
    from sbi_engine.problems import exact_workspace, get_problem
    from sbi_engine.sample_specs import load_sample_spec

    problem = get_problem(name)
    t0 = time.monotonic()
    path = _analysis_file(problem, workdir / name, args.seed, args.events_scale, args.training)
    summary = run_analysis(
        path, backend="local", report_dir=workdir / name / "report", progress=True
    )
    if summary.status != "SUCCEEDED":
        return {
            "problem": name,
            "error": f"analysis campaign {summary.campaign_id} ended {summary.status}",
        }
    spec = _fit_spec(summary.campaign_id)
    if getattr(args, "shrink_noise", False):
        spec["params"]["options"] = {**(spec["params"].get("options") or {}), "shrink_noise": True}
    ensembles = _local(summary.result["ensembles"])
    params = spec["params"]
    norm = load_sample_spec(params["processes"][params["reference"]], role="eval")
    out: dict[str, Any] = {
        "problem": name,
        "campaign": summary.campaign_id,
        "train_s": time.monotonic() - t0,
        "result_status": summary.result.get("result_status"),
        "closure": [],
        "coverage": [],
    }
    comps_at: dict[float, Any] = {}
    for i, mu in enumerate(args.mu_true):
        data = problem.pseudo_data(mu, seed=args.seed + 1000 + i)
        spec_mu = copy.deepcopy(spec)
        spec_mu["params"]["mu_true"] = mu
        lf = build_learned_fit(spec_mu, ensembles, data=data)
        cmp = cl.compare_fits(
            lf.workspace, exact_workspace(problem, data, norm), intervals=not args.no_intervals
        )
        comps = components(lf, cmp["learned"]["_result"], bootstrap=ensembles_bootstrapped(lf))
        comps_at[mu] = comps
        cmp.update(
            mu_true=mu,
            n_events=len(data),
            uncertainty=comps.to_dict(),
            noise_shrinkage=[x.to_dict() for x in lf.shrinkage],
            passes=cl.passes(cmp["differences"]),
        )
        out["closure"].append(cl.strip_private(cmp))
        print(
            f"{name} mu_true={mu:g}: learned {cmp['learned']['mu_hat']:.3f} +- {cmp['learned']['sigma']:.3f}, "
            f"exact {cmp['exact']['mu_hat']:.3f} +- {cmp['exact']['sigma']:.3f} -> {cmp['passes']}",
            file=sys.stderr,
        )
    for j, mu in enumerate(args.coverage_mu if args.toys > 0 else []):
        seeds = [args.seed + 100_000 * (j + 1) + k for k in range(args.toys)]

        def draw(s: int, mu: float = mu) -> Any:
            return problem.pseudo_data(mu, seed=s)

        stacked, rows = cl.stacked_experiments(draw, seeds)
        spec_mu = copy.deepcopy(spec)
        spec_mu["params"]["mu_true"] = mu
        lf = build_learned_fit(spec_mu, ensembles, data=stacked)
        comps = comps_at.get(mu) or components(
            lf, fit(lf.workspace), bootstrap=ensembles_bootstrapped(lf)
        )
        learned = cl.fit_experiments(
            lf.workspace,
            rows,
            mu,
            seed=args.seed + j,
            progress=f"{name} coverage mu={mu:g} learned",
        )
        exact = cl.fit_experiments(
            exact_workspace(problem, stacked, norm),
            rows,
            mu,
            seed=args.seed + j,
            progress=f"{name} coverage mu={mu:g} exact",
        )
        extra = (comps.nn or 0.0) ** 2 + (comps.sim or 0.0) ** 2
        out["coverage"].append(
            {
                "mu_true": mu,
                "toys": args.toys,
                "learned_hesse": cl.coverage(learned["mu_hat"], learned["sigma"], mu).to_dict(),
                "learned_with_components": cl.coverage(
                    learned["mu_hat"], np.sqrt(learned["sigma"] ** 2 + extra), mu
                ).to_dict(),
                "exact": cl.coverage(exact["mu_hat"], exact["sigma"], mu).to_dict(),
                "components": comps.to_dict(),
                "noise_shrinkage": [x.to_dict() for x in lf.shrinkage],
            }
        )
    if args.toys > 0 and args.model_toys_mu:
        from sbi_engine.fit.toys import toy_pull_study

        data = problem.pseudo_data(1.0, seed=args.seed + 999)
        exact_ws = exact_workspace(problem, data, norm)
        out["model_toys"] = []
        for k, mu in enumerate(args.model_toys_mu):
            try:
                out["model_toys"].append(
                    {
                        "mu_true": mu,
                        **toy_pull_study(exact_ws, mu, args.toys, seed=args.seed + 31 + k),
                    }
                )
            except (
                ValueError
            ) as exc:  # e.g. a negative expected count: reported, not fatal to the study
                out["model_toys"].append({"mu_true": mu, "error": str(exc)})
    out["seconds"] = time.monotonic() - t0
    return out


def _fmt(v: Any, spec: str = ".3f") -> str:
    return (
        "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)
    )


def _lambdas(row: dict[str, Any]) -> str:
    """The noise-shrinkage factor of each process ratio task that it changed ("1" if none)."""
    parts = [
        f"{s['task']} {s['lambda']:.3f}"
        for s in row.get("noise_shrinkage") or []
        if s["lambda"] < 0.9995
    ]
    return ", ".join(parts) or "1"


def markdown(results: list[dict[str, Any]], command: str) -> str:
    """The closure and coverage tables."""
    lines = [
        f"Command: `{command}`",
        "",
        "| problem | mu_true | mu-hat learned | mu-hat exact | diff / sigma_ex | sigma_L / sigma_ex | "
        "68% learned | 68% exact | ends diff / sigma_ex | NN | sim | lambda | pass |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['problem']} | | {r['error']} | | | | | | | | | | |")
            continue
        for c in r["closure"]:
            L, E, d, u = c["learned"], c["exact"], c["differences"], c["uncertainty"]
            iv = lambda x: f"[{_fmt(x[0])}, {_fmt(x[1])}]"  # noqa: E731
            lines.append(
                f"| {r['problem']} | {c['mu_true']:g} | {_fmt(L['mu_hat'])} +- {_fmt(L['sigma'])} | "
                f"{_fmt(E['mu_hat'])} +- {_fmt(E['sigma'])} | {_fmt(d['mu_hat_in_sigma'], '+.2f')} | "
                f"{_fmt(d['sigma_ratio'], '.2f')} | {iv(L['interval68'])} | {iv(E['interval68'])} | "
                f"{_fmt(d.get('interval_low_in_sigma'), '+.2f')} / {_fmt(d.get('interval_high_in_sigma'), '+.2f')} | "
                f"{_fmt(u.get('nn'))} | {_fmt(u.get('sim'))} | {_lambdas(c)} | "
                f"{'yes' if all(c['passes'].values()) else 'NO: ' + ', '.join(k for k, v in c['passes'].items() if not v)} |"
            )
    lines += [
        "",
        "| problem | mu_true | toys | 68% learned (Hesse) | 68% learned (+NN, sim) | 68% exact | "
        "95% learned (+NN, sim) | 95% exact | pull mean / width learned |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for c in r.get("coverage", []):
            h, w, e = c["learned_hesse"], c["learned_with_components"], c["exact"]
            pc = lambda x, k: f"{100 * x[k]:.1f} +- {100 * x[k + '_err']:.1f} %"  # noqa: E731
            lines.append(
                f"| {r['problem']} | {c['mu_true']:g} | {w['n']} | {pc(h, 'cover68')} | {pc(w, 'cover68')} | "
                f"{pc(e, 'cover68')} | {pc(w, 'cover95')} | {pc(e, 'cover95')} | "
                f"{_fmt(h['mean_pull'], '+.2f')} / {_fmt(h['pull_width'], '.2f')} |"
            )
    lines += [
        "",
        "Toys drawn from the exact-ratio model (Poisson resampling of its normalisation sample):",
        "",
        "| problem | mu_true | toys | pull mean | pull width | 68% Hesse coverage | mean count / expected |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for t in r.get("model_toys", []):
            lines.append(
                f"| {r['problem']} | {t['mu_true']:g} | {t.get('n_converged', t.get('n_toys'))} | "
                f"{_fmt(t.get('pull_mean'), '+.3f')} +- {_fmt(t.get('pull_mean_se'), '.3f')} | "
                f"{_fmt(t.get('pull_width'), '.3f')} +- {_fmt(t.get('pull_width_se'), '.3f')} | "
                f"{_fmt(t.get('coverage_hesse_68'), '.3f')} | {_fmt(t.get('count_mean'), '.1f')} / "
                f"{_fmt(t.get('count_expected'), '.1f')} |"
            )
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    from backend.settings import Settings
    from sbi_engine.problems import list_problems

    names = args.problems or list_problems()
    unknown = sorted(set(names) - set(list_problems()))
    if unknown:
        print(
            f"nsbi closure: unknown problem(s) {unknown}; known: {list_problems()}", file=sys.stderr
        )
        return 2
    workdir = args.workdir or Settings.from_env().home / "closure"
    results = [study_problem(n, args, workdir) for n in names]
    command = "nsbi closure " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else "nsbi closure"
    table = markdown(results, command)
    print(table)
    if args.json:
        args.json.write_text(
            json.dumps({"command": command, "results": results}, indent=2, default=float)
        )
    if args.markdown:
        args.markdown.write_text(table)
    ok = all(
        "error" not in r
        and all(all(c["passes"].values()) for c in r["closure"])
        and all(
            63.0 <= 100 * c["learned_with_components"]["cover68"] <= 73.0 for c in r["coverage"]
        )
        for r in results
    )
    return 0 if ok else 1
