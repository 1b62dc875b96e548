"""The chat model outside our code: ``transformers`` loads the exported directory (weights, tokenizer and
its chat template) and its greedy tokens on a chat equal ours."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ml.infer.generate import SamplingConfig, generate
from ml.tokens.chat import encode_chat_masked
from ml.tokens.tokenizer import EOM, EOT, PAD, load_tokenizer, special_token_id
from ml.train.weights import frozen_model


@torch.no_grad()
def greedy_parity(hf_dir: Path, messages: Sequence[Mapping[str, Any]], max_new_tokens: int) -> dict[str, Any]:
    """Prompt ids and greedy tokens from our tokenizer + generation and from transformers'
    ``apply_chat_template`` + ``generate`` on ``hf_dir``; ``equal`` when both match."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    tok = load_tokenizer(hf_dir)
    ours_prompt = encode_chat_masked(list(messages), tok, add_generation_prompt=True).ids
    stops = [special_token_id(tok, EOT), special_token_id(tok, EOM)]
    model = frozen_model(hf_dir, torch.device("cpu"))
    ours = generate(
        model, [ours_prompt], stops, SamplingConfig(max_new_tokens, 0.0), special_token_id(tok, PAD)
    )
    hf_tok = AutoTokenizer.from_pretrained(hf_dir)
    enc = hf_tok.apply_chat_template(
        list(messages), add_generation_prompt=True, tokenize=True, return_dict=True
    )
    theirs_prompt = list(enc["input_ids"])
    hf_model = LlamaForCausalLM.from_pretrained(hf_dir, torch_dtype=torch.float32).eval()
    out = hf_model.generate(
        torch.tensor([theirs_prompt]),
        attention_mask=torch.ones(1, len(theirs_prompt), dtype=torch.long),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        eos_token_id=stops,
        pad_token_id=special_token_id(tok, PAD),
    )
    theirs = out[0, len(theirs_prompt) :].tolist()
    return {
        "prompt_equal": ours_prompt == theirs_prompt,
        "ours": ours.tokens[0],
        "transformers": theirs,
        "equal": ours_prompt == theirs_prompt and ours.tokens[0] == theirs,
    }
