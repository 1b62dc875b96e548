"""ml/model/hf.py: HF <-> ours conversion both ways, save/load round trip, clear errors on bad checkpoints."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from ml.model.hf import CheckpointError, config_from_hf, from_hf_state_dict, hf_config_dict, load_hf, save_hf
from ml.model.llama import Llama, ModelConfig, rope_frequencies

transformers = pytest.importorskip("transformers")
torch.set_num_threads(1)

CFG = ModelConfig.from_dict(
    dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=160, vocab_size=256, max_seq_len=64)
)
TOKENS = torch.randint(0, 256, (2, 33), generator=torch.Generator().manual_seed(0))


def _ours(tied: bool = False) -> Llama:
    torch.manual_seed(0)
    return Llama.from_config(CFG.replace(tie_embeddings=tied)).eval()


def test_config_round_trip_and_transformers_reads_it():
    d = hf_config_dict(CFG)
    assert config_from_hf(d) == CFG.replace(attention="auto")
    hf_cfg = transformers.LlamaConfig(**d)
    assert hf_cfg.num_key_value_heads == 2 and hf_cfg.rope_parameters["rope_theta"] == 500000.0
    assert config_from_hf(hf_cfg.to_dict()) == CFG


@pytest.mark.parametrize("tied", [False, True])
def test_hf_to_ours_logits_equal(tied):
    torch.manual_seed(1)
    hf = transformers.LlamaForCausalLM(
        transformers.LlamaConfig(**hf_config_dict(CFG.replace(tie_embeddings=tied)))
    )
    hf.eval()
    ours = from_hf_state_dict(hf.state_dict(), config_from_hf(hf.config.to_dict())).eval()
    with torch.no_grad():
        diff = (ours(TOKENS) - hf(input_ids=TOKENS).logits).abs().max().item()
    assert diff <= 1e-5


@pytest.mark.parametrize("tied", [False, True])
def test_save_hf_then_transformers_and_load_hf_agree(tmp_path, tied):
    ours = _ours(tied)
    save_hf(ours, tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json", "model.safetensors"]
    hf = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "ckpt").eval()
    back = load_hf(tmp_path / "ckpt").eval()
    with torch.no_grad():
        want = ours(TOKENS)
        assert (hf(input_ids=TOKENS).logits - want).abs().max().item() <= 1e-5
        assert torch.equal(back(TOKENS), want)
    for (name, a), b in zip(ours.state_dict().items(), back.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert (back.lm_head.weight is back.embed_tokens.weight) == tied


def test_wrong_shape_names_file_and_tensor(tmp_path):
    save_hf(_ours(), tmp_path / "ckpt")
    path = tmp_path / "ckpt" / "model.safetensors"
    sd = load_file(path)
    sd["model.layers.1.self_attn.k_proj.weight"] = torch.zeros(64, 64)
    save_file(sd, path)
    with pytest.raises(
        CheckpointError, match=r"model\.safetensors.*layers\.1\.self_attn\.k_proj\.weight.*\(32, 64\)"
    ):
        load_hf(tmp_path / "ckpt")


def test_missing_tensor_is_named(tmp_path):
    save_hf(_ours(), tmp_path / "ckpt")
    path = tmp_path / "ckpt" / "model.safetensors"
    sd = load_file(path)
    del sd["model.norm.weight"]
    save_file(sd, path)
    with pytest.raises(CheckpointError, match=r"missing tensor\(s\) \['model\.norm\.weight'\]"):
        load_hf(tmp_path / "ckpt")


def test_tampered_safetensors_is_a_clear_error(tmp_path):
    save_hf(_ours(), tmp_path / "ckpt")
    path = tmp_path / "ckpt" / "model.safetensors"
    raw = bytearray(path.read_bytes())
    raw[8:16] = b"garbage!"  # corrupt the JSON header
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: not a readable safetensors file"):
        load_hf(tmp_path / "ckpt")


def test_pickle_checkpoints_are_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(hf_config_dict(CFG)))
    torch.save(_ours().state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="only safetensors"):
        load_hf(tmp_path)


def test_bad_config_keys_are_named(tmp_path):
    d = hf_config_dict(CFG)
    del d["intermediate_size"]
    (tmp_path / "config.json").write_text(json.dumps(d))
    with pytest.raises(CheckpointError, match=r"config\.json: missing HF Llama key\(s\) intermediate_size"):
        load_hf(tmp_path)
    with pytest.raises(CheckpointError, match="rope type 'yarn' is not supported"):
        config_from_hf({**hf_config_dict(CFG), "rope_parameters": {"rope_type": "yarn", "factor": 4.0}})
    with pytest.raises(CheckpointError, match="llama3 rope scaling lacks low_freq_factor, high_freq_factor"):
        config_from_hf({**hf_config_dict(CFG), "rope_parameters": {"rope_type": "llama3", "factor": 32.0}})
    bad = dict(LLAMA3_ROPE, rope_type="llama3", low_freq_factor=4.0, high_freq_factor=1.0)
    with pytest.raises(
        CheckpointError, match=r"config: .*rope_low_freq_factor \(4.0\) < rope_high_freq_factor"
    ):
        config_from_hf({**hf_config_dict(CFG), "rope_parameters": bad})
    with pytest.raises(CheckpointError, match="model_type='mistral'"):
        config_from_hf({**hf_config_dict(CFG), "model_type": "mistral"})


# Llama 3.1 frequency scaling over a 16-token "original" context: with head dim 16 and theta 500000 the
# wavelengths run from 2*pi to ~6e5, so some frequencies are kept (< 16/4 = 4: none here, the shortest is
# 6.28 > 4), some blended (4..16) and most divided by the factor (> 16).
LLAMA3_ROPE = dict(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=16)
SCALED = CFG.replace(rope_scale_factor=8.0, rope_original_max_seq_len=16)


def test_llama3_rope_frequencies_by_hand():
    inv = rope_frequencies(SCALED)
    plain = rope_frequencies(CFG)
    assert torch.equal(plain, 1.0 / 500000.0 ** (torch.arange(0, 16, 2).float() / 16))
    # i=0: wavelen 2*pi in the blend band: smooth = (16 / (2*pi) - 1) / 3, inv = (1 - smooth)/8 + smooth
    smooth = (16 / (2 * math.pi) - 1) / 3
    assert inv[0].item() == pytest.approx((1 - smooth) / 8 + smooth, rel=1e-6)
    # i>=1: wavelen 2*pi*500000^(2i/16) > 16, divided by 8
    torch.testing.assert_close(inv[1:], plain[1:] / 8, rtol=0, atol=0)


def test_llama3_rope_matches_transformers_both_ways(tmp_path):
    d = hf_config_dict(SCALED)
    assert d["rope_parameters"] == {"rope_theta": 500000.0, "rope_type": "llama3", **LLAMA3_ROPE}
    assert config_from_hf(d) == SCALED
    torch.manual_seed(2)
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**d)).eval()
    ours = from_hf_state_dict(hf.state_dict(), config_from_hf(hf.config.to_dict())).eval()
    unscaled = from_hf_state_dict(hf.state_dict(), CFG).eval()
    tokens = torch.randint(0, 256, (2, 64), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = hf(input_ids=tokens).logits
        assert (ours(tokens) - want).abs().max().item() <= 1e-5
        assert (unscaled(tokens) - want).abs().max().item() > 1e-3  # the scaling is what makes them agree
    save_hf(ours, tmp_path / "ckpt")  # and ours -> HF: transformers reads the scaling back
    back = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "ckpt").eval()
    with torch.no_grad():
        assert (back(input_ids=tokens).logits - want).abs().max().item() <= 1e-5
