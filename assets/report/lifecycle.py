"""The lifecycle report: one page with the headline figures of every stage of a snapshot's lifecycle."""

import dataclasses
import json
from typing import Any, ClassVar

import dagster as dg
import pandas as pd

from assets.scaling.fit import ScalingLawFit
from assets.scaling.flagship import FlagshipRun
from dagster_project.artifacts import (
    CuratedCorpus,
    EvalTables,
    FP8Checkpoint,
    HFCheckpoint,
    SafetyEvals,
)
from dagster_project.configs import dagster_config_for, resolve_config
from dagster_project.partitions import SNAPSHOTS
from dagster_project.resources import DvcResource, MlflowResource
from dagster_project.stage import stage_asset, stage_run
from ml.config import StageConfig
from ml.io import atomic_dir, atomic_write_text
from ml.report import Plot, Section, Table, render_html, render_markdown

# the curation funnel, in pipeline order: each step's documents out (num_records of its newest materialization)
FUNNEL = (
    "raw_crawl",
    "extracted_docs",
    "url_filtered",
    "url_deduped",
    "boilerplate_removed",
    "pii_redacted",
    "minhash_deduped",
    "line_deduped",
    "filtered_docs",
    "quality_scored",
    "domain_classified",
    "curated_corpus",
)


@dataclasses.dataclass(frozen=True)
class ReportConfig(StageConfig):
    """What the report shows; the same at every preset (it reads, it does not compute)."""

    title: str = "Llama-3-style lifecycle report"
    max_drop_reasons: int = 4  # drop reasons shown per curation step, largest first

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"tiny": {}, "small": {}, "8b": {}, "70b": {}, "405b": {}}


ReportRun = dagster_config_for(ReportConfig)


def _meta_value(meta: dict, key: str):
    value = getattr(meta.get(key), "value", meta.get(key))
    return json.loads(value) if isinstance(value, str) and value[:1] in "{[" else value


def funnel_section(instance: dg.DagsterInstance, partition: str, cfg: ReportConfig) -> Section:
    """Records out of every curation step and its main drop reasons, from the steps' newest materializations."""
    rows = []
    for asset in FUNNEL:
        filt = dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition])
        records = instance.fetch_materializations(filt, limit=1).records
        if not records:
            rows.append((asset, None, "not materialized"))
            continue
        meta = records[0].asset_materialization.metadata
        drops = _meta_value(meta, "drops_by_reason") or {}
        top = (
            sorted(drops.items(), key=lambda kv: -kv[1])[: cfg.max_drop_reasons]
            if isinstance(drops, dict)
            else []
        )
        rows.append((asset, int(_meta_value(meta, "num_records")), ", ".join(f"{k} {v}" for k, v in top)))
    return Section(
        "Curation funnel",
        notes=(
            "Documents (rows for curated_corpus, after the mix) out of each step; raw_crawl counts pages.",
        ),
        tables=(Table("records per step", ("step", "records out", "main drops"), tuple(rows)),),
    )


def corpus_section(corpus: CuratedCorpus) -> Section:
    classes = corpus.mix_report.get("classes", {})
    rows = tuple(
        (name, c.get("target"), c.get("realized"), c.get("selected"), c.get("repeats"))
        for name, c in sorted(classes.items())
    )
    header = ("class", "target", "realized", "selected", "max repeats")
    return Section(
        "Data mix",
        tables=(Table(f"mix by class (in {corpus.mix_report.get('unit', '?')})", header, rows),),
        plots=_plots(corpus, ("mix.png", "data mix")),
    )


def scaling_section(fit: ScalingLawFit, flagship: FlagshipRun) -> Section:
    f = json.loads((fit.path / "fit.json").read_text())
    cmp = json.loads((flagship.path / "flagship.json").read_text())["compare"]
    lo, hi = f["alpha_ci"]
    fc = f["forecast"]
    rows = tuple((k, v["forecast"], v["actual"], v["rel_error"]) for k, v in cmp.items())
    return Section(
        "Scaling laws",
        notes=(
            f"N*(C) = A·C^α: α = {f['alpha']:.3f} (95% bootstrap CI {lo:.3f}–{hi:.3f}; paper {f['paper_alpha']}).",
            f"Forecast at {fc['budget']:.3g} FLOPs: {fc['opt_params']:,.0f} parameters, "
            f"{fc['opt_tokens']:,.0f} tokens, loss {fc['expected_loss']:.3f}.",
        ),
        tables=(
            Table("flagship: forecast vs actual", ("metric", "forecast", "actual", "relative error"), rows),
        ),
        plots=_plots(fit, ("isoflops.png", "IsoFLOP parabolas"), ("power_law.png", "power law")),
    )


def pretraining_section(stages: dict[str, HFCheckpoint], base: HFCheckpoint, evals: EvalTables) -> Section:
    table = pd.read_parquet(evals.path / "stages.parquet")
    b = json.loads((base.path / "evals.json").read_text())
    notes = (
        f"Base model = average of annealing steps {b['averaged_steps']}: held-out loss {b['average_loss']:.4f}, "
        f"best single checkpoint {b['best_checkpoint_loss']:.4f}, before annealing {b['before_annealing_loss']:.4f}; "
        f"{b['nats_below_unigram']:.2f} nats below the unigram baseline ({b['unigram_nats']:.3f}).",
    )
    plots = tuple(p for name, h in stages.items() for p in _plots(h, ("loss.png", f"loss: {name}")))
    return Section(
        "Pre-training stages",
        notes=notes,
        tables=(
            Table("stages compared", tuple(table.columns), tuple(map(tuple, table.itertuples(index=False)))),
        ),
        plots=plots + _plots(evals, ("stages.png", "stages compared")),
    )


def rounds_section(rounds: EvalTables) -> Section:
    table = pd.read_parquet(rounds.path / "rounds.parquet").T  # metrics as rows, one column per round
    header = ("metric", *(f"round {k}" for k in table.columns))
    rows = tuple(
        (metric, *map(float, values)) for metric, values in zip(table.index, table.values, strict=True)
    )
    return Section(
        "Post-training rounds",
        notes=(
            "Held-out verifier pass rates, answer log-likelihood and preference accuracy per round; VR and FRR "
            "of the model each round started from and of its chat model (safety tuning: ``safety.share``).",
        ),
        tables=(Table("rounds (held-out)", header, rows),),
        plots=_plots(rounds, ("rounds.png", "rounds")),
    )


def safety_section(safety: SafetyEvals, fp8: FP8Checkpoint) -> Section:
    head = safety.report["headline"]
    q = fp8.quality
    rows = tuple((k, v) for k, v in head.items())
    fp8_rows = tuple((k, q[k]) for k in ("ppl_bf16", "ppl_fp8", "ppl_increase", "score_ks") if k in q)
    return Section(
        "Safety and FP8 inference",
        tables=(
            Table("safety headline (VR, FRR, injection, insecure code)", ("metric", "value"), rows),
            Table("FP8 against bf16", ("metric", "value"), fp8_rows),
        ),
        plots=_plots(safety, ("rates_category.png", "VR / FRR by category")),
    )


def registry_section(promotion: EvalTables) -> Section:
    """The base model's promotion: each requirement, and the registered versions it moved (or not)."""
    ev = promotion.evals
    rows = tuple(
        (r["asset"], r["requirement"], r["version"], str(r["ok"]), r["reason"]) for r in ev["requirements"]
    )
    moved = "moved to" if ev["promote"] else "not moved to"
    regs = ", ".join(f"{v['name']} v{v['version']}" for v in ev["registered"].values())
    return Section(
        "Model registry",
        notes=(f"champion {moved}: {regs} (model {ev['model']['asset']} {ev['model']['version']}).",),
        tables=(Table("promotion requirements", ("asset", "requirement", "version", "ok", "reason"), rows),),
    )


def _plots(handle, *files: tuple[str, str]) -> tuple[Plot, ...]:
    """The plots of ``handle`` that exist (an older artifact may lack one), in the order given."""
    return tuple(
        Plot(caption, (handle.path / f).read_bytes()) for f, caption in files if (handle.path / f).is_file()
    )


@stage_asset(EvalTables, partitions_def=SNAPSHOTS, kinds={"html"})
def lifecycle_report(
    context: dg.AssetExecutionContext,
    config: ReportRun,
    curated_corpus: CuratedCorpus,
    scaling_law_fit: ScalingLawFit,
    scaling_flagship: FlagshipRun,
    pretrain_initial: HFCheckpoint,
    pretrain_long_context: HFCheckpoint,
    pretrain_annealed: HFCheckpoint,
    base_model: HFCheckpoint,
    base_model_evals: EvalTables,
    posttrain_rounds: EvalTables,
    safety_evals: SafetyEvals,
    fp8_model: FP8Checkpoint,
    model_promotion: EvalTables,
    mlflow: MlflowResource,
    dvc: DvcResource,
) -> dg.MaterializeResult:
    """The headline figures of every stage of this snapshot's lifecycle on one page (``report.html``, also an
    MLflow artifact and this panel): curation funnel and mix, IsoFLOP fit and flagship forecast, pre-training
    stages and their loss curves, base model vs checkpoints, the post-training rounds table, safety rates,
    the FP8 quality delta and the registry's promotion of the base model."""
    cfg = resolve_config(ReportConfig, config)
    inputs = (curated_corpus, scaling_law_fit, scaling_flagship, pretrain_initial, pretrain_long_context)
    inputs += (pretrain_annealed, base_model, base_model_evals, posttrain_rounds, safety_evals, fp8_model)
    inputs += (model_promotion,)
    with stage_run(context, mlflow, dvc, cfg, *inputs) as run:
        stages = {
            "initial": pretrain_initial,
            "long context": pretrain_long_context,
            "annealed": pretrain_annealed,
        }
        sections = [
            funnel_section(context.instance, context.partition_key, cfg),
            corpus_section(curated_corpus),
            scaling_section(scaling_law_fit, scaling_flagship),
            pretraining_section(stages, base_model, base_model_evals),
            rounds_section(posttrain_rounds),
            safety_section(safety_evals, fp8_model),
            registry_section(model_promotion),
        ]
        page = render_html(cfg.title, sections, subtitle=f"snapshot {context.partition_key}")
        with atomic_dir(run.out_dir) as tmp:
            atomic_write_text(tmp / "report.html", page)
            summary = {"sections": [s.title for s in sections], "inputs": {h.asset: h.md5 for h in inputs}}
            atomic_write_text(tmp / "evals.json", json.dumps(summary, indent=2))
        run.log.log_artifact(run.out_dir / "report.html", "report")
        return run.result(num_records=len(sections), summary=render_markdown(sections))
