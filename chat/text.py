"""What client text may hold: Unicode scalar values, and names that show what they say; no I/O, no imports of ours."""

from __future__ import annotations

import re
import unicodedata

#: A guest's sender key, which its client keeps across reconnects: 16-64 of A-Z a-z 0-9 _ -.
KEY_PATTERN = re.compile(r"[A-Za-z0-9_-]{16,64}")
#: Most combining marks on one character of a name.
MAX_MARKS = 2
#: Letters and symbols that print as nothing (isprintable() lets them through): Hangul fillers, the braille
#: blank, Khmer's inherent vowels and the Mongolian vowel separator.
BLANKS = frozenset("\u115f\u1160\u3164\uffa0\u2800\u17b4\u17b5\u180e")


def scalar(text: str) -> bool:
    """Tell whether text is made of Unicode scalar values only (no lone surrogate), so that it encodes as UTF-8."""
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def nfkc(text: str) -> str:
    """Return text in Unicode's compatibility composition (fullwidth letters as plain ones, and so on)."""
    return text if text.isascii() else unicodedata.normalize("NFKC", text)


def hidden(name: str) -> bool:
    """Tell whether a name holds characters that print as nothing, or starts with or stacks combining marks."""
    if name.isascii():
        return False
    if any(char in BLANKS for char in name):
        return True
    marks = 0
    for index, char in enumerate(name):
        marks = marks + 1 if unicodedata.category(char) in ("Mn", "Me") else 0
        if marks > MAX_MARKS or marks > index:
            return True
    return False


def name_key(name: str) -> str:
    """Return what two display names that read the same (ignoring case) have in common."""
    return name.casefold()


def sender_key(text: str) -> bool:
    """Tell whether text is a well-formed guest sender key."""
    return KEY_PATTERN.fullmatch(text) is not None
