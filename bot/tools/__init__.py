"""Cap's six function tools and the registry the voice engine (and `cap-bot tools`) runs them through."""

from __future__ import annotations

from bot.settings import Settings
from bot.storage.database import Database
from bot.tools.deals import analyze_deal_tool
from bot.tools.knowledge import knowledge_tool
from bot.tools.leads import save_lead_tool, score_lead_tool
from bot.tools.market import market_tool
from bot.tools.scheduling import schedule_call_tool
from realtime.tools import ToolRegistry

TOOL_NAMES = (
    "analyze_deal",
    "search_knowledge_base",
    "research_market",
    "save_lead",
    "score_lead",
    "schedule_call",
)


def build_registry(settings: Settings, database: Database) -> ToolRegistry:
    """The six tools in TOOL_NAMES order; `database` must be open before the first tool call."""
    tools = (
        analyze_deal_tool(settings, database),
        knowledge_tool(settings),
        market_tool(settings),
        save_lead_tool(settings, database),
        score_lead_tool(settings, database),
        schedule_call_tool(settings, database),
    )
    return ToolRegistry.of(tools, timeout_seconds=settings.tool_timeout_seconds)
