"""research_market: lookups in the shipped sample, a lender's own CSV (malformed rows, changes), the tool."""

from __future__ import annotations

import logging
import os
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from bot.settings import Settings
from bot.tools.market import (
    FIGURES,
    SHIPPED_MARKET_CSV,
    AmbiguousMarket,
    CsvMarketProvider,
    Figure,
    MarketDataError,
    MarketFigures,
    MarketQuery,
    market_tool,
    parse_market,
)
from realtime.tools import ToolContext, ToolRegistry

CONTEXT = ToolContext(guild_id=1, user_id=2)
HEADER = ("market,city,state,zip,median_price,median_rent,rent_growth_yoy,vacancy_rate,cap_rate,days_on_market,"
          "source,as_of\n")


def write(path: Path, text: str) -> Path:
    """Write a file and move its mtime on, so a change is seen even within one timestamp tick."""
    path.write_text(text, encoding="utf-8")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    return path


def registry_for(csv_path: Path | None = None) -> ToolRegistry:
    settings = Settings(_env_file=None, market_data_csv=csv_path)  # type: ignore[call-arg]
    return ToolRegistry.of([market_tool(settings)])


@pytest.fixture(scope="module")
def sample() -> CsvMarketProvider:
    return CsvMarketProvider(SHIPPED_MARKET_CSV)


# --- the shipped sample ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["Austin, TX", "austin tx", "Austin, Texas", "AUSTIN, TX, USA", " Austin TX "])
def test_a_known_city_under_its_usual_spellings(sample: CsvMarketProvider, name: str) -> None:
    record = sample.lookup(name)
    assert record is not None
    assert (record.market, record.state, record.zip) == ("Austin, TX", "TX", None)
    assert set(record.figures) == set(FIGURES)


@pytest.mark.parametrize(("name", "market"), [("78704", "78704 (Austin, TX)"), ("78704-1234", "78704 (Austin, TX)"),
                                              ("Cleveland OH 44102", "44102 (Cleveland, OH)"),
                                              ("St. Louis, MO", "Saint Louis, MO"), ("st louis", "Saint Louis, MO"),
                                              ("Kansas City", "Kansas City, MO"), ("Portland Maine", "Portland, ME")])
def test_zips_and_normalised_names(sample: CsvMarketProvider, name: str, market: str) -> None:
    record = sample.lookup(name)
    assert record is not None and record.market == market


@pytest.mark.parametrize("name", ["Boise, ID", "99999", "Texas", "Springfield, ZZ", "Atlantis"])
def test_unknown_markets_have_no_data(sample: CsvMarketProvider, name: str) -> None:
    assert sample.lookup(name) is None


def test_a_city_in_several_states_is_ambiguous(sample: CsvMarketProvider) -> None:
    with pytest.raises(AmbiguousMarket) as caught:
        sample.lookup("Portland")
    assert caught.value.candidates == ["Portland, ME", "Portland, OR"]


def test_a_zip_of_another_city_than_the_one_named_is_asked_about(sample: CsvMarketProvider) -> None:
    with pytest.raises(AmbiguousMarket) as caught:
        sample.lookup("Dallas, TX 78704")  # 78704 is in Austin: which did the caller mean?
    assert caught.value.candidates == ["78704 (Austin, TX)", "Dallas, TX"]
    with pytest.raises(AmbiguousMarket) as caught:
        sample.lookup("Austin, MN 78704")
    assert caught.value.reason == "ZIP 78704 is in Austin, TX"
    assert sample.lookup("Austin, TX 78704").market == "78704 (Austin, TX)"  # consistent: the ZIP answers


def test_every_sample_row_is_labelled_sample_and_dated(sample: CsvMarketProvider) -> None:
    markets = sample.markets()
    assert len(markets) >= 20
    for name in markets:
        record = sample.lookup(name)
        assert record is not None and record.is_sample
        assert all("not market advice" in figure.source for figure in record.figures.values())


def test_parse_market() -> None:
    assert parse_market("Columbia South Carolina") == MarketQuery("columbia", "SC", None)
    assert parse_market("Charleston, West Virginia 25301") == MarketQuery("charleston", "WV", "25301")
    assert parse_market("Washington DC") == MarketQuery("washington", "DC", None)
    assert parse_market("New York") == MarketQuery("new york", None, None)
    assert parse_market("Ft. Myers, fl") == MarketQuery("fort myers", "FL", None)
    assert parse_market("02134") == MarketQuery(None, None, "02134")


# --- a lender's own CSV ------------------------------------------------------------------------------------

CUSTOM = HEADER + """\
# a comment line is ignored
"Boise, ID",Boise,Idaho,,"$455,000",1650,3.1%,0.052,0.061,33,Acme MLS export,2026-05
Reno,Reno,NV,,510000,,0.02,0.06,,29,Acme MLS export,2026-05-31
Bad vacancy,Omaha,NE,,250000,1400,0.02,8.9,0.07,30,Acme MLS export,2026-05-31
Bad number,Tulsa,OK,,abc,1200,0.02,0.07,0.07,30,Acme MLS export,2026-05-31
Bad state,Springfield,ZZ,,200000,1200,0.02,0.07,0.07,30,Acme MLS export,2026-05-31
Bad date,Wichita,KS,,200000,1200,0.02,0.07,0.07,30,Acme MLS export,last spring
No source,Fargo,ND,,200000,1200,0.02,0.07,0.07,30,,2026-05-31
Too many,Tucson,AZ,,200000,1200,0.02,0.07,0.07,30,Acme MLS export,2026-05-31,extra
Too few,Mesa,AZ,,200000
,,NM,,200000,1200,0.02,0.07,0.07,30,Acme MLS export,2026-05-31
Boston 02134,Boston,MA,2134,810000,3100,0.03,0.035,0.045,21,Acme MLS export,2026-05-31
"""


def test_malformed_rows_are_skipped_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    provider = CsvMarketProvider(write(tmp_path / "markets.csv", CUSTOM))
    with caplog.at_level(logging.WARNING, logger="bot.tools.market"):
        assert sorted(provider.markets()) == ["Boise, ID", "Boston 02134", "Reno"]
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 8
    assert any("line 5" in text and "vacancy_rate '8.9'" in text and "decimals" in text for text in warnings)
    assert any("line 6" in text and "median_price 'abc' is not a number" in text for text in warnings)
    assert all("row skipped" in text for text in warnings)


def test_custom_values_are_normalised_and_gaps_stay_gaps(tmp_path: Path) -> None:
    provider = CsvMarketProvider(write(tmp_path / "markets.csv", CUSTOM))
    boise = provider.lookup("Boise, Idaho")
    assert boise is not None
    assert boise.figures["median_price"].value == 455_000
    assert boise.figures["rent_growth_yoy"].value == pytest.approx(0.031)
    assert boise.figures["median_rent"].as_of.isoformat() == "2026-05-01"
    assert not boise.is_sample
    reno = provider.lookup("Reno NV")
    assert reno is not None and set(FIGURES) - set(reno.figures) == {"median_rent", "cap_rate"}
    boston = provider.lookup("02134")
    assert boston is not None and boston.zip == "02134"


def test_per_figure_source_and_date_override_the_row(tmp_path: Path) -> None:
    csv_text = ("city,state,median_price,median_rent,median_rent_source,median_rent_as_of,source,as_of\n"
                "Tampa,FL,430000,2150,Rent survey Q2,2026-06-15,County sales records,2026-05-31\n")
    record = CsvMarketProvider(write(tmp_path / "m.csv", csv_text)).lookup("Tampa, FL")
    assert record is not None
    assert record.figures["median_price"] == Figure(430000, "County sales records",
                                                    record.figures["median_price"].as_of)
    assert record.figures["median_rent"].source == "Rent survey Q2"
    assert record.figures["median_rent"].as_of.isoformat() == "2026-06-15"


def test_the_newer_of_two_rows_for_a_market_wins(tmp_path: Path) -> None:
    csv_text = HEADER + ("\"Tampa, FL\",Tampa,FL,,400000,2000,0.01,0.07,0.06,40,Old export,2026-06-30\n"
                         "\"Tampa, FL\",Tampa,FL,,390000,1950,0.01,0.07,0.06,40,Older export,2025-06-30\n")
    record = CsvMarketProvider(write(tmp_path / "m.csv", csv_text)).lookup("Tampa")
    assert record is not None and record.figures["median_price"].source == "Old export"


def test_the_csv_is_reread_when_it_changes(tmp_path: Path) -> None:
    path = write(tmp_path / "m.csv", HEADER + "\"Tampa, FL\",Tampa,FL,,400000,,,,,,Export A,2026-06-30\n")
    provider = CsvMarketProvider(path)
    assert provider.lookup("Tampa, FL").figures["median_price"].value == 400000  # type: ignore[union-attr]
    write(path, HEADER + "\"Tampa, FL\",Tampa,FL,,425000,,,,,,Export B,2026-07-31\n"
                         "\"Orlando, FL\",Orlando,FL,,395000,,,,,,Export B,2026-07-31\n")
    assert provider.lookup("Tampa, FL").figures["median_price"].value == 425000  # type: ignore[union-attr]
    assert provider.lookup("Orlando") is not None


@pytest.mark.parametrize("text", ["city,state,median_price\nTampa,FL,1\n", ""])
def test_a_file_without_the_required_columns_is_an_error(tmp_path: Path, text: str) -> None:
    with pytest.raises(MarketDataError, match="missing column"):
        CsvMarketProvider(write(tmp_path / "m.csv", text)).lookup("Tampa")


# --- the tool ----------------------------------------------------------------------------------------------


async def test_tool_returns_each_figure_with_source_and_date_and_flags_sample_data() -> None:
    result = await registry_for().call("research_market", '{"market": "Austin, Texas"}', CONTEXT)
    assert result["ok"] is True and result["found"] is True
    assert (result["market"], result["level"], result["missing"]) == ("Austin, TX", "city", [])
    rent = result["figures"]["median_rent"]
    assert rent == {"value": 1950, "unit": "USD per month", "meaning": "median monthly rent",
                    "source": "Sample data — not market advice (Capital Bridge Solutions demo)",
                    "as_of": "2026-06-30"}
    assert result["sample_data"] is True
    assert "SAMPLE" in result["note"]


async def test_tool_zip_lookup_and_city_fallback_for_an_unknown_zip() -> None:
    registry = registry_for()
    by_zip = await registry.call("research_market", {"market": "78704"}, CONTEXT)
    assert (by_zip["found"], by_zip["level"], by_zip["zip"]) == (True, "zip", "78704")
    fallback = await registry.call("research_market", {"market": "Austin, TX 78799"}, CONTEXT)
    assert (fallback["found"], fallback["level"]) == (True, "city")
    assert "No data for ZIP 78799" in fallback["zip_note"]


@pytest.mark.parametrize("market", ["Boise, ID", "99999"])
async def test_tool_unknown_market_says_no_data_and_gives_no_numbers(market: str) -> None:
    result = await registry_for().call("research_market", {"market": market}, CONTEXT)
    assert result["ok"] is True and result["found"] is False
    assert result["message"].startswith(f"No data for {market}")
    assert "figures" not in result


async def test_tool_asks_which_market_when_ambiguous() -> None:
    result = await registry_for().call("research_market", {"market": "portland"}, CONTEXT)
    assert result["found"] is False
    assert result["candidates"] == ["Portland, ME", "Portland, OR"]


@pytest.mark.parametrize("arguments", [{}, {"market": ""}, {"market": "1"}, {"market": "123"}, {"market": 78704},
                                       {"market": "x" * 101}, "{not json", "[1]"])
async def test_tool_bad_arguments_are_structured_errors(arguments: Any) -> None:
    result = await registry_for().call("research_market", arguments, CONTEXT)
    assert result["ok"] is False
    assert result["error"]["code"] in {"invalid_arguments", "invalid_json"}
    assert result["error"]["message"]


@pytest.fixture
def csv_then_removed(tmp_path: Path) -> ToolRegistry:
    path = write(tmp_path / "m.csv", CUSTOM)
    registry = registry_for(path)
    path.unlink()
    return registry


async def test_tool_reports_unreadable_market_data(csv_then_removed: ToolRegistry) -> None:
    result = await csv_then_removed.call("research_market", {"market": "Boise, ID"}, CONTEXT)
    assert result["ok"] is False
    assert result["error"]["code"] == "market_data_unavailable"


async def test_tool_uses_a_plugged_in_provider() -> None:
    class OneMarket:
        def lookup(self, market: str) -> MarketFigures | None:
            if market != "Testville, TX":
                return None
            return MarketFigures("Testville, TX", "Testville", "TX", None,
                                 {"cap_rate": Figure(0.061, "Lender API", date(2026, 7, 1))})

    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    registry = ToolRegistry.of([market_tool(settings, provider=OneMarket())])
    result = await registry.call("research_market", {"market": "Testville, TX"}, CONTEXT)
    assert result["figures"] == {"cap_rate": {"value": 0.061, "unit": "ratio",
                                              "meaning": "typical cap rate of rental property",
                                              "source": "Lender API", "as_of": "2026-07-01"}}
    assert result["sample_data"] is False and "note" not in result
    assert sorted(result["missing"]) == sorted(set(FIGURES) - {"cap_rate"})


async def test_tool_explains_a_zip_that_is_not_where_the_caller_said() -> None:
    result = await registry_for().call("research_market", {"market": "Springfield, IL 78704"}, CONTEXT)
    assert result["found"] is False and result["candidates"] == ["78704 (Austin, TX)"]
    assert result["message"].startswith("ZIP 78704 is in Austin, TX, not where 'Springfield, IL 78704' says")
