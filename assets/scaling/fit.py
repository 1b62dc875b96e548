"""The scaling-law fit over one snapshot's sweep: IsoFLOP parabolas, D*(C) and N*(C) with bootstrap
intervals, L*(C), the two-stage downstream forecast, and the forecast at the target budget."""

import json

import dagster as dg

from assets.scaling.sweep import SweepCellRun, SweepRun
from dagster_project.artifacts import Artifact, TokenShards
from dagster_project.configs import resolve_config
from dagster_project.partitions import SNAPSHOT_OF_CELL, SNAPSHOTS
from dagster_project.resources import DvcResource, MlflowResource
from dagster_project.stage import md_table, stage_asset, stage_run
from ml.io import atomic_dir, atomic_write_bytes, atomic_write_text
from ml.scaling.fit import PAPER_A, PAPER_ALPHA
from ml.scaling.forecast import (
    SweepIncomplete,
    check_cells,
    fit_downstream,
    fit_sweep,
    flagship_cell,
    isoflop_png,
    power_law_png,
    summary_rows,
)
from ml.scaling.plan import SweepConfig, plan_sweep


class ScalingLawFit(Artifact):
    """``fit.json``: per-budget parabolas, the laws with intervals, the forecast and the flagship's plan."""

    @property
    def fit(self) -> dict:
        return json.loads((self.path / "fit.json").read_text())


def planned_records(
    cells: dict[str, SweepCellRun], cfg: SweepConfig, vocab_size: int
) -> tuple[list[SweepCellRun], list[dict]]:
    """The handles and records of the cells the plan names, in plan order (other cells of the snapshot are
    not read); a ``dg.Failure`` naming each planned cell that is missing, failed or trained for another plan."""
    by_cell = {key.split("|")[-1]: handle for key, handle in cells.items()}
    planned = plan_sweep(cfg, vocab_size)
    try:
        records = check_cells(planned, {c.key: by_cell[c.key].record for c in planned if c.key in by_cell})
    except SweepIncomplete as exc:
        raise dg.Failure(description=str(exc)) from exc
    return [by_cell[c.key] for c in planned], records


def fit_report(cfg: SweepConfig, records: list[dict], vocab_size: int) -> dict:
    """Everything the fit asset writes to ``fit.json``."""
    fit = fit_sweep(records, bootstrap=cfg.bootstrap, seed=cfg.seed, include_edge=cfg.use_edge_minima)
    target = cfg.forecast_budget
    downstream = fit_downstream(records, fit)
    forecast = {**fit.forecast(target), **downstream.forecast(target)}
    flagship = flagship_cell(cfg, forecast["opt_tokens"], vocab_size)
    return {
        "budgets": [
            {
                "budget": f.budget,
                "coeffs": f.coeffs,
                "x_range": f.x_range,
                "opt_tokens": f.opt_tokens,
                "opt_loss": f.opt_loss,
                "edge": f.edge,
                "reason": f.reason,
                "used": f in fit.used,
            }
            for f in fit.isoflops
        ],
        "alpha": fit.tokens_law.exponent,
        "A": fit.tokens_law.coef,
        "alpha_ci": fit.alpha_ci,
        "A_ci": fit.coef_ci,
        "paper_alpha": PAPER_ALPHA,
        "paper_A": PAPER_A,
        "params_exponent": fit.params_law.exponent if fit.params_law else None,
        "params_coef": fit.params_law.coef if fit.params_law else None,
        "params_exponent_ci": fit.params_alpha_ci,
        "bootstrap_samples": fit.bootstrap_samples,
        "loss_law": {"coef": fit.loss_law.coef, "exponent": fit.loss_law.exponent},
        "downstream": {
            "nll_coef": downstream.nll_law.coef,
            "nll_exponent": downstream.nll_law.exponent,
            "k": downstream.k,
            "x0": downstream.x0,
            "chance": downstream.chance,
            "points": downstream.points,
            "sigmoid_error": downstream.sigmoid_error,
            "sigmoid_note": downstream.sigmoid_note,
        },
        "forecast": forecast,
        "flagship": {
            "size": flagship.size,
            "tokens": flagship.tokens,
            "steps": flagship.steps,
            "flops": flagship.flops,
            "params": flagship.params,
        },
        "include_edge": fit.include_edge,
        "cells_cpu_time_s": sum(float(r.get("cpu_time_s", 0.0)) for r in records),
        "cells_train_time_s": sum(float(r["wall_time_s"]) for r in records),
        "_fit": fit,
    }


@stage_asset(
    ScalingLawFit,
    partitions_def=SNAPSHOTS,
    ins={"scaling_sweep": dg.AssetIn(partition_mapping=SNAPSHOT_OF_CELL)},
    kinds={"python", "numpy"},
)
def scaling_law_fit(
    context: dg.AssetExecutionContext,
    config: SweepRun,
    scaling_sweep: dict[str, SweepCellRun],
    token_shards: TokenShards,
    mlflow: MlflowResource,
    dvc: DvcResource,
) -> dg.MaterializeResult:
    """Per budget a parabola of validation loss vs log10(tokens); its vertex is the compute-optimal point. A
    budget whose vertex is not inside its grid is flagged and left out. Over the rest: D*(C) = A C^alpha
    (the paper's alpha = 0.53, A = 0.29 beside ours) and N*(C) with 95% bootstrap intervals, L*(C), and the
    two-stage downstream forecast (NLL vs C, sigmoid NLL -> accuracy). Reads the cells of its snapshot that
    its plan names; refuses a sweep whose planned cell is missing, failed or stale, naming it."""
    cfg = resolve_config(SweepConfig, config)
    cells, records = planned_records(scaling_sweep, cfg, token_shards.vocab_size)
    with stage_run(context, mlflow, dvc, cfg, token_shards, *cells) as run:
        report = fit_report(cfg, records, token_shards.vocab_size)
        fit = report.pop("_fit")
        with atomic_dir(run.out_dir) as tmp:
            atomic_write_text(tmp / "fit.json", json.dumps(report, indent=2))
            atomic_write_text(tmp / "cells.json", json.dumps(records, indent=2))
            atomic_write_bytes(tmp / "isoflops.png", isoflop_png(fit, records))
            atomic_write_bytes(tmp / "power_law.png", power_law_png(fit, cfg.forecast_budget))
        run.log_png(run.out_dir / "isoflops.png", "isoflop parabolas")
        run.log_png(run.out_dir / "power_law.png", "power law")
        numbers = _numbers(report)
        run.log_metrics(numbers)
        rows = [
            (k, f"{a:.4g}" if isinstance(a, float) else a, b)
            for k, a, b in summary_rows(fit, cfg.forecast_budget)
        ]
        budgets = [
            (
                f"{b['budget']:.3g}",
                f"{b['opt_tokens']:.4g}",
                f"{b['opt_loss']:.4f}",
                "used" if b["used"] else f"flagged: {b['reason']}",
            )
            for b in report["budgets"]
        ]
        sigmoid, note = report["downstream"]["sigmoid_error"], report["downstream"]["sigmoid_note"]
        summary = (
            (f"**No accuracy forecast.** {sigmoid}\n\n" if sigmoid else "")
            + (f"**Accuracy forecast extrapolated.** {note}\n\n" if note else "")
            + "**Scaling-law fit** (Llama 3 paper §3.2.1). C counts 6 x every matmul weight per token (LM head"
            " included) plus causal attention; D = training tokens; N = non-embedding parameters (LM head"
            " included).\n\n"
            + md_table(rows, ("quantity", "ours", "paper"))
            + "\n\n### IsoFLOP minima\n"
            + md_table(budgets, ("budget", "D*", "L*", "status"))
        )
        return run.result(num_records=len(records), summary=summary, metadata=numbers)


def _numbers(report: dict) -> dict:
    f = report["forecast"]
    out = {
        "alpha": report["alpha"],
        "alpha_ci_low": report["alpha_ci"][0],
        "alpha_ci_high": report["alpha_ci"][1],
        "A": report["A"],
        "paper_alpha": PAPER_ALPHA,
        "paper_A": PAPER_A,
        "budgets_used": sum(b["used"] for b in report["budgets"]),
        "budgets_flagged": sum(b["edge"] for b in report["budgets"]),
        **{f"forecast_{k}": v for k, v in f.items()},
        "flagship_tokens": report["flagship"]["tokens"],
        "flagship_params": report["flagship"]["params"],
        "cells_cpu_time_s": report["cells_cpu_time_s"],
        "cells_train_time_s": report["cells_train_time_s"],
    }
    if report["params_exponent"] is not None:
        out["params_exponent"] = report["params_exponent"]
    return {k: float(v) for k, v in out.items()}
