"""ml/model/flex_tuning.py: the tile table and override, and the scoped offer of backward configs to Inductor."""

import copy
import gc

import pytest
import torch
from model_helpers import gpu, random_docs

from ml.model import flex_tuning
from ml.model.flex_tuning import (
    FLEX_TUNED,
    FlexConfigOffer,
    flex_compile_configs,
    flex_settings,
    hold_flex_compile_configs,
    release_flex_compile_configs,
    set_flex_settings,
)
from ml.model.llama import Llama, ModelConfig
from ml.train.dist import apply_compile

torch.set_num_threads(1)

GQA = dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=160, vocab_size=256, max_seq_len=64)
MASK64 = {
    "mask_block_size": 64,
    **{f"fwd_{k}": v for k, v in dict(BLOCK_M=64, BLOCK_N=64, num_warps=4, num_stages=3).items()},
    **{f"bwd_BLOCK_{t}": 64 for t in ("M1", "N1", "M2", "N2")},
    "bwd_num_warps": 4,
    "bwd_num_stages": 3,
}


def _chooser():
    from torch._inductor.choices import InductorChoices

    return InductorChoices.__dict__["get_flex_attention_bwd_configs"]


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
    assert FLEX_TUNED[((9, 0), 64, torch.bfloat16)] == MASK64


def test_offered_backward_config_only_where_no_default_fits_the_mask(monkeypatch):
    """A 64-token mask with 64x64 backward tiles: Inductor's H100 default (64x128/128x64) gets the asked-for
    config beside it; a list that already holds a fitting config, or a 128-token mask, is left alone."""
    from torch._inductor.template_heuristics.triton import FlexBwDConfig

    h100_default = FlexBwDConfig(64, 128, 128, 64, 3, 8)
    monkeypatch.setattr(flex_tuning, "FLEX_TUNED", {})
    try:
        set_flex_settings({**MASK64, "mask_block_size": 128})  # 128: torch's default fits
        assert flex_tuning._offered_bwd_configs([h100_default]) == [h100_default]
        set_flex_settings(MASK64)
        assert flex_tuning._offered_bwd_configs([h100_default]) == [
            h100_default,
            FlexBwDConfig(64, 64, 64, 64, 3, 4),
        ]
        fits = FlexBwDConfig(32, 64, 64, 32, 2, 4)
        assert flex_tuning._offered_bwd_configs([h100_default, fits]) == [h100_default, fits]
    finally:
        set_flex_settings(None)
    assert flex_tuning._offered_bwd_configs([h100_default]) == [h100_default]  # nothing asked for
    monkeypatch.undo()  # the real table offers its 64-token entry
    assert flex_tuning._offered_bwd_configs([h100_default])[1] == FlexBwDConfig(64, 64, 64, 64, 3, 4)
    with pytest.raises(ValueError, match=r"64-token block mask needs \['bwd_BLOCK_N2'\]"):
        set_flex_settings({k: v for k, v in MASK64.items() if k != "bwd_BLOCK_N2"})


def test_inductor_sees_the_offer_only_inside_its_scope(monkeypatch):
    from torch._inductor.choices import InductorChoices
    from torch._inductor.template_heuristics.triton import FlexBwDConfig

    h100_default = FlexBwDConfig(64, 128, 128, 64, 3, 8)

    class H100Heuristics:  # what Inductor's CUDA heuristics return at head dim 64 on sm90
        def get_flex_attn_bwd_configs(self, head_dim, dtype):
            return [h100_default]

    monkeypatch.setattr(InductorChoices, "get_config_heuristics", lambda self, device_type: H100Heuristics())

    def tiles():
        configs = InductorChoices().get_flex_attention_bwd_configs(64, torch.bfloat16, "cuda")
        return [(c.block_m1, c.block_n1, c.block_m2, c.block_n2) for c in configs]

    original = _chooser()
    assert tiles() == [(64, 128, 128, 64)]
    with flex_compile_configs():
        assert _chooser() is not original
        assert tiles() == [(64, 128, 128, 64), (64,) * 4]
    assert _chooser() is original and tiles() == [(64, 128, 128, 64)]


def test_offers_are_counted_and_release_is_idempotent():
    original = _chooser()
    a, b = FlexConfigOffer().open(), FlexConfigOffer().open()
    a.open()  # opening twice holds once
    assert flex_tuning._open_offers == 2
    a.release()
    a.release()
    assert flex_tuning._open_offers == 1 and _chooser() is not original
    b.release()
    assert flex_tuning._open_offers == 0 and _chooser() is original
    with FlexConfigOffer() as c:
        assert copy.deepcopy(c).is_open is False  # a copy holds nothing
    assert flex_tuning._open_offers == 0


def test_apply_compile_holds_the_offer_for_the_model_lifetime():
    original = _chooser()
    model = Llama.from_config(ModelConfig.from_dict(GQA))
    assert _chooser() is original
    apply_compile(model, "blocks")
    assert flex_tuning._open_offers == 1 and _chooser() is not original
    assert hold_flex_compile_configs(model) is model.flex_config_offer  # idempotent per module
    assert flex_tuning._open_offers == 1
    release_flex_compile_configs(model)
    assert flex_tuning._open_offers == 0 and _chooser() is original
    copied = copy.deepcopy(apply_compile(model))  # a copy holds nothing until it is held itself
    assert flex_tuning._open_offers == 1 and not copied.flex_config_offer.is_open
    assert hold_flex_compile_configs(copied).is_open and flex_tuning._open_offers == 2
    release_flex_compile_configs(copied)
    release_flex_compile_configs(model)
    assert flex_tuning._open_offers == 0
    other = apply_compile(Llama.from_config(ModelConfig.from_dict(GQA)), "model")
    assert flex_tuning._open_offers == 1
    del other
    gc.collect()  # a collected model releases its hold
    assert flex_tuning._open_offers == 0 and _chooser() is original


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize(
    "settings,compiled",
    [(None, True), (MASK64, True), (MASK64, False)],
    ids=["table", "mask64", "mask64-eager"],
)
def test_gpu_tuned_flex_settings_equal_torch_defaults_bf16(settings, compiled):
    """The tuned tiles (FLEX_TUNED, head dim 64), and a 64-token mask with 64x64 tiles, compute the same
    function as torch's default tiles on a 128-token mask, whole-model compiled (apply_compile holds the
    offer) or eager (flex attention compiled by ml.model.attention, which holds its own)."""
    torch.manual_seed(0)
    cfg = ModelConfig.from_dict(dict(GQA, dim=256, n_heads=4, n_kv_heads=2, max_seq_len=1024))
    assert cfg.head_dim == 64
    tuned = Llama.from_config(cfg, device="cuda")
    if compiled:
        apply_compile(tuned)
    default = Llama.from_config(cfg, device="cuda")
    default.load_state_dict(tuned.state_dict())
    tokens = torch.randint(0, 256, (2, 1024), device="cuda")
    doc_ids = random_docs(2, 1024, seed=2).cuda()
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
    release_flex_compile_configs(tuned)
