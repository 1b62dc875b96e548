"""Multiple-choice items from held-out documents: deterministic, answer never a distractor, exact scoring."""

import pandas as pd
import pytest

from ml.eval.multiple_choice import MultipleChoiceConfig, build_items, items_version, score_items


def corpus(n_docs: int = 240) -> pd.DataFrame:
    rows = []
    for d in range(n_docs):
        lang, domain = ("en", "de")[d % 2], ("general", "code")[(d // 2) % 2]
        paras = [
            f"Document {d} paragraph {p}: " + " ".join(["word"] * (10 + (d * 7 + p) % 13)) for p in range(5)
        ]
        rows.append({"id": f"doc-{d:04d}", "text": "\n\n".join(paras), "lang": lang, "domain": domain})
    return pd.DataFrame(rows)


def test_items_are_deterministic_and_never_use_the_answer_as_a_distractor():
    cfg = MultipleChoiceConfig(n_items=600)
    docs = corpus()
    items = build_items(docs, cfg)
    assert len(items) == 600
    again = build_items(docs.sample(frac=1.0, random_state=7), cfg)  # row order does not matter
    assert items_version(items) == items_version(again)
    by_id = docs.set_index("id")
    for item in items.itertuples(index=False):
        answer = item.choices[item.label]
        doc = by_id.loc[item.doc_id]
        assert answer in doc.text and item.context.strip() in doc.text
        assert len(set(item.choices)) == cfg.n_choices
        for k, choice in enumerate(item.choices):
            if k != item.label:
                src = choice.split(" paragraph ")[0].removeprefix("Document ")
                other = by_id.loc[f"doc-{int(src):04d}"]
                assert f"doc-{int(src):04d}" != item.doc_id
                assert (other.lang, other.domain) == (item.lang, item.domain)


def test_a_recrawl_with_new_ids_gives_the_same_items():
    """Ids change with every crawl (sha1 of url + fetch time); the items hash the text, so they do not."""
    docs = corpus()
    cfg = MultipleChoiceConfig(n_items=80)
    items = build_items(docs, cfg)
    recrawled = build_items(docs.assign(id=[f"crawl2-{i}" for i in range(len(docs))]), cfg)
    content = ["item_id", "context", "choices", "label"]
    assert items[content].to_dict("records") == recrawled[content].to_dict("records")
    assert set(items["doc_id"]) <= set(docs["id"])  # provenance: the id of this crawl


def test_another_seed_gives_other_items():
    docs = corpus()
    a = build_items(docs, MultipleChoiceConfig(n_items=50, seed=0))
    b = build_items(docs, MultipleChoiceConfig(n_items=50, seed=1))
    assert items_version(a) != items_version(b)


def test_group_without_enough_documents_yields_no_items():
    docs = corpus(4)  # each (lang, domain) group holds one document: no distractors from other documents
    assert build_items(docs, MultipleChoiceConfig()).empty


def test_scoring_on_a_fixed_case():
    items = pd.DataFrame(
        [
            {"context": "c1", "choices": ["aa", "bbbb"], "label": 1},
            {"context": "c2", "choices": ["xx", "y"], "label": 0},
        ]
    )
    table = {
        ("c1", "aa"): (-4.0, 2),
        ("c1", "bbbb"): (-4.0, 4),
        ("c2", "xx"): (-6.0, 2),
        ("c2", "y"): (-1.0, 1),
    }
    result = score_items(items, lambda ctx, cont: table[(ctx, cont)])
    # item 1: per char -2.0 vs -1.0 -> choice 1 (correct); item 2: -3.0 vs -1.0 -> choice 1 (wrong)
    assert result["accuracy"] == 0.5
    assert result["normalized_nll"] == pytest.approx((1.0 + 3.0) / 2)
    assert result["chance"] == 0.5


def test_missing_columns_are_named():
    with pytest.raises(ValueError, match=r"\['domain'\]"):
        build_items(corpus().drop(columns=["domain"]), MultipleChoiceConfig())


def test_line_units_cut_items_at_line_boundaries():
    docs = corpus(8)
    docs["text"] = docs["text"].str.replace("\n\n", "\n")  # one blank-line block per document
    assert build_items(docs, MultipleChoiceConfig(max_items_per_doc=4)).empty
    cfg = MultipleChoiceConfig(unit="line", max_items_per_doc=4, n_choices=2)
    items = build_items(docs, cfg)
    assert len(items) == 32  # 8 documents x 4 of their 4 line boundaries
    for item in items.itertuples(index=False):
        assert item.context.endswith("\n") and not item.context.endswith("\n\n")
        assert item.context + item.choices[item.label] in docs.set_index("id").loc[item.doc_id].text
    with pytest.raises(ValueError, match=r"unit must be paragraph \| line, got .sentence."):
        MultipleChoiceConfig(unit="sentence")
