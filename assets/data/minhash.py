"""Document-level MinHash near-duplicate removal (Llama 3 paper §3.1.1)."""

import dagster as dg
import pandas as pd

from assets.data.steps import finish_step, write_step
from dagster_project.artifacts import DocShards
from dagster_project.configs import dagster_config_for, resolve_config
from dagster_project.partitions import SNAPSHOTS
from dagster_project.resources import DvcResource, MlflowResource, RedisResource
from dagster_project.stage import md_table, stage_asset, stage_run
from ml.curate.minhash import MinHashConfig, example_pairs, minhash_dedup
from ml.curate.steps import StepResult
from ml.io import atomic_dir

MinHashRun = dagster_config_for(MinHashConfig)


def _minhash_extra(result: StepResult, df: pd.DataFrame) -> tuple[str, dict]:
    pairs = example_pairs(result, df, k=8)
    hist = {k.split("/", 1)[1]: int(v) for k, v in result.stats.items() if k.startswith("cluster_size/")}
    md = "### Cluster sizes\n" + md_table(hist or {"none": 0}, ("size", "clusters"))
    md += "\n\n### Example duplicate pairs\n" + md_table(
        [(a, b, f"{j:.3f}") for a, b, j in pairs], ("kept", "dropped", "Jaccard")
    )
    return md, {
        "clusters": int(result.stats.get("clusters", 0)),
        "cluster_size_histogram": dg.MetadataValue.json(hist),
        "example_pairs": dg.MetadataValue.json(
            [{"a": a, "b": b, "jaccard": round(j, 4)} for a, b, j in pairs]
        ),
    }


@stage_asset(DocShards, partitions_def=SNAPSHOTS, kinds={"python", "parquet"})
def minhash_deduped(
    context: dg.AssetExecutionContext,
    config: MinHashRun,
    pii_redacted: DocShards,
    mlflow: MlflowResource,
    dvc: DvcResource,
    redis: RedisResource,
) -> dg.MaterializeResult:
    """Document-level near-duplicate removal: MinHash signatures over word n-gram shingles, LSH candidate
    pairs (datasketch ``MinHashLSH``; Redis storage when ``redis.mode`` is local/external so several workers
    share the index), connected components, one kept document per cluster."""
    with redis.connection() as hostport:
        overrides = {}
        if hostport is not None:
            overrides = {"lsh_storage": "redis", "redis_host": hostport[0], "redis_port": hostport[1]}
        cfg = resolve_config(MinHashConfig, config)
        if overrides:
            cfg = cfg.replace(**overrides)
        df = pii_redacted.read()
        with stage_run(context, mlflow, dvc, cfg, pii_redacted) as run:
            result = minhash_dedup(df, cfg)
            with atomic_dir(run.out_dir) as tmp:
                write_step(tmp, result)
            md, meta = _minhash_extra(result, df)
            return finish_step(run, result.summary(), title="MinHash dedup", extra_md=md, metadata=meta)
