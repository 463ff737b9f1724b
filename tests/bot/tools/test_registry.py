from __future__ import annotations

from bot.storage.database import Database
from bot.tools import TOOL_NAMES, build_registry
from bot.tools.context import CONSOLE_GUILD_ID, CONSOLE_USER_ID, console_context
from tests.bot.tools.helpers import test_settings


def test_exactly_the_six_tools_in_order() -> None:
    registry = build_registry(test_settings(), Database("sqlite://"))
    assert (
        tuple(registry.tools)
        == TOOL_NAMES
        == (
            "analyze_deal",
            "search_knowledge_base",
            "research_market",
            "save_lead",
            "score_lead",
            "schedule_call",
        )
    )
    assert registry.timeout_seconds == 10.0


def test_timeout_comes_from_settings() -> None:
    assert (
        build_registry(test_settings(tool_timeout_seconds=3.5), Database("sqlite://")).timeout_seconds == 3.5
    )


def test_specs_are_what_the_model_needs() -> None:
    specs = {spec["name"]: spec for spec in build_registry(test_settings(), Database("sqlite://")).specs()}
    for spec in specs.values():
        assert spec["type"] == "function" and len(spec["description"]) > 80
        assert spec["parameters"]["type"] == "object"
    assert specs["save_lead"]["parameters"]["required"] == ["full_name"]  # at most name + one contact
    # No rate: the model must not invent one, and the deal is judged at the lender's (review 1, finding 2).
    assert set(specs["analyze_deal"]["parameters"]["required"]) == {"purchase_price", "loan_amount"}
    assert "required" not in specs["score_lead"]["parameters"]
    assert "required" not in specs["schedule_call"]["parameters"]
    assert specs["analyze_deal"]["parameters"]["properties"]["program"]["anyOf"][0]["enum"] == [
        "dscr_rental",
        "fix_and_flip",
        "bridge",
        "ground_up_construction",
        "portfolio",
    ]


def test_console_context() -> None:
    context = console_context(conversation_id=4)
    assert (context.guild_id, context.user_id, context.conversation_id) == (
        CONSOLE_GUILD_ID,
        CONSOLE_USER_ID,
        4,
    )
