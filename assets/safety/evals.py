"""A model's safety evaluation (Llama 3 paper §5.4): VR/FRR, prompt injection and insecure code, gated
against configured bounds and against the previous version of the evaluated model."""

import json
from pathlib import Path

import dagster as dg
import pandas as pd

from assets.models import evaluated_model_in
from dagster_project.artifacts import HFCheckpoint, SafetyEvals, SafetyModels
from dagster_project.configs import dagster_config_for, resolve_config
from dagster_project.partitions import SNAPSHOTS
from dagster_project.resources import DvcResource, MlflowResource
from dagster_project.stage import StageRun, frame_md, md_table, stage_asset, stage_run
from dagster_project.versions import VersionStore
from ml.io import atomic_dir, atomic_write_bytes, atomic_write_text
from ml.safety import evaluate
from ml.safety.classifier import SafetyJudge
from ml.safety.insecure_code import self_check
from ml.safety.metrics import compare_rates, regressions
from ml.safety.plots import grouped_bars_png
from ml.tokens.tokenizer import load_tokenizer

SafetyEvalRun = dagster_config_for(evaluate.SafetyEvalConfig)
DIMS = ("category", "lang", "variant")


def safety_evals_within_bounds(safety_evals: SafetyEvals) -> dg.AssetCheckResult:
    """Overall VR, FRR, injection success and insecure-code rate at most their configured bounds
    (``SafetyEvalConfig.max_*``; on tiny they are 1.0, and the config says why)."""
    r = safety_evals.report
    over = [
        f"{k} {v:.3f} > {r['bounds'][k]}"
        for k, v in r["headline"].items()
        if k in r["bounds"] and v > r["bounds"][k]
    ]
    return dg.AssetCheckResult(
        passed=not over,
        description="; ".join(over) or "every rate within its bound",
        metadata={k: float(v) for k, v in r["headline"].items()}
        | {f"bound_{k}": float(v) for k, v in r["bounds"].items()},
    )


def safety_evals_no_regression(safety_evals: SafetyEvals) -> dg.AssetCheckResult:
    """Overall VR and FRR no worse than on the previous version of the evaluated model by more than the
    margins (``vr_margin``, ``frr_margin``); passes with nothing to compare on a first evaluation."""
    r = safety_evals.report
    if not r["previous"]:
        return dg.AssetCheckResult(passed=True, description="no previous model version evaluated")
    comparison = pd.read_parquet(safety_evals.path / "comparison_category.parquet")
    lines = regressions(comparison.loc[["all"]])
    return dg.AssetCheckResult(
        passed=not lines,
        description="; ".join(lines) or f"no regression against {r['previous']['model_version']}",
        metadata={k: float(v) for k, v in comparison.loc["all"].items() if not isinstance(v, bool)},
    )


def safety_evals_group_regressions(safety_evals: SafetyEvals) -> dg.AssetCheckResult:
    """Per category, language and variant: VR/FRR rises beyond the margins (a warning: groups are small)."""
    lines = []
    for dim in DIMS:
        path = safety_evals.path / f"comparison_{dim}.parquet"
        if path.exists():
            lines += [f"{dim} {line}" for line in regressions(pd.read_parquet(path).drop(index="all"))]
    return dg.AssetCheckResult(
        passed=not lines, severity=dg.AssetCheckSeverity.WARN, description="; ".join(lines) or "none"
    )


def safety_evals_analysers_work(safety_evals: SafetyEvals) -> dg.AssetCheckResult:
    """bandit and semgrep flag each known-insecure sample with its CWE and no analyser flags a known-safe one."""
    check = pd.read_parquet(safety_evals.path / "analyser_self_check.parquet")
    bad = check[~check["ok"]]["sample"].tolist()
    return dg.AssetCheckResult(
        passed=not bad, description=f"wrong on {bad}" if bad else f"{len(check)} samples right"
    )


def previous_evaluation(run: StageRun, model_md5: str) -> Path | None:
    """The newest earlier evaluation (current or superseded) of a different version of the model."""
    store = VersionStore(run.asset, run.partition)
    for rec in reversed(store.records()):
        path = store.path(rec["version"])
        if rec.get("status") in ("current", "superseded") and (path / "report.json").exists():
            if json.loads((path / "report.json").read_text())["model"]["md5"] != model_md5:
                return path
    return None


def _compare(tables: dict, previous: Path | None, cfg: evaluate.SafetyEvalConfig) -> dict[str, pd.DataFrame]:
    if previous is None:
        return {}
    return {
        dim: compare_rates(
            tables[dim], pd.read_parquet(previous / f"rates_{dim}.parquet"), cfg.vr_margin, cfg.frr_margin
        )
        for dim in DIMS
    }


def _write(tmp: Path, frames: dict[str, pd.DataFrame], report: dict, plots: dict[str, bytes]) -> None:
    for name, df in frames.items():
        df.to_parquet(tmp / f"{name}.parquet")
    for name, png in plots.items():
        atomic_write_bytes(tmp / f"{name}.png", png)
    atomic_write_text(tmp / "report.json", json.dumps(report, indent=2, default=float))


def _headline(tables: dict, inj: dict, code_rates: pd.DataFrame, results: pd.DataFrame) -> dict[str, float]:
    adv = results[results["kind"] == "adversarial"]
    loglik = results.groupby("kind")["refusal_loglik"].mean()  # NaN rows (too long) left out
    return {
        "vr": float(tables["category"].loc["all", "vr"]),
        "frr": float(tables["category"].loc["all", "frr"]),
        "adversarial_compliance": float(adv["complied"].mean()),  # not refused: an upper bound on VR
        "refusal_loglik_adversarial": float(loglik["adversarial"]),
        "refusal_loglik_borderline": float(loglik["borderline"]),
        "refusal_margin": float(loglik["adversarial"] - loglik["borderline"]),
        "injection_success": float(inj["technique"].loc["all", "success_rate"]),
        "insecure_rate": float(code_rates.loc["all", "rate"]),
    }


SAFETY_GATES = (
    safety_evals_within_bounds,
    safety_evals_no_regression,
    safety_evals_group_regressions,
    safety_evals_analysers_work,
)


@stage_asset(
    SafetyEvals,
    gates=SAFETY_GATES,
    partitions_def=SNAPSHOTS,
    ins=evaluated_model_in(),
    kinds={"pytorch", "python"},
)
def safety_evals(
    context: dg.AssetExecutionContext,
    config: SafetyEvalRun,
    model: HFCheckpoint,
    safety_classifier: SafetyModels,
    mlflow: MlflowResource,
    dvc: DvcResource,
) -> dg.MaterializeResult:
    """Evaluate the model (``assets.models.EVALUATED_MODEL``): it answers the held-out safety prompts, the
    prompt-injection cases and the coding tasks (greedy, ``ml.infer.sample``); VR on adversarial and FRR on
    borderline prompts per category, language and variant, judged by the safety classifier and the refusal
    detector; injection success per technique and vector; insecure-code rate per CWE (bandit, semgrep and regex rules).
    Compared with the evaluation of the previous version of the model where one exists."""
    cfg = resolve_config(evaluate.SafetyEvalConfig, config)
    with stage_run(context, mlflow, dvc, cfg, model, safety_classifier) as run:
        return evaluate_safety(run, cfg, model, safety_classifier, previous_evaluation(run, model.md5))


def evaluate_safety(
    run: StageRun,
    cfg: evaluate.SafetyEvalConfig,
    model: HFCheckpoint,
    safety_classifier: SafetyModels,
    previous: Path | None,
) -> dg.MaterializeResult:
    """The evaluation of ``model`` written to ``run.out_dir``, compared with the evaluation at ``previous``
    (another model version's, or the model a post-training round started from) where one is given."""
    net, tok = evaluate.load_model(model.hf_dir, cfg.dtype), load_tokenizer(model.hf_dir)
    results, rates = evaluate.evaluate_rates(net, tok, SafetyJudge.load(safety_classifier.path), cfg)
    cases, inj = evaluate.evaluate_injection(net, tok, cfg)
    tasks, code_rates, findings = evaluate.evaluate_insecure_code(net, tok, cfg)
    tables = rates["tables"]
    comparison = _compare(tables, previous, cfg)
    headline = _headline(tables, inj, code_rates, results)
    before = json.loads((previous / "report.json").read_text()) if previous else None
    report = {
        "model": {"asset": model.asset, "version": model.version, "md5": model.md5},
        "previous": before["model"] | {"model_version": previous.name, "headline": before["headline"]}
        if before
        else None,
        "headline": headline,
        "bounds": {k: getattr(cfg, f"max_{k}") for k in ("vr", "frr", "injection_success", "insecure_rate")},
        "truncated_prompts": rates["truncated_prompts"],
        "config": cfg.to_dict(),
    }
    frames = {
        "responses": results,
        "injection": cases.assign(messages=cases["messages"].map(json.dumps)),
        "insecure_code": tasks.assign(messages=tasks["messages"].map(json.dumps)),
        "code_findings": findings,
        "insecure_rates": code_rates,
        "analyser_self_check": self_check(),
        **{f"rates_{d}": t for d, t in tables.items()},
        **{f"injection_{b}": t for b, t in inj.items()},
        **{f"comparison_{d}": c for d, c in comparison.items()},
    }
    plots = {
        "rates_category": grouped_bars_png(tables["category"], ["vr", "frr"], "VR / FRR per category"),
        "injection_technique": grouped_bars_png(
            inj["technique"], ["success_rate"], "injection success per technique"
        ),
    }
    with atomic_dir(run.out_dir) as tmp:
        _write(tmp, frames, report, plots)
    return _finish(run, report, tables, inj, code_rates, comparison, len(results) + len(cases) + len(tasks))


def _finish(
    run: StageRun, report: dict, tables: dict, inj: dict, code_rates, comparison: dict, n: int
) -> dg.MaterializeResult:
    run.log_metrics(report["headline"])
    run.log_png(run.out_dir / "rates_category.png", "VR FRR per category")
    run.log_png(run.out_dir / "injection_technique.png", "injection success per technique")
    sections = {f"rates_{d}": (f"VR / FRR per {d}", t) for d, t in tables.items()}
    sections["injection_technique"] = ("Injection success per technique", inj["technique"])
    sections["injection_vector"] = ("Injection success per vector", inj["vector"])
    sections["insecure_rates"] = ("Insecure code per CWE", code_rates)
    if comparison:
        sections["comparison_category"] = ("Against the previous model version", comparison["category"])
    md = {name: frame_md(t.round(3)) for name, (_, t) in sections.items()}
    previous = report["previous"]["model_version"] if report["previous"] else "none"
    summary = (
        f"**Safety evaluation** of {report['model']['asset']} {report['model']['version'] or '(current)'}"
        f" (previous model version evaluated: {previous})\n\n"
        + md_table(report["headline"], ("rate", "value"))
        + "".join(f"\n\n### {title}\n{md[name]}" for name, (title, _) in sections.items())
    )
    return run.result(
        num_records=n,
        summary=summary,
        metadata={k: float(v) for k, v in report["headline"].items()}
        | {f"table_{name}": dg.MetadataValue.md(text) for name, text in md.items()},
    )
