"""Knowledge-search quality on bench/knowledge_questions.toml: top-3 hit rate and out-of-scope refusals.

Run as `.venv/bin/python bench/bench_knowledge.py [-v]` (a second; -v lists every miss). The questions were
written before the search was tuned (issue 11); tests/bot/tools/test_knowledge_questions.py holds the score
to the goal (90 % and no answer to an out-of-scope question). knowledge_questions_holdout.toml was written
after tuning and not tuned on. The reference beside each figure is the same BM25 in the same run with the
borrower understanding (trade table, spoken numbers, consumer-finance refusals) switched off.
"""

from __future__ import annotations

import sys
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bot.tools import knowledge
from bot.tools.knowledge import SHIPPED_KNOWLEDGE_DIR, KnowledgeBase

QUESTIONS_FILE = Path(__file__).with_name("knowledge_questions.toml")
HOLDOUT_FILE = Path(__file__).with_name("knowledge_questions_holdout.toml")
TOP = 3


@dataclass(frozen=True)
class Outcome:
    question: str
    expect: tuple[str, ...]
    got: tuple[str, ...]  # "file#section" of the top passages

    @property
    def in_scope(self) -> bool:
        return bool(self.expect)

    @property
    def passed(self) -> bool:
        if not self.in_scope:
            return not self.got
        return any(got.startswith(expect) for got in self.got[:TOP] for expect in self.expect)


def run(knowledge_base: KnowledgeBase | None = None, questions_file: Path = QUESTIONS_FILE) -> list[Outcome]:
    knowledge_base = knowledge_base or KnowledgeBase(SHIPPED_KNOWLEDGE_DIR)
    questions = tomllib.loads(questions_file.read_text(encoding="utf-8"))["question"]
    outcomes = []
    for item in questions:
        hits = knowledge_base.search(item["q"], limit=TOP)
        got = tuple(f"{hit.passage.source}#{hit.passage.section}" for hit in hits)
        outcomes.append(Outcome(item["q"], tuple(item["expect"]), got))
    return outcomes


def summary(outcomes: list[Outcome]) -> tuple[float, int, int]:
    """(top-3 hit rate of in-scope questions, out-of-scope questions refused, out-of-scope questions)."""
    in_scope = [o for o in outcomes if o.in_scope]
    out_of_scope = [o for o in outcomes if not o.in_scope]
    rate = sum(o.passed for o in in_scope) / len(in_scope)
    return rate, sum(o.passed for o in out_of_scope), len(out_of_scope)


@contextmanager
def plain_bm25() -> Iterator[None]:
    """The reference: the search without its borrower understanding (as before issue 11, bar stopwords)."""
    saved = knowledge.expand, knowledge.out_of_scope, knowledge.NUMBER_WORDS
    knowledge.expand = lambda text: text
    knowledge.out_of_scope = lambda text: False
    knowledge.NUMBER_WORDS = frozenset()
    try:
        yield
    finally:
        knowledge.expand, knowledge.out_of_scope, knowledge.NUMBER_WORDS = saved


def main() -> None:
    for questions_file in (QUESTIONS_FILE, HOLDOUT_FILE):
        outcomes = run(questions_file=questions_file)
        with plain_bm25():
            reference = summary(run(questions_file=questions_file))
        rate, refused, total = summary(outcomes)
        in_scope = sum(o.in_scope for o in outcomes)
        print(f"{questions_file.name}: top-{TOP} hit rate {rate:.1%} of {in_scope} borrower questions "
              f"(reference {reference[0]:.1%}; goal 90 %); out-of-scope refused {refused} of {total} "
              f"(reference {reference[1]} of {reference[2]}; goal: all)")
        if "-v" in sys.argv:
            for outcome in outcomes:
                if not outcome.passed:
                    print(f"  MISS {outcome.question!r}\n    expected {outcome.expect}\n    got      {outcome.got}")


if __name__ == "__main__":
    main()
