"""How borrowers say things vs. how the lender's documents write them: a synonym table for the search.

Each entry is a regular expression over the folded (lower-case, no accents) question and the words the
documents use for it. The match is replaced, so slang the documents never use ("refi", "STR") does not
count as an unknown word against the question.
"""

from __future__ import annotations

import re

_TABLE: tuple[tuple[str, str], ...] = (
    (r"\bhard money\b", "bridge fix flip short-term loans"),
    (r"\bprivate money\b", "bridge fix flip short-term loans"),
    (r"\bcash[- ]?out refis?\b|\bcash[- ]?out refinanc\w*", "cash-out refinance"),
    (r"\brefis?\b|\brefinanc\w*", "refinance"),
    (r"\bfix (?:and|n|&) flips?\b|\bfix[- ]and[- ]flips?\b|\bflips?\b|\bflipping\b", "fix-and-flip"),
    (r"\brehabs?\b|\breno(?:vation)?s?\b", "rehab renovation"),
    (r"\bground[- ]up\b|\bnew construction\b|\bnew build\b|\bbuild(?:ing)? (?:a |an )?new\b",
     "ground-up construction"),
    (r"\bconstruction loans?\b", "ground-up construction"),
    (r"\bstrs?\b|\bshort[- ]term rentals?\b|\bvacation rentals?\b|\bair ?bnb\b|\bvrbo\b",
     "short-term rentals airbnb vrbo"),
    (r"\blong[- ]term rentals?\b|\brentals?\b|\bbuy and hold\b", "dscr rental"),
    (r"\bfico\b|\bmy credit\b", "credit score"),
    (r"\bduplex\w*|\btriplex\w*|\bfourplex\w*|\bfour ?plex\w*|\bquadplex\w*|\b[234][- ]units?\b",
     "2–4 unit properties"),
    (r"\bmulti ?family\b|\bapartments?\b", "multifamily units"),
    (r"\bllcs?\b|\bcorporations?\b|\bentity\b|\bmy own name\b", "llc entity"),
    (r"\bprepay\w*|\bpay (?:it )?off early\b", "prepayment penalty"),
    (r"\bminimum loan\b|\bsmallest loan\b|\bmax(?:imum)? loan\b|\blargest loan\b|\bbiggest loan\b"
     r"|\bloan (?:amount|size)s?\b|\bmost you(?:'ll| will)? lend\b", "smallest largest loan amounts"),
    (r"\bnot a (?:us )?citizen\b|\bnon[- ]?(?:us )?citizen\b|\bforeign\w*", "foreign nationals"),
    (r"\b(?:house|home) i live in\b|\bprimary (?:home|residence)\b|\bowner[- ]occupied\b|\blive in\b",
     "home live owner-occupied"),
    (r"\bpulling my credit\b|\bcredit pull\b|\bhard pull\b|\bsoft pull\b", "credit pull affect score"),
    (r"\bgift\w*", "gift money"),
    (r"\bbring to closing\b|\bcash to close\b|\bdown payment\b", "cash need down payment"),
    (r"\bhaven'?t drawn\b|\bundrawn\b|\bnot drawn\b", "interest drawn non-dutch"),
    (r"\bdraws?\b|\bpaid out\b", "draws"),
    (r"\bportfolio\b|\bblanket\b|\bunder one loan\b", "portfolio blanket"),
    (r"\bltv\b", "ltv"),
    (r"\bpercent\b|\bhow much can i borrow\b", "leverage"),
    (r"\brates?\b|\bcharging\b", "rates"),
    (r"\bpay late\b|\blate payments?\b", "late payments"),
    (r"\bapprov\w*", "approval"),
    (r"\bphone number\b|\bcall you\b|\bloan officer\b", "talking phone loan officers"),
)
_COMPILED = tuple((re.compile(pattern), words) for pattern, words in _TABLE)

# Consumer finance a business-purpose lender does not do: a question about these gets "nothing found",
# even though its words ("credit", "refinance", "loan") are all over the documents. "Business loan" is not
# here: a business-purpose lender's loans are business loans.
_OUT_OF_SCOPE = re.compile(
    r"\bcredit cards?\b|\b(?:car|auto|student|personal|payday|boat|rv)[- ]loans?\b|\bsba\b"
    r"|\b(?:checking|savings)(?: or \w+)? accounts?\b|\bcredit card debt\b|\bcrypto\w*|\bbitcoin\b"
)
# The lender's own trade: a question naming one of these is about it, even when it mentions consumer debt
# ("a cash-out refi to pay off my credit cards"). Words consumer lenders use too ("refinance", "rate") are not.
_TRADE_TERMS = re.compile(
    r"\breal estate\b|\binvest\w*|\bpropert(?:y|ies)\b|\brentals?\b|\bcash[- ]?out\b|\bdscr\b|\bflip\w*"
    r"|\brehab\w*|\bbridge\b|\bground[- ]up\b|\bconstruction\b|\bhard money\b|\bprivate money\b|\bduplex\w*"
    r"|\bfourplex\w*|\bmulti ?family\b|\bltv\b|\barv\b|\bair ?bnb\b|\bbusiness[- ]purpose\b"
)
# Spoken numbers say as little about which passage answers as digits do (see KnowledgeBase.search).
_NUMBER_TEXT = (
    "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred thousand "
    "million couple few several"
)
NUMBER_WORDS = frozenset(_NUMBER_TEXT.split())


def out_of_scope(folded_question: str) -> bool:
    """Whether the question is about consumer finance the lender does not offer, and nothing in it about the
    lender's trade."""
    return bool(_OUT_OF_SCOPE.search(folded_question)) and not _TRADE_TERMS.search(folded_question)


def expand(folded_question: str) -> str:
    """The question with borrower phrasing replaced by the documents' words.

    One pass over the question as said: a phrase taken by one entry is blanked, so a later entry never
    rewrites the words an earlier one put in ("short-term rentals" does not become "dscr rental")."""
    text, added = folded_question, []
    for pattern, words in _COMPILED:
        if pattern.search(text):
            added.append(words)
            text = pattern.sub(" ", text)
    return " ".join([text, *added])
