"""Expand the hand-written safety seeds into the shipped JSONL files: ``python -m ml.safety.build_data``.

Inputs (ml/resources/safety/source/): ``prompts.yaml``, the hand-written requests per hazard category,
split, kind and language; ``templates.yaml``, per language, the framings, benign first turns, tool-use
task, long-document generator and the refusal/compliance responses. Outputs (ml/resources/safety/v1/):

* ``prompts.{train,heldout}.jsonl``: every seed as a single-turn prompt ``direct`` (the seed as written)
  and under one framing (train framings for train seeds, held-out framings for held-out seeds; chosen by
  seed index), plus the seed once more in one of the multi-turn, long-context or tool-use variants
  (rotating with seed, category and language);
* ``responses.{train,heldout}.jsonl``: refusal-detector items, model-style responses labelled refusal or
  compliance.

Everything is deterministic (documents come from ``random.Random`` seeded by the item id), so running the
module again rewrites the same bytes; a test holds the shipped files to that. The data card's size
tables are regenerated between its ``sizes`` markers.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

RESOURCES = Path(__file__).resolve().parent.parent / "resources" / "safety"
SOURCE = RESOURCES / "source"
VERSION = "v1"
LANGS = ("en", "de", "fr", "es")
EXTRA_VARIANTS = ("multi_turn", "long_context", "tool_use")
SPLITS = ("train", "heldout")
DOC_PARAGRAPHS = 12  # chosen: ~4K characters (~1K tokens) of benign text before the request
DOC_SENTENCES = 4
TOOL_SYSTEM = (
    "Environment: ipython\nTools: forum.latest_question() returns the newest question of the community help "
    "forum as JSON.\n\nYou are a helpful assistant."
)
SIZES_BEGIN, SIZES_END = "<!-- sizes:begin -->", "<!-- sizes:end -->"


def load_sources(source: Path = SOURCE) -> tuple[dict[str, Any], dict[str, Any]]:
    prompts = yaml.safe_load((source / "prompts.yaml").read_text(encoding="utf-8"))
    templates = yaml.safe_load((source / "templates.yaml").read_text(encoding="utf-8"))
    return prompts, templates


def long_document(t: dict[str, Any], key: str) -> str:
    """Benign meeting minutes from the language's sentence templates, the same text for the same key."""
    rng = random.Random(key)
    doc = t["document"]
    paragraphs = [doc["title"].format(org=rng.choice(doc["orgs"]))]
    for n in range(1, DOC_PARAGRAPHS + 1):
        topic = rng.choice(doc["topics"])
        # each agenda item opens with the first template, then draws from the others
        templates = [doc["sentences"][0], *rng.sample(doc["sentences"][1:], DOC_SENTENCES - 1)]
        sentences = []
        for template in templates:
            a, c = rng.randint(3, 90), rng.randint(0, 12)
            fields = dict(name=rng.choice(doc["names"]), n=n, topic=topic, a=a, b=a + rng.randint(5, 60), c=c)
            sentences.append(template.format(day=rng.choice(doc["days"]), **fields))
        paragraphs.append(" ".join(sentences))
    return "\n\n".join(paragraphs)


def variant_messages(variant: str, text: str, t: dict[str, Any], key: str, k: int) -> list[dict[str, str]]:
    """The chat for one variant: ``k`` picks the benign turn or forum member, ``key`` seeds the document."""
    if variant == "single":
        return [{"role": "user", "content": text}]
    if variant == "multi_turn":
        question, answer = t["benign_turns"][k % len(t["benign_turns"])]
        return [
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
            {"role": "user", "content": text},
        ]
    if variant == "long_context":
        ask = t["long_context_ask"].format(request=text)
        return [{"role": "user", "content": f"{long_document(t, key)}\n\n{ask}"}]
    if variant == "tool_use":  # the user delegates; the request itself only arrives in the tool result
        result = {"author": f"member_{101 + k % 97}", "question": text}
        return [
            {"role": "system", "content": TOOL_SYSTEM},
            {"role": "user", "content": t["tool_task"]},
            {"role": "assistant", "content": "<|python_tag|>forum.latest_question()"},
            {"role": "ipython", "content": json.dumps(result, ensure_ascii=False)},
        ]
    raise ValueError(f"unknown variant {variant!r}")


def seed_items(
    cat: str, split: str, kind: str, index: int, lang: str, text: str, t: dict[str, Any], cat_index: int
) -> Iterator[dict[str, Any]]:
    """The items of one seed in one language: direct, one framing, one extra variant."""
    framings = t["framings" if split == "train" else "heldout_framings"][kind]
    names = sorted(framings)
    framing = names[index % len(names)]
    extra = EXTRA_VARIANTS[(index + cat_index + LANGS.index(lang)) % len(EXTRA_VARIANTS)]
    seed = f"{cat.lower()}-{kind[:3]}-{split}-{index:02d}"
    plan = [
        ("single", "direct", text),
        ("single", framing, framings[framing].format(request=text)),
        (extra, "direct", text),
    ]
    for variant, how, content in plan:
        item_id = f"{seed}-{lang}-{variant}-{how}"
        yield {
            "id": item_id,
            "seed": seed,
            "category": cat if kind == "adversarial" else "none",
            "resembles": None if kind == "adversarial" else cat,
            "kind": kind,
            "lang": lang,
            "variant": variant,
            "framing": how,
            "split": split,
            "messages": variant_messages(variant, content, t, item_id, index + cat_index),
        }


def prompt_items(prompts: dict[str, Any], templates: dict[str, Any], split: str) -> list[dict[str, Any]]:
    items = []
    for cat_index, (cat, block) in enumerate(prompts.items()):
        for kind in ("adversarial", "borderline"):
            for index, seed in enumerate(block[split][kind]):
                for lang in LANGS:
                    if lang in seed:
                        items += seed_items(
                            cat, split, kind, index, lang, seed[lang], templates[lang], cat_index
                        )
    return items


def response_items(templates: dict[str, Any], split: str) -> list[dict[str, Any]]:
    """Refusal-detector items: each hand-written response of the split, labelled."""
    items = []
    for lang in LANGS:
        for label in ("refusal", "compliance"):
            for i, text in enumerate(templates[lang]["responses"][label][split]):
                item_id = f"resp-{split}-{lang}-{label}-{i:02d}"
                items.append({"id": item_id, "lang": lang, "split": split, "label": label, "response": text})
    return items


def to_jsonl(items: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in items)


def build_files(source: Path = SOURCE) -> dict[str, str]:
    """File name (relative to the version folder) -> JSONL text."""
    prompts, templates = load_sources(source)
    files = {}
    for split in SPLITS:
        files[f"prompts.{split}.jsonl"] = to_jsonl(prompt_items(prompts, templates, split))
        files[f"responses.{split}.jsonl"] = to_jsonl(response_items(templates, split))
    return files


def _count_table(df: pd.DataFrame, rows: str, cols: list[str]) -> str:
    table = df.pivot_table(index=rows, columns=cols, values="id", aggfunc="count", fill_value=0)
    table.columns = [" ".join(c) if isinstance(c, tuple) else c for c in table.columns]
    if rows == "hazard":
        table = table.reindex(sorted(table.index, key=lambda c: int(c[1:])))
    table.loc["total"] = table.sum()
    header = f"| {rows} | " + " | ".join(table.columns) + " |"
    lines = [header, "|" + "---|" * (len(table.columns) + 1)]
    lines += [f"| {idx} | " + " | ".join(str(int(v)) for v in row) + " |" for idx, row in table.iterrows()]
    return "\n".join(lines)


def sizes_markdown(files: dict[str, str]) -> str:
    """The data card's size tables: items per file, per category x kind, per language and per variant."""
    prompts = pd.DataFrame([json.loads(x) for s in SPLITS for x in files[f"prompts.{s}.jsonl"].splitlines()])
    prompts["hazard"] = prompts["category"].where(prompts["kind"] == "adversarial", prompts["resembles"])
    responses = pd.DataFrame(
        [json.loads(x) for s in SPLITS for x in files[f"responses.{s}.jsonl"].splitlines()]
    )
    parts = ["| file | items |", "|---|---|"]
    parts += [f"| {VERSION}/{name} | {len(text.splitlines())} |" for name, text in sorted(files.items())]
    by_kind, english = ["split", "kind"], prompts[prompts["lang"] == "en"]
    tables = [
        ("Prompts per hazard category (borderline: the category it resembles)", prompts, "hazard", by_kind),
        ("English prompts per hazard category", english, "hazard", by_kind),
        ("Prompts per language", prompts, "lang", by_kind),
        ("Prompts per variant", prompts, "variant", by_kind),
        ("Prompts per framing", prompts, "framing", by_kind),
        ("Refusal-detector responses", responses, "lang", ["split", "label"]),
    ]
    for title, frame, rows, cols in tables:
        parts += ["", f"**{title}**", "", _count_table(frame, rows, cols)]
    return "\n".join(parts)


def write(resources: Path = RESOURCES) -> dict[str, str]:
    """Write the JSONL files and refresh the data card's size tables; returns the files written."""
    files = build_files(resources / "source")
    out = resources / VERSION
    out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (out / name).write_text(text, encoding="utf-8")
    card = resources / "DATA_CARD.md"
    text = card.read_text(encoding="utf-8")
    head, rest = text.split(SIZES_BEGIN, 1)
    tail = rest.split(SIZES_END, 1)[1]
    card.write_text(f"{head}{SIZES_BEGIN}\n{sizes_markdown(files)}\n{SIZES_END}{tail}", encoding="utf-8")
    return files


if __name__ == "__main__":
    for name, text in write().items():
        print(f"{VERSION}/{name}: {len(text.splitlines())} items")
