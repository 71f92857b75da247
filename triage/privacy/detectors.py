"""Detectors for personal data in free text: compiled patterns plus validators.

Each ``find_*`` function takes one text and yields ``(start, end)`` character offsets of the
candidates it accepts. A pattern only proposes a candidate; a validator decides (Luhn for cards,
ISO 7064 mod-97 for IBANs, :mod:`ipaddress` for IP addresses, digit counts and shape rules for
phone numbers, a street-type vocabulary for addresses). The redaction engine in
:mod:`triage.privacy.redact` runs them, resolves overlaps and replaces what it keeps.

The rules were written for customer feedback (posts, reviews, e-mails, form messages), where the
numbers that must *stay* are mostly prices, versions, dates, times, counts and model numbers, so
every phone and card rule carries an explicit reason to reject those shapes.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator

Offsets = tuple[int, int]

# --------------------------------------------------------------------------------------------------
# E-mail addresses
# --------------------------------------------------------------------------------------------------

_EMAIL = re.compile(
    r"(?<![\w.%+-])"  # the local part starts at a token boundary
    r"[\w%+-][\w%+'-]*(?:\.[\w%+'-]+)*"  # local part: Unicode letters, no leading or double dot
    r"@[^\W_](?:[\w-]*[^\W_])?(?:\.[^\W_](?:[\w-]*[^\W_])?)*\.[^\W\d_]{2,24}"  # domain . tld
    r"(?![\w-]|\.[^\W_])"
)

# "jane.doe at gmail dot com", "jane [at] example [dot] org": people dodge scrapers this way and
# still mean an address. A TLD list keeps "meet at home dot" chatter out.
_TLDS = r"(?:com|org|net|edu|gov|io|co|uk|de|fr|es|it|nl|pt|br|eu|info|biz|me|app|dev|ca|au|ie|be|ch|at|se|no|dk|fi|pl|mx|ar|in|jp)"
_OBFUSCATED_EMAIL = re.compile(
    r"(?<![\w.+-])[\w.+-]+\s*(?:\[at\]|\(at\)|\{at\}|\s+at\s+)\s*"
    r"[\w-]+(?:\s*(?:\[dot\]|\(dot\)|\{dot\}|\s+dot\s+|\.)\s*[\w-]+)*"
    r"\s*(?:\[dot\]|\(dot\)|\{dot\}|\s+dot\s+)\s*" + _TLDS + r"\b",
    re.IGNORECASE,
)


def find_emails(text: str) -> Iterator[Offsets]:
    """Yield e-mail addresses, including "name [at] domain [dot] com" spellings."""
    if "@" in text:
        for m in _EMAIL.finditer(text):
            yield m.span()
    lowered = text.lower()
    if "at" in lowered and "dot" in lowered:
        for m in _OBFUSCATED_EMAIL.finditer(text):
            yield m.span()


# --------------------------------------------------------------------------------------------------
# Payment cards
# --------------------------------------------------------------------------------------------------

# A run of digit groups separated by single spaces or dashes. Cards are checked on the whole run
# and, when the run is longer than a card (a card followed by a year, say), on its group-aligned
# prefixes.
_DIGIT_RUN = re.compile(r"(?<![\w+.,/-])\d+(?:[ -]\d+)*(?![\w])(?![.,/-]?\d)")


# The start of an IBAN ("GB57 NWBK ", "NL65 ABNA "): digits after it belong to the account
# number (valid or mistyped), never to a phone or card.
_IBAN_PREFIX = re.compile(r"\b[A-Z]{2}\d{2}(?:[ -]?[A-Z0-9]{4})*[ -]?$")


def luhn_ok(digits: str) -> bool:
    """Return True when ``digits`` passes the Luhn (mod-10) check used by payment cards."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _card_prefix_ok(digits: str) -> bool:
    # Issuer ranges: 2 (Mastercard 2-series), 3 (Amex, Diners, JCB), 4 (Visa), 5 (Mastercard,
    # Maestro), 6 (Discover, UnionPay, Maestro). 0, 1, 7, 8, 9 are not payment-card industries.
    return digits[0] in "23456"


_CARD_MIN_DIGITS = 13
# Thirteen or more characters of digits, spaces and dashes, from a digit to a digit: every digit
# run with _CARD_MIN_DIGITS digits lies in one. Searching for it runs in C and builds no match
# object per number, which is what most raw payloads (dates, counts, prices) are full of.
_LONG_RUN = re.compile(r"\d[\d -]{11,}\d")


def may_hold_card(text: str) -> bool:
    """Whether ``text`` has a digit run long enough for :func:`find_cards` to read a card from.

    The cheap test before the full scan: every card :func:`find_cards` yields lies in such a run,
    and raw payloads carry many digits (ids, counts, timestamps) but seldom a run of 13.
    """
    if _LONG_RUN.search(text) is None:
        return False
    return any(
        sum(map(str.isdigit, m.group())) >= _CARD_MIN_DIGITS for m in _DIGIT_RUN.finditer(text)
    )


def find_cards(text: str) -> Iterator[Offsets]:
    """Yield payment card numbers: 13-19 digits, optional space/dash groups, Luhn-valid."""
    for m in _DIGIT_RUN.finditer(text):
        if _IBAN_PREFIX.search(text, max(0, m.start() - 40), m.start()):
            continue
        run = m.group()
        groups = re.split(r"[ -]", run)
        if sum(len(g) for g in groups) < _CARD_MIN_DIGITS:
            continue
        # Offsets of each group in the run (separators are one character each).
        starts = [0]
        for g in groups[:-1]:
            starts.append(starts[-1] + len(g) + 1)
        i = 0
        while i < len(groups):
            # Cards are written whole or in groups led by four digits (4-4-4-4, 4-6-5, 4-4-4-4-3):
            # take the longest such window of 13-19 digits that passes, wherever it starts in
            # the run ("ref 12 4111 1111 1111 1111"), and nothing shaped like "112-3456789-...".
            found = None
            if len(groups[i]) == 4 or 13 <= len(groups[i]) <= 19:
                digits = ""
                for j in range(i, len(groups)):
                    if j > i and (len(groups[i]) != 4 or (j > i + 1 and len(groups[j - 1]) > 6)):
                        break
                    digits += groups[j]
                    if len(digits) > 19:
                        break
                    if len(digits) >= 13 and _card_prefix_ok(digits) and luhn_ok(digits):
                        found = j
            if found is None:
                i += 1
                continue
            yield m.start() + starts[i], m.start() + starts[found] + len(groups[found])
            i = found + 1


# --------------------------------------------------------------------------------------------------
# IBANs
# --------------------------------------------------------------------------------------------------

# Registered IBAN lengths per country (ISO 13616 registry).
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18,
    "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24,
    "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24,
    "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip

_IBAN = re.compile(r"\b[A-Za-z]{2}\d{2}(?:[ -]?[A-Za-z0-9]){11,30}", re.ASCII)


def iban_ok(compact: str) -> bool:
    """Return True when ``compact`` (no spaces, upper case) is a valid IBAN: length and mod-97."""
    if IBAN_LENGTHS.get(compact[:2]) != len(compact):
        return False
    rearranged = compact[4:] + compact[:4]
    try:
        number = int("".join(str(int(ch, 36)) for ch in rearranged))
    except ValueError:
        return False
    return number % 97 == 1


def find_ibans(text: str) -> Iterator[Offsets]:
    """Yield IBANs (compact or grouped in fours), validated by country length and mod-97."""
    for m in _IBAN.finditer(text):
        cand = m.group()
        country = cand[:2].upper()
        want = IBAN_LENGTHS.get(country)
        if want is None:
            continue
        # Walk the candidate until it holds exactly the country's length of characters; the
        # pattern is greedy and may have swallowed a following word.
        count = 0
        for i, ch in enumerate(cand):
            if ch.isalnum():
                count += 1
            if count == want:
                end = m.start() + i + 1
                nxt = text[end : end + 1]
                if nxt.isalnum():
                    break  # the IBAN would end inside a word
                if iban_ok(re.sub(r"[ -]", "", cand[: i + 1]).upper()):
                    yield m.start(), end
                break


# --------------------------------------------------------------------------------------------------
# IP addresses
# --------------------------------------------------------------------------------------------------

_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d)")
_IPV6 = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?"
    r"(?:%[\w]+)?(?![\w:])"
)
# Four dotted numbers after these words are software versions, not hosts.
_VERSION_CONTEXT = re.compile(
    r"(?:\bv|\bver\.?|\bversion|\bbuild|\brelease|\bfirmware|\bupdate|\bupgraded? to|\bbuild no\.?)"
    r"\s*$",
    re.IGNORECASE,
)


_IP_CONTEXT = re.compile(
    r"\b(?:ip|ipv4|host|server|ping|dns|resolver|address|addr|from|to|connect\w*|reach|route\w*"
    r"|proxy|gateway|firewall|block\w*|ban\w*|allow\w*|whitelist\w*)\b\W*$",
    re.IGNORECASE,
)


def find_ips(text: str) -> Iterator[Offsets]:
    """Yield IPv4 and IPv6 addresses that :mod:`ipaddress` accepts (not software versions)."""
    if "." in text:
        for m in _IPV4.finditer(text):
            try:
                ipaddress.IPv4Address(m.group())
            except ValueError:
                continue
            before = text[max(0, m.start() - 30) : m.start()]
            if _VERSION_CONTEXT.search(before):
                continue
            if sum(len(part) > 1 for part in m.group().split(".")) < 2:
                # "7.0.1.2", "12.3.0.1" are versions far more often than hosts: with fewer than
                # two multi-digit parts, ask for a cue ("ping 8.8.8.8", "127.0.0.1:6379").
                port = re.match(r":\d{1,5}\b|/\d{1,2}\b", text[m.end() : m.end() + 6])
                if not port and not _IP_CONTEXT.search(before):
                    continue
            yield m.span()
    if text.count(":") >= 2:
        for m in _IPV6.finditer(text):
            cand = m.group()
            if not any(c.isalnum() for c in cand):
                continue  # "::" alone, emoticons
            try:
                ipaddress.IPv6Address(cand)
            except ValueError:
                continue
            yield m.span()


# --------------------------------------------------------------------------------------------------
# Phone numbers
# --------------------------------------------------------------------------------------------------

_GROUP = r"(?:\(\s?\d{1,5}\s?\)|\d{1,15})"
_SEP = r"(?:\s?[-./]\s?|\s|(?<=\))|(?=\())"
_PHONE = re.compile(
    r"(?<![\w@#$€£¥+/.,:%-])"
    r"(?P<intl>\+\s?|\b00(?=[1-9]))?" + _GROUP + r"(?:" + _SEP + _GROUP + r"){0,7}"
    r"(?![\w@%]|[.,:/-]\d|\s?\d)"
)
_PHONE_CONTEXT = re.compile(
    r"\b(?:call(?:ed|ing)?|phone|ph|tel|telephone|mobile|mob|cell(?:phone)?|whats\s?app|sms|text"
    r"|texted|ring|rang|fax|hotline|helpline|number|no|nr|num|contact|reach|dial(?:led)?"
    r"|tel[eé]fono|telefone|t[eé]l[eé]phone|portable|telefon|handy|numero|n[uú]mero|nummer"
    r"|telefoon|celular|m[oó]vil|cellulare|zap)\b[\s.:#-]*(?:\w+[\s:]+){0,4}[\s(:+]*$",
    re.IGNORECASE,
)
# Words right before a number that make it something other than a phone number.
_NOT_PHONE_BEFORE = re.compile(
    r"\b(?:v|ver|version|build|release|firmware|order|invoice|ticket|case|ref|reference|tracking"
    r"|serial|sn|id|account|acct|iban|isbn|sku|model|part|item|asin|po|receipt|transaction|txn"
    r"|confirmation|booking|flight|zip|postcode|code|pin|otp|population|total|score)\b"
    r"[\s.:#-]*(?:number|no\.?|nr\.?|num|#)?[\s.:#-]*$",
    re.IGNORECASE,
)
_UNIT_AFTER = re.compile(
    r"\s?(?:€|\$|£|¥|%|‰|x\b|kr\b|eur\b|usd\b|gbp\b|chf\b|zł|pln\b|sek\b|dkk\b|nok\b|brl\b|mb\b"
    r"|gb\b|kb\b|tb\b|ms\b|px\b|mm\b|cm\b|km\b|kg\b|mah\b|rpm\b|units?\b|pcs\b|points?\b|pts\b"
    r"|followers\b|views\b|users\b|downloads\b|times\b|hours?\b|minutes?\b|mins?\b|days?\b"
    r"|people\b|items\b|steps\b|words\b|rows\b|records\b|emails\b|tickets\b|orders\b)",
    re.IGNORECASE,
)
_CURRENCY_BEFORE = re.compile(
    r"(?:€|\$|£|¥|\b(?:eur|usd|gbp|chf|r\$|us\$|rs\.?|inr|brl|mxn))\s?$", re.IGNORECASE
)
_DATE = re.compile(
    r"(?:\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.](?:\d{4}|\d{2}))(?:\s\d{1,2})?"
)
_YEAR = re.compile(r"(?:19|20)\d\d")


def _looks_like_date_or_years(cand: str, groups: list[str]) -> bool:
    if _DATE.fullmatch(cand):
        return True
    # "2019-2023", "2021 2022 2023": year lists and ranges.
    return len(groups) >= 2 and all(len(g) == 4 and _YEAR.fullmatch(g) for g in groups)


def _phone_ok(text: str, start: int, end: int, intl: bool) -> bool:
    cand = text[start:end]
    groups = re.findall(r"\d+", cand)
    ndigits = sum(len(g) for g in groups)
    if ndigits < 7 or ndigits > 15:
        return False
    before = text[max(0, start - 40) : start]
    if _CURRENCY_BEFORE.search(before) or _UNIT_AFTER.match(text, end):
        return False
    if _NOT_PHONE_BEFORE.search(before) or _IBAN_PREFIX.search(before):
        return False
    if intl:
        return ndigits >= 8
    if _looks_like_date_or_years(cand, groups):
        return False
    seps = set(re.findall(r"[-./ ]", re.sub(r"\s*([-./])\s*", r"\1", cand)))
    # Dotted phones ("06.12.34.56.78", "415.555.0187") have 3+ groups of 2-4 digits; dotted
    # versions and build numbers ("10.0.19045") do not.
    if seps == {"."} and (len(groups) < 3 or any(not 2 <= len(g) <= 4 for g in groups)):
        return False
    context = bool(_PHONE_CONTEXT.search(before))
    if len(groups) == 1:
        # An unbroken run of digits is an id as often as a phone: only a national trunk prefix
        # ("07700900461") or a word like "call"/"phone" before it makes it a phone number.
        return (cand.startswith("0") and 10 <= ndigits <= 11) or (context and ndigits >= 7)
    # "8 336 817", "12 499 000": a count written with thousands spaces, not a phone.
    if (
        seps == {" "}
        and not context
        and not cand.lstrip("(").startswith("0")
        and 1 <= len(groups[0]) <= 2
        and all(len(g) == 3 for g in groups[1:])
    ):
        return False
    if ndigits <= 8:
        return context
    return True


def find_phones(text: str) -> Iterator[Offsets]:
    """Yield phone numbers in international (+CC / 00CC) and national written formats."""
    for m in _PHONE.finditer(text):
        start, end = m.span()
        cand = m.group()
        if cand.startswith("(") and cand.count("(") > cand.count(")"):
            continue  # "(5551234" with no closing bracket: a fragment, not a written number
        if _phone_ok(text, start, end, bool(m.group("intl"))):
            yield start, end


# --------------------------------------------------------------------------------------------------
# Street addresses
# --------------------------------------------------------------------------------------------------

_CAP = r"[A-ZÀ-ÖØ-Þ][\w'’.-]*"  # a capitalised word (street names, "O'Connell", "St.")
_NUM = r"\d{1,5}(?:[-/]\d{1,4})?[A-Za-z]?\b"
# English street types that follow the name. Unambiguous ones stand on their own; the others
# ("Drive", "Way", "Place"...) also name products and things, so they need context.
_EN_STRONG = (
    r"Street|St\.?|Avenue|Ave\.?|Road|Rd\.?|Boulevard|Blvd\.?|Lane|Ln\.?|Terrace|Ter\.?"
    r"|Parkway|Pkwy\.?|Highway|Hwy\.?|Crescent|Cres\.?|Gardens|Mews|Close|Grove"
)
_EN_WEAK = (
    r"Drive|Dr\.?|Court|Ct\.?|Place|Pl\.?|Way|Circle|Cir\.?|Square|Sq\.?|Trail|Trl\.?|Row"
    r"|Hill|Walk|Park|Plaza|Green|Loop|Path|Pike|Run"
)
_UNIT = (
    r"(?:,?\s*(?:(?:Apt|Apartment|Unit|Suite|Ste|Flat|Fl|Floor|Room|Rm|Bldg|Building|#)\.?\s*"
    r"#?[\w-]{1,6}\b|\d{1,3}(?:st|nd|rd|th)\s+(?:Floor|Fl\.?)))?"
)
_US_STATE = (
    r"(?:A[KLRZ]|C[AOT]|D[CE]|FL|GA|HI|I[ADLN]|K[SY]|LA|M[ADEINOST]|N[CDEHJMVY]|O[HKR]|PA|RI|S[CD]"
    r"|T[NX]|UT|V[AT]|W[AIVY])"
)
_POSTCODE = (
    r"(?:\d{5}(?:-\d{4})?"  # US ZIP(+4), DE/FR/ES/IT
    r"|[A-Z]{1,2}\d[A-Z\d]?\s?\d[A-Z]{2}"  # UK
    r"|\d{4}\s?[A-Z]{2}"  # NL
    r"|\d{4}-\d{3}"  # PT
    r"|\d{5}-\d{3}"  # BR CEP
    r"|[A-Z]\d[A-Z]\s?\d[A-Z]\d)"  # CA
)
_CITY_WORD = r"[A-ZÀ-ÖØ-Þ][^\W\d_]*(?:['’-][^\W\d_]+)*\b"  # no digits: "NW1" is a postcode
_CITY = rf"{_CITY_WORD}(?:[ -]{_CITY_WORD}){{0,2}}"
# Optional tail: ", 10115 Berlin", ", Springfield, IL 62704", ", London SW1A 1AA", ", Dublin 12".
# After a comma, capitalised words are taken as the city; without one, only a postcode counts.
_TAIL = (
    rf"(?:,?\s+{_POSTCODE}\s+{_CITY}"
    rf"|,\s*{_CITY}(?:\s\d{{1,2}}\b)?(?:,?\s+{_US_STATE}\b)?(?:,?\s+{_POSTCODE}\b)?"
    rf"|\s+{_POSTCODE}\b)?"
)
# Type-first names of Romance languages, French and Dutch/German compounds.
_ROMANCE_TYPE = (
    r"(?:(?i:rue|avenue|av\.|ave\.|boulevard|bd\.?|blvd\.?|place|chemin|allée|impasse|quai|cours"
    r"|route|calle|c/|avenida|avda\.?|paseo|plaza|pza\.?|camino|carrer|viale|piazza|corso|largo"
    r"|vicolo|rua|travessa|praça|alameda|estrada|rodovia)(?![\w])"
    # English "via" ("sent via Slack 3 times") is common; only the capitalised Italian one counts.
    r"|Via(?=\s))"
)
_PARTICLE = r"(?:de|del|de la|de las|de los|des|du|d'|da|do|dos|das|della|delle|dei|di|van|von|der|la|le|les|el)"
_ES_UNIT = r"(?:,?\s*\d{1,2}\s?[º°ª]\s?[A-Za-z0-9]{0,4}\b|,?\s*(?:piso|puerta|esc\.?|bajo|planta)\s*\w{1,4}\b)?"
_GERMANIC_SUFFIX = (
    r"(?:straße|strasse|str\.|weg|gasse|platz|allee|damm|ufer|chaussee|gracht|straat|laan"
    r"|plein|kade|singel|steeg|dijk)"
)

_ADDRESS_PATTERNS = [
    # 221B Baker Street, Flat 2 / 1600 Pennsylvania Avenue NW, Washington, DC 20500
    re.compile(
        rf"(?:(?:Flat|Apt|Apartment|Unit|Suite)\s+\w{{1,5}},?\s+)?"
        rf"(?<![\w$€£.,-]){_NUM}\s+(?:(?:{_CAP}|\d{{1,3}}(?:st|nd|rd|th))\s+){{1,4}}"
        rf"(?P<type>{_EN_STRONG}|{_EN_WEAK})(?![\w])"
        rf"(?:\s+(?:N|S|E|W|NE|NW|SE|SW)\b)?{_UNIT}{_TAIL}"
    ),
    # 12 rue de la Paix, 75002 Paris / 5 avenue Victor Hugo
    re.compile(
        rf"(?<![\w$€£.,-]){_NUM},?\s+{_ROMANCE_TYPE}\s+(?:{_PARTICLE}\s+|{_PARTICLE}(?=[A-Z]))?"
        rf"{_CAP}(?:[ -](?:{_PARTICLE}\s+)?{_CAP}){{0,3}}{_TAIL}"
    ),
    # Calle Mayor 10, 3º B / Via Roma 15 / Rua Augusta, 100 / Av. Paulista, 1578
    re.compile(
        rf"(?<![\w]){_ROMANCE_TYPE}\s+(?:{_PARTICLE}\s+|{_PARTICLE}(?=[A-Z]))?{_CAP}"
        rf"(?:[ -](?:{_PARTICLE}\s+)?{_CAP}){{0,3}},?\s+(?:n\.?º?\s*)?{_NUM}{_ES_UNIT}{_TAIL}"
    ),
    # Hauptstraße 12, 10115 Berlin / Berliner Str. 5a / Keizersgracht 123 / Laan van X 20
    re.compile(
        rf"\b(?:[A-ZÄÖÜ][\wäöüß'-]*{_GERMANIC_SUFFIX}"
        rf"|(?:{_CAP}\s+)?(?:Straße|Strasse|Str\.|Weg|Gasse|Platz|Allee|Ring|Damm|Laan|Plein)"
        rf"(?:\s+(?:van|von|der|de)\s+{_CAP})?)"
        rf"\s+{_NUM}{_UNIT}{_TAIL}"
    ),
]

_ADDRESS_CONTEXT = re.compile(
    r"\b(?:address|addr|live|lives|living|lived|deliver(?:ed|y)?|ship(?:ped|ping)?|sent|send"
    r"|mail(?:ed)?|moved|located|house|home|apartment|flat|office|store|shop|branch|at|to|from"
    r"|on|near|visit|come|came|parcel|package|dropped|left|door|dirección|adresse|anschrift"
    r"|indirizzo|endereço|adres|rua|vivo|wohne|habite|abito|woon)\b",
    re.IGNORECASE,
)


def find_addresses(text: str) -> Iterator[Offsets]:
    """Yield street addresses: number + name + street type (US/UK/EU forms), unit, postcode."""
    if not any(map(str.isdigit, text)):
        return
    for i, pattern in enumerate(_ADDRESS_PATTERNS):
        for m in pattern.finditer(text):
            start, end = m.span()
            while end > start and text[end - 1] in " ,":
                end -= 1
            if i == 0 and m.group("type") and re.fullmatch(_EN_WEAK, m.group("type")):
                # "2 Google Drive accounts": a weak street type needs an address-like tail or a
                # word such as "live", "deliver", "at" shortly before.
                has_tail = m.group().rstrip(" ,") != text[m.start() : m.end("type")].rstrip(" ,")
                before = text[max(0, start - 30) : start]
                if not has_tail and not _ADDRESS_CONTEXT.search(before):
                    continue
            yield start, end
