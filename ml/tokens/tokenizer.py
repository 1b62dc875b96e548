"""Byte-level BPE tokenizer with Llama 3's split regex, special tokens and chat format.

Llama 3 uses tiktoken's 100K vocabulary plus 28K multilingual tokens (128,256 in all, Llama 3 paper §3.2);
the last 256 ids are special tokens (``<|begin_of_text|>`` = 128000). We train the same shape with HF
``tokenizers``: regex split, byte-level BPE over the 256 byte symbols, special tokens appended at the END
of the vocabulary, and a post-processor that prepends ``<|begin_of_text|>``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from ml.config import StageConfig
from ml.io import atomic_write_text

# Llama 3's pre-tokenizer split pattern (tiktoken cl100k_base's pattern), as written in Meta's reference
# tokenizer: github.com/meta-llama/llama3, llama/tokenizer.py, `Tokenizer.pat_str`.
LLAMA3_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# what the held-out rules hash (ml.tokens.shards.split_keys): the document's text, or its id
SPLIT_KEYS = ("text", "id")

BOS = "<|begin_of_text|>"
EOS = "<|end_of_text|>"
PAD = "<|finetune_right_pad_id|>"
START_HEADER = "<|start_header_id|>"
END_HEADER = "<|end_header_id|>"
EOM = "<|eom_id|>"
EOT = "<|eot_id|>"
PYTHON_TAG = "<|python_tag|>"

# Offsets of the named special tokens from the first special id, as in Llama 3.1's tokenizer
# (128000 begin_of_text, 128001 end_of_text, 128004 finetune_right_pad_id, 128006/128007 headers,
# 128008 eom, 128009 eot, 128010 python_tag); every other slot is <|reserved_special_token_N|>.
NAMED_SPECIAL_OFFSETS: dict[str, int] = {
    BOS: 0,
    EOS: 1,
    PAD: 4,
    START_HEADER: 6,
    END_HEADER: 7,
    EOM: 8,
    EOT: 9,
    PYTHON_TAG: 10,
}
CHAT_ROLES: tuple[str, ...] = ("system", "user", "assistant", "ipython")

# Jinja twin of `render_chat` for transformers' `apply_chat_template` (the dialog format of Llama 3 paper §4.1).
# A message with a true `tool_call` is an assistant turn holding code to run: <|python_tag|>code<|eom_id|>.
# `{% generation %}` marks what an assistant turn produces, so `return_assistant_tokens_mask=True` gives the
# SFT targets of ml/tokens/chat.py (python_tag, content, eot/eom).
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{% if message['role'] == 'assistant' %}{% generation %}"
    "{% if message.tool_call %}{{ '<|python_tag|>' + message['content'] + '<|eom_id|>' }}"
    "{% else %}{{ message['content'] + '<|eot_id|>' }}{% endif %}"
    "{% endgeneration %}{% else %}{{ message['content'] + '<|eot_id|>' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)


@dataclasses.dataclass(frozen=True)
class TokenizerConfig(StageConfig):
    """Tokenizer training settings.

    vocab_size: total ids incl. special tokens (Llama 3 paper §3.2: 128,256 = 100K tiktoken + 28K multilingual;
        tiny 4,096 and small 32,768 chosen to fit the model sizes of those presets).
    num_reserved_special_tokens: special ids at the end of the vocabulary, named ones included
        (Llama 3: 256).
    min_frequency: a pair must occur this often to be merged (not published; chosen 2 so
        one-off strings do not take vocabulary slots).
    max_training_docs / max_training_bytes: cap on the training sample, None = all (not published;
        chosen so tiny trains in seconds on CPU).
    split_pattern: pre-tokenizer regex (Llama 3's, see LLAMA3_SPLIT_PATTERN).
    model_max_length: written to tokenizer_config.json (Llama 3 paper §3.4.2: 128K context after long-context training).
    heldout_fraction / heldout_min_docs / heldout_seed / heldout_key: documents kept out of training, on
        which compression is reported per language; the same hash rule and defaults as ShardConfig's
        validation split (val_fraction / min_val_docs / seed / split_key), so the model's validation
        documents are unseen here too.
    """

    vocab_size: int = 4096
    num_reserved_special_tokens: int = 256
    min_frequency: int = 2
    max_training_docs: int | None = None
    max_training_bytes: int | None = 32_000_000
    split_pattern: str = LLAMA3_SPLIT_PATTERN
    model_max_length: int = 131_072
    heldout_fraction: float = 0.05
    heldout_min_docs: int = 0
    heldout_seed: int = 0
    heldout_key: str = "text"

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {"vocab_size": 4096, "max_training_bytes": 32_000_000, "heldout_min_docs": 64},
        "small": {"vocab_size": 32_768, "max_training_bytes": 2_000_000_000, "heldout_fraction": 0.01},
        "8b": {"vocab_size": 128_256, "max_training_bytes": None, "heldout_fraction": 0.01},
        "70b": {"vocab_size": 128_256, "max_training_bytes": None, "heldout_fraction": 0.01},
        "405b": {"vocab_size": 128_256, "max_training_bytes": None, "heldout_fraction": 0.01},
    }

    def __post_init__(self) -> None:
        if not 0.0 <= self.heldout_fraction < 1.0 or self.heldout_min_docs < 0:
            raise ValueError(
                f"TokenizerConfig.heldout_fraction={self.heldout_fraction} must be in [0, 1) and "
                f"heldout_min_docs={self.heldout_min_docs} >= 0"
            )
        if self.heldout_key not in SPLIT_KEYS:
            raise ValueError(
                f"TokenizerConfig.heldout_key={self.heldout_key!r}: choose one of {', '.join(SPLIT_KEYS)}"
            )
        need = max(NAMED_SPECIAL_OFFSETS.values()) + 1
        if self.num_reserved_special_tokens < need:
            raise ValueError(
                f"TokenizerConfig.num_reserved_special_tokens={self.num_reserved_special_tokens}: "
                f"must be >= {need} to hold the named Llama 3 special tokens"
            )
        if self.vocab_size < 256 + self.num_reserved_special_tokens:
            raise ValueError(
                f"TokenizerConfig.vocab_size={self.vocab_size}: must be >= 256 byte symbols + "
                f"{self.num_reserved_special_tokens} special tokens"
            )


def special_tokens(num_special: int) -> list[str]:
    """The special token strings in id order: named ones at Llama 3.1's offsets, reserved ones elsewhere."""
    by_offset = {off: name for name, off in NAMED_SPECIAL_OFFSETS.items()}
    out, reserved = [], 0
    for off in range(num_special):
        if off in by_offset:
            out.append(by_offset[off])
        else:
            out.append(f"<|reserved_special_token_{reserved}|>")
            reserved += 1
    return out


def _capped(texts: Iterable[str], max_docs: int | None, max_bytes: int | None) -> Iterator[str]:
    n_bytes = 0
    for i, text in enumerate(texts):
        if max_docs is not None and i >= max_docs:
            return
        if max_bytes is not None and n_bytes >= max_bytes:
            return
        if not isinstance(text, str):
            raise TypeError(f"train_tokenizer: text #{i} is {type(text).__name__}, expected str")
        n_bytes += len(text.encode("utf-8"))
        yield text


def _byte_level_pipeline(tok: Tokenizer, split_pattern: str) -> Tokenizer:
    """Llama 3's pipeline around a BPE model: regex split, bytes → printable symbols, byte-level decode."""
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(split_pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    return tok


def _add_special_tokens(tok: Tokenizer, num_special: int) -> Tokenizer:
    """Append the special tokens after the current vocabulary and prepend BOS on encode."""
    n_base = tok.get_vocab_size()
    tok.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in special_tokens(num_special)]
    )
    bos_id = tok.token_to_id(BOS)
    if bos_id != n_base:
        raise ValueError(f"{BOS} got id {bos_id}, expected {n_base} (is it already in the vocabulary?)")
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A",
        pair=f"{BOS} $A {BOS}:1 $B:1",
        special_tokens=[(BOS, bos_id)],
    )
    return tok


def train_tokenizer(texts: Iterable[str], cfg: TokenizerConfig) -> Tokenizer:
    """Train byte-level BPE on ``texts``; special tokens take the last ``num_reserved_special_tokens`` ids."""
    n_base = cfg.vocab_size - cfg.num_reserved_special_tokens
    # ignore_merges: a pre-token piece that is itself in the vocabulary becomes one token (as in tiktoken).
    tok = _byte_level_pipeline(Tokenizer(models.BPE(ignore_merges=True)), cfg.split_pattern)
    trainer = trainers.BpeTrainer(
        vocab_size=n_base,
        min_frequency=cfg.min_frequency,
        special_tokens=[],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_capped(texts, cfg.max_training_docs, cfg.max_training_bytes), trainer=trainer)
    if tok.get_vocab_size() != n_base:
        raise ValueError(
            f"train_tokenizer: the corpus yields only {tok.get_vocab_size()} BPE tokens with "
            f"min_frequency={cfg.min_frequency}, but vocab_size={cfg.vocab_size} needs {n_base} before the "
            f"{cfg.num_reserved_special_tokens} special tokens; give more text or lower vocab_size"
        )
    return _add_special_tokens(tok, cfg.num_reserved_special_tokens)


def _bytes_to_symbols() -> dict[int, str]:
    """GPT-2's reversible byte → printable character map (the one ``pre_tokenizers.ByteLevel`` uses)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def byte_tokenizer(num_special_tokens: int = 256, split_pattern: str = LLAMA3_SPLIT_PATTERN) -> Tokenizer:
    """The merge-free baseline: id = UTF-8 byte value (0-255), then the special tokens (BOS = 256).

    One token per byte, so its bytes/token is exactly 1: the floor for ``compression_stats`` and a
    tokenizer whose ids can be written down by hand in tests.
    """
    vocab = {sym: b for b, sym in _bytes_to_symbols().items()}
    tok = _byte_level_pipeline(Tokenizer(models.BPE(vocab=vocab, merges=[])), split_pattern)
    return _add_special_tokens(tok, num_special_tokens)


def tokenizer_sha256(tok: Tokenizer) -> str:
    """Content hash of a tokenizer (its canonical JSON)."""
    return hashlib.sha256(tok.to_str(pretty=False).encode("utf-8")).hexdigest()


def special_token_id(tok: Tokenizer, token: str) -> int:
    """Id of a special token, or a ValueError naming it."""
    idx = tok.token_to_id(token)
    if idx is None:
        raise ValueError(f"tokenizer has no special token {token!r}")
    return idx


def save_tokenizer(tok: Tokenizer, directory: Path | str, cfg: TokenizerConfig | None = None) -> Path:
    """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json (HF-loadable offline)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for t in (BOS, EOS, PAD):
        special_token_id(tok, t)
    atomic_write_text(directory / "tokenizer.json", tok.to_str(pretty=True))
    specials = {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD}
    added = {
        str(i): {
            "content": t.content,
            "lstrip": t.lstrip,
            "rstrip": t.rstrip,
            "normalized": t.normalized,
            "single_word": t.single_word,
            "special": t.special,
        }
        for i, t in sorted(tok.get_added_tokens_decoder().items())
    }
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **specials,
        "add_bos_token": True,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": (cfg or TokenizerConfig()).model_max_length,
        "model_input_names": ["input_ids", "attention_mask"],
        "chat_template": CHAT_TEMPLATE,
        "added_tokens_decoder": added,
    }
    atomic_write_text(directory / "tokenizer_config.json", json.dumps(config, indent=2, ensure_ascii=False))
    atomic_write_text(directory / "special_tokens_map.json", json.dumps(specials, indent=2))
    return directory


def load_tokenizer(directory: Path | str) -> Tokenizer:
    """Load ``directory/tokenizer.json`` (or a tokenizer.json path)."""
    path = Path(directory)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: tokenizer file does not exist")
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception on bad JSON
        raise ValueError(f"{path}: not a valid tokenizers JSON file ({exc})") from exc
    for t in (BOS, EOS):
        if tok.token_to_id(t) is None:
            raise ValueError(f"{path}: tokenizer lacks the special token {t!r}")
    return tok


def count_tokens(tok: Tokenizer, texts: Sequence[str], batch_size: int = 1024) -> np.ndarray:
    """Tokens of each text (no BOS/EOS), as ``int64``."""
    counts: list[int] = []
    for i in range(0, len(texts), batch_size):
        counts.extend(
            len(e.ids) for e in tok.encode_batch(list(texts[i : i + batch_size]), add_special_tokens=False)
        )
    return np.asarray(counts, dtype=np.int64)


def compression_stats(
    tok: Tokenizer, df: pd.DataFrame, text_col: str = "text", lang_col: str = "lang"
) -> dict[str, float]:
    """UTF-8 bytes per token (no BOS), overall and per language: ``bytes_per_token/<lang>`` etc."""
    for col in (text_col, lang_col):
        if col not in df.columns:
            raise KeyError(
                f"compression_stats: column {col!r} missing; has {', '.join(map(str, df.columns))}"
            )
    texts = df[text_col].astype(str).tolist()
    n_tokens = [len(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False)]
    table = pd.DataFrame(
        {
            "lang": df[lang_col].fillna("unknown").astype(str).to_numpy(),
            "bytes": [len(t.encode("utf-8")) for t in texts],
            "tokens": n_tokens,
        }
    )
    total_b, total_t = int(table["bytes"].sum()), int(table["tokens"].sum())
    out: dict[str, float] = {
        "docs": float(len(table)),
        "bytes": float(total_b),
        "tokens": float(total_t),
        "bytes_per_token": total_b / total_t if total_t else 0.0,
    }
    for lang, g in table.groupby("lang", sort=True):
        b, t = int(g["bytes"].sum()), int(g["tokens"].sum())
        out[f"docs/{lang}"] = float(len(g))
        out[f"tokens/{lang}"] = float(t)
        out[f"bytes_per_token/{lang}"] = b / t if t else 0.0
    return out


def check_message(i: int, m: Mapping[str, Any]) -> tuple[str, str, bool]:
    if not isinstance(m, Mapping) or "role" not in m or "content" not in m:
        raise ValueError(f"chat message #{i} must be a mapping with 'role' and 'content', got {m!r}")
    role, content, tool_call = m["role"], m["content"], bool(m.get("tool_call", False))
    if role not in CHAT_ROLES:
        raise ValueError(f"chat message #{i}: role {role!r} is not one of {', '.join(CHAT_ROLES)}")
    if not isinstance(content, str):
        raise ValueError(f"chat message #{i}: content must be str, got {type(content).__name__}")
    if tool_call and role != "assistant":
        raise ValueError(f"chat message #{i}: only assistant messages can be tool calls, got role {role!r}")
    return role, content, tool_call


def render_chat(messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = False) -> str:
    """The Llama 3 chat string: ``<|begin_of_text|>`` then per message
    ``<|start_header_id|>{role}<|end_header_id|>\\n\\n{content}<|eot_id|>`` (tool calls:
    ``<|python_tag|>{code}<|eom_id|>``); with ``add_generation_prompt`` an open assistant header."""
    parts = [BOS]
    for i, m in enumerate(messages):
        role, content, tool_call = check_message(i, m)
        parts.append(f"{START_HEADER}{role}{END_HEADER}\n\n")
        parts.append(f"{PYTHON_TAG}{content}{EOM}" if tool_call else f"{content}{EOT}")
    if add_generation_prompt:
        parts.append(f"{START_HEADER}assistant{END_HEADER}\n\n")
    return "".join(parts)


def encode_chat(
    messages: Sequence[Mapping[str, Any]], tok: Tokenizer, add_generation_prompt: bool = False
) -> list[int]:
    """Token ids of ``render_chat(messages)``.

    Equal to encoding the rendered string, except that special-token text inside a role or content is
    encoded as plain text (a user cannot inject ``<|eot_id|>``). The loss masks that go with these ids:
    ``ml.tokens.chat.encode_chat_masked``.
    """
    from ml.tokens.chat import encode_chat_masked  # chat.py builds on this module

    return encode_chat_masked(messages, tok, add_generation_prompt).ids
