"""ml/model/llama.py: HF parity, document masking, fused loss, presets, meta-device build, GPU paths."""

import pytest
import torch
import torch.nn.functional as F
from model_helpers import gpu, random_docs

from ml.config import ConfigError
from ml.model import flex_tuning
from ml.model.flops import num_params
from ml.model.llama import IGNORE_INDEX, MODEL_PRESET_NAMES, Llama, ModelConfig, doc_positions
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


def test_doc_positions_restart_at_each_document():
    doc = torch.tensor([[0, 0, 0, 1, 1, 2], [5, 5, 5, 5, 5, 5]])
    assert doc_positions(doc).tolist() == [[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 4, 5]]


def test_public_names_of_the_model_module():
    assert IGNORE_INDEX == -100 and MODEL_PRESET_NAMES[-1] == "1b" and "tiny" in MODEL_PRESET_NAMES


def test_building_a_model_changes_nothing_in_torch(monkeypatch):
    """No global patching at construction: with CUDA "available", Inductor's backward-config chooser is the
    same function after building models (flex and auto attention, a meta-device preset) and no offer is open."""
    from torch._inductor.choices import InductorChoices

    chooser = InductorChoices.__dict__["get_flex_attention_bwd_configs"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for attention in ("auto", "flex"):
        _model(attention=attention)
    Llama.from_config(ModelConfig.from_preset("small"), device="meta")
    assert InductorChoices.__dict__["get_flex_attention_bwd_configs"] is chooser
    assert flex_tuning._open_offers == 0


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
    doc_ids = random_docs(2, 512, seed=1).cuda()
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
