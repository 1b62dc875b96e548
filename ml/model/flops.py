"""Exact parameter counts, training FLOPs per token and MFU for a :class:`ml.model.llama.ModelConfig`.

Conventions (used by the benchmark for both our model and HF's, so the MFU figures compare):

* ``num_params`` counts every parameter once (a tied embedding/LM-head matrix once). With
  ``exclude_embeddings=True`` the input embedding table is left out; an untied LM head stays in (it is a
  matmul), and a tied one is counted once, as the LM head.
* ``flops_per_token`` = 6 * (matmul weights per token, LM head included; embedding lookup and norms are
  not matmuls) + attention. Attention per layer and token is 4 * T * D multiply-adds-as-FLOPs forward
  (QK^T and AV), times 3 for forward + backward = 12 * L * D * T; ``causal=True`` (default) counts the
  half a causal mask computes: 6 * L * D * T. Document masking computes less still; the convention does
  not credit that (same FLOPs per token for a masked and an unmasked run).
"""

from __future__ import annotations

from ml.model.llama import ModelConfig


def _layer_matmul_params(cfg: ModelConfig) -> int:
    hd = cfg.head_dim
    attn = cfg.dim * cfg.n_heads * hd * 2 + cfg.dim * cfg.n_kv_heads * hd * 2  # q, o + k, v
    ffn = 3 * cfg.dim * cfg.ffn_dim  # gate, up, down
    return attn + ffn


def num_params(cfg: ModelConfig, exclude_embeddings: bool = False) -> int:
    """Exact parameter count of ``Llama(cfg)`` (equal to summing numel over a meta-device model)."""
    embed = cfg.vocab_size * cfg.dim
    head = 0 if cfg.tie_embeddings else cfg.vocab_size * cfg.dim
    per_layer = _layer_matmul_params(cfg) + 2 * cfg.dim  # + two RMSNorm weights
    total = embed + head + cfg.n_layers * per_layer + cfg.dim  # + final norm
    if exclude_embeddings:
        total -= embed if not cfg.tie_embeddings else 0
    return total


def matmul_params(cfg: ModelConfig) -> int:
    """Weights that take part in a matmul per token: all block projections plus the LM head."""
    return cfg.n_layers * _layer_matmul_params(cfg) + cfg.vocab_size * cfg.dim


def flops_per_token(cfg: ModelConfig, seq_len: int, causal: bool = True) -> int:
    """Training (forward + backward) FLOPs per token at sequence length ``seq_len``."""
    attn = (6 if causal else 12) * cfg.n_layers * cfg.n_heads * cfg.head_dim * seq_len
    return 6 * matmul_params(cfg) + attn


def mfu(tokens_per_s: float, cfg: ModelConfig, seq_len: int, peak_flops: float, causal: bool = True) -> float:
    """Model FLOPs utilisation: achieved training FLOP/s over ``peak_flops`` (a fraction, not %)."""
    if peak_flops <= 0:
        raise ValueError(f"peak_flops must be > 0, got {peak_flops}")
    return tokens_per_s * flops_per_token(cfg, seq_len, causal) / peak_flops
