"""A round's data (Llama 3 paper §4.2: each round's SFT and preference data come from the latest model).

Rejection sampling draws K samples per training prompt from the previous round's model
(ml/posttrain/rejection.py). Here the best one is chosen: where the prompt's family has a verifier (math,
code, qa: every family built by ml/posttrain/synthetic.py) the best is the passing sample the reward model
scores highest, and a prompt with no passing sample gives no SFT record (counted); a family without a
verifier would be judged by the reward model alone. A prompt with both a passing and a failing sample also
gives a preference pair (the best passing one over the failing one the reward model scores lowest).
The round's SFT and preference sets are the synthetic train splits plus these, val and held-out unchanged.
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ml.posttrain.evaluate import passes
from ml.posttrain.records import check_preference_record, check_sft_record, read_jsonl, write_jsonl
from ml.posttrain.rejection import RejectionSample
from ml.posttrain.sandbox import SandboxLimits

SPLITS = ("train", "val", "heldout")


def _reward(rs: RejectionSample, i: int) -> float:
    return rs.rewards[i] if rs.rewards[i] is not None else float("-inf")


def select_samples(
    records: Sequence[Mapping[str, Any]], results: Sequence[RejectionSample], limits: SandboxLimits
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], Counter]:
    """(SFT records, preference pairs, counts) from each prompt record's rejection samples."""
    sft, pairs, counts = [], [], Counter()
    for record, rs in zip(records, results, strict=True):
        ok = [s is not None and passes(record, s["content"], limits) for s in rs.samples]
        counts["samples"] += len(ok)
        counts["samples_passing"] += sum(ok)
        counts["samples_unfinished"] += sum(s is None for s in rs.samples)
        good = [i for i, o in enumerate(ok) if o]
        if not good:
            counts["prompts_without_passing_sample"] += 1
            continue
        best = max(good, key=lambda i: _reward(rs, i))
        prompt = [dict(m) for m in record["messages"][:-1]]
        reply = rs.samples[best]["content"]
        sft.append(
            {**_meta(record), "id": f"{record['id']}-rs", "messages": [*prompt, dict(rs.samples[best])]}
        )
        bad = [i for i, s in enumerate(rs.samples) if s is not None and not ok[i]]
        if bad:
            worst = min(bad, key=lambda i: _reward(rs, i))
            if rs.samples[worst]["content"].strip() and rs.samples[worst]["content"] != reply:
                pairs.append(
                    {
                        "id": f"{record['id']}-rs",
                        "family": record.get("family", ""),
                        "prompt": prompt,
                        "chosen": reply,
                        "rejected": rs.samples[worst]["content"],
                    }
                )
    counts["sft_records"], counts["pairs"] = len(sft), len(pairs)
    return sft, pairs, counts


def _meta(record: Mapping[str, Any]) -> dict[str, Any]:
    return {k: record[k] for k in ("family", "answer", "tests") if k in record}


def write_round_set(
    base: Path, extra: Sequence[Mapping[str, Any]], out: Path, tokenizer_json: Path, preference: bool
) -> dict[str, int]:
    """``out/{train,val,heldout}.jsonl`` (base's splits, ``extra`` appended to train) and the tokenizer;
    returns records per split."""
    check = check_preference_record if preference else check_sft_record
    out.mkdir(parents=True, exist_ok=True)
    sizes = {}
    for split in SPLITS:
        recs = read_jsonl(base / f"{split}.jsonl", check)
        if split == "train":
            recs += [check(dict(r), f"rejection sample {r['id']}") for r in extra]
        write_jsonl(recs, out / f"{split}.jsonl")
        sizes[split] = len(recs)
    shutil.copy2(tokenizer_json, out / "tokenizer.json")
    return sizes
