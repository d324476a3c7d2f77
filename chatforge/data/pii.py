"""PII scrubbing: e-mail addresses, public IPv4/IPv6 addresses, phone numbers, payment card numbers and
IBANs become placeholders. Each pattern is checked before it is replaced (card numbers by the Luhn
checksum, IBANs by ISO 13616's mod-97, IPs by `ipaddress`), so years, prices, version numbers and
ordinary counts stay as they are.
"""

import ipaddress
import re

from chatforge.data.readers import Document

EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}\b")
IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.]*\d)")
IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
# Card numbers as they are written: 13-19 digits in one run, in groups of four, or Amex's 4-6-5.
CARD = re.compile(r"(?<![\w.,-])(?:\d{13,19}|\d{4}(?:[ -]\d{4}){2}[ -]\d{1,7}|\d{4}[ -]\d{6}[ -]\d{5})(?![\w-]|[.,]\d)")
IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b")
# Phones take one of three shapes that ordinary numbers do not: an international prefix (+44 ...),
# a North American (555) 123-4567 / 555-123-4567, or a national number with a leading trunk 0
# (020 7946 0958, 06-12345678). A year, a price or "1,234,567" matches none of them.
PHONE = re.compile(
    r"(?<![\w+])(?:"
    r"\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){2,5}"
    r"|(?:\(\d{3}\)\s?|\d{3}[-. ])\d{3}[-. ]\d{4}"
    r"|0\d{1,4}(?:[ /-]?\d{2,4}){2,3}"
    r")(?![\w])")
PLACEHOLDERS = {"email": "<EMAIL>", "ip": "<IP_ADDRESS>", "phone": "<PHONE>", "card": "<CARD_NUMBER>",
                "iban": "<IBAN>"}


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def iban_ok(s: str) -> bool:
    s = s.replace(" ", "")
    if not 15 <= len(s) <= 34:
        return False
    rearranged = s[4:] + s[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def _public_ip(s: str) -> bool:
    try:
        ip = ipaddress.ip_address(s)
    except ValueError:
        return False
    return ip.is_global


def _card(m: re.Match) -> str:
    digits = re.sub(r"\D", "", m.group())
    # A real card number: 13-19 digits, Luhn-valid, not one digit repeated (0000 0000 ... is a placeholder)
    # ISBN-13s (978/979...) pass the Luhn check one time in ten, so they are never taken for cards.
    isbn = len(digits) == 13 and digits.startswith(("978", "979"))
    if 13 <= len(digits) <= 19 and luhn_ok(digits) and len(set(digits)) > 1 and not isbn:
        return PLACEHOLDERS["card"]
    return m.group()


def _phone(m: re.Match) -> str:
    n = sum(c.isdigit() for c in m.group())
    return PLACEHOLDERS["phone"] if 9 <= n <= 15 else m.group()


def scrub(text: str, counts: dict | None = None) -> str:
    """`text` with every PII match replaced; `counts` (if given) gets the number replaced per kind."""
    rules = (
        ("iban", IBAN, lambda m: PLACEHOLDERS["iban"] if iban_ok(m.group()) else m.group()),
        ("card", CARD, _card),
        ("email", EMAIL, lambda m: PLACEHOLDERS["email"]),
        ("ip", IPV4, lambda m: PLACEHOLDERS["ip"] if _public_ip(m.group()) else m.group()),
        ("ip", IPV6, lambda m: PLACEHOLDERS["ip"] if m.group().count(":") >= 2 and _public_ip(m.group())
         else m.group()),
        ("phone", PHONE, _phone),
    )
    for kind, pattern, repl in rules:
        if kind == "email" and "@" not in text:
            continue  # the common case, and the regexes are the slowest part of this step
        new = pattern.sub(repl, text)
        if counts is not None and new != text:
            counts[kind] = counts.get(kind, 0) + new.count(PLACEHOLDERS[kind]) - text.count(PLACEHOLDERS[kind])
        text = new
    return text


class PII:
    """The pii step: scrubs in place, never drops. `counts` collects replacements per kind for stats.json."""

    def __init__(self):
        self.counts: dict[str, int] = {}

    def __call__(self, doc: Document) -> str | None:
        doc.text = scrub(doc.text, self.counts)
        return None
