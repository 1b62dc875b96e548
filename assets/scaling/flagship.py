"""The run the forecast asks for: the compute-optimal size and tokens at the target budget, trained, and
the forecast checked against what it measures (``forecast_vs_actual``)."""

import json
import shutil

import dagster as dg

from assets.scaling.fit import ScalingLawFit
from assets.scaling.mc_items import McItems
from assets.scaling.sweep import SweepRun, torch_threads
from dagster_project.artifacts import Artifact, Tokenizer, TokenShards
from dagster_project.configs import resolve_config
from dagster_project.partitions import SNAPSHOTS
from dagster_project.resources import DvcResource, MlflowResource
from dagster_project.stage import md_table, stage_asset, stage_run
from ml.io import atomic_dir, atomic_write_bytes, atomic_write_text
from ml.scaling.plan import SweepConfig, plan_cell
from ml.scaling.sweep import run_cell, score_cell
from ml.train.report import loss_curve_png, read_metrics

WARN_REL_ERROR = 0.02  # forecast_vs_actual warns above 2% relative error


class FlagshipRun(Artifact):
    """``flagship.json``: the trained run's record beside the forecast it was planned from; ``hf/`` the model."""

    @property
    def report(self) -> dict:
        return json.loads((self.path / "flagship.json").read_text())


def compare(forecast: dict, record: dict) -> dict:
    """Measured vs forecast validation loss and MC accuracy, with relative errors; a quantity the fit did
    not forecast (an undetermined sigmoid) is left out."""
    pairs = {
        "val_loss": ("expected_loss", "final_val_loss"),
        "accuracy": ("expected_accuracy", "mc_accuracy"),
    }
    out = {}
    for name, (f_key, a_key) in pairs.items():
        if f_key not in forecast:
            continue
        want, got = float(forecast[f_key]), float(record[a_key])
        out[name] = {"forecast": want, "actual": got, "rel_error": abs(got - want) / abs(got)}
    return out


def forecast_vs_actual(scaling_flagship: FlagshipRun) -> dg.AssetCheckResult:
    """Relative error of the forecast validation loss and accuracy against the flagship's measured ones:
    passes within 2%, warns above it, fails (ERROR) above ``SweepConfig.forecast_max_rel_error``."""
    report = scaling_flagship.report
    worst = max(v["rel_error"] for v in report["compare"].values())
    severity = dg.AssetCheckSeverity.ERROR if worst > report["max_rel_error"] else dg.AssetCheckSeverity.WARN
    metadata = {f"{k}_{q}": float(v[q]) for k, v in report["compare"].items() for q in v}
    return dg.AssetCheckResult(
        passed=bool(worst <= report["warn_rel_error"]),
        severity=severity,
        metadata={
            **metadata,
            **{f"{k}_not_forecast": v for k, v in report.get("not_forecast", {}).items()},
            "max_rel_error": float(report["max_rel_error"]),
            "worst_rel_error": float(worst),
        },
    )


@stage_asset(FlagshipRun, gates=[forecast_vs_actual], partitions_def=SNAPSHOTS, kinds={"pytorch"})
def scaling_flagship(
    context: dg.AssetExecutionContext,
    config: SweepRun,
    scaling_law_fit: ScalingLawFit,
    token_shards: TokenShards,
    tokenizer: Tokenizer,
    mc_eval_items: McItems,
    mlflow: MlflowResource,
    dvc: DvcResource,
) -> dg.MaterializeResult:
    """Trains the forecast's run: of the configured sizes, the one whose FLOPs per token are nearest to
    C / D*(C) at the target budget C (default 3x the largest swept budget), for the whole budget, with the
    sweep's recipe; measures validation loss and multiple-choice accuracy next to the forecast."""
    cfg = resolve_config(SweepConfig, config)
    fit = scaling_law_fit.fit
    size = next(s for s in cfg.size_list if s.name == fit["flagship"]["size"])
    cell = plan_cell(cfg, float(fit["forecast"]["budget"]), size, token_shards.vocab_size)
    with stage_run(context, mlflow, dvc, cfg, scaling_law_fit, token_shards, tokenizer, mc_eval_items) as run:
        with atomic_dir(run.out_dir) as tmp, torch_threads(cfg.flagship_threads):
            record = run_cell(cfg, cell, token_shards.path, tmp)
            record.update(score_cell(tmp / "hf", tokenizer.path, mc_eval_items.read(), cfg.seq_len))
            shutil.rmtree(tmp / "checkpoints", ignore_errors=True)
            report = {
                "record": record,
                "forecast": fit["forecast"],
                "compare": compare(fit["forecast"], record),
                "not_forecast": {"accuracy": fit["downstream"]["sigmoid_error"]}
                if "expected_accuracy" not in fit["forecast"]
                else {},
                "max_rel_error": cfg.forecast_max_rel_error,
                "warn_rel_error": WARN_REL_ERROR,
            }
            atomic_write_text(tmp / "flagship.json", json.dumps(report, indent=2))
            curve = read_metrics(tmp / "metrics.jsonl")
            atomic_write_bytes(tmp / "loss.png", loss_curve_png(curve))
        run.log.log_metric_series([(m["step"], {"train_loss": m["loss"], "lr": m["lr"]}) for m in curve])
        run.log_png(run.out_dir / "loss.png", "loss curve")
        rows = [(k, v["forecast"], v["actual"], v["rel_error"]) for k, v in report["compare"].items()]
        numbers = {
            f"{k}_{q}": v[q]
            for k, v in report["compare"].items()
            for q in ("forecast", "actual", "rel_error")
        }
        numbers.update(
            params=cell.params, tokens=cell.tokens, flops=cell.flops, wall_time_s=record["wall_time_s"]
        )
        run.log_metrics(numbers)
        summary = (
            f"**Flagship {cell.key}**: {cell.params:,} parameters, {cell.tokens:,} tokens\n\n"
            + md_table(rows, ("quantity", "forecast", "actual", "relative error"))
        )
        return run.result(num_records=cell.tokens, summary=summary, metadata=numbers)
