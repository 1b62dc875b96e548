"""Token shards: documents as flat ``uint32`` memmaps with a document index and a manifest."""

import dagster as dg

from dagster_project.artifacts import DocShards, Tokenizer, TokenShards
from dagster_project.configs import dagster_config_for, resolve_config
from dagster_project.partitions import SNAPSHOTS
from dagster_project.resources import DvcResource, MlflowResource
from dagster_project.stage import md_table, stage_asset, stage_run
from ml.tokens.shards import ShardConfig, read_manifest, write_token_shards
from ml.tokens.tokenizer import load_tokenizer

ShardRun = dagster_config_for(ShardConfig)


def token_shards_verify(token_shards: TokenShards) -> dg.AssetCheckResult:
    """Every shard's size and sha256 match the manifest."""
    try:
        manifest = read_manifest(token_shards.path)
    except ValueError as exc:
        return dg.AssetCheckResult(passed=False, metadata={"error": str(exc)})
    return dg.AssetCheckResult(passed=True, metadata={"shards": int(manifest.to_stats()["shards"])})


@stage_asset(TokenShards, gates=[token_shards_verify], partitions_def=SNAPSHOTS, kinds={"python", "numpy"})
def token_shards(
    context: dg.AssetExecutionContext,
    config: ShardRun,
    curated_corpus: DocShards,
    tokenizer: Tokenizer,
    mlflow: MlflowResource,
    dvc: DvcResource,
) -> dg.MaterializeResult:
    """Documents → flat ``uint32`` shards (numpy memmap) with a doc-boundary index, a held-out validation
    split by document, and a manifest of token counts per source / class / language and mix weights."""
    cfg = resolve_config(ShardConfig, config)
    df, tok = curated_corpus.read(), load_tokenizer(tokenizer.path)
    with stage_run(context, mlflow, dvc, cfg, curated_corpus, tokenizer) as run:
        # replaces the dir atomically
        manifest = write_token_shards(df, tok, run.out_dir, cfg, class_col="domain")
        stats = manifest.to_stats()
        run.log_metrics(stats)
        run.log.log_artifact(run.out_dir / "manifest.json")
        by_class = {k.split("/", 1)[1]: v for k, v in stats.items() if k.startswith("tokens_by_class/")}
        summary = (
            f"**{stats.get('train_tokens', 0):,} train / {stats.get('val_tokens', 0):,} val tokens** in "
            f"{stats.get('shards', 0)} shards.\n\n### Tokens by class\n"
            + md_table(by_class or {"-": 0}, ("class", "tokens"))
        )
        return run.result(
            num_records=int(stats.get("train_tokens", 0) + stats.get("val_tokens", 0)),
            summary=summary,
            metadata={k.replace("/", "."): v for k, v in stats.items()},
        )
