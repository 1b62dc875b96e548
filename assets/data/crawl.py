"""Raw crawl (WARC): the first stage of the data pipeline (Llama 3 paper §3.1.1)."""

from pathlib import Path
from typing import Optional

import dagster as dg
import pandas as pd
import pydantic

from dagster_project.artifacts import RawCrawl
from dagster_project.configs import dagster_config_for, resolve_config
from dagster_project.partitions import SNAPSHOTS
from dagster_project.resources import DvcResource, LocalWebResource, MlflowResource
from dagster_project.stage import md_table, stage_asset, stage_run
from ml.io import atomic_dir, md5_file, write_parquet
from ml.sources.crawl import CrawlConfig, crawl
from ml.sources.localweb import LocalWebConfig
from ml.sources.warc import expand_warc_paths, iter_many, stored_names

RawCrawlRun = dagster_config_for(
    CrawlConfig,
    warc_paths=(
        Optional[list[str]],
        pydantic.Field(
            None, description="Ingest these WARC/WET files (globs, .gz or not) instead of crawling"
        ),
    ),
    local_web_preset=(
        Optional[str],
        pydantic.Field(None, description="Preset of the local web served when no seeds are given"),
    ),
    local_web_yaml=(
        Optional[str],
        pydantic.Field(None, description="YAML of LocalWebConfig fields layered over that preset"),
    ),
)


def raw_crawl_has_records(raw_crawl: RawCrawl) -> dg.AssetCheckResult:
    """At least one WARC/WET file and a manifest with fetched pages."""
    warcs = raw_crawl.warc_files()  # the files extracted_docs reads: *.warc(.gz) and *.wet(.gz)
    exists = raw_crawl.manifest_path.exists()
    manifest = pd.read_parquet(raw_crawl.manifest_path) if exists else pd.DataFrame()
    ok = bool(warcs) and len(manifest) > 0
    return dg.AssetCheckResult(passed=ok, metadata={"warc_files": len(warcs), "manifest_rows": len(manifest)})


@stage_asset(RawCrawl, gates=[raw_crawl_has_records], partitions_def=SNAPSHOTS, kinds={"python", "warc"})
def raw_crawl(
    context: dg.AssetExecutionContext,
    config: RawCrawlRun,
    mlflow: MlflowResource,
    dvc: DvcResource,
    local_web: LocalWebResource,
) -> dg.MaterializeResult:
    """Crawl the configured seeds politely into WARC files, or ingest existing WARC/WET files.

    With no seeds and no ``warc_paths`` the crawler is pointed at the project's **local web**: real
    documentation found on this machine (man pages in ~25 languages, package HTML docs, package READMEs,
    Debian copyright files) served over loopback with links, a robots.txt and real duplicates. The
    crawler code is the same as for ``https://`` seeds. Output: ``*.warc.gz`` + ``manifest.parquet``.
    """
    cfg = resolve_config(CrawlConfig, config)
    if config.warc_paths:
        return _ingest_warcs(context, cfg, config.warc_paths, mlflow, dvc)
    with stage_run(context, mlflow, dvc, cfg) as run:
        site_stats: dict = {}
        if not cfg.seeds:
            web_cfg = (
                LocalWebConfig.from_yaml(config.local_web_yaml, preset=config.local_web_preset or None)
                if config.local_web_yaml
                else LocalWebConfig.from_preset(config.local_web_preset or None)
            )
            run.log.log_params({"local_web": web_cfg.to_dict()})
            site_dir = run.out_dir.parent.parent / "_local_web_site"
            with local_web.serving(site_dir, web_cfg) as (base_url, manifest), atomic_dir(run.out_dir) as tmp:
                site_stats = {f"site/{k}": v for k, v in manifest.to_stats().items()}
                crawl_cfg = cfg.replace(seeds=(base_url,), allow_private_hosts=("127.0.0.1",))
                report = crawl(crawl_cfg, tmp)
        else:
            with atomic_dir(run.out_dir) as tmp:
                report = crawl(cfg, tmp)
        run.log_metrics({**report.to_stats(), **site_stats})
        return _crawl_result(run, report)


def _crawl_result(run, report) -> dg.MaterializeResult:
    top_hosts = sorted(report.pages_by_host.items(), key=lambda kv: -kv[1])[:10]
    summary = "\n\n".join(
        [
            f"**{report.pages_fetched} pages** fetched ({report.bytes_fetched / 1e6:.1f} MB) into "
            f"{len(report.warc_files)} WARC file(s); {report.robots_refusals} refused by robots.txt.",
            "### Errors by kind\n" + md_table(report.errors_by_kind or {"none": 0}, ("error", "count")),
            "### Top hosts\n" + md_table(top_hosts, ("host", "pages")),
        ]
    )
    return run.result(
        num_records=report.pages_fetched,
        summary=summary,
        metadata={
            "pages_fetched": report.pages_fetched,
            "bytes_fetched": report.bytes_fetched,
            "robots_refusals": report.robots_refusals,
            "errors_by_kind": dg.MetadataValue.json(report.errors_by_kind),
            "hosts": len(report.pages_by_host),
            "top_hosts": dg.MetadataValue.md(md_table(top_hosts, ("host", "pages"))),
            "warc_files": len(report.warc_files),
        },
    )


MANIFEST_COLUMNS = (
    "url",
    "status",
    "bytes",
    "content_type",
    "fetch_time",
    "warc_file",
    "warc_offset",
    "record_type",
)


def _ingest_warcs(context, cfg: CrawlConfig, patterns: list[str], mlflow, dvc) -> dg.MaterializeResult:
    """Copy existing WARC/WET files (e.g. Common Crawl) into the artifact after checking they read."""
    import shutil

    paths = expand_warc_paths(patterns)
    names = stored_names(paths)  # a/CC.warc.gz and b/CC.warc.gz must not overwrite each other
    sources = {names[p]: (str(p.resolve()), md5_file(p)) for p in paths}
    with stage_run(context, mlflow, dvc, cfg) as run:
        errors: list = []
        rows = [  # streamed: payloads are never held, only what the manifest needs
            (
                r.url,
                r.http_status or 0,
                len(r.payload),
                r.content_type,
                r.fetch_time,
                names[Path(r.warc_file)],
                r.offset,
                r.record_type,
            )
            for r in iter_many(paths, errors)
        ]
        manifest = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))
        manifest["source_path"] = manifest["warc_file"].map(lambda n: sources[n][0])
        manifest["source_md5"] = manifest["warc_file"].map(lambda n: sources[n][1])
        with atomic_dir(run.out_dir) as tmp:
            for p in paths:
                shutil.copy2(p, tmp / names[p])
            write_parquet(manifest, tmp / "manifest.parquet")
        hosts = manifest["url"].str.extract(r"^[a-z]+://([^/:]+)")[0].value_counts()
        stats = {
            "pages_fetched": len(manifest),
            "bytes_fetched": int(manifest["bytes"].sum()),
            "warc_files": len(paths),
            "read_errors": len(errors),
            "hosts": len(hosts),
        }
        run.log_metrics(stats)
        err_md = "\n".join(f"- {e}" for e in errors) or "none"
        summary = (
            f"Ingested **{len(manifest)} records** from {len(paths)} WARC/WET file(s).\n\n"
            f"### Read errors\n{err_md}\n\n### Top hosts\n"
            + md_table(list(hosts.head(10).items()), ("host", "records"))
        )
        return run.result(
            num_records=len(manifest),
            summary=summary,
            metadata={
                **stats,
                "errors": dg.MetadataValue.json([str(e) for e in errors]),
                "top_hosts": dg.MetadataValue.md(md_table(list(hosts.head(10).items()), ("host", "records"))),
            },
        )
