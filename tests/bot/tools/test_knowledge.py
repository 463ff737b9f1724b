"""search_knowledge_base: ranking on real caller questions, FTS5-safe queries, re-indexing, the tool wrapper."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from bot.settings import Settings
from bot.tools import knowledge
from bot.tools.knowledge import (
    SHIPPED_KNOWLEDGE_DIR,
    KnowledgeBase,
    KnowledgeBaseError,
    fts5_available,
    knowledge_tool,
    query_terms,
    split_markdown,
)
from realtime.tools import Tool, ToolContext, ToolRegistry

CONTEXT = ToolContext(guild_id=1, user_id=2)
BACKENDS = ["fts5", "python"]


@pytest.fixture(scope="module", params=BACKENDS)
def shipped(request: pytest.FixtureRequest) -> KnowledgeBase:
    """The shipped starter knowledge base, on SQLite FTS5 and on the pure-Python fallback."""
    if request.param == "fts5" and not fts5_available():
        pytest.skip("this SQLite has no FTS5")
    return KnowledgeBase(SHIPPED_KNOWLEDGE_DIR, use_fts5=request.param == "fts5")


def settings_for(folder: Path) -> Settings:
    return Settings(_env_file=None, knowledge_base_dir=folder)  # type: ignore[call-arg]


def write(path: Path, text: str) -> None:
    """Write a file and move its mtime on, so a change is seen even within one timestamp tick."""
    path.write_text(text, encoding="utf-8")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


# --- ranking on the shipped knowledge base ------------------------------------------------------------


def test_shipped_knowledge_base_has_the_promised_documents() -> None:
    files = sorted(path.name for path in SHIPPED_KNOWLEDGE_DIR.glob("*.md"))
    assert 5 <= len(files) <= 8
    assert {"loan-programs.md", "faq.md", "process-and-timelines.md", "requirements-and-documents.md"} <= set(files)
    faq = (SHIPPED_KNOWLEDGE_DIR / "faq.md").read_text(encoding="utf-8")
    assert faq.count("\n### ") >= 20


def test_credit_score_for_fix_and_flip_ranks_the_fix_and_flip_section_first(shipped: KnowledgeBase) -> None:
    hits = shipped.search("what's the minimum credit score for a fix and flip loan", 4)
    assert hits[0].passage.section.startswith("Fix-and-Flip Loans")
    assert hits[0].passage.title == "Loan Programs"
    assert "660" in hits[0].passage.text


def test_how_long_closing_takes(shipped: KnowledgeBase) -> None:
    top = shipped.search("how long does closing take", 4)[0].passage
    assert "how long does closing take" in top.section.lower() or "time to close" in top.section.lower()
    assert "10–15 business days" in top.text


def test_what_documents_do_i_need(shipped: KnowledgeBase) -> None:
    hits = shipped.search("what documents do I need", 4)
    assert "documents" in hits[0].passage.section.lower()
    assert any(hit.passage.title == "Requirements and Documents" for hit in hits)


def test_short_term_rentals_and_airbnb(shipped: KnowledgeBase) -> None:
    hits = shipped.search("do you lend on short-term rentals / Airbnb", 4)
    assert all("Airbnb" in hit.passage.text or "Airbnb" in hit.passage.section for hit in hits[:2])
    assert "1.25" in hits[0].passage.text


@pytest.mark.parametrize("query", ["purple elephant banana quantum", "what's the capital of France",
                                   "do you offer SBA loans", "loan", "what is it"])
def test_unrelated_or_empty_questions_find_nothing(shipped: KnowledgeBase, query: str) -> None:
    assert shipped.search(query, 4) == []


@pytest.mark.parametrize("query", ['"AND* (', "NEAR(flip credit, 2)", "fix OR", "^flip", "credit:score",
                                   '"', "***", "a AND NOT b", "{title body}: -x +y", "'; DROP TABLE passages; --",
                                   "flip\x00credit", "ß∂ƒ©˙∆ rental ☃"])
def test_fts5_syntax_in_user_text_never_crashes(shipped: KnowledgeBase, query: str) -> None:
    assert isinstance(shipped.search(query, 8), list)


def test_results_respect_the_limit_and_come_best_first(shipped: KnowledgeBase) -> None:
    hits = shipped.search("prepayment penalty on DSCR rental loans", 3)
    assert len(hits) == 3
    assert [hit.score for hit in hits] == sorted((hit.score for hit in hits), reverse=True)


def test_query_terms_are_plain_words_without_stopwords() -> None:
    # Trade phrases are rewritten and appended (trade_words), so the order is not the caller's.
    assert sorted(query_terms('What\'s the MINIMUM "credit" score (for) a fix-and-flip* loan?')) == sorted([
        "minimum", "credit", "score", "fix", "flip", "loan"])
    assert query_terms("what is it") == []
    assert query_terms("Café 1031") == ["cafe", "1031"]


# --- parsing Markdown ----------------------------------------------------------------------------------


def test_split_markdown_keeps_title_and_heading_path() -> None:
    text = ("# Guide\n\nIntro line.\n\n## Loans\n\n### Rates\n\nRates text.\n\n```\n# not a heading\n```\n\n"
            "## Fees\n\nSee [the table](http://example.com).\n")
    title, pieces = split_markdown(text, "fallback")
    assert title == "Guide"
    assert pieces == [("Overview", "Intro line."), ("Loans › Rates", "Rates text.\n\n```\n# not a heading\n```"),
                      ("Fees", "See the table.")]


def test_split_markdown_without_h1_uses_the_file_name_and_cuts_long_sections() -> None:
    long_paragraph = "\n".join(f"Line {i} " + "word " * 20 for i in range(40))
    title, pieces = split_markdown(f"## Big\n\n{long_paragraph}\n", "Fallback title")
    assert title == "Fallback title"
    assert len(pieces) > 1
    assert all(section == "Big" and len(text) <= knowledge.MAX_PASSAGE_CHARS for section, text in pieces)


# --- re-indexing -------------------------------------------------------------------------------------------

FRUIT = """# Fruit Notes

## Apples

Apples grow in orchards and keep for months in cold storage.

## Bananas

Bananas ripen after picking and bruise easily.

## Cherries

Cherries have a short season in early summer.

## Plums

Plums dry into prunes.
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_editing_adding_and_removing_files_reindexes(tmp_path: Path, backend: str) -> None:
    kb = KnowledgeBase(tmp_path, use_fts5=backend == "fts5")
    write(tmp_path / "fruit.md", FRUIT)
    assert kb.search("orchards", 4)[0].passage.section == "Apples"
    assert kb.search("zebras", 4) == []

    write(tmp_path / "fruit.md", FRUIT.replace("in orchards", "beside zebras"))
    assert kb.search("orchards", 4) == []
    assert kb.search("zebras", 4)[0].passage.section == "Apples"

    (tmp_path / "more").mkdir()
    write(tmp_path / "more" / "veg.md", "# Vegetables\n\n## Leeks\n\nLeeks like deep soil.\n")
    top = kb.search("leeks soil", 4)[0].passage
    assert (top.source, top.title, top.section) == ("more/veg.md", "Vegetables", "Leeks")

    (tmp_path / "more" / "veg.md").unlink()
    assert kb.search("leeks", 4) == []


def test_without_fts5_the_python_fallback_is_used_and_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    class NoFts5Connection(sqlite3.Connection):
        def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
            if "fts5" in sql:
                raise sqlite3.OperationalError("no such module: fts5")
            return super().execute(sql, *args)

    real_connect = sqlite3.connect
    monkeypatch.setattr(knowledge.sqlite3, "connect",
                        lambda *args, **kwargs: real_connect(*args, factory=NoFts5Connection, **kwargs))
    monkeypatch.setattr(knowledge, "_fts5", None)
    write(tmp_path / "fruit.md", FRUIT)
    with caplog.at_level(logging.INFO, logger="bot.tools.knowledge"):
        assert KnowledgeBase(tmp_path).search("orchards", 4)[0].passage.section == "Apples"
    assert "has no FTS5" in caplog.text
    assert "(Python BM25)" in caplog.text


def test_an_empty_folder_finds_nothing_and_a_missing_one_is_an_error(tmp_path: Path) -> None:
    assert KnowledgeBase(tmp_path).search("anything at all", 4) == []
    with pytest.raises(KnowledgeBaseError):
        KnowledgeBase(tmp_path / "gone").search("anything", 4)


# --- the tool ----------------------------------------------------------------------------------------------


async def test_tool_returns_ranked_passages_with_their_sources() -> None:
    registry = ToolRegistry.of([knowledge_tool(Settings(_env_file=None))])  # type: ignore[call-arg]
    result = await registry.call("search_knowledge_base",
                                 '{"query": "fix and flip minimum credit score", "max_results": 2}', CONTEXT)
    assert result["ok"] is True
    assert len(result["results"]) == 2
    first = result["results"][0]
    assert set(first) == {"title", "section", "text", "source", "score"}
    assert first["source"] == "loan-programs.md"
    assert first["section"].startswith("Fix-and-Flip Loans")


async def test_tool_says_nothing_found_instead_of_guessing(tmp_path: Path) -> None:
    write(tmp_path / "fruit.md", FRUIT)
    registry = ToolRegistry.of([knowledge_tool(settings_for(tmp_path))])
    for query in ("quantum chromodynamics", "the and of"):
        result = await registry.call("search_knowledge_base", {"query": query}, CONTEXT)
        assert result["ok"] is True
        assert result["results"] == []
        assert "guess" in result["message"] or "no searchable words" in result["message"]


@pytest.mark.parametrize("arguments", [{}, {"query": ""}, {"query": "rates", "max_results": 0},
                                       {"query": "rates", "max_results": 9}, {"query": 42}])
async def test_tool_rejects_bad_arguments_with_a_structured_error(arguments: dict[str, object]) -> None:
    registry = ToolRegistry.of([knowledge_tool(Settings(_env_file=None))])  # type: ignore[call-arg]
    result = await registry.call("search_knowledge_base", arguments, CONTEXT)
    assert result["ok"] is False
    assert result["error"]["code"] == "invalid_arguments"


@pytest.fixture
def tool_whose_folder_was_removed(tmp_path: Path) -> Tool:
    tool = knowledge_tool(settings_for(tmp_path))
    tmp_path.rmdir()
    return tool


async def test_tool_reports_an_unreadable_knowledge_base(tool_whose_folder_was_removed: Tool) -> None:
    registry = ToolRegistry.of([tool_whose_folder_was_removed])
    result = await registry.call("search_knowledge_base", {"query": "rates"}, CONTEXT)
    assert result["ok"] is False
    assert result["error"]["code"] == "knowledge_base_unavailable"


async def test_tool_searches_off_the_event_loop(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    threads: list[threading.Thread] = []

    class RecordingKnowledgeBase(KnowledgeBase):
        def search(self, query: str, limit: int = 4) -> list[knowledge.SearchHit]:
            threads.append(threading.current_thread())
            return super().search(query, limit)

    monkeypatch.setattr(knowledge, "KnowledgeBase", RecordingKnowledgeBase)
    write(tmp_path / "fruit.md", FRUIT)
    await ToolRegistry.of([knowledge_tool(settings_for(tmp_path))]).call(
        "search_knowledge_base", {"query": "cherries"}, CONTEXT)
    assert threads and threads[0] is not threading.main_thread()
