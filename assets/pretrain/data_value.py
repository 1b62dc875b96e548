"""The data-value annealing experiment (Llama 3 paper §3.4.3): the value of a data source is what annealing a
50%-trained model with 30% of it in the mix does to held-out loss and a benchmark, against the same
annealing on the unchanged mix. ``data_value_control`` anneals once per snapshot on the unchanged mix;
``data_value`` (one partition per candidate class) anneals with the class's share and reports the deltas."""

import dataclasses
import json
import shutil
import time
from pathlib import Path

import dagster as dg

from assets.pretrain.training import (
    TRAIN_RETRY,
    EvalSuite,
    StageTraining,
    copy_hf,
    prune_work,
    stage_mix,
    train_stage,
    training_asset,
    vocab_unset,
)
from assets.scaling.mc_items import McItems
from assets.scaling.sweep import torch_threads
from dagster_project.artifacts import CuratedCorpus, EvalTables, HFCheckpoint, Tokenizer, TokenShards
from dagster_project.configs import dagster_config_for, resolve_config
from dagster_project.partitions import DATA_VALUE, SNAPSHOT_OF_CANDIDATE
from dagster_project.resources import DvcResource, MlflowResource, TorchrunResource
from dagster_project.stage import StageRun, frame_md, md_table, stage_asset, stage_run
from ml.eval.data_value import deltas_png, model_scores, noise_floor, value_table, with_noise
from ml.io import atomic_dir, atomic_write_bytes, atomic_write_text
from ml.train.report import loss_curve_png
from ml.train.stages import DataValueConfig, candidate_mix, default_mix_sample

DataValueRun = dagster_config_for(DataValueConfig)
SNAPSHOT_INPUT = dg.AssetIn(partition_mapping=SNAPSHOT_OF_CANDIDATE)


def resolve_data_value_config(config: DataValueRun, token_shards: TokenShards) -> DataValueConfig:
    """The run's config; unless ``anneal.train.model.vocab_size`` is set, the model follows the tokenizer."""
    cfg = resolve_config(DataValueConfig, config)
    if vocab_unset(getattr(config.anneal, "train", None)):
        train = cfg.anneal.train.replace_model(vocab_size=token_shards.vocab_size)
        cfg = cfg.replace(anneal=cfg.anneal.replace(train=train))
    return cfg


def eval_suite(cfg: DataValueConfig, corpus, shards, tokenizer, mc_items: McItems) -> EvalSuite:
    """The held-out documents (loss per domain class) and the first ``cfg.mc_items`` MC items (0 = all)."""
    suite = EvalSuite.build(
        corpus, shards, tokenizer, cfg.max_doc_tokens, cfg.heldout_seq_len, group_by=("domain",)
    )
    items = mc_items.read()
    return dataclasses.replace(suite, mc_items=items.head(cfg.mc_items) if cfg.mc_items else items)


def anneal_and_score(
    context,
    run: StageRun,
    torchrun,
    cfg: DataValueConfig,
    initial: HFCheckpoint,
    data: Path,
    suite: EvalSuite,
    seed_offset: int = 0,
) -> tuple[StageTraining, dict]:
    """Anneal ``initial``'s mid checkpoint on the token shards at ``data`` (``AnnealConfig.anneal_train``: LR
    linearly to 0, through the training engine like ``pretrain_annealed``) and score the result;
    ``seed_offset`` > 0: another data order (a repeat for the noise floor, its curves ``noise<k>/...``)."""
    train = cfg.anneal.anneal_train(str(initial.path / "mid"))
    train = train.replace(seed=train.seed + seed_offset) if seed_offset else train
    name = f"noise{seed_offset}" if seed_offset else ""
    trained = train_stage(context, run, torchrun, train, data, name)
    with torch_threads(cfg.torch_threads):
        return trained, model_scores(suite.evaluate(trained.work / "hf", niah=False))


def _write_run(tmp: Path, trained: StageTraining) -> None:
    shutil.copy2(trained.work / "metrics.jsonl", tmp / "metrics.jsonl")
    atomic_write_bytes(tmp / "loss.png", loss_curve_png(trained.metrics))


def _flat(scores: dict, prefix: str = "") -> dict[str, float]:
    out = {f"{prefix}{k}": v for k, v in scores.items() if isinstance(v, float)}
    return out | {f"{prefix}heldout_loss.{c}": v for c, v in scores["class_loss"].items()}


def _control_shards(run, cfg: DataValueConfig, corpus, tokenizer, shards: TokenShards) -> tuple:
    """``(work dir or None, shards, mix report)``: the unchanged mix, sampled as the candidates' mixes are
    when ``mix_tokens`` is set."""
    if not cfg.mix_tokens:
        return None, shards.path, {"token_shares": shards.manifest["mix"].get("realized", {})}
    class_tokens = shards.manifest["tokens_per_class"].get("train", {})

    def make_mix(df, tok, out_dir, shard_cfg, c: DataValueConfig) -> dict:
        return default_mix_sample(df, tok, out_dir, shard_cfg, class_tokens, c.mix_tokens)

    mix_dir, mix = stage_mix(run, cfg, make_mix, corpus, tokenizer, shards)
    return mix_dir, mix_dir / "shards", mix


@training_asset()
def data_value_control(
    context: dg.AssetExecutionContext,
    config: DataValueRun,
    pretrain_initial: HFCheckpoint,
    curated_corpus: CuratedCorpus,
    token_shards: TokenShards,
    tokenizer: Tokenizer,
    mc_eval_items: McItems,
    mlflow: MlflowResource,
    dvc: DvcResource,
    torchrun: TorchrunResource,
) -> dg.MaterializeResult:
    """The control of the data-value experiment (Llama 3 paper §3.4.3): ``pretrain_initial``'s mid-training
    checkpoint annealed (LR linearly to 0) on the unchanged mix (``token_shards``, or a sample of it drawn
    as the candidates' when ``mix_tokens`` is set), scored on the held-out
    documents (loss overall and per domain class) and the ``mc_eval_items``; every candidate class of
    ``data_value`` is compared with it. ``evals.json`` holds the scores and the config they were made with."""
    cfg = resolve_data_value_config(config, token_shards)
    t0 = time.perf_counter()
    inputs = (pretrain_initial, curated_corpus, token_shards, tokenizer, mc_eval_items)
    with stage_run(context, mlflow, dvc, cfg, *inputs) as run:
        suite = eval_suite(cfg, curated_corpus, token_shards, tokenizer, mc_eval_items)
        mix_dir, data, mix = _control_shards(run, cfg, curated_corpus, tokenizer, token_shards)
        trained, scores = anneal_and_score(context, run, torchrun, cfg, pretrain_initial, data, suite)
        repeats = [
            anneal_and_score(context, run, torchrun, cfg, pretrain_initial, data, suite, k)
            for k in range(1, cfg.noise_seeds + 1)
        ]
        noise = noise_floor([r[1] for r in repeats], scores)
        mid_step = json.loads((pretrain_initial.path / "mid" / "step.json").read_text())["step"]
        seconds = round(time.perf_counter() - t0, 1)
        evals = {
            "scores": scores,
            "config": cfg.to_dict(),
            "mid_step": mid_step,
            "seconds": seconds,
            "mix": mix,
            "noise": noise,
        }
        with atomic_dir(run.out_dir) as tmp:
            copy_hf(trained.work / "hf", tmp / "hf", tokenizer.hf_files())
            _write_run(tmp, trained)
            atomic_write_text(tmp / "evals.json", json.dumps(evals, indent=2))
        prune_work(run, [p for p in (mix_dir, trained.work, *(r[0].work for r in repeats)) if p is not None])
        run.log_png(run.out_dir / "loss.png", "loss curve")
        numbers = {**_flat(scores), **trained.final, "mid_step": mid_step, "seconds": seconds}
        numbers.update({f"noise.{k}": v for k, v in noise.items()})
        run.log_metrics(numbers)
        summary = (
            f"**Data-value control**: mid checkpoint (step {mid_step}) annealed on the unchanged mix\n\n"
        )
        return run.result(
            num_records=int(trained.final.get("tokens_seen", 0)),
            summary=summary + md_table(numbers, ("metric", "value")),
            metadata={k: v for k, v in numbers.items() if isinstance(v, int | float)},
        )


def _control(data_value_control: HFCheckpoint, cfg: DataValueConfig) -> dict:
    """The control's evals; a ``dg.Failure`` when it was annealed or scored with another config."""
    control = json.loads((data_value_control.path / "evals.json").read_text())
    if not cfg.same_anneal(DataValueConfig.from_dict(control["config"])):
        raise dg.Failure(
            f"data_value: data_value_control ({data_value_control.path}) was made with another annealing / "
            "evaluation config than this run's; materialize data_value_control with the same config first",
            allow_retries=False,
        )
    return control


def _candidate_shards(run, cfg, candidate: str, corpus, tokenizer, shards: TokenShards) -> tuple[Path, dict]:
    """The default mix with ``cfg.share`` of the candidate's tokens (counted in the main shards' train split)."""
    class_tokens = shards.manifest["tokens_per_class"].get("train", {})
    if not class_tokens.get(candidate):
        raise dg.Failure(
            f"data_value: the token shards of snapshot {shards.partition} hold no training tokens of class "
            f"{candidate!r} (classes: {', '.join(f'{k}={v}' for k, v in sorted(class_tokens.items()))}): "
            "there is nothing to value",
            allow_retries=False,  # the retry policy is for crashed training runs, not for bad input
        )

    def make_mix(df, tok, out_dir, shard_cfg, c: DataValueConfig) -> dict:
        return candidate_mix(df, tok, out_dir, shard_cfg, candidate, c.share, class_tokens, c.mix_tokens)

    return stage_mix(run, cfg, make_mix, corpus, tokenizer, shards)


@stage_asset(
    EvalTables,
    partitions_def=DATA_VALUE,
    ins={
        name: SNAPSHOT_INPUT
        for name in (
            "data_value_control",
            "pretrain_initial",
            "curated_corpus",
            "token_shards",
            "tokenizer",
            "mc_eval_items",
        )
    },
    kinds={"pytorch", "pandas"},
    retry_policy=TRAIN_RETRY,
)
def data_value(
    context: dg.AssetExecutionContext,
    config: DataValueRun,
    data_value_control: HFCheckpoint,
    pretrain_initial: HFCheckpoint,
    curated_corpus: CuratedCorpus,
    token_shards: TokenShards,
    tokenizer: Tokenizer,
    mc_eval_items: McItems,
    mlflow: MlflowResource,
    dvc: DvcResource,
    torchrun: TorchrunResource,
) -> dg.MaterializeResult:
    """The value of one candidate class (Llama 3 paper §3.4.3): ``pretrain_initial``'s mid-training checkpoint
    annealed (LR linearly to 0) on the default mix re-weighted so the class holds ``share`` (30%) of the
    training tokens, against ``data_value_control`` (the same annealing on the unchanged mix): deltas
    (candidate - control) of held-out loss overall and per domain class, MC accuracy and normalized NLL
    (``value.parquet``, ``deltas.png``, ``evals.json``)."""
    candidate = context.partition_key.keys_by_dimension["value_candidate"]
    cfg = resolve_data_value_config(config, token_shards)
    control = _control(data_value_control, cfg)
    t0 = time.perf_counter()
    inputs = (data_value_control, pretrain_initial, curated_corpus, token_shards, tokenizer, mc_eval_items)
    with stage_run(context, mlflow, dvc, cfg, *inputs) as run:
        run.log.set_tags({"candidate": candidate})
        mix_dir, mix = _candidate_shards(run, cfg, candidate, curated_corpus, tokenizer, token_shards)
        suite = eval_suite(cfg, curated_corpus, token_shards, tokenizer, mc_eval_items)
        trained, scores = anneal_and_score(
            context, run, torchrun, cfg, pretrain_initial, mix_dir / "shards", suite
        )
        table = with_noise(value_table(scores, control["scores"]), control.get("noise", {}))
        seconds = round(time.perf_counter() - t0, 1)
        share = float(mix["token_shares"].get(candidate, 0.0))
        with atomic_dir(run.out_dir) as tmp:
            table.to_parquet(tmp / "value.parquet", index=False)
            atomic_write_bytes(tmp / "deltas.png", deltas_png(table, candidate))
            _write_run(tmp, trained)
            evals = {"candidate": candidate, "scores": scores, "control": control["scores"],
                     "deltas": dict(zip(table["metric"], table["delta"], strict=True)),
                "noise": control.get("noise", {}), "mix": mix,
                     "realized_share": share, "seconds": seconds}  # fmt: skip
            atomic_write_text(tmp / "evals.json", json.dumps(evals, indent=2))
        prune_work(run, [mix_dir, trained.work])
        return _report(run, candidate, table, scores, trained, share, seconds)


def _report(
    run: StageRun, candidate, table, scores, trained: StageTraining, share, seconds
) -> dg.MaterializeResult:
    """MLflow metrics and the plot; the materialization's summary table and per-metric deltas."""
    run.log_png(run.out_dir / "deltas.png", "deltas vs control")
    deltas = {f"delta.{m}": float(d) for m, d in zip(table["metric"], table["delta"], strict=True)}
    numbers = {**_flat(scores), **deltas, "realized_share": share, "seconds": seconds}
    run.log_metrics({**numbers, **trained.final})
    summary = (
        f"**Data value of `{candidate}`**: {share:.1%} of the annealing tokens (the rest: the default mix); "
        "delta = candidate - control (negative loss / NLL or positive accuracy: the data helped); noise = the "
        "largest |delta| of the control re-annealed with other data-order seeds\n\n"
        + frame_md(table.set_index("metric"))
    )
    return run.result(
        num_records=int(trained.final.get("tokens_seen", 0)),
        summary=summary,
        metadata={**{k: v for k, v in numbers.items() if v == v}, "candidate": candidate},
    )
