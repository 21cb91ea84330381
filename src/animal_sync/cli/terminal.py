"""Text from outside (upstream names and bodies, a person's `settle --reason`, a journal's name) as a terminal shows
it: every character a terminal would act on is written as its escape, so no such text can recolour, retitle, clear
or reorder a report. JSON needs none of this: json.dumps (with its default ensure_ascii) escapes them itself.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["printable"]

# What a terminal acts on rather than shows: C0 and C1 controls (ESC opens ANSI and OSC sequences: colours, titles,
# links, clipboard writes), DEL, and the bidi overrides and isolates that reorder what is shown around them.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(value: Any) -> str:
    """`value` as text, every control character written as its escape (ESC as \\x1b); all else kept as it is."""
    return _UNPRINTABLE.sub(_escaped, str(value))
