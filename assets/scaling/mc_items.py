"""The downstream evaluation of the scaling forecast: multiple-choice items from held-out documents."""

import json

import dagster as dg

from dagster_project.artifacts import Artifact, DocShards, TokenShards
from dagster_project.configs import dagster_config_for, resolve_config
from dagster_project.partitions import SNAPSHOTS
from dagster_project.resources import DvcResource, MlflowResource
from dagster_project.stage import md_table, stage_asset, stage_run
from ml.eval.multiple_choice import MultipleChoiceConfig, build_items, items_version
from ml.io import atomic_dir, atomic_write_text
from ml.tokens.shards import val_mask

McRun = dagster_config_for(MultipleChoiceConfig)


class McItems(Artifact):
    """``items.parquet`` (context, choices, label, ...) and ``version.json`` (md5 of the items)."""

    def read(self):
        import pandas as pd

        return pd.read_parquet(self.path / "items.parquet")


def mc_eval_items_enough(mc_eval_items: McItems) -> dg.AssetCheckResult:
    """At least ``n_items`` items (>= 500 on the presets: accuracy's standard error <= 2.2 points)."""
    n = len(mc_eval_items.read())
    want = json.loads((mc_eval_items.path / "version.json").read_text())["items"]
    return dg.AssetCheckResult(
        passed=bool(n >= 500), severity=dg.AssetCheckSeverity.WARN, metadata={"items": n, "recorded": want}
    )


@stage_asset(McItems, gates=[mc_eval_items_enough], partitions_def=SNAPSHOTS, kinds={"python", "pandas"})
def mc_eval_items(
    context: dg.AssetExecutionContext,
    config: McRun,
    curated_corpus: DocShards,
    token_shards: TokenShards,
    mlflow: MlflowResource,
    dvc: DvcResource,
) -> dg.MaterializeResult:
    """Which continuation really comes next? Items cut deterministically from the documents that
    ``token_shards`` held out for validation (never trained on), distractors from other held-out documents of
    the same language and class; versioned by the md5 of the items (Llama 3 paper §3.2.1 forecasts such a
    task's accuracy from the scaling sweep)."""
    cfg = resolve_config(MultipleChoiceConfig, config)
    docs = curated_corpus.read()
    held_out = docs[val_mask(docs, token_shards.manifest["config"])].drop_duplicates("id")
    with stage_run(context, mlflow, dvc, cfg, curated_corpus, token_shards) as run:
        items = build_items(held_out, cfg)
        version = items_version(items)
        with atomic_dir(run.out_dir) as tmp:
            items.to_parquet(tmp / "items.parquet", index=False)
            atomic_write_text(tmp / "version.json", json.dumps({"items_md5": version, "items": len(items)}))
        stats = {
            "items": len(items),
            "held_out_docs": len(held_out),
            "docs_with_items": items["doc_id"].nunique(),
        }
        run.log_metrics(stats)
        summary = f"**{len(items)} items** (version `{version}`)\n\n" + md_table(stats)
        return run.result(num_records=len(items), summary=summary, metadata={**stats, "items_md5": version})
