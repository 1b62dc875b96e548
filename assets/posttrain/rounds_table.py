"""The post-training rounds of a snapshot side by side: a table and a plot."""

import json

import dagster as dg

from dagster_project.artifacts import Artifact, ChatModel, EvalTables, SafetyEvals
from dagster_project.configs import dagster_config_for, resolve_config
from dagster_project.partitions import ROUND_KEYS, SNAPSHOT_OF_ROUND, SNAPSHOTS, round_key
from dagster_project.resources import DvcResource, MlflowResource
from dagster_project.stage import frame_md, stage_asset, stage_run
from ml.io import atomic_dir, atomic_write_bytes, atomic_write_text
from ml.posttrain.rounds_report import rounds_png, rounds_table
from ml.posttrain.stages import RoundsConfig

RoundsRun = dagster_config_for(RoundsConfig)


def planned_rounds(handles: dict[str, Artifact], n: int, what: str = "chat model") -> dict[int, Artifact]:
    """Rounds 1..n of a per-round asset's handles (by partition key); a ``dg.Failure`` naming the rounds
    that are missing."""
    by_round = {key.split("|")[-1]: handle for key, handle in handles.items()}
    missing = [round_key(k) for k in range(1, n + 1) if round_key(k) not in by_round]
    if missing:
        raise dg.Failure(f"post-training rounds {', '.join(missing)} have no {what}: run them first")
    return {k: by_round[round_key(k)] for k in range(1, n + 1)}


@stage_asset(
    EvalTables,
    partitions_def=SNAPSHOTS,
    ins={
        "chat_model": dg.AssetIn(partition_mapping=SNAPSHOT_OF_ROUND),
        "chat_safety_evals": dg.AssetIn(partition_mapping=SNAPSHOT_OF_ROUND),
    },
    kinds={"python"},
    metadata={"round_partitions": ROUND_KEYS.name},
)
def posttrain_rounds(
    context: dg.AssetExecutionContext,
    config: RoundsRun,
    chat_model: dict[str, ChatModel],
    chat_safety_evals: dict[str, SafetyEvals],
    mlflow: MlflowResource,
    dvc: DvcResource,
) -> dg.MaterializeResult:
    """Rounds 1..n (config; paper 6, tiny 2) of post-training for this snapshot: per round the held-out
    verifier pass rates (math, code, qa), log-likelihood per token of verified answers and preference
    accuracy of the model the round started from, its SFT model and its chat model, and the reward
    model's win rate of the chat model over the start, and the violation and false refusal rates of the
    start and the chat model (the round's safety tuning, ``safety.share`` of SFT and DPO) — a table and a
    plot across rounds."""
    cfg = resolve_config(RoundsConfig, config)
    rounds = planned_rounds(chat_model, cfg.rounds)
    safety = planned_rounds(chat_safety_evals, cfg.rounds, "safety evaluation")
    with stage_run(context, mlflow, dvc, cfg, *rounds.values(), *safety.values()) as run:
        table = rounds_table(
            {k: h.evals for k, h in rounds.items()}, {k: h.report for k, h in safety.items()}
        )
        with atomic_dir(run.out_dir) as tmp:
            table.to_parquet(tmp / "rounds.parquet")
            last = table.iloc[-1].to_dict()
            atomic_write_text(
                tmp / "evals.json", json.dumps({"rounds": cfg.rounds, "last_round": last}, indent=2)
            )
            atomic_write_bytes(tmp / "rounds.png", rounds_png(table))
        run.log_png(run.out_dir / "rounds.png", "rounds")
        run.log.log_metric_series(
            [(int(k), {c: float(v) for c, v in row.items()}) for k, row in table.iterrows()]
        )
        numbers = {f"last.{c}": float(v) for c, v in last.items()}
        run.log_metrics(numbers)
        shown = table.T.rename(columns=lambda k: f"round {k}").rename_axis("metric")
        summary = "**Post-training rounds** (held-out)\n\n" + frame_md(shown)
        return run.result(
            num_records=len(table),
            summary=summary,
            metadata={**numbers, "rounds_table": dg.MetadataValue.md(frame_md(shown))},
        )
