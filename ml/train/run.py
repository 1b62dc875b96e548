"""The one command-line entry for training, plain or under torchrun.

    python -m ml.train.run --config cfg.yaml --data SHARDS --out WORK [--init-from DIR] [--preset tiny]
    torchrun --nproc-per-node 2 -m ml.train.run --config cfg.yaml --data SHARDS --out WORK

Rank 0 writes one JSON line per logged step (``{"step": N, "loss": ..., ...}``) to ``--metrics-jsonl``
(default ``WORK/metrics.jsonl``; ``-`` for stdout; appended, so a resumed run continues the file) and the
run's summary to ``WORK/train_result.json``; the final model is in ``WORK/hf`` (HF Llama format).
Human-readable logs go to stderr. If a rank dies, torchrun stops the others; collectives also time out
after ``dist_timeout_s``. Orchestrators wrap :func:`run` (dagster_project/train_entry.py adds Pipes).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

from ml.io import atomic_write_text
from ml.train.config import TrainConfig
from ml.train.engine import MetricsSink, TrainResult, train


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m ml.train.run", description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, help="TrainConfig YAML (fields over --preset when given)")
    parser.add_argument("--preset", help="TrainConfig preset: tiny | small | 8b | 70b | 405b")
    parser.add_argument(
        "--data", type=Path, required=True, help="the task's data directory (token shards for pretrain)"
    )
    parser.add_argument("--out", type=Path, required=True, help="work directory: checkpoints/, hf/, metrics")
    parser.add_argument(
        "--init-from", help="start from these weights (HF dir or checkpoint): TrainConfig.init_from"
    )
    parser.add_argument(
        "--metrics-jsonl",
        help="rank 0's metrics, one JSON object per line (default WORK/metrics.jsonl; - = stdout)",
    )
    parser.add_argument("--no-resume", action="store_true", help="ignore checkpoints already in --out")
    args = parser.parse_args(argv)
    if args.config is None and args.preset is None:
        parser.error("give --config and/or --preset")
    return args


def load_config(args: argparse.Namespace) -> TrainConfig:
    """Preset, then the YAML file, then ``--init-from``."""
    if args.config is not None:
        cfg = TrainConfig.from_yaml(args.config, preset=args.preset)
    else:
        cfg = TrainConfig.from_preset(args.preset)
    return cfg.replace(init_from=args.init_from) if args.init_from else cfg


def _jsonl_sink(stack: contextlib.ExitStack, target: str, also: MetricsSink | None) -> MetricsSink:
    if target == "-":
        out = sys.stdout
    else:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        out = stack.enter_context(open(target, "a"))

    def sink(step: int, metrics: dict) -> None:
        out.write(json.dumps({"step": step, **metrics}) + "\n")
        out.flush()
        if also is not None:
            also(step, metrics)

    return sink


def run(argv: list[str] | None = None, on_metrics: MetricsSink | None = None) -> TrainResult:
    """Parse ``argv``, train, write rank 0's metrics and summary; ``on_metrics`` also sees rank 0's metrics."""
    args = parse_args(argv)
    cfg = load_config(args)
    rank0 = int(os.environ.get("RANK", "0")) == 0
    args.out.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        sink = None
        if rank0:
            sink = _jsonl_sink(stack, args.metrics_jsonl or str(args.out / "metrics.jsonl"), on_metrics)
        result = train(cfg, args.data, args.out, on_metrics=sink, resume=not args.no_resume)
    if rank0:
        atomic_write_text(args.out / "train_result.json", json.dumps(result.to_dict(), indent=2))
        print(
            f"[ml.train] done: step {result.final_step}, {result.tokens_seen:,} tokens, "
            f"{result.wall_time_s:.1f}s, HF export {result.hf_dir}",
            file=sys.stderr,
        )
    return result


def main(argv: list[str] | None = None) -> int:
    run(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
