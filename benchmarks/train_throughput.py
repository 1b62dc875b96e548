"""Training throughput: HF transformers LlamaForCausalLM vs ml.model.llama.Llama on identical shapes.

One process, one GPU. Both models: fp32 parameters, bf16 autocast, fused AdamW (same hyper-parameters),
torch.compile. HF uses attn_implementation="sdpa" on plain causal rows; ours runs with document masking
(FlexAttention block mask with ml.model.flex_tuning's tuned tiles, random document lengths of mean T/4), compiled per
block (`ours_doc`) or as a whole model (`ours_doc_full`); `build` lists the other variants.
MFU = tokens/s * flops_per_token(cfg, T, causal=True) / peak, where peak is an 8192^3 bf16 matmul
measured in the same run; the same FLOPs/token is credited to every implementation (ml/model/flops.py).

    PYTHONPATH=. python3 benchmarks/train_throughput.py                  # H100: small + 1b
    PYTHONPATH=. python3 benchmarks/train_throughput.py --device cpu --tiny   # smoke test, seconds
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import statistics
import time
import traceback
import unittest.mock
from dataclasses import dataclass

import torch

import ml.model.attention
from ml.model.flex_tuning import set_flex_settings
from ml.model.flops import flops_per_token, mfu, num_params
from ml.model.hf import hf_config_dict
from ml.model.llama import Llama, ModelConfig
from ml.train.dist import apply_compile


@dataclass(frozen=True)
class Shape:
    name: str
    cfg: ModelConfig
    batch: int
    seq: int


SHAPES = {
    "small": Shape("125M", ModelConfig.from_preset("small"), batch=16, seq=2048),
    "1b": Shape("1.2B", ModelConfig.from_preset("1b"), batch=4, seq=4096),
    "tiny": Shape("tiny", ModelConfig.from_preset("tiny"), batch=4, seq=256),
}


def measure_peak_flops(device: torch.device) -> float:
    """Median FLOP/s of an 8192^3 bf16 matmul on random data (512^3 fp32 on CPU)."""
    n, dtype = (8192, torch.bfloat16) if device.type == "cuda" else (512, torch.float32)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    times = []
    for i in range(23):
        _sync(device)
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        if i >= 3:
            times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def random_doc_ids(batch: int, seq: int, mean_len: float, gen: torch.Generator) -> torch.Tensor:
    """(B, T) document ids; lengths ~ exponential(mean_len), at least 1 token."""
    rows = []
    for _ in range(batch):
        ids, doc = [], 0
        while len(ids) < seq:
            n = max(1, int(torch.empty(1).exponential_(1.0 / mean_len, generator=gen).item()))
            ids.extend([doc] * n)
            doc += 1
        rows.append(ids[:seq])
    return torch.tensor(rows)


def make_batches(shape: Shape, device: torch.device, n: int = 4) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        tokens = torch.randint(0, shape.cfg.vocab_size, (shape.batch, shape.seq + 1), generator=gen)
        doc_ids = random_doc_ids(shape.batch, shape.seq, shape.seq / 4, gen)
        out.append(
            dict(
                tokens=tokens[:, :-1].to(device), labels=tokens[:, 1:].to(device), doc_ids=doc_ids.to(device)
            )
        )
    return out


def build(impl: str, shape: Shape, device: torch.device, compile_model: bool):
    """(model, step_loss_fn) for impl in hf | ours[_doc|_flexcausal][_fused][_full]."""
    if impl == "hf":
        from transformers import LlamaConfig, LlamaForCausalLM

        hf_cfg = LlamaConfig(**hf_config_dict(shape.cfg), attn_implementation="sdpa")
        with torch.device(device):
            model = LlamaForCausalLM(hf_cfg)
        run = torch.compile(model) if compile_model else model

        def loss_fn(b):  # HF shifts labels itself: pass the unshifted row, as its users do
            return run(input_ids=b["tokens"], labels=b["tokens"]).loss

        return model, loss_fn
    # ours variants compose by name: "_doc" document mask (FlexAttention), "_varlen" document mask by varlen
    # FlashAttention over packed documents, "_flexcausal" flex with one doc per row, "_fused" one q|k|v and
    # one gate|up matmul, "_full" whole-model torch.compile (else per block), "_max" compile mode
    # max-autotune-no-cudagraphs, "_cg" mode reduce-overhead (CUDA graphs), "_chunk16k" 16384 rows per loss
    # chunk, "_globalpos" RoPE at row positions (no per-document cos/sin gather); "_cdt", "_tuned" and
    # "_evalmask" act in row_context.
    parts = set(impl.split("_")[1:])
    chunk = next((int(p[5:-1]) * 1024 for p in parts if p.startswith("chunk") and p.endswith("k")), None)
    cfg = shape.cfg.replace(
        fuse_projections="fused" in parts,
        attention="varlen" if "varlen" in parts else "auto",
        loss_chunk_tokens=chunk or shape.cfg.loss_chunk_tokens,
        doc_positions="global" if "globalpos" in parts else shape.cfg.doc_positions,
    )
    model = Llama.from_config(cfg, device=device)
    if compile_model:
        mode = (
            "max-autotune-no-cudagraphs" if "max" in parts else "reduce-overhead" if "cg" in parts else None
        )
        kwargs = {"mode": mode} if mode else {}
        apply_compile(model, "model" if "full" in parts else "blocks", **kwargs)  # in place, as the engine

    def loss_fn(b):
        doc_ids = (
            b["doc_ids"]
            if parts & {"doc", "varlen"}
            else torch.zeros_like(b["doc_ids"])
            if "flexcausal" in parts
            else None
        )
        return model(b["tokens"], doc_ids=doc_ids, labels=b["labels"])

    return model, loss_fn


@contextlib.contextmanager
def row_context(impl: str, flex_settings: dict | None):
    """Process-wide settings of one row, undone after it: "_tuned" runs FlexAttention with ``flex_settings``
    (benchmarks/flex_tuning.py's winner) instead of ml.model.flex_tuning's table; "_cdt" turns on Inductor's coordinate
    descent tuning of its generated kernels; "_flexat" autotunes FlexAttention's tiles (GEMMs stay on cuBLAS,
    one choice each, so nothing else is benchmarked); "_evalmask" builds the block mask with torch's
    create_block_mask (the mask evaluated at every token pair) instead of ml.model.attention's per-block document
    ranges."""
    parts = set(impl.split("_")[1:])
    patch = {"coordinate_descent_tuning": True} if "cdt" in parts else {}
    if "flexat" in parts:  # Inductor's autotuning, but cuBLAS alone for GEMMs: in effect FlexAttention only
        patch.update(max_autotune=True, max_autotune_gemm_backends="ATEN")
    if "tuned" in parts:
        if flex_settings is None:
            raise ValueError(f"{impl}: '_tuned' needs --flex-settings")
        set_flex_settings(flex_settings)
    mask_builder = (
        unittest.mock.patch.object(
            ml.model.attention, "doc_block_mask", ml.model.attention.doc_block_mask_evaluated
        )
        if "evalmask" in parts
        else contextlib.nullcontext()
    )
    try:
        with torch._inductor.config.patch(patch), mask_builder:
            yield
    finally:
        set_flex_settings(None)


def _timed_steps(
    impl: str, shape: Shape, device: torch.device, warmup: int, steps: int, compile_model: bool, profile: bool
):
    """(seconds per step, warmup seconds incl. compile, last loss); model and optimizer die on return."""
    torch.manual_seed(0)
    model, loss_fn = build(impl, shape, device, compile_model)
    opt = torch.optim.AdamW(
        model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=device.type == "cuda"
    )
    batches = make_batches(shape, device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")

    def step(i: int) -> torch.Tensor:
        torch.compiler.cudagraph_mark_step_begin()  # "_cg" rows: a new step may overwrite graph outputs
        with autocast:
            loss = loss_fn(batches[i % len(batches)])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    t0 = time.perf_counter()
    for i in range(warmup):
        loss = step(i)
    _sync(device)
    warmup_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(steps):
        loss = step(i)
    _sync(device)
    dt = (time.perf_counter() - t0) / steps
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        with torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
            for i in range(2):
                step(i)
            _sync(device)
        table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=60)
        print(f"--- profile {impl} {shape.name} (2 steps) ---\n{table}", flush=True)
    return dt, warmup_s, loss.item()


def bench(
    impl: str,
    shape: Shape,
    device: torch.device,
    peak: float,
    warmup: int,
    steps: int,
    compile_model: bool,
    profile: bool = False,
    flex_settings: dict | None = None,
):
    """One row of the table: tokens/s, MFU and peak memory of one implementation at one shape."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    try:
        with row_context(impl, flex_settings):
            dt, warmup_s, loss = _timed_steps(impl, shape, device, warmup, steps, compile_model, profile)
        mem = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    finally:
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        torch._dynamo.reset()
    tok_s = shape.batch * shape.seq / dt
    return dict(
        impl=impl,
        shape=shape.name,
        params=num_params(shape.cfg),
        batch=shape.batch,
        seq=shape.seq,
        step_ms=dt * 1e3,
        tok_s=tok_s,
        mfu=mfu(tok_s, shape.cfg, shape.seq, peak),
        peak_mem_gib=mem,
        warmup_s=warmup_s,
        final_loss=loss,
    )


def print_table(rows: list[dict], peak: float) -> None:
    print(f"\npeak (measured matmul): {peak / 1e12:.1f} TFLOP/s; MFU uses flops_per_token(causal=True)")
    print(
        f"{'shape':6} {'impl':22} {'B x T':>9} {'step ms':>8} {'tok/s':>10} {'MFU':>6} {'mem GiB':>8} {'vs HF':>6}"
    )
    hf = {r["shape"]: r["tok_s"] for r in rows if r["impl"] == "hf" and "tok_s" in r}
    for r in rows:
        if "error" in r:
            print(f"{r['shape']:6} {r['impl']:22} ERROR {r['error']}")
            continue
        ratio = f"{r['tok_s'] / hf[r['shape']]:.2f}x" if r["shape"] in hf else "-"
        print(
            f"{r['shape']:6} {r['impl']:22} {r['batch']:>3}x{r['seq']:<5} {r['step_ms']:8.1f} {r['tok_s']:10.0f} "
            f"{100 * r['mfu']:5.1f}% {r['peak_mem_gib']:8.1f} {ratio:>6}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiny", action="store_true", help="tiny preset only (CPU smoke test)")
    ap.add_argument("--shapes", default="small,1b")
    ap.add_argument("--impls", default="hf,ours_doc,ours_doc_full")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--profile", default="", help="comma list of impls to profile (top CUDA kernels)")
    ap.add_argument("--json", default="", help="append one JSON line per run to this file")
    ap.add_argument("--flex-settings", default="", help="JSON file of flex settings for '_tuned' rows")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = True
    shapes = ["tiny"] if args.tiny else args.shapes.split(",")
    warmup, steps = (1, 2) if args.tiny else (args.warmup, args.steps)
    compile_model = not args.no_compile and device.type == "cuda"
    flex_settings = None
    if args.flex_settings:
        with open(args.flex_settings) as f:
            flex_settings = json.load(f)
    peak = measure_peak_flops(device)
    print(
        f"device {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}; torch {torch.__version__}"
    )
    rows = []
    for s in shapes:
        shape = SHAPES[s]
        for impl in args.impls.split(","):
            try:
                r = bench(
                    impl,
                    shape,
                    device,
                    peak,
                    warmup,
                    steps,
                    compile_model,
                    impl in args.profile.split(","),
                    flex_settings,
                )
            except Exception as exc:  # keep going: one OOM must not lose the other rows
                traceback.print_exc()
                r = dict(impl=impl, shape=shape.name, error=f"{type(exc).__name__}: {str(exc)[:200]}")
                gc.collect()
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            r["peak_tflops"] = peak / 1e12
            r["flops_per_token"] = flops_per_token(shape.cfg, shape.seq)
            rows.append(r)
            print(json.dumps(r), flush=True)
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps(r) + "\n")
    print_table(rows, peak)


if __name__ == "__main__":
    main()
