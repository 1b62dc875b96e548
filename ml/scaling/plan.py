"""The IsoFLOP sweep's grid: for each compute budget C and model size, the tokens D = C / FLOPs-per-token.

FLOPs per token are the training FLOPs of ``ml.model.flops.flops_per_token`` at the sweep's sequence
length: 6 x every matmul weight (all block projections and the LM head; the embedding lookup is not a
matmul) plus causal attention. Attention and the LM head are counted because at the sizes a CPU sweep
affords they are a large share of the compute; leaving them out would make small models look cheaper
than they run. The fit itself is over training tokens (as the Llama 3 paper §3.2.1 fits D*(C)); each
cell also records total and non-embedding parameter counts so N*(C) can be read off the same grid.

Tokens are rounded to whole optimizer steps of ``batch_tokens``; the cell records the FLOPs it really
trains for. A cell with fewer than ``min_steps`` steps is refused, naming the cell: such a run would be
all warmup.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

from ml.config import ConfigError, StageConfig
from ml.model.flops import flops_per_token, num_params
from ml.model.llama import ModelConfig

# Curated tokens of the `large` local web (ml.sources.localweb, preset "large"), the corpus of a one-GPU `small`
# run, measured with benchmarks/large_web.py on the 2-core CPU, 2026-12-05 (benchmarks/results/
# 2026-12-05-cpu-large-web.json): the site built in full (166,245 pages, 2.27 GB of content pages); a stratified
# sample of 3,527 pages through the project's extraction → 1.07 GB of text → 269M tokens of a 32,768-token BPE
# trained on half the sample (3.97 bytes/token on the other half); × the curated share of each source in the
# tiny funnel (extracted_docs → curated_corpus first copies, bytes: HTML manuals 53%, man pages 12%) = 68.3M;
# less the lines that line dedup removes as copies across translations (LibreOffice 15%, GIMP 52%, Mallard
# help 33% of their bytes) = 60.8M. An estimate, below the 100M the issue aims at.
LARGE_WEB_CURATED_TOKENS = 60_800_000
MAX_EPOCHS = 4.0  # Muennighoff et al. 2023: up to ~4 epochs of repeated data are about as good as new data


@dataclasses.dataclass(frozen=True)
class SweepSize:
    """One model size of the grid: a name and the ModelConfig fields that differ from the base shape."""

    name: str
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    ffn_dim: int
    lr: float


@dataclasses.dataclass(frozen=True)
class SweepCell:
    budget: float  # FLOPs asked for
    size: str
    model: dict[str, Any]  # ModelConfig fields
    lr: float
    flops_per_token: int
    params: int
    non_embedding_params: int
    steps: int
    tokens: int
    flops: float  # FLOPs actually trained: steps * batch_tokens * flops_per_token

    @property
    def key(self) -> str:
        return cell_key(self.budget, self.size)


def budget_key(budget: float) -> str:
    """A partition-friendly budget name: 3e11 -> '3e11', 1.5e12 -> '1.5e12'."""
    mantissa, exponent = f"{budget:.6e}".split("e")
    return f"{float(mantissa):g}e{int(exponent)}"


def cell_key(budget: float, size: str) -> str:
    """A cell's name, also its partition key: ``3e11_s16`` (no ``|``, which joins partition dimensions)."""
    return f"{budget_key(budget)}_{size}"


def _sizes(*rows: tuple) -> tuple[tuple[Any, ...], ...]:
    return tuple(rows)


# (name, dim, n_layers, n_heads, n_kv_heads, ffn_dim, peak lr); head dims 8-16 so the smallest sizes have heads
_TINY_SIZES = (
    ("s8", 8, 1, 1, 1, 24, 1e-2),
    ("s12", 12, 1, 1, 1, 32, 1e-2),
    ("s16", 16, 1, 2, 1, 48, 1e-2),
    ("s24", 24, 2, 2, 1, 64, 8e-3),
    ("s32", 32, 2, 2, 1, 96, 6e-3),
    ("s48", 48, 3, 3, 1, 128, 5e-3),
    ("s64", 64, 4, 4, 2, 192, 4e-3),  # flagship candidates: larger than any swept size
    ("s96", 96, 4, 4, 2, 256, 3e-3),
)
_SMALL_SIZES = (
    ("d96", 96, 2, 2, 1, 256, 3e-3),
    ("d128", 128, 2, 2, 1, 384, 2e-3),
    ("d192", 192, 3, 3, 1, 512, 2e-3),
    ("d256", 256, 4, 4, 2, 768, 1.5e-3),
    ("d384", 384, 6, 6, 2, 1024, 1.2e-3),
    ("d512", 512, 8, 8, 4, 1536, 1e-3),
    ("d640", 640, 10, 10, 5, 1792, 8e-4),
    ("d768", 768, 12, 12, 4, 2048, 6e-4),
    ("d1024", 1024, 16, 16, 8, 2816, 4e-4),
)
# Llama 3 paper §3.2.1: budgets 6e18-1e22 FLOPs, models 40M-16B, peak LR 2e-4-4e-4 by size, cosine to 0.1x,
# weight decay 0.1x LR. The shapes are chosen (not published): 8 KV heads, FFN ~3.5x, named by their approximate block
# parameters (embedding and LM head excluded). Batch: the paper grows it 250K-4M tokens with size; one fixed batch of 2^20 here.
_PAPER_GRID: dict[str, Any] = dict(
    budgets=(6e18, 1e19, 3e19, 6e19, 1e20, 3e20, 6e20, 1e21, 3e21, 1e22),
    sizes=(
        ("40M", 512, 12, 8, 8, 1792, 4e-4),
        ("125M", 768, 16, 8, 8, 2688, 4e-4),
        ("350M", 1024, 24, 16, 8, 3584, 3.5e-4),
        ("760M", 1536, 24, 16, 8, 5376, 3e-4),
        ("1.3B", 2048, 24, 16, 8, 7168, 3e-4),
        ("2.7B", 2560, 32, 40, 8, 8960, 2.5e-4),
        ("6.7B", 4096, 32, 32, 8, 14336, 2e-4),
        ("16B", 5120, 48, 40, 8, 17920, 2e-4),
    ),
    seq_len=8192,
    batch_tokens=1 << 20,
    eval_tokens=1 << 24,
    precision="bf16",
    compile=True,
)


@dataclasses.dataclass(frozen=True)
class SweepConfig(StageConfig):
    """The IsoFLOP grid and the recipe every cell trains with (Llama 3 paper §3.2.1)."""

    budgets: tuple[float, ...] = (1e11, 3e11, 1e12)
    # (name, dim, n_layers, n_heads, n_kv_heads, ffn_dim, peak lr) rows. No preset chooses them yet: the grid
    # must bracket each budget's optimum, which is measured with the sweep asset; plan_sweep refuses none.
    sizes: tuple[tuple[Any, ...], ...] = ()
    # per budget (same order as ``budgets``), the size names trained at it; () = every size at every budget.
    # The paper's IsoFLOP curves also use a window of sizes per budget: the optimum moves with C.
    budget_sizes: tuple[tuple[str, ...], ...] = ()
    seq_len: int = 128
    batch_tokens: int = 1024  # tokens per optimizer step, fixed across the grid (chosen)
    warmup_frac: float = 0.1  # warmup as a share of each cell's steps (paper: 2,000 steps at its scale)
    min_lr_ratio: float = 0.1  # cosine to 0.1x peak (paper)
    weight_decay: float = 0.1  # paper: 0.1x LR, applied as AdamW's decoupled decay
    min_steps: int = 20
    eval_tokens: int = 16384  # the fixed validation budget every cell is scored on
    target_budget: float = 0.0  # budget of the forecast / flagship; 0 = 3x the largest swept budget
    seed: int = 1337
    device: str = "auto"  # auto | cpu (TrainConfig.device of every cell)
    precision: str = "fp32"  # fp32 | bf16 (GPU presets)
    compile: bool = False  # torch.compile (GPU only)
    torch_threads: int = 0  # intra-op threads per cell (0 = torch's default); 1 when cells run side by side
    flagship_threads: int = 0  # intra-op threads of the flagship run (0 = torch's default)
    bootstrap: int = 1000  # resamples for the confidence intervals of the fit
    use_edge_minima: bool = False  # smoke runs only: flagged budgets enter the fit (listed in its metadata)
    forecast_max_rel_error: float = 0.10  # forecast_vs_actual fails above this (warns above 2%)

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # measured on the 2-core CPU (benchmarks/NOTES.md, 2026-12-05): 12 cells, ~400 s of cell CPU time, an
        # interior minimum at every budget; 256 tokens/step so every cell takes >= 571 optimizer steps
        "tiny": dict(
            budgets=(1e11, 3e11, 1e12),
            sizes=_TINY_SIZES,
            budget_sizes=(
                ("s8", "s12", "s16", "s24"),
                ("s12", "s16", "s24", "s32"),
                ("s16", "s24", "s32", "s48"),
            ),
            seq_len=64,
            batch_tokens=256,
            eval_tokens=16384,
            device="cpu",
            torch_threads=1,
            # one thread: on two cores shared with other processes, two intra-op threads stalled at every
            # parallel region (a `lifecycle run` at load 5-8: 2,162 CPU-s for 6,987 steps that take 166 CPU-s
            # with two free cores, 109 s on one thread; benchmarks/NOTES.md)
            flagship_threads=1,
        ),
        # chosen, not yet run: one GPU on the `large` local web (LARGE_WEB_CURATED_TOKENS, ~61M curated tokens),
        # so that no cell reads it more than MAX_EPOCHS times (the most: 1e16_d192, 207M tokens, 3.4 epochs; the
        # flagship at 3e16 by the paper's D*(C): d384, 205M tokens, 3.4 epochs). 9 sizes of 3.3M-222M
        # non-embedding parameters (LM head incl.); per budget a window of 5 around the paper's D*(C) = 0.29
        # C^0.53 (26M, 46M, 88M tokens). 64K tokens per step: every cell takes >= 104 optimizer steps.
        "small": dict(
            budgets=(1e15, 3e15, 1e16),
            sizes=_SMALL_SIZES,
            budget_sizes=(
                ("d96", "d128", "d192", "d256", "d384"),
                ("d128", "d192", "d256", "d384", "d512"),
                ("d192", "d256", "d384", "d512", "d640"),
            ),
            seq_len=1024,
            batch_tokens=65_536,
            eval_tokens=2_097_152,
            precision="bf16",
            compile=True,
        ),
        "8b": _PAPER_GRID,
        "70b": _PAPER_GRID,
        "405b": _PAPER_GRID,
    }

    def __post_init__(self) -> None:
        if len(self.budgets) < 2 or any(b <= 0 for b in self.budgets):
            raise ConfigError(f"SweepConfig.budgets must hold >= 2 positive FLOP counts, got {self.budgets}")
        for row in self.sizes:
            if len(row) != 7:
                raise ConfigError(
                    f"SweepConfig.sizes: each row is (name, dim, n_layers, n_heads, n_kv_heads, ffn_dim, lr), got {row}"
                )
        names = {str(r[0]) for r in self.sizes}
        if self.budget_sizes and len(self.budget_sizes) != len(self.budgets):
            raise ConfigError(
                f"SweepConfig.budget_sizes has {len(self.budget_sizes)} rows for {len(self.budgets)} budgets"
            )
        unknown = sorted({n for row in self.budget_sizes for n in row} - names)
        if self.sizes and unknown:
            raise ConfigError(f"SweepConfig.budget_sizes names unknown size(s) {unknown}")
        for name in ("seq_len", "batch_tokens", "min_steps", "eval_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"SweepConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_tokens % self.seq_len:
            raise ConfigError(
                f"SweepConfig.batch_tokens={self.batch_tokens} is not a multiple of seq_len={self.seq_len}"
            )

    @property
    def size_list(self) -> list[SweepSize]:
        return [SweepSize(str(r[0]), *(int(v) for v in r[1:6]), float(r[6])) for r in self.sizes]

    @property
    def forecast_budget(self) -> float:
        return self.target_budget or 3.0 * max(self.budgets)


def model_for(size: SweepSize, vocab_size: int, seq_len: int) -> ModelConfig:
    return ModelConfig(
        dim=size.dim,
        n_layers=size.n_layers,
        n_heads=size.n_heads,
        n_kv_heads=size.n_kv_heads,
        ffn_dim=size.ffn_dim,
        vocab_size=vocab_size,
        max_seq_len=seq_len,
    )


def plan_cell(cfg: SweepConfig, budget: float, size: SweepSize, vocab_size: int) -> SweepCell:
    model = model_for(size, vocab_size, cfg.seq_len)
    fpt = flops_per_token(model, cfg.seq_len)
    steps = int(round(budget / fpt / cfg.batch_tokens))
    if steps < cfg.min_steps:
        raise ConfigError(
            f"sweep cell {cell_key(budget, size.name)}: {budget:.3g} FLOPs buy {steps} steps of "
            f"{cfg.batch_tokens} tokens at {fpt:,} FLOPs/token (< min_steps={cfg.min_steps})"
        )
    tokens = steps * cfg.batch_tokens
    fields = {f.name: getattr(model, f.name) for f in dataclasses.fields(model)}
    return SweepCell(
        budget=float(budget),
        size=size.name,
        model=fields,
        lr=size.lr,
        flops_per_token=fpt,
        params=num_params(model),
        non_embedding_params=num_params(model, exclude_embeddings=True),
        steps=steps,
        tokens=tokens,
        flops=float(tokens) * fpt,
    )


def grid(cfg: SweepConfig) -> list[tuple[float, SweepSize]]:
    """The (budget, size) pairs of the grid, budgets ascending, sizes in config order."""
    if not cfg.sizes:
        raise ConfigError("SweepConfig.sizes is empty: the grid needs model sizes")
    names = dict(zip(cfg.budgets, cfg.budget_sizes, strict=True)) if cfg.budget_sizes else {}
    return [(b, s) for b in sorted(cfg.budgets) for s in cfg.size_list if not names or s.name in names[b]]


def plan_sweep(cfg: SweepConfig, vocab_size: int) -> list[SweepCell]:
    """Every (budget, size) cell of the grid, budgets ascending, sizes in config order."""
    return [plan_cell(cfg, b, s, vocab_size) for b, s in grid(cfg)]


def epochs(cell: SweepCell, corpus_tokens: float) -> float:
    """How many times ``cell`` reads a training corpus of ``corpus_tokens`` tokens."""
    if corpus_tokens <= 0:
        raise ValueError(f"epochs: corpus_tokens must be > 0, got {corpus_tokens}")
    return cell.tokens / corpus_tokens


def warmup_steps(cfg: SweepConfig, steps: int) -> int:
    return max(1, math.ceil(cfg.warmup_frac * steps))
