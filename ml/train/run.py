"""Command-line entry for pre-training, plain or under torchrun.

    python -m ml.train.run --config cfg.yaml --data SHARDS --out WORK [--metrics-jsonl PATH] [--preset tiny]
    torchrun --nproc-per-node 2 -m ml.train.run --config cfg.yaml --data SHARDS --out WORK

Rank 0 writes one JSON line per logged step (``{"step": N, "loss": ..., ...}``) to ``--metrics-jsonl``
(appended, so a resumed run continues the file) or to stdout, and the run's summary to
``WORK/train_result.json``. Human-readable logs go to stderr. If a rank dies, torchrun stops the others;
collectives also time out after ``dist_timeout_s``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

from ml.io import atomic_write_text
from ml.train.loop import TrainConfig, train


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m ml.train.run", description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, help="TrainConfig YAML (fields over --preset when given)")
    parser.add_argument("--preset", help="TrainConfig preset: tiny | small | 8b | 70b | 405b")
    parser.add_argument(
        "--data", type=Path, required=True, help="token shard directory (train and val splits)"
    )
    parser.add_argument("--out", type=Path, required=True, help="work directory: checkpoints/, hf/")
    parser.add_argument(
        "--metrics-jsonl", type=Path, help="rank 0's metrics, one JSON object per line (default: stdout)"
    )
    parser.add_argument("--no-resume", action="store_true", help="ignore checkpoints already in --out")
    args = parser.parse_args(argv)
    if args.config is None and args.preset is None:
        parser.error("give --config and/or --preset")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.config is not None:
        cfg = TrainConfig.from_yaml(args.config, preset=args.preset)
    else:
        cfg = TrainConfig.from_preset(args.preset)
    rank0 = int(os.environ.get("RANK", "0")) == 0
    args.out.mkdir(parents=True, exist_ok=True)

    with contextlib.ExitStack() as stack:
        on_metrics = None
        if rank0:
            if args.metrics_jsonl is not None:
                args.metrics_jsonl.parent.mkdir(parents=True, exist_ok=True)
                sink = stack.enter_context(open(args.metrics_jsonl, "a"))
            else:
                sink = sys.stdout

            def on_metrics(step: int, metrics: dict) -> None:
                sink.write(json.dumps({"step": step, **metrics}) + "\n")
                sink.flush()

        result = train(cfg, args.data, args.out, on_metrics=on_metrics, resume=not args.no_resume)
    if rank0:
        atomic_write_text(args.out / "train_result.json", json.dumps(result.to_dict(), indent=2))
        print(
            f"[ml.train] done: step {result.final_step}, {result.tokens_seen:,} tokens, "
            f"{result.wall_time_s:.1f}s, HF export {result.hf_dir}",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
