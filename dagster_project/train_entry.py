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
        # the asset reads WORK/train_result.json (authoritative); this report is for the UI's run view
        pipes.report_asset_materialization(
            metadata={
                **result.final_metrics(),
                "hf_export": {"raw_value": str(result.hf_dir), "type": "path"},
            }
        )


if __name__ == "__main__":
    main()
