"""Choosing the `tiny` IsoFLOP grid on this CPU: run budgets x sizes cells the way the sweep asset does
(``ml.scaling.sweep.run_cell``), ``--workers`` cells at a time with ``--threads`` torch threads each, and
print one JSON line per cell plus the sweep's wall time and each budget's parabola (interior or edge).

    PYTHONPATH=. python benchmarks/scaling_grid.py --data data/token_shards/local-web \
        --budgets 3e11,1e12,3e12 --sizes s16:16:1:2:1:48:1e-2,s32:32:2:2:1:96:6e-3 [--workers 2 --threads 1]

A size is name:dim:layers:heads:kv_heads:ffn_dim:lr. Results go to stdout and ``--out`` (JSON lines).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import dataclasses
import json
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path


def _worker_init(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _run(cfg_dict: dict, cell_dict: dict, data: str) -> dict:
    from ml.scaling.plan import SweepCell, SweepConfig
    from ml.scaling.sweep import run_cell

    cfg = SweepConfig.from_dict(cfg_dict)
    cell = SweepCell(**cell_dict)
    cpu0 = time.process_time()
    with tempfile.TemporaryDirectory() as tmp:
        rec = run_cell(cfg, cell, Path(data), Path(tmp))
    keys = ("key", "budget", "size", "lr", "steps", "tokens", "params", "final_val_loss", "wall_time_s")
    return {**{k: rec[k] for k in keys}, "cpu_s": time.process_time() - cpu0}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--budgets", required=True)
    ap.add_argument("--sizes", required=True)
    ap.add_argument("--budget-sizes", default="", help="per budget, size names joined by '+', budgets by ','")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch-tokens", type=int, default=1024)
    ap.add_argument("--warmup-frac", type=float, default=0.1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    from ml.scaling.fit import fit_isoflop
    from ml.scaling.plan import SweepConfig, plan_sweep

    sizes = tuple(
        (p[0], *(int(v) for v in p[1:6]), float(p[6])) for p in (s.split(":") for s in args.sizes.split(","))
    )
    cfg = SweepConfig(
        budgets=tuple(float(b) for b in args.budgets.split(",")),
        budget_sizes=tuple(tuple(r.split("+")) for r in args.budget_sizes.split(","))
        if args.budget_sizes
        else (),
        sizes=sizes,
        seq_len=args.seq_len,
        batch_tokens=args.batch_tokens,
        warmup_frac=args.warmup_frac,
        device="cpu",
    )
    vocab = json.loads((Path(args.data) / "manifest.json").read_text())["vocab_size"]
    cells = sorted(plan_sweep(cfg, vocab), key=lambda c: -c.budget)  # largest first: balances the pool
    t0 = time.perf_counter()
    rows = []
    ctx = mp.get_context("spawn")
    with cf.ProcessPoolExecutor(
        args.workers, mp_context=ctx, initializer=_worker_init, initargs=(args.threads,)
    ) as pool:
        futs = [pool.submit(_run, cfg.to_dict(), dataclasses.asdict(c), args.data) for c in cells]
        for fut in cf.as_completed(futs):
            row = fut.result()
            rows.append(row)
            print(json.dumps(row), flush=True)
    wall = time.perf_counter() - t0
    summary = {
        "sweep_wall_s": round(wall, 1),
        "cells_cpu_s": round(sum(r["cpu_s"] for r in rows), 1),
        "workers": args.workers,
        "threads": args.threads,
        "seq_len": args.seq_len,
        "batch_tokens": args.batch_tokens,
        "budgets": args.budgets,
        "sizes": args.sizes,
    }
    for b in cfg.budgets:
        if len({r["size"] for r in rows if r["budget"] == b}) < 3:
            continue
        cell = sorted((r for r in rows if r["budget"] == b), key=lambda r: r["tokens"])
        fit = fit_isoflop(b, [r["tokens"] for r in cell], [r["final_val_loss"] for r in cell])
        summary[f"C={b:.3g}"] = {
            "losses": {r["size"]: round(r["final_val_loss"], 3) for r in cell},
            "opt_tokens": round(fit.opt_tokens),
            "opt_loss": round(fit.opt_loss, 3),
            "edge": fit.reason or "interior",
        }
    print(json.dumps(summary, indent=1), flush=True)
    if args.out:
        with open(args.out, "a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
            f.write(json.dumps(summary) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
