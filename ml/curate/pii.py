"""PII redaction: e-mail and public IP addresses replaced by placeholders, counted per document.

Llama 3 paper §3.1.1 removes personally identifiable information from web data; FineWeb replaces e-mail
addresses and public IP addresses with placeholders. The patterns are FineWeb's (datatrove's
``PIIFormatter``), the IP pattern anchored at dotted-number boundaries; the originals stay only in the raw
crawl.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any, ClassVar

import pandas as pd

from ml.config import ConfigError, StageConfig
from ml.curate.steps import StepResult, empty_dropped

EMAIL = re.compile(
    r"\b[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@(?:(?:[A-Za-z0-9](?:["
    r"A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?|\[(?:(?:25[0-5]|2[0-4][0-9]|["
    r"01]?[0-9][0-9]?)\.){3}(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?|[A-Za-z0-9-]*[A-Za-z0-9]:)])"
)
# FineWeb's IPv4 pattern, anchored so that a run of more than four dotted numbers (a section number, an OID)
# is not read as an address followed by more digits.
IPV4 = re.compile(
    r"(?<![\d.])(?:(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?)\.){3}(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?)(?!\.?\d)"
)


@dataclass(frozen=True)
class PiiConfig(StageConfig):
    """What is redacted and what replaces it (replacements are used in turn within a document)."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"tiny": {}, "small": {}, "8b": {}, "70b": {}, "405b": {}}

    redact_emails: bool = True
    redact_ips: bool = True
    only_public_ips: bool = True  # FineWeb: private, loopback and documentation addresses identify nobody
    # FineWeb's: example.com / example.org are reserved for documentation (RFC 2606)
    email_placeholders: tuple[str, ...] = ("email@example.com", "firstname.lastname@example.org")
    # chosen: RFC 5737 documentation addresses (FineWeb uses random public ones, which belong to someone)
    ip_placeholders: tuple[str, ...] = ("192.0.2.1", "198.51.100.2", "203.0.113.3")

    def __post_init__(self) -> None:
        if not self.email_placeholders or not self.ip_placeholders:
            raise ConfigError("PiiConfig: email_placeholders and ip_placeholders need at least one value")
        if any(EMAIL.fullmatch(p) is None for p in self.email_placeholders):
            raise ConfigError(
                f"PiiConfig.email_placeholders: {self.email_placeholders} are not e-mail addresses"
            )
        if any(_is_public(p) for p in self.ip_placeholders):
            raise ConfigError(f"PiiConfig.ip_placeholders: {self.ip_placeholders} include a public address")


def _is_public(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_global
    except ValueError:
        return False


def redact(text: str, cfg: PiiConfig) -> tuple[str, int, int]:
    """``(text with placeholders, e-mails replaced, IP addresses replaced)``."""
    emails = ips = 0

    def email(m: re.Match) -> str:
        nonlocal emails
        emails += 1
        return cfg.email_placeholders[(emails - 1) % len(cfg.email_placeholders)]

    def ip(m: re.Match) -> str:
        nonlocal ips
        if cfg.only_public_ips and not _is_public(m.group(0)):
            return m.group(0)
        ips += 1
        return cfg.ip_placeholders[(ips - 1) % len(cfg.ip_placeholders)]

    if cfg.redact_emails and "@" in text:
        text = EMAIL.sub(email, text)
    if cfg.redact_ips:
        text = IPV4.sub(ip, text)
    return text, emails, ips


def redact_pii(df: pd.DataFrame, cfg: PiiConfig) -> StepResult:
    """Replace PII in every document; nothing is dropped. Kept rows get ``pii_emails`` and ``pii_ips``;
    stats: ``emails_replaced``, ``ips_replaced``, ``docs_with_pii``."""
    texts, emails, ips = [], [], []
    for text in df["text"].astype(str):
        t, e, i = redact(text, cfg)
        texts.append(t)
        emails.append(e)
        ips.append(i)
    kept = df.assign(text=texts, pii_emails=emails, pii_ips=ips).reset_index(drop=True)
    stats: dict[str, float | int] = {
        "emails_replaced": sum(emails),
        "ips_replaced": sum(ips),
        "docs_with_pii": sum(1 for e, i in zip(emails, ips, strict=True) if e or i),
    }
    return StepResult(kept=kept, dropped=empty_dropped(), stats=stats)
