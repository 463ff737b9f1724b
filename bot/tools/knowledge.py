"""search_knowledge_base: ranked passages from the lender's Markdown knowledge base.

Passages (a section's paragraphs, with the document title and heading path) are indexed in an
in-memory SQLite FTS5 table and ranked with BM25; where SQLite lacks FTS5 the same BM25 runs in
Python. The folder is re-indexed when a file is added, removed or changed.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import sqlite3
import threading
import time
import unicodedata
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from bot.settings import Settings
from bot.tools.trade_words import NUMBER_WORDS, expand, out_of_scope
from realtime.tools import Tool, ToolContext, ToolFailure

log = logging.getLogger(__name__)

SHIPPED_KNOWLEDGE_DIR = Path(str(resources.files("bot").joinpath("data", "knowledge")))
MARKDOWN_SUFFIXES = (".md", ".markdown")
# A passage is at most this long (split at paragraphs, then lines) so a result stays short enough to speak.
MAX_PASSAGE_CHARS = 900
# bm25() column weights: a hit in the section heading counts most, then the document title, then the body.
WEIGHT_TITLE, WEIGHT_SECTION, WEIGHT_BODY = 2.0, 4.0, 1.0
# FTS5's bm25 constants, reused by the Python fallback so both rank alike.
BM25_K1, BM25_B = 1.2, 0.75
# Below this BM25 score a hit matched only words found in about half the passages or more (IDF ~0).
MIN_SCORE = 0.3
# Share of the query's weight (IDF) that must be words the knowledge base contains at all; below it the
# question is about something the KB does not cover ("SBA loans", "capital of France"): "nothing found".
MIN_KNOWN_SHARE = 0.5
MAX_QUERY_TERMS = 16
SECTION_SEPARATOR = " › "

# Function words and conversational filler; they carry no meaning for ranking (FTS5 has no stopwords).
_STOPWORD_TEXT = (
    "a about above after again all also am an and any are as at be because been before being below between "
    "both but by can could did didn do does doesn doing don down during each either else ever few for from "
    "further get gets getting give go going got had has have having he hello her here hey hi him his how i "
    "if in into is isn it its itself just know let like ll me might more most much must my no nor not now "
    "of off ok okay on once only or other our ours out over own please re really s same say she should so "
    "some such t tell than thank thanks that the their them then there these they this those through to "
    "too um uh under until up us ve very want was we were what when where which while who whom why will "
    "with won would yeah yes you your yours"
    # Spoken filler: a caller's "you guys", "right now", "kind of" says nothing about the topic.
    " guys gonna wanna kinda sorta kind sort right currently actually basically maybe thing things stuff"
    " wants wanted wondering curious looking question questions mean means whats ago"
    # A lender's every page is about lending: "what can you lend" must not pick the "Do you lend..." headings.
    " lend lends lending borrow"
)
STOPWORDS = frozenset(_STOPWORD_TEXT.split())

NOTHING_FOUND = ("Nothing in the knowledge base matches this question. Do not guess or fill in figures: tell "
                 "the caller you don't have that information and offer a call with a loan officer.")
FOUND = "Answer only from these passages; name the program or document when it helps the caller."

_WORD = re.compile(r"[^\W_]+")
_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")
_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")


class KnowledgeBaseError(Exception):
    """The knowledge base folder cannot be read at all (as opposed to a search that finds nothing)."""


@dataclass(frozen=True)
class Passage:
    """One searchable piece of a document: its file (relative), document title, heading path and text."""

    source: str
    title: str
    section: str
    text: str


@dataclass(frozen=True)
class SearchHit:
    passage: Passage
    score: float  # BM25, higher is better


def query_terms(query: str) -> list[str]:
    """The query's content words, lower-cased and de-duplicated: plain tokens, never FTS5 syntax. Borrower
    phrasing is rewritten to the documents' words first (trade_words: "refi" -> refinance)."""
    words = _WORD.findall(expand(_fold(query)))
    terms = [w for w in words if w not in STOPWORDS and (len(w) > 1 or w.isdigit())]
    return list(dict.fromkeys(terms))[:MAX_QUERY_TERMS]


def split_markdown(text: str, default_title: str) -> tuple[str, list[tuple[str, str]]]:
    """A document's title (its first H1) and its (section heading path, passage text) pairs, in order."""
    title: str | None = None
    headings: list[str | None] = [None] * 6
    blocks: list[tuple[tuple[str | None, ...], str]] = []
    lines: list[str] = []
    in_fence = False

    def end_paragraph() -> None:
        if any(line.strip() for line in lines):
            blocks.append((tuple(headings), _LINK.sub(r"\1", "\n".join(lines).strip())))
        lines.clear()

    for line in text.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence and (heading := _HEADING.match(line)):
            end_paragraph()
            level, name = len(heading[1]), _inline(heading[2])
            if level == 1 and title is None:
                title = name
            headings[level - 1:] = [name] + [None] * (6 - level)
            continue
        elif not in_fence and not line.strip():
            end_paragraph()
            continue
        lines.append(line.rstrip())
    end_paragraph()

    title = title or default_title
    sections: dict[str, list[str]] = {}
    for path, paragraph in blocks:
        names = [name for level, name in enumerate(path) if name and not (level == 0 and name == title)]
        sections.setdefault(SECTION_SEPARATOR.join(names) or "Overview", []).append(paragraph)
    return title, [(section, chunk) for section, texts in sections.items() for chunk in _chunks(texts)]


def load_passages(folder: Path) -> tuple[list[Passage], int]:
    """Every passage of every Markdown file under `folder`, and how many files were read."""
    passages: list[Passage] = []
    files = 0
    for path in _markdown_files(folder):
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            log.warning("knowledge base: cannot read %s (%s); skipped", path, exc)
            continue
        files += 1
        default_title = path.stem.replace("-", " ").replace("_", " ").strip().capitalize()
        title, pieces = split_markdown(text, default_title)
        source = path.relative_to(folder).as_posix()
        passages.extend(Passage(source, title, section, body) for section, body in pieces)
    return passages, files


class KnowledgeBase:
    """The Markdown files under `folder`, searchable with BM25; re-indexed when any file changes."""

    def __init__(self, folder: Path, *, min_score: float = MIN_SCORE, use_fts5: bool | None = None) -> None:
        self.folder = Path(folder)
        self.min_score = min_score
        self._use_fts5 = use_fts5
        self._lock = threading.Lock()  # searches run in worker threads; one builds, the others wait
        self._signature: tuple[tuple[str, int, int], ...] | None = None
        self._index: _Index | None = None

    def search(self, query: str, limit: int = 4) -> list[SearchHit]:
        """The best `limit` passages for `query` scoring at least `min_score`, best first (blocking)."""
        if out_of_scope(_fold(query)):
            return []
        terms = query_terms(query)
        with self._lock:
            index = self._current_index()
            # A number the documents never mention ("my FICO is 640") says nothing about which passage
            # answers; left in, its high weight would make the coverage gate call the question unknown.
            terms = [t for t in terms
                     if not (t.isdigit() or t in NUMBER_WORDS) or index.document_frequency(t) > 0]
            if not terms:
                return []
            hits = index.search(terms, limit)
            if hits and _known_share(index, terms) < MIN_KNOWN_SHARE:
                log.debug("knowledge base: most of %r is not in the knowledge base", query)
                return []
        return [hit for hit in hits if hit.score >= self.min_score]

    def refresh(self) -> int:
        """Index now if anything changed (blocking); returns the number of passages."""
        with self._lock:
            return len(self._current_index().passages)

    def _current_index(self) -> _Index:
        signature = self._files_signature()
        if self._index is None or signature != self._signature:
            started = time.perf_counter()
            passages, files = load_passages(self.folder)
            fts5 = fts5_available() if self._use_fts5 is None else self._use_fts5
            self._index = _Fts5Index(passages) if fts5 else _PythonIndex(passages)
            self._signature = signature
            if not passages:
                log.warning("knowledge base %s has no Markdown passages; every search will find nothing",
                            self.folder)
            log.info("knowledge base indexed: %d passages from %d files in %.1f ms (%s)", len(passages),
                     files, (time.perf_counter() - started) * 1000, "FTS5" if fts5 else "Python BM25")
        return self._index

    def _files_signature(self) -> tuple[tuple[str, int, int], ...]:
        """Names, mtimes and sizes of the Markdown files: cheap enough to check on every search."""
        if not self.folder.is_dir():
            raise KnowledgeBaseError(f"knowledge base folder not found: {self.folder}")
        entries = []
        for path in _markdown_files(self.folder):
            try:
                stat = path.stat()
            except OSError:
                continue
            entries.append((path.as_posix(), stat.st_mtime_ns, stat.st_size))
        return tuple(entries)


class KnowledgeSearchArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=500, description=(
        "The caller's question or its keywords, e.g. 'minimum credit score fix and flip'."))
    max_results: int = Field(4, ge=1, le=8, description="How many passages to return, 1 to 8.")


def knowledge_tool(settings: Settings) -> Tool:
    """The `search_knowledge_base` tool over KNOWLEDGE_BASE_DIR (default: the shipped starter KB)."""
    knowledge_base = KnowledgeBase(settings.knowledge_base_dir or SHIPPED_KNOWLEDGE_DIR)

    async def search_knowledge_base(args: KnowledgeSearchArgs, context: ToolContext) -> dict[str, Any]:
        if not query_terms(args.query):
            return {"query": args.query, "results": [],
                    "message": "The query has no searchable words; search again with keywords such as "
                               "'fix and flip credit score'."}
        try:
            # Off the event loop: the voice engine ticks every 20 ms there, and a re-index reads files.
            hits = await asyncio.to_thread(knowledge_base.search, args.query, args.max_results)
        except KnowledgeBaseError as exc:
            log.error("%s", exc)
            raise ToolFailure("knowledge_base_unavailable", "The knowledge base cannot be read right now; "
                              "don't guess, offer a call with a loan officer.") from None
        results = [{"title": hit.passage.title, "section": hit.passage.section, "text": hit.passage.text,
                    "source": hit.passage.source, "score": round(hit.score, 2)} for hit in hits]
        return {"query": args.query, "results": results, "message": FOUND if results else NOTHING_FOUND}

    return Tool(
        name="search_knowledge_base",
        description=(
            "Search Capital Bridge Solutions' knowledge base: loan programs (DSCR rental, fix-and-flip, "
            "bridge, ground-up construction, portfolio) with their leverage, rates, points, terms and credit "
            "minimums; "
            "eligibility and required documents; the loan process and how long each step takes; fees, draws "
            "and extensions; and an FAQ. Returns the most relevant passages, best first, each with its "
            "document title and section. Use it before answering any question about the lender's programs "
            "or policies and answer only from what it returns; when it finds nothing, say so instead of "
            "guessing."
        ),
        arguments=KnowledgeSearchArgs,
        handler=search_knowledge_base,
    )


# --- indexes -------------------------------------------------------------------------------------------


class _Index(Protocol):
    passages: Sequence[Passage]

    def search(self, terms: list[str], limit: int) -> list[SearchHit]: ...

    def document_frequency(self, term: str) -> int: ...


def _idf(total: int, df: int) -> float:
    """BM25's inverse document frequency, floored as FTS5 floors it (a word in most passages weighs ~0)."""
    idf = math.log((total - df + 0.5) / (df + 0.5))
    return idf if idf > 0 else 1e-6


def _known_share(index: _Index, terms: list[str]) -> float:
    """How much of the query's IDF weight falls on words that occur somewhere in the knowledge base."""
    total = len(index.passages)
    weights = [(_idf(total, df), df > 0) for df in map(index.document_frequency, terms)]
    whole = sum(weight for weight, _ in weights)
    return sum(weight for weight, known in weights if known) / whole if whole else 1.0


class _Fts5Index:
    """Passages in an in-memory FTS5 table (Porter stemming), ranked by bm25() with column weights."""

    def __init__(self, passages: Sequence[Passage]) -> None:
        self.passages = passages
        self._db = sqlite3.connect(":memory:", check_same_thread=False)  # used under KnowledgeBase's lock
        self._db.execute("CREATE VIRTUAL TABLE passages USING fts5(title, section, body, "
                         "tokenize='porter unicode61 remove_diacritics 2')")
        self._db.executemany("INSERT INTO passages (rowid, title, section, body) VALUES (?, ?, ?, ?)",
                             ((i, p.title, p.section, p.text) for i, p in enumerate(passages)))

    def search(self, terms: list[str], limit: int) -> list[SearchHit]:
        # Every term is a quoted string, so no user text is ever parsed as FTS5 syntax (AND, NEAR, *, ^, ...).
        match = " OR ".join('"{}"'.format(term.replace('"', '""')) for term in terms)
        try:
            rows = self._db.execute(
                "SELECT rowid, bm25(passages, ?, ?, ?) AS rank FROM passages WHERE passages MATCH ? "
                "ORDER BY rank LIMIT ?", (WEIGHT_TITLE, WEIGHT_SECTION, WEIGHT_BODY, match, limit)).fetchall()
        except sqlite3.Error:
            log.exception("knowledge base search failed for %r", match)
            return []
        return [SearchHit(self.passages[rowid], -rank) for rowid, rank in rows]

    def document_frequency(self, term: str) -> int:
        try:
            row = self._db.execute("SELECT count(*) FROM passages WHERE passages MATCH ?",
                                   ('"{}"'.format(term.replace('"', '""')),)).fetchone()
        except sqlite3.Error:
            return 0
        return int(row[0])


class _PythonIndex:
    """The fallback when SQLite lacks FTS5: the same BM25 formula as FTS5's bm25(), with a light stemmer."""

    def __init__(self, passages: Sequence[Passage]) -> None:
        self.passages = passages
        self._fields = [(_stems(p.title), _stems(p.section), _stems(p.text)) for p in passages]
        self._lengths = [sum(sum(field.values()) for field in fields) for fields in self._fields]
        self._average = sum(self._lengths) / len(self._lengths) if self._lengths else 0.0
        self._df = Counter(stem for fields in self._fields for stem in set().union(*fields))

    def search(self, terms: list[str], limit: int) -> list[SearchHit]:
        stems = list(dict.fromkeys(_stem(term) for term in terms))
        total = len(self.passages)
        hits = []
        for i, (title, section, body) in enumerate(self._fields):
            score = 0.0
            for stem in stems:
                freq = WEIGHT_TITLE * title[stem] + WEIGHT_SECTION * section[stem] + WEIGHT_BODY * body[stem]
                if freq:
                    norm = BM25_K1 * (1 - BM25_B + BM25_B * self._lengths[i] / self._average)
                    score += _idf(total, self._df[stem]) * freq * (BM25_K1 + 1) / (freq + norm)
            if score:
                hits.append(SearchHit(self.passages[i], score))
        return sorted(hits, key=lambda hit: -hit.score)[:limit]

    def document_frequency(self, term: str) -> int:
        return self._df[_stem(term)]


_fts5: bool | None = None


def fts5_available() -> bool:
    """Whether this Python's SQLite has FTS5 (checked once; a clear warning when it has not)."""
    global _fts5
    if _fts5 is None:
        try:
            with sqlite3.connect(":memory:") as db:
                db.execute("CREATE VIRTUAL TABLE probe USING fts5(body, tokenize='porter unicode61')")
            _fts5 = True
        except sqlite3.OperationalError as exc:
            log.warning("SQLite %s has no FTS5 (%s); search_knowledge_base uses its Python BM25 fallback",
                        sqlite3.sqlite_version, exc)
            _fts5 = False
    return _fts5


# --- text helpers ----------------------------------------------------------------------------------------


def _markdown_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in MARKDOWN_SUFFIXES and p.is_file())


def _fold(text: str) -> str:
    """Lower-case without diacritics, as the index's unicode61 tokenizer sees text."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def _inline(text: str) -> str:
    return _LINK.sub(r"\1", text).replace("**", "").replace("`", "").strip()


def _chunks(paragraphs: list[str]) -> Iterator[str]:
    """Paragraphs joined into passages of at most MAX_PASSAGE_CHARS (a longer paragraph is cut at lines)."""
    pieces: list[str] = []
    for paragraph in paragraphs:
        pieces.extend(_cut(paragraph) if len(paragraph) > MAX_PASSAGE_CHARS else [paragraph])
    current: list[str] = []
    size = 0
    for piece in pieces:
        if current and size + len(piece) + 2 > MAX_PASSAGE_CHARS:
            yield "\n\n".join(current)
            current, size = [], 0
        current.append(piece)
        size += len(piece) + 2
    if current:
        yield "\n\n".join(current)


def _cut(paragraph: str) -> list[str]:
    pieces: list[str] = []
    for line in paragraph.splitlines():
        if pieces and len(pieces[-1]) + len(line) + 1 <= MAX_PASSAGE_CHARS:
            pieces[-1] += "\n" + line
        else:
            pieces.append(line)
    return pieces


def _stems(text: str) -> Counter[str]:
    return Counter(_stem(word) for word in _WORD.findall(_fold(text)))


def _stem(word: str) -> str:
    """A few English suffixes off (plurals, -ing, -ed, final e): enough for the fallback, not Porter."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not word.endswith("ss"):
            word = word[: -len(suffix)]
            if suffix in ("ing", "ed") and word[-1] == word[-2] and word[-1] not in "lsz":
                word = word[:-1]  # flipping -> flip
            break
    return word[:-1] if len(word) > 3 and word.endswith("e") else word
