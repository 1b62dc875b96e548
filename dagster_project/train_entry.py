"""Process entry for training under torchrun, launched by Dagster Pipes (``TorchrunResource``).

The arguments and the run are ``ml.train.run``'s (``--config YAML --data DIR --out WORK [--init-from
DIR]``: WORK/metrics.jsonl, WORK/hf). Rank 0 alone talks to the orchestrator: it streams per-step metrics
as Pipes log messages and reports the final figures as the materialization's metadata. Kept outside ml/
because it imports ``dagster_pipes``.
"""

from __future__ import annotations

import os

from ml.train import run


def main() -> None:
    if int(os.environ.get("RANK", "0")) != 0:
        run.run()
        return

    from dagster_pipes import open_dagster_pipes

    with open_dagster_pipes() as pipes:

        def on_metrics(step: int, metrics: dict) -> None:
            shown = " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, int | float))
            pipes.log.info(f"step {step}: {shown}")

        result = run.run(on_metrics=on_metrics)
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
