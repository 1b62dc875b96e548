import pandas as pd
import pytest

from ml.config import ConfigError
from ml.curate.boilerplate import (
    BoilerplateConfig,
    clean_text,
    is_navigation,
    line_reason,
    remove_boilerplate,
    unwrap_paragraphs,
)

CFG = BoilerplateConfig()
PROSE = [
    "The linker combines object files into one executable.",
    "Each input section is placed in an output section by name.",
    "Symbols left undefined are reported at the end of the link.",
    "Options on the command line override the linker script.",
    "A map file shows where every section was placed.",
]


def _frame(docs: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame(
        {"id": list(docs), "url": [f"http://h/{k}" for k in docs], "text": list(docs.values())}
    )


def test_line_rules_by_reason():
    assert line_reason("Next: Types, Previous: The Basics, Up: Using libffi [Index]", CFG) == "navigation"
    assert line_reason("Next: Introduction [Contents][Index]", CFG) == "navigation"
    assert line_reason(", Up:", CFG) == "navigation"  # a fragment trafilatura split off the nav bar
    assert line_reason("index | modules | next | previous | Python 3.12 documentation »", CFG) == "navigation"
    assert line_reason("Skip to main content", CFG) == "navigation"
    assert line_reason("Please enable JavaScript in your browser to view this page.", CFG) == "javascript"
    assert line_reason("This site uses cookies to improve your experience.", CFG) == "policy"
    assert line_reason("Read our Privacy Policy.", CFG) == "policy"
    # documentation prose that only names the words stays
    assert line_reason("Test name patterns are interpreted as JavaScript regular expressions.", CFG) is None
    assert line_reason("Up: moves the cursor one line up.", CFG) is None
    assert line_reason("The next section describes the index format.", CFG) is None
    assert not is_navigation("Next, the previous value is restored.")


def test_clean_text_counts_removed_lines():
    text = "\n".join(
        ["Next: Linking, Previous: Conventions, Up: Top [Contents][Index]", *PROSE, "Back to top"]
    )
    cleaned, removed = clean_text(text, CFG)
    assert cleaned == "\n".join(PROSE) and removed == {"navigation": 2}


def test_documents_dropped_by_reason():
    menu = "\n".join(["Home", "Introduction", "Downloads", "FAQ", "News", "Library internals"])
    docs = {
        "prose": "\n".join(["Home", *PROSE, "This site uses cookies."]),
        "lorem": "\n".join([*PROSE, "Lorem ipsum dolor sit amet, consectetur adipiscing elit."]),
        "menu": menu,  # 6 lines, none ends a sentence
        "nav_only": "Skip to content\nBack to top",
        "code": "\n".join(["int main(void)", "{", "    return 0;", "}", "Compile it with cc."]),
    }
    res = remove_boilerplate(_frame(docs), CFG)
    assert res.kept["id"].tolist() == ["prose", "code"]
    assert res.kept["text"].iloc[0] == "\n".join(PROSE) and res.kept["boilerplate_lines"].tolist() == [2, 0]
    got = dict(
        zip(res.dropped["id"], zip(res.dropped["reason"], res.dropped["detail"], strict=True), strict=True)
    )
    assert got == {
        "lorem": ("lorem_ipsum", "contains 'lorem ipsum'"),
        "menu": ("line_punct", "0.000 of lines end a sentence < 0.12"),
        "nav_only": ("empty_after_lines", "every line was boilerplate"),
    }
    assert res.stats["lines_removed/navigation"] == 2 + 2 and res.stats["lines_removed/policy"] == 1
    assert res.stats["line_punct_not_judged"] == 1  # the code doc: its lines need not end sentences
    assert res.summary()["dropped/line_punct"] == 1


def test_rules_can_be_switched_off_and_are_validated():
    res = remove_boilerplate(_frame({"p": "\n".join(["Home", *PROSE])}), CFG.replace(line_rules=("policy",)))
    assert res.kept["boilerplate_lines"].tolist() == [0]
    with pytest.raises(ConfigError, match="unknown"):
        BoilerplateConfig(line_rules=("nope",))


MIT = """Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software."""
DEP5 = """License: GPL-2+
 This program is free software; you can redistribute it and/or modify
 it under the terms of the GNU General Public License.
 .
 This program is distributed in the hope that it will be useful,
 but WITHOUT ANY WARRANTY; without even the implied warranty of
 MERCHANTABILITY or FITNESS FOR A PARTICULAR PURPOSE."""


def test_hard_wrapped_paragraphs_are_unwrapped():
    text, joined = unwrap_paragraphs(MIT, CFG)
    assert (
        joined == 1
        and "\n" not in text
        and text.startswith("Permission is hereby granted, free of charge, to")
    )
    assert "a copy of this software" in text
    text, joined = unwrap_paragraphs(DEP5, CFG)  # " ." is a blank line in Debian control files
    assert joined == 1 and text.endswith(
        "\n\nThis program is distributed in the hope that it will be useful, but WITHOUT ANY WARRANTY; without "
        "even the implied warranty of MERCHANTABILITY or FITNESS FOR A PARTICULAR PURPOSE."
    )
    assert " ." not in text.split("\n")
    code = 'int main(void)\n{\n    printf("hello, world");\n    return 0;\n}'
    items = "Steps to follow here:\n- unpack the archive into a dir\n- run the configure script\n- run make"
    sentences = "\n".join(PROSE)  # one sentence per line: not a wrapped paragraph
    for kept in (code, items, sentences):
        assert unwrap_paragraphs(kept, CFG) == (kept, 0)
    res = remove_boilerplate(_frame({"mit": MIT}), CFG)
    assert res.stats["paragraphs_unwrapped"] == 1 and res.kept["boilerplate_lines"].tolist() == [0]
    assert clean_text(MIT, CFG.replace(unwrap=False)) == (MIT, {})
