"""Extracted documents (Parquet): main text and language of every crawled page (Llama 3 paper §3.1.1)."""

import dagster as dg

from dagster_project.artifacts import DocShards, RawCrawl
from dagster_project.configs import dagster_config_for, resolve_config
from dagster_project.partitions import SNAPSHOTS
from dagster_project.resources import DaskResource, DvcResource, MlflowResource
from dagster_project.stage import md_table, stage_asset, stage_run
from ml.io import atomic_dir, write_shards
from ml.sources.extract import ExtractConfig, extract_documents
from ml.sources.warc import iter_many

ExtractRun = dagster_config_for(ExtractConfig)


def extracted_docs_contract(extracted_docs: DocShards) -> dg.AssetCheckResult:
    """Every document has the contract columns, a unique id and non-empty text."""
    df = extracted_docs.read()
    empty = int((df["text"].str.strip() == "").sum())
    dup_ids = int(df["id"].duplicated().sum())
    return dg.AssetCheckResult(
        passed=len(df) > 0 and empty == 0 and dup_ids == 0,
        metadata={"docs": len(df), "empty_text": empty, "duplicate_ids": dup_ids},
    )


@stage_asset(
    DocShards, gates=[extracted_docs_contract], partitions_def=SNAPSHOTS, kinds={"python", "parquet"}
)
def extracted_docs(
    context: dg.AssetExecutionContext,
    config: ExtractRun,
    raw_crawl: RawCrawl,
    mlflow: MlflowResource,
    dvc: DvcResource,
    dask: DaskResource,
) -> dg.MaterializeResult:
    """HTML → main text (trafilatura; code blocks and math kept), WET text passed through, language id with
    py3langid (model ships in the package), on the Dask workers. Parquet shards of documents (``id, url, text, lang, fetch_time,
    source`` …) plus ``dropped/`` with a ``reason`` per record (not HTML, empty, too short, undecodable)."""
    cfg = resolve_config(ExtractConfig, config)
    with stage_run(context, mlflow, dvc, cfg, raw_crawl) as run:
        errors: list = []
        with dask.client() as client:
            result = extract_documents(
                iter_many(raw_crawl.warc_files(), errors, max_payload_bytes=cfg.max_payload_bytes),
                cfg,
                source=run.partition or "crawl",
                client=client,
            )
        with atomic_dir(run.out_dir) as tmp:
            write_shards(result.kept, tmp / "docs")
            write_shards(result.dropped, tmp / "dropped")
        stats = {**result.summary(), "warc_read_errors": len(errors)}
        run.log_metrics(stats)
        langs = result.kept["lang"].value_counts()
        drops = result.drops_by_reason()
        summary = "\n\n".join(
            [
                f"**{len(result.kept)} documents** in {langs.size} languages from {result.stats.get('records_in', 0)} records; "
                f"{len(result.dropped)} dropped.",
                "### Drops by reason\n" + md_table(drops or {"none": 0}, ("reason", "count")),
                "### Documents per language\n" + md_table(list(langs.items()), ("lang", "docs")),
            ]
        )
        return run.result(
            num_records=len(result.kept),
            summary=summary,
            metadata={
                "docs_kept": len(result.kept),
                "docs_dropped": len(result.dropped),
                "drops_by_reason": dg.MetadataValue.json(drops),
                "languages": int(langs.size),
                "docs_per_language": dg.MetadataValue.json({k: int(v) for k, v in langs.items()}),
                "warc_read_errors": dg.MetadataValue.json([str(e) for e in errors]),
            },
        )
