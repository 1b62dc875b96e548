"""Process entry for training under torchrun, launched by Dagster Pipes (``TorchrunResource``).

Every rank trains; rank 0 alone talks to the orchestrator: it streams per-step metrics as Pipes log
messages and to ``metrics.jsonl``, and reports the final figures as the materialization's metadata.
Kept outside ml/ because it imports ``dagster_pipes``; the science is ``ml.train.loop.train``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True, help="TrainConfig YAML")
    parser.add_argument("--data", required=True, help="token_shards artifact directory")
    parser.add_argument("--out", required=True, help="work directory (checkpoints, HF export, metrics.jsonl)")
    args = parser.parse_args()

    from ml.train.loop import TrainConfig, train

    cfg = TrainConfig.from_yaml(args.config)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if int(os.environ.get("RANK", "0")) != 0:
        train(cfg, Path(args.data), out, on_metrics=None)
        return

    from dagster_pipes import open_dagster_pipes

    with open_dagster_pipes() as pipes, open(out / "metrics.jsonl", "a") as sink:

        def on_metrics(step: int, metrics: dict) -> None:
            sink.write(json.dumps({"step": step, **metrics}) + "\n")
            sink.flush()
            shown = " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, int | float))
            pipes.log.info(f"step {step}: {shown}")

        result = train(cfg, Path(args.data), out, on_metrics=on_metrics)
        pipes.report_asset_materialization(
            metadata={
                "final_step": result.final_step,
                "final_loss": float(result.losses[-1]) if result.losses else float("nan"),
                "final_val_loss": float(result.val_losses[-1][1]) if result.val_losses else float("nan"),
                "tokens_seen": int(result.tokens_seen),
                "wall_time_s": float(result.wall_time_s),
                "hf_export": {"raw_value": str(result.hf_dir), "type": "path"},
            }
        )


if __name__ == "__main__":
    main()
