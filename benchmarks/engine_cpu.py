"""The training engine on CPU: the tiny initial pre-training run's step, evaluation and checkpoint times,
the code path before the CPU speed-ups (``baseline``) against this checkout (``current``).

    PYTHONPATH=. python benchmarks/engine_cpu.py --data TOKEN_SHARDS [--steps 20] [--rounds 2]

``TOKEN_SHARDS``: a ``token_shards`` artifact (e.g. make run's). Each variant runs in a child process of its
own (glibc's malloc settings are per process), with ``OMP_NUM_THREADS=1`` as ``TorchrunResource`` launches
training; the rounds alternate baseline and current so that load on a shared machine hits both alike, and
this process prints the medians and the ratio baseline / current.

A child builds the engine's ``Trainer`` for ``InitialConfig`` tiny (vocabulary from the shards), then times
``--steps`` ``train_step()`` calls at the start of each stage of the batch/sequence ramp (``tokens_seen`` set
to the stage's first token), one ``evaluate()`` (32 batches) and one ``checkpoint()``. ``baseline`` puts back
what the speed-ups replaced: the loss chunk with ``torch.logsumexp`` and a (rows, vocab) mask
(``_ce_chunk_before``), glibc's default mmap/trim thresholds (no ``keep_freed_memory``), single-tensor
AdamW.
Both start from the same weights and batches; the first step's loss is printed for each.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

T_START = time.perf_counter()


def _ce_chunk_before(h, w, y, with_grad: bool):
    """ml/model/loss.py's chunk before the speed-up (kept here as the baseline): ignored rows masked in the
    (c, V) softmax."""
    from ml.model.loss import chunk_loss, softmax_minus_onehot_

    logits, lse, valid, y0, loss_sum = chunk_loss(h, w, y)
    if not with_grad:
        return loss_sum, None, None
    g = softmax_minus_onehot_(logits, lse, y0).masked_fill_(~valid[:, None], 0.0).to(h.dtype)  # (c, V)
    return loss_sum, g @ w, (g.t() @ h).float()


def _use_baseline() -> None:
    import ml.model.loss
    import ml.train.engine

    ml.model.loss._ce_chunk = _ce_chunk_before
    build = ml.train.engine.build_optimizer

    def single_tensor(model, cfg, device):
        opt = build(model, cfg, device)
        for group in opt.param_groups:
            group["foreach"] = False
        return opt

    ml.train.engine.build_optimizer = single_tensor


def _timed(fn, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e3


def child(variant: str, data: Path, steps: int) -> dict:
    """One variant's timings (ms) in this process."""
    import torch

    from ml.tokens.shards import read_manifest
    from ml.train.cpu_memory import keep_freed_memory
    from ml.train.dist import init_distributed
    from ml.train.engine import Trainer
    from ml.train.stages import InitialConfig
    from ml.train.tasks import build_task

    imports_ms = (time.perf_counter() - T_START) * 1e3
    if variant == "baseline":
        _use_baseline()
    else:
        keep_freed_memory()  # as ml.train.engine.train does on CPU
    cfg = InitialConfig.from_preset("tiny").train
    cfg = cfg.replace_model(vocab_size=read_manifest(data).vocab_size)
    info = init_distributed("cpu")
    out: dict = {"variant": variant, "imports_ms": imports_ms, "threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as work:
        t0 = time.perf_counter()
        trainer = Trainer(cfg, build_task(cfg, data, info), Path(work), info)
        trainer.build()
        out["build_ms"] = (time.perf_counter() - t0) * 1e3
        out["first_loss"] = trainer.train_step()["loss"]
        for start, batch_tokens, seq_len in cfg.schedule.batch_ramp:
            trainer.tokens_seen = start
            trainer.train_step()  # warm-up at this shape (and the loader restart)
            out[f"step_ms_{batch_tokens}x{seq_len}"] = _timed(trainer.train_step, steps)
        out["evaluate_ms"] = _timed(trainer.evaluate, 1)
        out["checkpoint_ms"] = _timed(trainer.checkpoint, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="token shards (a token_shards artifact)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per ramp stage")
    parser.add_argument("--rounds", type=int, default=2, help="baseline/current pairs, alternated")
    parser.add_argument("--child", choices=("baseline", "current"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.data, args.steps)))
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs: dict[str, list[dict]] = {"baseline": [], "current": []}
    for _ in range(args.rounds):
        for variant in runs:
            cmd = [sys.executable, __file__, "--data", str(args.data), "--steps", str(args.steps)]
            done = subprocess.run([*cmd, "--child", variant], env=env, capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"{variant} failed:\n{done.stderr[-3000:]}")
            runs[variant].append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"load average {os.getloadavg()[0]:.2f}; {args.rounds} round(s), medians")
    print(f"{'':24s}{'baseline':>12s}{'current':>12s}{'ratio':>8s}")
    for key in runs["current"][0]:
        if key in ("variant", "threads"):
            continue
        b = statistics.median(r[key] for r in runs["baseline"])
        c = statistics.median(r[key] for r in runs["current"])
        ratio = "" if key == "first_loss" else f"{b / c:7.2f}x"
        print(f"{key:24s}{b:12.6g}{c:12.6g}{ratio:>8s}")


if __name__ == "__main__":
    main()
