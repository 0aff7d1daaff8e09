"""Personal data in prompt text: find it, replace it with typed placeholders.

Detected: e-mail addresses, phone numbers (Google's libphonenumber rules through the
`phonenumbers` package: a match must be a valid number, international or national for
`region`), payment card numbers (13-19 digits passing the Luhn check) and IPv4/IPv6
addresses (parsed by `ipaddress`). Person names are not detected: the maintained detectors
(Presidio, spaCy NER) need model downloads this project cannot rely on.

Placeholders name the kind: `[EMAIL]`, `[PHONE]`, `[CARD]`, `[IP]`.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from dataclasses import dataclass

import phonenumbers

KINDS = ("EMAIL", "PHONE", "CARD", "IP")

EMAIL = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}\b"
)
# 13-19 digits, optionally grouped by single spaces or dashes; Luhn decides.
CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str
    start: int
    end: int


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _is_ip(text: str) -> bool:
    if not any(ch.isdigit() for ch in text):  # `a::b`, `dead::beef`: code, not addresses
        return False
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def find_pii(text: str, *, region: str | None = "US") -> list[Finding]:
    """Every personal-data span in `text`, left to right, overlaps resolved (first, then longest)."""
    found: list[Finding] = []
    found += [Finding("EMAIL", m.start(), m.end()) for m in EMAIL.finditer(text)]
    for m in CARD.finditer(text):
        digits = re.sub(r"\D", "", m.group())
        if 13 <= len(digits) <= 19 and luhn_valid(digits):
            found.append(Finding("CARD", m.start(), m.end()))
    for pattern in (IPV4, IPV6):
        found += [
            Finding("IP", m.start(), m.end()) for m in pattern.finditer(text) if _is_ip(m.group())
        ]
    for match in phonenumbers.PhoneNumberMatcher(
        text, region, leniency=phonenumbers.Leniency.VALID
    ):
        found.append(Finding("PHONE", match.start, match.end))
    found.sort(key=lambda f: (f.start, -(f.end - f.start)))
    kept: list[Finding] = []
    for finding in found:
        if kept and finding.start < kept[-1].end:
            continue
        kept.append(finding)
    return kept


def redact(text: str, *, region: str | None = "US") -> tuple[str, Counter]:
    """`text` with each finding replaced by its placeholder, and a count per kind."""
    findings = find_pii(text, region=region)
    if not findings:
        return text, Counter()
    parts, last = [], 0
    for finding in findings:
        parts += [text[last : finding.start], f"[{finding.kind}]"]
        last = finding.end
    parts.append(text[last:])
    return "".join(parts), Counter(f.kind for f in findings)
