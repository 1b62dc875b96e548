"""Token shards: documents as flat ``uint32`` memmaps with a document index and a manifest."""

import dagster as dg

from dagster_project.artifacts import CuratedCorpus, Tokenizer, TokenShards
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
    curated_corpus: CuratedCorpus,
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
        mix = _mix_in_tokens(curated_corpus.mix_report, manifest.mix.get("realized", {}))
        summary = (
            f"**{stats.get('train_tokens', 0):,} train / {stats.get('val_tokens', 0):,} val tokens** in "
            f"{stats.get('shards', 0)} shards; validation: {manifest.splits['val']['unique_docs']} documents."
            "\n\n### Training mix in tokens of the trained tokenizer\n"
            + md_table(
                [
                    (c, v["target"], v["curated"], v["train_tokens"], by_class.get(c, 0))
                    for c, v in mix.items()
                ],
                ("class", "configured target", "curated corpus", "train shards", "tokens"),
            )
        )
        return run.result(
            num_records=int(stats.get("train_tokens", 0) + stats.get("val_tokens", 0)),
            summary=summary,
            metadata={
                **{k.replace("/", "."): v for k, v in stats.items()},
                "val_docs": int(manifest.splits["val"]["unique_docs"]),
                "mix_in_tokens": dg.MetadataValue.json(mix),
            },
        )


def _mix_in_tokens(report: dict, realized: dict[str, float]) -> dict[str, dict[str, float]]:
    """Per class: configured target, the curated corpus's realized share (its unit) and the share of the
    training shards' tokens (BOS/EOS included, validation documents excluded)."""
    return {
        c: {
            "target": float(v["target"]),
            "curated": float(v["realized"]),
            "train_tokens": float(realized.get(c, 0.0)),
        }
        for c, v in report["classes"].items()
    }
