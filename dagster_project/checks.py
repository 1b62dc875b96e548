"""Stage gates: blocking asset checks that stop downstream assets when an artifact breaks its contract."""

import json

import dagster as dg

from assets.data.crawl import extracted_docs, raw_crawl
from assets.data.curate import curated_corpus
from assets.tokens.tokenize import token_shards, tokenizer
from dagster_project.home import artifact_dir
from dagster_project.partitions import SNAPSHOTS
from ml.io import DOC_COLUMNS, read_shards


def _dir(context, asset: str):
    return artifact_dir(asset, context.partition_key if context.has_partition_key else None)


@dg.asset_check(asset=raw_crawl, blocking=True, partitions_def=SNAPSHOTS)
def raw_crawl_has_records(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    """At least one WARC file and a manifest with fetched pages."""
    import pandas as pd

    d = _dir(context, "raw_crawl")
    warcs = [p for p in d.glob("*.warc*")]
    manifest = (
        pd.read_parquet(d / "manifest.parquet") if (d / "manifest.parquet").exists() else pd.DataFrame()
    )
    ok = bool(warcs) and len(manifest) > 0
    return dg.AssetCheckResult(passed=ok, metadata={"warc_files": len(warcs), "manifest_rows": len(manifest)})


@dg.asset_check(asset=extracted_docs, blocking=True, partitions_def=SNAPSHOTS)
def extracted_docs_contract(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    """Every document has the contract columns, a unique id and non-empty text."""
    df = read_shards(_dir(context, "extracted_docs") / "docs", DOC_COLUMNS)
    empty = int((df["text"].str.strip() == "").sum())
    dup_ids = int(df["id"].duplicated().sum())
    return dg.AssetCheckResult(
        passed=len(df) > 0 and empty == 0 and dup_ids == 0,
        metadata={"docs": len(df), "empty_text": empty, "duplicate_ids": dup_ids},
    )


@dg.asset_check(asset=curated_corpus, blocking=True, partitions_def=SNAPSHOTS)
def mix_hits_target(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    """The realized mix is within 0.05 of the (re-normalized) target for every class in the mix."""
    report = json.loads((_dir(context, "curated_corpus") / "mix_report.json").read_text())
    left_out = set(report.get("insufficient_classes", [])) | set(report.get("empty_classes", []))
    gaps = {c: abs(v["realized"] - v["target"]) for c, v in report["classes"].items() if c not in left_out}
    worst = max(gaps.values()) if gaps else 0.0
    return dg.AssetCheckResult(
        passed=bool(gaps) and worst <= 0.05,
        metadata={
            "max_abs_gap": float(worst),
            "gaps": dg.MetadataValue.json(gaps),
            "classes_left_out": dg.MetadataValue.json(sorted(left_out)),
        },
    )


@dg.asset_check(asset=tokenizer, blocking=True, partitions_def=SNAPSHOTS)
def tokenizer_special_tokens(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    """Every named Llama 3 special token (chat tokens included) encodes to a single id."""
    from ml.tokens.tokenizer import NAMED_SPECIAL_OFFSETS, load_tokenizer

    tok = load_tokenizer(_dir(context, "tokenizer"))
    specials = list(NAMED_SPECIAL_OFFSETS)  # begin/end of text, pad, headers, eom, eot, python_tag
    ids = {s: tok.encode(s, add_special_tokens=False).ids for s in specials}
    bad = {s: i for s, i in ids.items() if len(i) != 1}
    return dg.AssetCheckResult(passed=not bad, metadata={"ids": dg.MetadataValue.json(ids)})


@dg.asset_check(asset=token_shards, blocking=True, partitions_def=SNAPSHOTS)
def token_shards_verify(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    """Every shard's size and sha256 match the manifest."""
    from ml.tokens.shards import read_manifest

    try:
        manifest = read_manifest(_dir(context, "token_shards"))
    except ValueError as exc:
        return dg.AssetCheckResult(passed=False, metadata={"error": str(exc)})
    return dg.AssetCheckResult(passed=True, metadata={"shards": int(manifest.to_stats()["shards"])})
