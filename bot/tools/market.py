"""research_market: figures for a city or ZIP from a pluggable provider; by default a lender's CSV export.

Every figure carries its source and as-of date. A market the data does not cover is reported as such:
the tool never estimates a number. The CSV's columns are documented in bot/data/MARKET_DATA.md.
"""

from __future__ import annotations

import asyncio
import csv
import logging
import math
import re
import threading
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bot.settings import Settings
from realtime.tools import Tool, ToolContext, ToolFailure

log = logging.getLogger(__name__)

SHIPPED_MARKET_CSV = Path(str(resources.files("bot").joinpath("data", "market_sample.csv")))

# Figure column -> (unit, what it means); ratios are decimals, 0.05 meaning 5%.
FIGURES: dict[str, tuple[str, str]] = {
    "median_price": ("USD", "median sale price of homes"),
    "median_rent": ("USD per month", "median monthly rent"),
    "rent_growth_yoy": ("ratio", "change in median rent over the past year"),
    "vacancy_rate": ("ratio", "rental vacancy rate"),
    "cap_rate": ("ratio", "typical cap rate of rental property"),
    "days_on_market": ("days", "median days on market for homes sold"),
}
# Plausible ranges; a value outside its range is a malformed row (e.g. 5 where 0.05 was meant).
FIGURE_RANGES: dict[str, tuple[float, float]] = {
    "median_price": (1, 100_000_000),
    "median_rent": (1, 1_000_000),
    "rent_growth_yoy": (-1, 1),
    "vacancy_rate": (0, 1),
    "cap_rate": (0, 1),
    "days_on_market": (0, 3650),
}
REQUIRED_COLUMNS = ("city", "state", "source", "as_of")

SAMPLE_NOTE = ("These are SAMPLE figures shipped with Cap for demonstration, not real market data: tell the "
               "caller they are illustrative only and not market advice.")
FOUND = ("Quote figures with their source and as-of date. They describe the market, not the caller's "
         "property, and are no substitute for an appraisal.")

STATES = {
    "AL": "alabama", "AK": "alaska", "AZ": "arizona", "AR": "arkansas", "CA": "california", "CO": "colorado",
    "CT": "connecticut", "DE": "delaware", "DC": "district of columbia", "FL": "florida", "GA": "georgia",
    "HI": "hawaii", "ID": "idaho", "IL": "illinois", "IN": "indiana", "IA": "iowa", "KS": "kansas",
    "KY": "kentucky", "LA": "louisiana", "ME": "maine", "MD": "maryland", "MA": "massachusetts",
    "MI": "michigan", "MN": "minnesota", "MS": "mississippi", "MO": "missouri", "MT": "montana",
    "NE": "nebraska", "NV": "nevada", "NH": "new hampshire", "NJ": "new jersey", "NM": "new mexico",
    "NY": "new york", "NC": "north carolina", "ND": "north dakota", "OH": "ohio", "OK": "oklahoma",
    "OR": "oregon", "PA": "pennsylvania", "RI": "rhode island", "SC": "south carolina", "SD": "south dakota",
    "TN": "tennessee", "TX": "texas", "UT": "utah", "VT": "vermont", "VA": "virginia", "WA": "washington",
    "WV": "west virginia", "WI": "wisconsin", "WY": "wyoming", "PR": "puerto rico",
}
_STATE_CODES = {name: code for code, name in STATES.items()} | {code.lower(): code for code in STATES}
_CITY_PREFIXES = {"st": "saint", "ste": "sainte", "ft": "fort", "mt": "mount"}
_COUNTRY = re.compile(r"[,\s]+(usa|us|united states(?: of america)?)$")
_ZIP = re.compile(r"\b(\d{5})(?:-\d{4})?\b")


class MarketDataError(Exception):
    """The market data cannot be read at all (missing file, missing columns), as opposed to an unknown market."""


class AmbiguousMarket(Exception):
    """The name fits several markets (e.g. "Portland"), or its ZIP and city disagree; `candidates` are labels."""

    def __init__(self, candidates: list[str], reason: str | None = None) -> None:
        super().__init__(", ".join(candidates))
        self.candidates = candidates
        self.reason = reason


@dataclass(frozen=True)
class Figure:
    value: float
    source: str
    as_of: date


@dataclass(frozen=True)
class MarketFigures:
    """One market's figures; `zip` is None for a city-level row."""

    market: str
    city: str
    state: str
    zip: str | None
    figures: Mapping[str, Figure] = field(default_factory=dict)

    @property
    def is_sample(self) -> bool:
        return any("sample" in figure.source.lower() for figure in self.figures.values())


class MarketDataProvider(Protocol):
    """Where research_market's figures come from. `lookup` blocks (it runs in a worker thread), returns
    None for a market it has no data for, and may raise AmbiguousMarket or MarketDataError."""

    def lookup(self, market: str) -> MarketFigures | None: ...


@dataclass(frozen=True)
class MarketQuery:
    """What the caller named: a normalised city key, a two-letter state code and a ZIP, each if given."""

    city: str | None
    state: str | None
    zip: str | None


def parse_market(text: str) -> MarketQuery:
    """Read "Austin, TX", "austin texas", "Austin, Texas, USA", "78704" or "Austin, TX 78704-1234"."""
    zip_match = _ZIP.search(text)
    rest = _COUNTRY.sub("", _fold(_ZIP.sub(" ", text)).replace(".", "").strip(" ,"))
    parts = [part.strip() for part in rest.split(",") if part.strip()]
    city, state = (parts[0], parts[1]) if len(parts) >= 2 else (parts[0] if parts else "", "")
    if not state:
        words = city.split()
        for n in (3, 2, 1):  # "Columbia South Carolina" before "... Carolina"; the city keeps a word
            if len(words) > n and (code := state_code(" ".join(words[-n:]))):
                city, state = " ".join(words[:-n]), code
                break
    return MarketQuery(city_key(city) or None, (state_code(state) or state.upper()) if state else None,
                       zip_match[1] if zip_match else None)


def state_code(text: str) -> str | None:
    """The two-letter code for "TX", "tx" or "Texas"; None when it is not a US state (or DC, PR)."""
    return _STATE_CODES.get(" ".join(_fold(text).replace(".", "").split()))


def city_key(text: str) -> str:
    """A city name folded for matching: "St. Louis" and "saint louis" give the same key."""
    words = re.sub(r"[.'’]", "", _fold(text)).replace("-", " ").split()
    if words and words[0] in _CITY_PREFIXES:
        words[0] = _CITY_PREFIXES[words[0]]
    return " ".join(words)


class CsvMarketProvider:
    """Market figures from a CSV file (columns in bot/data/MARKET_DATA.md), re-read when the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._table = _MarketTable()

    def lookup(self, market: str) -> MarketFigures | None:
        table = self._current_table()
        if hit := table.by_label.get(city_key(market)):
            return hit
        query = parse_market(market)
        if query.zip and (hit := table.by_zip.get(query.zip)):
            if (query.city and query.city != city_key(hit.city)) or (query.state and query.state != hit.state):
                # "Dallas, TX 78704" or "Austin, MN 78704": that ZIP is Austin, TX's
                named = [record.market for (city, state), record in table.by_city.items()
                         if city == query.city and query.state in (None, state)]
                raise AmbiguousMarket([hit.market, *named], reason=f"ZIP {query.zip} is in {hit.city}, {hit.state}")
            return hit
        if not query.city:
            return None
        if query.state:  # with a ZIP too ("Austin, TX 78799") the city's own row still answers
            return table.by_city.get((query.city, query.state))
        matches = [record for (city, _), record in table.by_city.items() if city == query.city]
        if len(matches) > 1:
            raise AmbiguousMarket(sorted(record.market for record in matches))
        return matches[0] if matches else None

    def markets(self) -> list[str]:
        """Labels of every market in the file."""
        table = self._current_table()
        return sorted(record.market for record in [*table.by_city.values(), *table.by_zip.values()])

    def _current_table(self) -> _MarketTable:
        try:
            stat = self.path.stat()
        except OSError as exc:
            raise MarketDataError(f"market data file not readable: {self.path} ({exc.strerror})") from None
        with self._lock:
            if (stat.st_mtime_ns, stat.st_size) != self._stamp:
                self._table = read_market_csv(self.path)
                self._stamp = (stat.st_mtime_ns, stat.st_size)
            return self._table


@dataclass
class _MarketTable:
    by_city: dict[tuple[str, str], MarketFigures] = field(default_factory=dict)
    by_zip: dict[str, MarketFigures] = field(default_factory=dict)
    by_label: dict[str, MarketFigures] = field(default_factory=dict)

    def add(self, record: MarketFigures) -> None:
        """Index a row; of two rows for the same market the one with the newer as-of date wins."""
        key: Any = record.zip or (city_key(record.city), record.state)
        index: dict[Any, MarketFigures] = self.by_zip if record.zip else self.by_city
        old = index.get(key)
        if old is None or _newest(record) >= _newest(old):
            index[key] = record
            self.by_label[city_key(record.market)] = record


def read_market_csv(path: Path) -> _MarketTable:
    """Parse the CSV; a malformed row is logged and skipped, a file without the required columns is an error."""
    table = _MarketTable()
    skipped = 0
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = [(name or "").strip().lower() for name in reader.fieldnames or []]
            missing = [name for name in REQUIRED_COLUMNS if name not in header]
            if missing:
                raise MarketDataError(f"{path.name}: missing column(s) {', '.join(missing)}")
            reader.fieldnames = header
            for row in reader:
                if (next(iter(row.values()), "") or "").lstrip().startswith("#"):
                    continue  # a comment line
                try:
                    table.add(_parse_row(row))
                except ValueError as exc:
                    skipped += 1
                    log.warning("%s line %d: %s; row skipped", path.name, reader.line_num, exc)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise MarketDataError(f"{path.name}: cannot read market data ({exc})") from None
    log.info("market data: %d markets from %s (%d malformed rows skipped)",
             len(table.by_city) + len(table.by_zip), path, skipped)
    return table


class MarketResearchArgs(BaseModel):
    model_config = ConfigDict(str_strip_whitespace=True, extra="forbid")

    market: str = Field(min_length=2, max_length=100, description=(
        'A US city with its state, like "Austin, TX", or a 5-digit ZIP code like "78704".'))

    @field_validator("market")
    @classmethod
    def _city_or_zip(cls, value: str) -> str:
        if not _ZIP.search(value) and not re.search(r"[^\W\d_]{2}", value):
            raise ValueError('give a city and state like "Austin, TX" or a 5-digit ZIP code')
        return value


def market_tool(settings: Settings, provider: MarketDataProvider | None = None) -> Tool:
    """The `research_market` tool; by default over MARKET_DATA_CSV (else the shipped sample CSV)."""
    source = provider or CsvMarketProvider(settings.market_data_csv or SHIPPED_MARKET_CSV)

    async def research_market(args: MarketResearchArgs, context: ToolContext) -> dict[str, Any]:
        try:
            record = await asyncio.to_thread(source.lookup, args.market)  # file reads stay off the loop
        except AmbiguousMarket as exc:
            why = f"{exc.reason}, not where {args.market!r} says" if exc.reason else \
                f"{args.market!r} matches several markets"
            return {"found": False, "market": args.market, "candidates": exc.candidates,
                    "message": f"{why} (candidates: {'; '.join(exc.candidates)}). "
                               "Ask the caller which one they mean, then look it up again."}
        except MarketDataError as exc:
            log.error("research_market: %s", exc)
            raise ToolFailure("market_data_unavailable", "Market data cannot be read right now; do not "
                              "estimate figures, offer a call with a loan officer instead.") from None
        if record is None:
            return {"found": False, "market": args.market,
                    "message": f"No data for {args.market}. Do not estimate or invent figures; tell the caller "
                               "we have no market data for it and offer a call with a loan officer."}
        result = market_result(record)
        asked_zip = parse_market(args.market).zip
        if asked_zip and record.zip != asked_zip:
            result["zip_note"] = f"No data for ZIP {asked_zip}; these are the figures for {record.market}."
        return result

    return Tool(
        name="research_market",
        description=(
            "Look up market figures for a US city or ZIP code: median sale price, median rent, rent growth "
            "over the past year, rental vacancy rate, typical cap rate and days on market, each with its "
            "source and as-of date. Ratios are decimals (0.05 means 5%). Quote only the figures returned, "
            "with their source and date; if the market is not found, say there is no data for it rather "
            "than estimating."
        ),
        arguments=MarketResearchArgs,
        handler=research_market,
    )


def market_result(record: MarketFigures) -> dict[str, Any]:
    """What the model hears for a market that was found."""
    figures = {
        name: {"value": _plain(figure.value), "unit": FIGURES[name][0], "meaning": FIGURES[name][1],
               "source": figure.source, "as_of": figure.as_of.isoformat()}
        for name, figure in record.figures.items()
    }
    result: dict[str, Any] = {
        "found": True, "market": record.market, "level": "zip" if record.zip else "city", "city": record.city,
        "state": record.state, "zip": record.zip, "figures": figures,
        "missing": [name for name in FIGURES if name not in record.figures], "sample_data": record.is_sample,
        "message": FOUND,
    }
    if record.is_sample:
        result["note"] = SAMPLE_NOTE
    return result


# --- parsing helpers -------------------------------------------------------------------------------------


def _parse_row(row: dict[str | None, Any]) -> MarketFigures:
    if None in row:
        raise ValueError("more cells than columns")
    if any(row.get(name) is None for name in REQUIRED_COLUMNS):
        raise ValueError("fewer cells than columns")
    cell = {str(key): (value or "").strip() for key, value in row.items()}
    city, source = cell["city"], cell["source"]
    if not city:
        raise ValueError("city is empty")
    state = state_code(cell["state"])
    if state is None:
        raise ValueError(f"state {cell['state']!r} is not a US state")
    if not source:
        raise ValueError("source is empty")
    zip_code = _zip(cell.get("zip", ""))
    as_of = _date(cell["as_of"], "as_of")
    figures = {}
    for name in FIGURES:
        if cell.get(name):
            figures[name] = Figure(_number(name, cell[name]), cell.get(f"{name}_source") or source,
                                   _date(cell[f"{name}_as_of"], f"{name}_as_of") if cell.get(f"{name}_as_of")
                                   else as_of)
    if not figures:
        raise ValueError("no figures")
    label = cell.get("market") or (f"{zip_code} ({city}, {state})" if zip_code else f"{city}, {state}")
    return MarketFigures(label, city, state, zip_code, figures)


def _number(name: str, raw: str) -> float:
    text = raw.replace("$", "").replace(",", "").replace(" ", "")
    percent = text.endswith("%")
    try:
        value = float(text.rstrip("%")) / (100 if percent else 1)
    except ValueError:
        raise ValueError(f"{name} {raw!r} is not a number") from None
    low, high = FIGURE_RANGES[name]
    if not math.isfinite(value) or not low <= value <= high:
        unit = FIGURES[name][0]
        hint = " (ratios are decimals: 0.05 for 5%)" if unit == "ratio" else ""
        raise ValueError(f"{name} {raw!r} is outside {low:g} to {high:g}{hint}")
    return value


def _zip(raw: str) -> str | None:
    if not raw:
        return None
    digits = raw.split("-")[0]
    if not digits.isdigit() or not 3 <= len(digits) <= 5:
        raise ValueError(f"zip {raw!r} is not a 5-digit ZIP code")
    return digits.zfill(5)  # spreadsheets drop the leading zeros of New England ZIPs


def _date(raw: str, name: str) -> date:
    try:
        return date.fromisoformat(raw if len(raw) != 7 else f"{raw}-01")  # "2026-06" means June 2026
    except ValueError:
        raise ValueError(f"{name} {raw!r} is not a date like 2026-06-30") from None


def _newest(record: MarketFigures) -> date:
    return max(figure.as_of for figure in record.figures.values())


def _plain(value: float) -> float | int:
    return int(value) if value.is_integer() else round(value, 6)


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))
