"""Verified synthetic post-training data: math, code and corpus-grounded QA, cleaned and pruned."""

import shutil

import dagster as dg

from assets.pretrain.training import heldout_docs
from dagster_project.artifacts import CuratedCorpus, SyntheticData, Tokenizer, TokenShards
from dagster_project.configs import dagster_config_for, resolve_config
from dagster_project.partitions import SNAPSHOTS
from dagster_project.resources import DvcResource, MlflowResource
from dagster_project.stage import md_table, stage_asset, stage_run
from ml.io import atomic_dir
from ml.posttrain.synthetic import SyntheticDataConfig, build_synthetic_data
from ml.tokens.chat import encode_chat_masked
from ml.tokens.shards import split_keys
from ml.tokens.tokenizer import load_tokenizer

SyntheticRun = dagster_config_for(SyntheticDataConfig)


def synthetic_data_heldout_unseen(synthetic_data: SyntheticData) -> dg.AssetCheckResult:
    """No held-out id (SFT or preference) is in a train or val split: evaluations score unseen items."""
    leaks = {}
    for prefs in (False, True):
        held = {r["id"] for r in synthetic_data.records("heldout", prefs)}
        seen = {r["id"] for s in ("train", "val") for r in synthetic_data.records(s, prefs)}
        leaks["prefs" if prefs else "sft"] = sorted(held & seen)[:5]
    return dg.AssetCheckResult(
        passed=not any(leaks.values()), metadata={"leaked_ids": dg.MetadataValue.json(leaks)}
    )


@stage_asset(SyntheticData, gates=[synthetic_data_heldout_unseen], partitions_def=SNAPSHOTS, kinds={"python"})
def synthetic_data(
    context: dg.AssetExecutionContext,
    config: SyntheticRun,
    curated_corpus: CuratedCorpus,
    token_shards: TokenShards,
    tokenizer: Tokenizer,
    mlflow: MlflowResource,
    dvc: DvcResource,
) -> dg.MaterializeResult:
    """Post-training data whose every item is checked (Llama 3 paper §4.2-4.3): math problems with each
    step and answer verified; code tasks whose reference passes its unit tests in the sandbox; questions
    over held-out corpus documents (the pre-training validation split) whose answer is a unique span. Tone
    cleaning and semantic dedup drop records with their reason; a preference pair per record (verified
    response over a corruption its verifier refuses). Split by id: ``heldout`` is never trained on."""
    cfg = resolve_config(SyntheticDataConfig, config)
    with stage_run(context, mlflow, dvc, cfg, curated_corpus, token_shards, tokenizer) as run:
        docs = heldout_docs(curated_corpus, token_shards)
        with atomic_dir(run.out_dir) as tmp:
            tok = load_tokenizer(tokenizer.path)
            report = build_synthetic_data(
                cfg,
                tmp,
                # documents named by their text key: a re-crawl gives the same QA records and splits
                list(zip(split_keys(docs, "text"), docs["text"], strict=True)),
                lambda r: len(encode_chat_masked(r["messages"], tok).ids),
            )
            for d in (tmp, tmp / "prefs"):
                shutil.copy2(tokenizer.path / "tokenizer.json", d / "tokenizer.json")
        counts = {
            **{f"split.{k}": v for k, v in report["splits"].items()},
            **{f"pref_split.{k}": v for k, v in report["pref_splits"].items()},
            **{f"family.{k}": v for k, v in report["kept_by_family"].items()},
            **{f"dropped.{k}": v for k, v in report["dropped_by_reason"].items()},
            **{f"pairs.{k}": v for k, v in report["pairs"].items()},
            "generated": report["generated"],
            "qa_generated": report["qa_generated"],
        }
        run.log_metrics(counts)
        summary = "**Synthetic post-training data** (every item verified)\n\n" + md_table(
            counts, ("count", "value")
        )
        return run.result(
            num_records=sum(report["splits"].values()),
            summary=summary,
            metadata={
                **counts,
                "dropped_by_reason": dg.MetadataValue.json(report["dropped_by_reason"]),
                "heldout_records": report["splits"]["heldout"],
            },
        )
