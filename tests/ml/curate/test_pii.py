import re

import pandas as pd
import pytest
from datatrove.pipeline.formatters import PIIFormatter

from ml.config import ConfigError
from ml.curate.pii import EMAIL, PiiConfig, redact, redact_pii

CFG = PiiConfig()
MAN = (
    "Written by Jim Meyering <meyering@fb.com> and Paul Eggert.\n"
    "Report bugs to bug-coreutils@gnu.org; the mirror at 8.8.4.4 answers, 10.0.0.1 and 127.0.0.1 are local.\n"
    "Contact: jane.doe+lists@mail.example-corp.co.uk or 1.1.1.1."
)


def test_emails_and_public_ips_become_placeholders():
    text, emails, ips = redact(MAN, CFG)
    assert (emails, ips) == (3, 2)
    assert text == (
        "Written by Jim Meyering <email@example.com> and Paul Eggert.\n"
        "Report bugs to firstname.lastname@example.org; the mirror at 192.0.2.1 answers, 10.0.0.1 and "
        "127.0.0.1 are local.\n"
        "Contact: email@example.com or 198.51.100.2."
    )
    # a 5-part dotted number is no address (FineWeb's unanchored pattern replaces "3.14.15.92" inside it);
    # a 4-part version number cannot be told from an address and is replaced
    assert redact("see 3.14.15.92.65 and version 1.2.3.4", CFG) == (
        "see 3.14.15.92.65 and version 192.0.2.1",
        0,
        1,
    )


def test_same_spans_as_datatrove_fineweb_formatter():
    ours, _, _ = redact(MAN, CFG)
    theirs = PIIFormatter().format(MAN)
    mark = re.compile(r"email@example\.com|firstname\.lastname@example\.org|\d+\.\d+\.\d+\.\d+")
    assert mark.sub("#", ours) == mark.sub("#", theirs)  # same spans replaced, placeholders differ for IPs


def test_step_counts_per_document_and_leaves_no_address():
    df = pd.DataFrame({"id": ["a", "b"], "url": ["u", "v"], "text": [MAN, "Plain prose, nothing to hide."]})
    res = redact_pii(df, CFG)
    assert res.kept["pii_emails"].tolist() == [3, 0] and res.kept["pii_ips"].tolist() == [2, 0]
    assert res.stats == {"emails_replaced": 3, "ips_replaced": 2, "docs_with_pii": 1}
    assert res.dropped.empty and res.kept["text"].iloc[1] == "Plain prose, nothing to hide."
    placeholders = set(CFG.email_placeholders)
    assert all(set(EMAIL.findall(t)) <= placeholders for t in res.kept["text"])
    keep_ips = CFG.replace(redact_ips=False)
    assert redact(MAN, keep_ips)[2] == 0 and "8.8.4.4" in redact(MAN, keep_ips)[0]


def test_placeholders_are_validated():
    with pytest.raises(ConfigError, match="public address"):
        PiiConfig(ip_placeholders=("8.8.8.8",))
    with pytest.raises(ConfigError, match="not e-mail"):
        PiiConfig(email_placeholders=("<EMAIL>",))
