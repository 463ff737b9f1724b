"""Personal data kept out of posted text: phone numbers and email addresses masked in transcript lines.

Staff read the full details in `/leads show`; a channel (even the staff one) only needs to know that a
number or an address was said.
"""

from __future__ import annotations

import re

import phonenumbers

PHONE_MASK = "[phone]"
EMAIL_MASK = "[email]"
_EMAIL = re.compile(r"[\w.+'-]+@[\w-]+(?:\.[\w-]+)+")
# An address read aloud as a transcript writes it ("ann dot lee at example dot com"). Liberal on purpose:
# masking a phrase that was not an address costs little, leaking one is personal data in a channel.
_SPOKEN_EMAIL = re.compile(r"[\w'-]+(?:\s+dot\s+[\w'-]+)*\s+at\s+[\w-]+(?:\s+dot\s+[\w-]+)+", re.IGNORECASE)
# Seven or more digits in a run with phone punctuation, not a dollar amount: what phonenumbers' matcher
# skips (numbers that are not valid in any region, digits read out with odd spacing).
_DIGIT_RUN = re.compile(r"(?<![\w$])\+?\(?\d(?:[\s().-]{0,2}\d){6,}")


def mask_contacts(text: str, region: str = "US") -> str:
    """The text with every email address and phone number replaced by a placeholder."""
    text = _SPOKEN_EMAIL.sub(EMAIL_MASK, _EMAIL.sub(EMAIL_MASK, text))
    matches = phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.POSSIBLE)
    spans = [(match.start, match.end) for match in matches if not text[: match.start].endswith("$")]
    for start, end in reversed(spans):
        text = text[:start] + PHONE_MASK + text[end:]
    return _DIGIT_RUN.sub(PHONE_MASK, text)
