"""ml/model.py: HF parity, document masking, fused loss, presets, meta-device build, GPU paths."""

import pytest
import torch
import torch.nn.functional as F

from ml.config import ConfigError
from ml.model.flops import num_params
from ml.model.llama import (
    FLEX_TUNED,
    Llama,
    ModelConfig,
    doc_block_mask,
    doc_block_mask_evaluated,
    doc_mask_dense,
    doc_positions,
    doc_range_blocks,
    flex_settings,
    linear_cross_entropy,
    set_flex_settings,
)
from ml.train.dist import apply_compile

torch.set_num_threads(1)

GQA = dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=160, vocab_size=256, max_seq_len=64)


def _model(seed: int = 0, **overrides) -> Llama:
    torch.manual_seed(seed)
    model = Llama.from_config(ModelConfig.from_dict({**GQA, **overrides}))
    with torch.no_grad():  # non-trivial norm weights so the parity test sees them
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    return model.eval()


def _hf_from(model: Llama):
    transformers = pytest.importorskip("transformers")
    from ml.model.hf import hf_config_dict, to_hf_state_dict

    cfg = transformers.LlamaConfig(**hf_config_dict(model.cfg))
    hf = transformers.LlamaForCausalLM(cfg).eval()
    missing, unexpected = hf.load_state_dict(to_hf_state_dict(model), strict=False)
    assert unexpected == [] and set(missing) <= {"lm_head.weight"}
    return hf


@pytest.mark.parametrize("tied,fused", [(False, False), (True, False), (False, True)])
def test_logits_equal_hf_llama(tied, fused):
    model = _model(tie_embeddings=tied, fuse_projections=fused)
    hf = _hf_from(model)
    tokens = torch.randint(0, 256, (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, theirs = model(tokens), hf(input_ids=tokens).logits
    assert ours.shape == (2, 40, 256)
    assert (ours - theirs).abs().max().item() <= 1e-5


def test_doc_positions_and_dense_mask():
    doc = torch.tensor([[0, 0, 0, 1, 1, 2]])
    assert doc_positions(doc).tolist() == [[0, 1, 2, 0, 1, 0]]
    m = doc_mask_dense(doc)[0, 0].int().tolist()
    assert m[4] == [0, 0, 0, 1, 1, 0]  # token 4 sees doc 1 tokens 3..4 only
    assert m[5] == [0, 0, 0, 0, 0, 1]
    assert m[2] == [1, 1, 1, 0, 0, 0]


def test_document_mask_equals_running_each_document_alone():
    model = _model()
    lengths = [[7, 13, 12], [20, 5, 7]]
    tokens = torch.randint(0, 256, (2, 32), generator=torch.Generator().manual_seed(2))
    doc_ids = torch.tensor([sum(([i] * n for i, n in enumerate(row)), []) for row in lengths])
    with torch.no_grad():
        packed = model(tokens, doc_ids=doc_ids)
        for b, row in enumerate(lengths):
            start = 0
            for n in row:
                alone = model(tokens[b : b + 1, start : start + n])[0]
                assert (packed[b, start : start + n] - alone).abs().max().item() <= 1e-5
                start += n


def test_global_doc_positions_give_the_same_logits_as_restart():
    # RoPE scores depend only on the query-key offset, and the mask keeps keys inside the document,
    # so global and per-document positions agree up to rounding.
    tokens = torch.randint(0, 256, (1, 24), generator=torch.Generator().manual_seed(3))
    doc_ids = torch.tensor([[0] * 10 + [1] * 14])
    with torch.no_grad():
        glob = _model(doc_positions="global")(tokens, doc_ids=doc_ids)
        restart = _model(doc_positions="restart")(tokens, doc_ids=doc_ids)
    assert (glob - restart).abs().max().item() <= 1e-5


def test_loss_equals_plain_cross_entropy_and_grads_match():
    model = _model(loss_chunk_tokens=7)  # chunks that do not divide N
    tokens = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(4))
    labels = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(5))
    labels[0, :5] = -100
    loss = model(tokens, labels=labels)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    ref = F.cross_entropy(model(tokens).flatten(0, 1), labels.flatten(), ignore_index=-100)
    ref.backward()
    assert abs(loss.item() - ref.item()) <= 1e-6
    for n, p in model.named_parameters():
        assert torch.allclose(grads[n], p.grad, atol=1e-6, rtol=1e-5), n


def test_linear_cross_entropy_no_grad_and_all_ignored():
    h, w = torch.randn(10, 8), torch.randn(30, 8)
    y = torch.randint(0, 30, (10,))
    with torch.no_grad():
        assert torch.allclose(
            linear_cross_entropy(h, w, y, chunk=3), F.cross_entropy(h @ w.t(), y), atol=1e-6
        )
    assert torch.isnan(linear_cross_entropy(h, w, torch.full((10,), -100), chunk=4))


def test_init_std_and_residual_scaling():
    cfg = ModelConfig.from_dict(dict(GQA, dim=256, ffn_dim=1024, n_heads=4, n_layers=8, init_std=0.02))
    torch.manual_seed(0)
    model = Llama.from_config(cfg)
    assert abs(model.layers[0].self_attn.q_proj.weight.std().item() - 0.02) < 1e-3
    assert abs(model.layers[0].mlp.down_proj.weight.std().item() - 0.02 / 4) < 3e-4  # 1/sqrt(2*8)
    assert model.norm.weight.eq(1).all()


def test_presets_and_1b():
    tiny = ModelConfig.from_preset("tiny")
    assert 0.5e6 <= num_params(tiny) <= 2e6
    assert ModelConfig.from_preset("1b").tie_embeddings
    assert (
        num_params(ModelConfig.from_preset("small")) == 125_848_320
    )  # 2*32768*768 + 12*(1_572_864 + 4_718_592 + 1536) + 768
    assert num_params(ModelConfig.from_preset("1b")) == 1_235_814_400  # Llama-3.2-1B
    with pytest.raises(ConfigError, match="unknown preset"):
        ModelConfig.from_preset("3b")
    with pytest.raises(ConfigError, match="n_kv_heads"):
        ModelConfig.from_dict(dict(GQA, n_kv_heads=3))


@pytest.mark.parametrize(
    "preset,expected", [("8b", 8_030_261_248), ("70b", 70_553_706_496), ("405b", 405_853_388_800)]
)
def test_meta_device_params_equal_closed_form(preset, expected):
    cfg = ModelConfig.from_preset(preset)
    model = Llama.from_config(cfg, device="meta")
    assert sum(p.numel() for p in model.parameters()) == num_params(cfg) == expected


def test_meta_then_to_empty_and_init_matches_cpu_build():
    cfg = ModelConfig.from_dict(GQA)
    model = Llama.from_config(cfg, device="meta")
    model.to_empty(device="cpu")
    torch.manual_seed(0)
    model.init_weights()
    torch.manual_seed(0)
    ref = Llama.from_config(cfg)
    for (n, a), b in zip(model.state_dict().items(), ref.state_dict().values(), strict=True):
        assert torch.equal(a, b), n
    assert torch.equal(model.rope, ref.rope)


def test_sequence_too_long_is_a_clear_error():
    model = _model()
    with pytest.raises(ValueError, match="max_seq_len=64"):
        model(torch.zeros(1, 65, dtype=torch.long))


gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _random_docs(B: int, T: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(B):
        ids, d = [], 0
        while len(ids) < T:
            ids += [d] * int(torch.randint(1, T // 2, (1,), generator=g))
            d += 1
        rows.append(ids[:T])
    return torch.tensor(rows)


@pytest.mark.gpu
@gpu
def test_gpu_flex_matches_sdpa_reference_bf16_compiled():
    torch.manual_seed(0)
    cfg = ModelConfig.from_dict(dict(GQA, dim=256, n_heads=4, n_kv_heads=2, max_seq_len=512))
    model = Llama.from_config(cfg, device="cuda")
    ref = Llama.from_config(cfg.replace(attention="sdpa"), device="cuda")
    ref.load_state_dict(model.state_dict())
    apply_compile(model)
    tokens = torch.randint(0, 256, (2, 512), device="cuda")
    doc_ids = _random_docs(2, 512, seed=1).cuda()
    labels = torch.randint(0, 256, (2, 512), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out, want = model(tokens, doc_ids=doc_ids).float(), ref(tokens, doc_ids=doc_ids).float()
        rel = ((out - want).norm() / want.norm()).item()
        assert rel < 1e-2
        loss, ref_loss = (
            model(tokens, doc_ids=doc_ids, labels=labels),
            ref(tokens, doc_ids=doc_ids, labels=labels),
        )
    assert abs(loss.item() - ref_loss.item()) < 2e-2
    loss.backward()
    ref_loss.backward()
    for (n, p), q in zip(model.named_parameters(), ref.parameters(), strict=True):
        assert ((p.grad - q.grad).norm() / q.grad.norm()).item() < 5e-2, n


@pytest.mark.gpu
@gpu
def test_gpu_document_mask_equals_documents_alone_fp32_flex():
    torch.manual_seed(0)
    cfg = ModelConfig.from_dict(dict(GQA, max_seq_len=256, attention="flex"))
    model = Llama.from_config(cfg, device="cuda").eval()
    tokens = torch.randint(0, 256, (1, 256), device="cuda")
    doc_ids = torch.tensor([[0] * 100 + [1] * 156], device="cuda")
    with torch.no_grad():
        packed = model(tokens, doc_ids=doc_ids)
        a, b = model(tokens[:, :100]), model(tokens[:, 100:])
    assert (packed[0, :100] - a[0]).abs().max().item() < 1e-4
    assert (packed[0, 100:] - b[0]).abs().max().item() < 1e-4


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_gpu_varlen_document_attention_equals_flex(dtype):
    """The varlen FlashAttention path (packed documents) computes the same function as the flex block mask."""
    torch.manual_seed(0)
    base = dict(GQA, max_seq_len=256)
    flex = Llama.from_config(ModelConfig.from_dict(dict(base, attention="flex")), device="cuda")
    varlen = Llama.from_config(ModelConfig.from_dict(dict(base, attention="varlen")), device="cuda")
    varlen.load_state_dict(flex.state_dict())
    tokens = torch.randint(0, 256, (2, 256), device="cuda")
    doc_ids = torch.tensor([[0] * 100 + [1] * 156, [0] * 7 + [1] * 200 + [2] * 49], device="cuda")
    labels = torch.randint(0, 256, (2, 256), device="cuda")
    with torch.autocast("cuda", dtype=dtype):
        a = flex(tokens, doc_ids=doc_ids).float()
        b = varlen(tokens, doc_ids=doc_ids).float()
        assert ((a - b).norm() / a.norm()).item() < 1e-2
        la, lb = flex(tokens, doc_ids=doc_ids, labels=labels), varlen(tokens, doc_ids=doc_ids, labels=labels)
    la.backward()
    lb.backward()
    for (n, p), q in zip(flex.named_parameters(), varlen.parameters(), strict=True):
        assert ((p.grad - q.grad).norm() / p.grad.norm()).item() < 5e-2, n


def test_flex_settings_override_then_table():
    assert flex_settings(torch.device("cpu"), 64, torch.bfloat16) == {}  # no table on CPU
    set_flex_settings({"fwd_BLOCK_M": 64, "mask_block_size": 64})
    try:
        assert flex_settings(torch.device("cpu"), 64, torch.bfloat16) == {
            "fwd_BLOCK_M": 64,
            "mask_block_size": 64,
        }
    finally:
        set_flex_settings(None)
    assert flex_settings(torch.device("cpu"), 64, torch.bfloat16) == {}
    for entry in FLEX_TUNED.values():  # only FlexKernelOptions keys, and never the flags a doc mask breaks
        assert not {"ROWS_GUARANTEED_SAFE", "BLOCKS_ARE_CONTIGUOUS"} & set(entry)


def test_doc_block_mask_block_size():
    doc_ids = torch.tensor([[0] * 100 + [1] * 156])
    assert doc_block_mask(doc_ids).BLOCK_SIZE == (128, 128)
    small = doc_block_mask(doc_ids, 64)
    assert small.BLOCK_SIZE == (64, 64)
    assert small.kv_num_blocks.shape == (1, 1, 4)


_BLOCK_MASK_FIELDS = (
    "kv_num_blocks",
    "kv_indices",
    "full_kv_num_blocks",
    "full_kv_indices",
    "q_num_blocks",
    "q_indices",
    "full_q_num_blocks",
    "full_q_indices",
)


def _packed_doc_ids(lengths_per_row: list[list[int]]) -> torch.Tensor:
    return torch.tensor([[d for d, n in enumerate(row) for _ in range(n)] for row in lengths_per_row])


@pytest.mark.parametrize("block", [128, 64, 16])
def test_doc_block_mask_from_document_ranges_equals_torch_evaluating_every_pair(block):
    """Packed rows: the per-block id-range construction gives torch's create_block_mask exactly."""
    gen = torch.Generator().manual_seed(0)
    rows = [[256], [1] * 256, [200, 56], [128, 128], [127, 2, 127]]  # one doc, all 1-token docs, edges
    for _ in range(3):
        lengths = (torch.rand(40, generator=gen) * 30).long().clamp(min=1).tolist()
        rows.append(lengths)
    rows = [r if sum(r) >= 256 else r + [256 - sum(r)] for r in rows]
    doc_ids = torch.stack([_packed_doc_ids([r])[0, :256] for r in rows])
    ours, torchs = doc_block_mask(doc_ids, block), doc_block_mask_evaluated(doc_ids, block)
    for field in _BLOCK_MASK_FIELDS:
        assert torch.equal(getattr(ours, field), getattr(torchs, field)), field
    # rows [128, 128] at block 128: query block 1 sees key block 0 not at all, itself partially
    if block == 128:
        assert ours.kv_num_blocks[3, 0].tolist() == [1, 1] and ours.full_kv_num_blocks[3, 0].tolist() == [
            0,
            0,
        ]
        assert ours.full_kv_num_blocks[0, 0].tolist() == [0, 1]  # one doc: block (1, 0) is full


def test_doc_block_mask_never_skips_an_allowed_pair_for_unsorted_ids():
    """Ids out of order (not packed rows): full blocks are truly full, every allowed pair is visited."""
    doc_ids = torch.tensor([[0, 1] * 64 + [2] * 64 + [1] * 64, [3] * 96 + [0] * 32 + [3] * 128])
    block = 32
    partial, full = doc_range_blocks(doc_ids, block)
    allowed = doc_mask_dense(doc_ids)[:, 0]  # (B, T, T)
    n = doc_ids.shape[1] // block
    tiles = allowed.view(2, n, block, n, block).transpose(2, 3)  # (B, n, n, block, block)
    truly_full, non_empty = tiles.all(-1).all(-1), tiles.any(-1).any(-1)
    assert not (full[:, 0] & ~truly_full).any()
    assert not (non_empty & ~(partial[:, 0] | full[:, 0])).any()
    assert full[1, 0, 7, 4] and not full[1, 0, 4, 3]  # doc 3 both sides vs a block holding doc 0


MASK64 = {
    "mask_block_size": 64,
    **{f"fwd_{k}": v for k, v in dict(BLOCK_M=64, BLOCK_N=64, num_warps=4, num_stages=3).items()},
    **{f"bwd_BLOCK_{t}": 64 for t in ("M1", "N1", "M2", "N2")},
    "bwd_num_warps": 4,
    "bwd_num_stages": 3,
}


def test_offered_backward_config_only_where_no_default_fits_the_mask(monkeypatch):
    """A 64-token mask with 64x64 backward tiles: Inductor's H100 default (64x128/128x64) gets the asked-for
    config beside it; a list that already holds a fitting config, or a 128-token mask, is left alone."""
    from torch._inductor.choices import InductorChoices
    from torch._inductor.template_heuristics.triton import FlexBwDConfig

    from ml.model import llama as model_mod

    monkeypatch.setattr(model_mod, "_bwd_offers", {})
    h100_default = FlexBwDConfig(64, 128, 128, 64, 3, 8)
    model_mod.offer_flex_bwd_tiles({**MASK64, "mask_block_size": 128})  # 128: torch's default fits
    assert model_mod._offered_bwd_configs([h100_default]) == [h100_default]
    set_flex_settings(MASK64)
    set_flex_settings(None)
    assert model_mod._offered_bwd_configs([h100_default]) == [
        h100_default,
        FlexBwDConfig(64, 64, 64, 64, 3, 4),
    ]
    fits = FlexBwDConfig(32, 64, 64, 32, 2, 4)
    assert model_mod._offered_bwd_configs([h100_default, fits]) == [h100_default, fits]

    class H100Heuristics:  # what Inductor's CUDA heuristics return at head dim 64 on sm90
        def get_flex_attn_bwd_configs(self, head_dim, dtype):
            return [h100_default]

    monkeypatch.setattr(InductorChoices, "get_config_heuristics", lambda self, device_type: H100Heuristics())
    configs = InductorChoices().get_flex_attention_bwd_configs(64, torch.bfloat16, "cuda")
    assert [(c.block_m1, c.block_n1, c.block_m2, c.block_n2) for c in configs] == [
        (64, 128, 128, 64),
        (64,) * 4,
    ]
    with pytest.raises(ValueError, match=r"64-token block mask needs \['bwd_BLOCK_N2'\]"):
        model_mod.offer_flex_bwd_tiles({k: v for k, v in MASK64.items() if k != "bwd_BLOCK_N2"})
    monkeypatch.setattr(model_mod, "_bwd_offers", {})
    _model()  # no CUDA: nothing registered (Inductor is not imported for CPU-only models)
    assert model_mod._bwd_offers == {}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    _model()  # where CUDA exists, building a model registers the tuned table's small-mask tiles
    small = {s["mask_block_size"] for s in FLEX_TUNED.values() if s.get("mask_block_size", 128) < 128}
    assert set(model_mod._bwd_offers) == small and small == {64}


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("settings", [None, MASK64], ids=["table", "mask64"])
def test_gpu_tuned_flex_settings_equal_torch_defaults_bf16(settings):
    """The tuned tiles (FLEX_TUNED, head dim 64), and a 64-token mask with 64x64 tiles, compute the same
    function as torch's default tiles on a 128-token mask."""
    torch.manual_seed(0)
    cfg = ModelConfig.from_dict(dict(GQA, dim=256, n_heads=4, n_kv_heads=2, max_seq_len=1024))
    assert cfg.head_dim == 64
    tuned = apply_compile(Llama.from_config(cfg, device="cuda"))
    default = Llama.from_config(cfg, device="cuda")
    default.load_state_dict(tuned.state_dict())
    tokens = torch.randint(0, 256, (2, 1024), device="cuda")
    doc_ids = _random_docs(2, 1024, seed=2).cuda()
    labels = torch.randint(0, 256, (2, 1024), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        set_flex_settings(settings)
        try:
            loss = tuned(tokens, doc_ids=doc_ids, labels=labels)
            set_flex_settings({})
            ref_loss = default(tokens, doc_ids=doc_ids, labels=labels)
        finally:
            set_flex_settings(None)
    assert abs(loss.item() - ref_loss.item()) < 1e-2
    loss.backward()  # compiled now, in autograd's thread: the 64-token mask needs the offered config here
    ref_loss.backward()
    for (n, p), q in zip(tuned.named_parameters(), default.parameters(), strict=True):
        assert ((p.grad - q.grad).norm() / q.grad.norm()).item() < 5e-2, n


def test_compiled_wrappers_are_made_outside_traces_only():
    """A compile wrapper asked for while dynamo traces is the plain function, and is not kept for eager calls."""
    from ml.model import llama as model_mod

    def plus_one(x):
        return x + 1

    @torch.compile(backend="eager", fullgraph=True)
    def outer(x):
        return model_mod._compiled(plus_one)(x) * (2 if model_mod._compiled(plus_one) is plus_one else 3)

    assert outer(torch.ones(2)).tolist() == [4.0, 4.0]
    assert plus_one not in model_mod._COMPILED
    eager = model_mod._compiled(plus_one)
    assert eager is not plus_one and model_mod._compiled(plus_one) is eager
    model_mod._COMPILED.pop(plus_one)
