"""Cap's six function tools and the registry the voice engine (and `cap-bot tools`) runs them through."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from functools import partial

from bot.settings import Settings
from bot.storage.database import Database
from realtime.tools import Tool, ToolRegistry

log = logging.getLogger(__name__)

TOOL_NAMES = (
    "analyze_deal",
    "search_knowledge_base",
    "research_market",
    "save_lead",
    "score_lead",
    "schedule_call",
)

# Tools built elsewhere that need only the settings: tool name -> (module, factory name).
_SETTINGS_ONLY_TOOLS = {
    "search_knowledge_base": ("bot.tools.knowledge", "knowledge_tool"),
    "research_market": ("bot.tools.market", "market_tool"),
}


def _optional_tool(module_name: str, factory_name: str, settings: Settings) -> Tool | None:
    """A settings-only tool, or None (logged) when this copy does not have it."""
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        log.warning("%s is missing; its tool is not offered", module_name)
        return None
    factory: Callable[[Settings], Tool] = getattr(module, factory_name)
    return factory(settings)


def build_registry(settings: Settings, database: Database) -> ToolRegistry:
    """The six tools in TOOL_NAMES order; `database` must be open before the first tool call."""
    from bot.tools.deals import analyze_deal_tool
    from bot.tools.leads import save_lead_tool, score_lead_tool
    from bot.tools.scheduling import schedule_call_tool

    factories: dict[str, Callable[[], Tool | None]] = {
        "analyze_deal": lambda: analyze_deal_tool(settings, database),
        "save_lead": lambda: save_lead_tool(settings, database),
        "score_lead": lambda: score_lead_tool(settings, database),
        "schedule_call": lambda: schedule_call_tool(settings, database),
    }
    for name, (module, factory) in _SETTINGS_ONLY_TOOLS.items():
        factories[name] = partial(_optional_tool, module, factory, settings)
    tools = [factories[name]() for name in TOOL_NAMES]
    return ToolRegistry.of(
        (tool for tool in tools if tool is not None), timeout_seconds=settings.tool_timeout_seconds
    )
