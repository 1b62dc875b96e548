"""FP8 inference speed: prefill and decode tokens/s, bf16 against row-wise FP8 FFNs (Llama 3 paper §6.2).

All precisions run the same randomly initialised model of each shape in one process: bf16 everywhere,
or bf16 with the FFNs of every layer but the first and last converted by ``ml.infer.fp8.quantize_model``
(``torch._scaled_mm`` on CUDA capability >= 8.9, the quantize-dequantize reference elsewhere): ``fp8``
with the recipe's default fast accumulation (fbgemm's), ``fp8_exact`` with exact accumulation.

``--compile blocks`` compiles each transformer block (one graph per kind of block, reused by every layer:
seconds to compile even at 8b); ``--compile model`` the whole forward (Inductor fuses across blocks, but
compiles every layer: minutes at 8b).

* prefill: one forward over ``batch x prompt`` tokens, logits of the last position (what a server does
  before the first output token); tokens/s = batch * prompt / time.
* decode: one forward over ``batch x 1`` new tokens. ``ml/infer`` has no KV cache yet, so attention reads
  only the new token: this times the projections and FFN matmuls of a decode step at that batch (the part
  FP8 changes), not attention over a long cache. tokens/s = batch / time.

    PYTHONPATH=. python benchmarks/fp8_inference.py --shapes small,1b --compile  # GPU
    PYTHONPATH=. python benchmarks/fp8_inference.py --shapes tiny --device cpu  # smoke row
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import torch

from ml.infer.fp8 import FP8Config, quantize_model
from ml.model.llama import Llama, ModelConfig

# (prefill batch, prompt length, decode batch) per shape
WORKLOADS = {"tiny": (2, 128, 8), "small": (8, 2048, 64), "1b": (8, 2048, 64), "8b": (4, 2048, 64)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class LastLogits(torch.nn.Module):
    """Logits of the last position only (B, V): a server computes no others."""

    def __init__(self, model: Llama):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.lm_head(self.model.hidden_states(x)[:, -1])


COMPILE_SCOPES = ("off", "blocks", "model")


def build(shape: str, device: torch.device, compile_scope: str = "off") -> dict[str, torch.nn.Module]:
    """``{"bf16": model, "fp8": model, "fp8_exact": model}`` of one shape, the same weights, eval mode."""
    if compile_scope not in COMPILE_SCOPES:
        raise ValueError(f"compile scope must be one of {COMPILE_SCOPES}, got {compile_scope!r}")
    torch.manual_seed(0)
    cfg = ModelConfig.from_preset(shape, attention="sdpa")
    base = Llama.from_config(cfg, device=device).to(torch.bfloat16).eval()
    models = {
        "bf16": base,
        "fp8": quantize_model(copy.deepcopy(base), FP8Config()),
        "fp8_exact": quantize_model(copy.deepcopy(base), FP8Config(fast_accum=False)),
    }
    # a fresh cache per shape: every shape's graphs share one code object (LastLogits.forward or
    # Block.forward), and 3 shapes of 4+ graphs pass dynamo's recompile limit (8): the last ran eager
    torch._dynamo.reset()
    # 3 precisions x 2 phases of one code object: 6 static graphs, within the raised limit
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 32)
    if compile_scope == "blocks":
        for m in models.values():
            for block in m.layers:
                block.compile(fullgraph=True, dynamic=False)
    models = {k: LastLogits(m) for k, m in models.items()}
    if compile_scope == "model":
        models = {k: torch.compile(m, dynamic=False) for k, m in models.items()}
    return models


@torch.no_grad()
def logits_delta(models: dict[str, torch.nn.Module], x: torch.Tensor) -> dict[str, float]:
    """How far FP8's last-position logits are from bf16's on the same prompts.

    ``kl``: mean KL(bf16 || fp8) in nats over the batch; ``top1``: share of rows whose argmax agrees;
    ``rel_l2``: ||fp8 - bf16|| / ||bf16||. Random weights, so this bounds the arithmetic, not a trained
    model's perplexity (the ``fp8_model`` asset measures that on the trained base model).
    """
    ref = models["bf16"](x).float()
    logp = ref.log_softmax(-1)
    out = {"bf16": {"kl": 0.0, "top1": 1.0, "rel_l2": 0.0}}
    for name in (k for k in models if k != "bf16"):
        got = models[name](x).float()
        kl = (logp.exp() * (logp - got.log_softmax(-1))).sum(-1).mean()
        top1 = (ref.argmax(-1) == got.argmax(-1)).float().mean()
        rel = (got - ref).norm() / ref.norm()
        out[name] = {"kl": kl.item(), "top1": top1.item(), "rel_l2": rel.item()}
    return out


@torch.no_grad()
def _time(fn, device: torch.device, warmup: int, iters: int) -> float:
    """Median seconds of one call."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def bench(
    shape: str, device: torch.device, warmup: int = 2, iters: int = 5, compile_scope: str = "off"
) -> list[dict]:
    """One row per (precision, phase): tokens/s, ms, and the speed-up of FP8 over bf16."""
    batch, prompt, decode_batch = WORKLOADS[shape]
    models = build(shape, device, compile_scope)
    vocab = ModelConfig.from_preset(shape).vocab_size
    gen = torch.Generator(device="cpu").manual_seed(1)
    prefill_x = torch.randint(0, vocab, (batch, prompt), generator=gen).to(device)
    decode_x = torch.randint(0, vocab, (decode_batch, 1), generator=gen).to(device)
    rows = []
    for precision, model in models.items():
        for phase, x in (("prefill", prefill_x), ("decode", decode_x)):
            s = _time(lambda m=model, x=x: m(x), device, warmup, iters)
            rows.append(
                dict(
                    shape=shape,
                    precision=precision,
                    phase=phase,
                    batch=x.shape[0],
                    seq=x.shape[1],
                    ms=s * 1e3,
                    tok_s=x.numel() / s,
                    device=str(device),
                )
            )
    delta = logits_delta(models, prefill_x)
    for r in rows:
        r.update(delta[r["precision"]])
        base = next(b for b in rows if b["phase"] == r["phase"] and b["precision"] == "bf16")
        r["speedup_vs_bf16"] = r["tok_s"] / base["tok_s"]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--shapes", default="small,1b")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument(
        "--compile",
        nargs="?",
        const="blocks",
        default="off",
        choices=COMPILE_SCOPES,
        help="torch.compile every model (fuses the FP8 quantize); bare --compile = blocks",
    )
    ap.add_argument("--json", default="", help="append one JSON line per row to this file")
    args = ap.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device: {name}, compile={args.compile}")
    print(
        f"{'shape':6s} {'precision':9s} {'phase':8s} {'batch':>5s} {'seq':>5s} {'ms':>9s} {'tok/s':>12s} {'x bf16':>7s} {'KL':>9s} {'top1':>5s} {'rel_l2':>7s}"
    )
    for shape in args.shapes.split(","):
        for r in bench(shape, device, args.warmup, args.iters, args.compile):
            r["torch"] = torch.__version__
            print(
                f"{r['shape']:6s} {r['precision']:9s} {r['phase']:8s} {r['batch']:5d} {r['seq']:5d} "
                f"{r['ms']:9.3f} {r['tok_s']:12.0f} {r['speedup_vs_bf16']:7.2f} "
                f"{r['kl']:9.2e} {r['top1']:5.3f} {r['rel_l2']:7.4f}"
            )
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps(r | {"gpu": name, "compile": args.compile}) + "\n")


if __name__ == "__main__":
    main()
