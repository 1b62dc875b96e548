"""FlexAttention settings for the document mask at one model shape: forward and forward+backward times.

Same inputs as benchmarks/train_throughput.py (random documents with exponential lengths of mean T/4, bf16
q/k/v, GQA). SDPA causal (flash kernel, no document mask, all of the causal work) is the reference row.
Search, coordinate-wise so it fits one device call: (1) forward tiles/warps/stages with torch's backward
defaults, timed forward only; (2) backward tiles/warps/stages with the best forward, timed forward+backward;
(3) a 64-token block mask with tiles that fit it. Every candidate's output and gradients are compared with
torch's defaults (bf16: max |diff| must stay under 2e-2 of the reference scale) so a wrong config cannot win.
The winner is written as JSON (``--out``), the settings dict ``ml.model.flex_tuning.set_flex_settings`` takes.
Each candidate is the process-wide override while it compiles and runs, so Inductor is offered its backward
tiles (``flex_compile_configs`` is held for the whole search).

    PYTHONPATH=. python3 benchmarks/flex_tuning.py --shape small --out /tmp/flex_best.json
"""

from __future__ import annotations

import argparse
import json
import traceback

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import flex_attention

from benchmarks.train_throughput import SHAPES, random_doc_ids
from ml.model.attention import doc_block_mask, doc_block_mask_evaluated
from ml.model.flex_tuning import flex_compile_configs, set_flex_settings, split_flex_settings

FWD_GRID = [  # (BLOCK_M, BLOCK_N, num_warps, num_stages); torch's H100 default at head dim 64 is (128, 128, 4, 3)
    (128, 128, 4, 3),
    (128, 64, 4, 3),
    (128, 128, 8, 2),
    (128, 64, 8, 3),
    (64, 128, 4, 3),
    (64, 64, 4, 3),
]
BWD_GRID = [  # (BLOCK_M1, BLOCK_N1, BLOCK_M2, BLOCK_N2, num_warps, num_stages); default (64, 128, 128, 64, 8, 3)
    (64, 128, 128, 64, 8, 3),
    (64, 128, 128, 64, 4, 3),
    (64, 128, 128, 64, 8, 4),
    (32, 128, 128, 32, 4, 3),
    (64, 64, 64, 64, 4, 3),
    (64, 64, 64, 64, 4, 4),
    (32, 64, 64, 32, 4, 3),
    (64, 64, 64, 64, 4, 2),  # neighbours of 64x64 at 4 warps, 3 stages
    (64, 64, 64, 64, 8, 3),
    (32, 64, 64, 32, 4, 4),
]


def fwd_options(m: int, n: int, w: int, s: int) -> dict[str, int]:
    return {"fwd_BLOCK_M": m, "fwd_BLOCK_N": n, "fwd_num_warps": w, "fwd_num_stages": s}


def bwd_options(m1: int, n1: int, m2: int, n2: int, w: int, s: int) -> dict[str, int]:
    return {
        "bwd_BLOCK_M1": m1,
        "bwd_BLOCK_N1": n1,
        "bwd_BLOCK_M2": m2,
        "bwd_BLOCK_N2": n2,
        "bwd_num_warps": w,
        "bwd_num_stages": s,
    }


def mask_density(bm) -> tuple[float, float]:
    """(full, partial) fraction of all (query block, key block) pairs."""
    total = bm.kv_num_blocks.numel() * bm.kv_num_blocks.shape[-1]
    full = bm.full_kv_num_blocks.sum().item() if bm.full_kv_num_blocks is not None else 0
    return full / total, bm.kv_num_blocks.sum().item() / total


def mask_build_times(doc_ids: torch.Tensor, do_bench) -> None:
    """Time to build one batch's block mask: ml.model.attention's per-block document ranges vs create_block_mask."""
    builders = {
        "create_block_mask, compiled (baseline)": doc_block_mask_evaluated,
        "document ranges, eager": doc_block_mask,
        "document ranges, compiled": torch.compile(doc_block_mask),
    }
    base = None
    for name, fn in builders.items():
        ms = do_bench(lambda fn=fn: fn(doc_ids, 128), warmup=10, rep=100, return_mode="median")
        base = base or ms
        print(f"mask build {name:40} {ms:8.3f} ms  {base / ms:6.2f}x", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="small", choices=sorted(SHAPES))
    ap.add_argument("--out", default="", help="write the winning settings here (JSON)")
    ap.add_argument("--quick", action="store_true", help="first two configs of each grid only")
    ap.add_argument("--mask-only", action="store_true", help="time building the block mask, then stop")
    args = ap.parse_args()
    from triton.testing import do_bench

    dev = torch.device("cuda")

    torch.backends.cuda.matmul.allow_tf32 = True
    shape = SHAPES[args.shape]
    cfg, B, T = shape.cfg, shape.batch, shape.seq
    H, K, Hd = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    gen = torch.Generator().manual_seed(0)
    doc_ids = random_doc_ids(B, T, T / 4, gen).to(dev)
    torch.manual_seed(0)
    q = torch.randn(B, H, T, Hd, device=dev, dtype=torch.bfloat16, requires_grad=True)
    k = torch.randn(B, K, T, Hd, device=dev, dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(B, K, T, Hd, device=dev, dtype=torch.bfloat16, requires_grad=True)
    dout = torch.randn(B, H, T, Hd, device=dev, dtype=torch.bfloat16)
    masks = {128: doc_block_mask(doc_ids, 128), 64: doc_block_mask(doc_ids, 64)}
    for size, bm in masks.items():
        full, partial = mask_density(bm)
        print(f"block mask {size}: {100 * full:.1f}% full + {100 * partial:.1f}% partial blocks", flush=True)
    mask_build_times(doc_ids, do_bench)
    if args.mask_only:
        return
    with flex_compile_configs():
        try:
            search(args, q, k, v, dout, masks, do_bench)
        finally:
            set_flex_settings(None)


def search(args, q, k, v, dout, masks, do_bench) -> None:
    """Time the reference and every candidate, print the table, write the winner."""
    B, H, T, Hd = q.shape
    K = k.shape[1]
    # causal attention FLOPs (fwd 4*B*H*T^2*Hd/2, bwd 2.5x fwd) to express times as TFLOP/s
    causal_fwd = 4 * B * H * T * T * Hd / 2

    def timed(fn_fwd):
        fwd_ms = do_bench(lambda: fn_fwd(q, k, v), warmup=50, rep=200, return_mode="median")

        def both():
            out = fn_fwd(q, k, v)
            torch.autograd.grad(out, (q, k, v), dout)

        return fwd_ms, do_bench(both, warmup=50, rep=300, return_mode="median")

    rows = []
    fwd_ms, both_ms = timed(
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    )
    rows.append(dict(name="sdpa causal (reference)", fwd_ms=fwd_ms, fwdbwd_ms=both_ms, settings=None))
    print(json.dumps(rows[-1]), flush=True)

    def flex_fn(settings: dict[str, int]):
        block, opts = split_flex_settings(settings)
        set_flex_settings(settings)  # offered to Inductor while this candidate compiles and runs
        bm = masks[block]
        torch._dynamo.reset()

        def f(q, k, v):
            return flex_attention(q, k, v, block_mask=bm, enable_gqa=True, kernel_options=opts or None)

        return torch.compile(f, dynamic=False)

    def outputs(fn):
        out = fn(q, k, v)
        return (out, *torch.autograd.grad(out, (q, k, v), dout))

    ref = outputs(flex_fn({}))
    scale = max(t.float().abs().max().item() for t in ref)

    def run(name: str, settings: dict[str, int], phase: str) -> dict:
        try:
            fn = flex_fn(settings)
            err = (
                max((a.float() - b.float()).abs().max().item() for a, b in zip(outputs(fn), ref, strict=True))
                / scale
            )
            if not err < 2e-2:  # nan fails too
                raise ValueError(f"wrong result: max |diff| / scale = {err:.3g}")
            fwd_ms, both_ms = timed(fn)
            row = dict(
                name=name, phase=phase, fwd_ms=fwd_ms, fwdbwd_ms=both_ms, rel_err=err, settings=settings
            )
        except Exception as exc:  # a config that does not fit (shared memory, registers) is skipped
            traceback.print_exc(limit=1)
            row = dict(
                name=name, phase=phase, error=f"{type(exc).__name__}: {str(exc)[:160]}", settings=settings
            )
        rows.append(row)
        print(json.dumps(row), flush=True)
        return row

    def best(phase: str, key: str) -> dict:
        ok = [r for r in rows if r.get("phase") == phase and "error" not in r]
        return min(ok, key=lambda r: r[key])

    cut = 2 if args.quick else None
    run("torch default", {}, "default")
    for m, n, w, s in FWD_GRID[:cut]:
        run(f"fwd {m}x{n} w{w} s{s}", fwd_options(m, n, w, s), "fwd")
    fwd_best = best("fwd", "fwd_ms")["settings"]
    for cfg_ in BWD_GRID[:cut]:
        run("bwd {}x{}/{}x{} w{} s{}".format(*cfg_), {**fwd_best, **bwd_options(*cfg_)}, "bwd")
    both_best = best("bwd", "fwdbwd_ms")["settings"]
    for fwd_cfg, bwd_cfg in [
        ((64, 64, 4, 3), (64, 64, 64, 64, 4, 3)),
        ((64, 64, 4, 3), (32, 64, 64, 32, 4, 3)),
    ][:cut]:
        settings = {"mask_block_size": 64, **fwd_options(*fwd_cfg), **bwd_options(*bwd_cfg)}
        run("mask64 fwd {}x{} bwd {}x{}/{}x{}".format(*fwd_cfg[:2], *bwd_cfg[:4]), settings, "mask64")
    candidates = [r for r in rows if r.get("phase") in ("default", "bwd", "mask64") and "error" not in r]
    winner = min(candidates, key=lambda r: r["fwdbwd_ms"])
    default = next(r for r in rows if r.get("phase") == "default")

    print(
        f"\n{args.shape}: B={B} T={T} H={H} K={K} Hd={Hd}, bf16; causal attention {3.5 * causal_fwd / 1e12:.2f} TFLOP fwd+bwd"
    )
    print(f"{'candidate':38} {'fwd ms':>7} {'fwd+bwd ms':>10} {'vs default':>10}")
    for r in rows:
        if "error" in r:
            print(f"{r['name']:38} ERROR {r['error'][:60]}")
            continue
        print(
            f"{r['name']:38} {r['fwd_ms']:7.3f} {r['fwdbwd_ms']:10.3f} {default['fwdbwd_ms'] / r['fwdbwd_ms']:9.2f}x"
        )
    print(
        f"winner: {winner['name']} {json.dumps(winner['settings'])}  (best fwd-only {json.dumps(fwd_best)};"
        f" best bwd {json.dumps(both_best)})"
    )
    if args.out:
        with open(args.out, "w") as f:
            json.dump(winner["settings"], f)


if __name__ == "__main__":
    main()
