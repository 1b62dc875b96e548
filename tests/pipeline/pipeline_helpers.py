"""Helpers of the pipeline tests: run assets in process into the test's home, read their metadata, write WET."""

import io

# the assets of a post-training round (snapshot x round partitions; job ``posttrain_round``)
ROUND_ASSETS = (
    "reward_model",
    "rejection_samples",
    "sft_model",
    "dpo_model",
    "chat_model",
    "chat_safety_evals",
    "chat_promotion",
)


def run_assets(selection, run_config, partition="snap-1", raise_on_error=True):
    from dagster_project.cli import _instance
    from dagster_project.definitions import defs
    from dagster_project.partitions import SNAPSHOTS

    instance = _instance()
    if not instance.has_dynamic_partition(SNAPSHOTS.name, partition):
        instance.add_dynamic_partitions(SNAPSHOTS.name, [partition])
    import dagster as dg

    job = defs.resolve_job_def("lifecycle")
    return job.execute_in_process(
        run_config=run_config,
        instance=instance,
        partition_key=partition,
        asset_selection=[dg.AssetKey(a) for a in selection],
        raise_on_error=raise_on_error,
    )


def asset_metadata(result, asset):
    for event in result.get_asset_materialization_events():
        mat = event.step_materialization_data.materialization
        if mat.asset_key.to_user_string() == asset:
            return {k: getattr(v, "value", v) for k, v in mat.metadata.items()}
    raise AssertionError(f"no materialization of {asset}")


def write_wet(path, texts: list[str], url_prefix: str):
    """A gzipped WET file of ``conversion`` records ``url_prefix + i`` holding ``texts``."""
    from warcio.warcwriter import WARCWriter

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        writer = WARCWriter(fh, gzip=True)
        for i, text in enumerate(texts):
            payload = io.BytesIO(text.encode())
            rec = writer.create_warc_record(
                f"{url_prefix}{i}", "conversion", payload=payload, warc_content_type="text/plain"
            )
            writer.write_record(rec)
    return path
