"""Function tools the model may call, and the registry that runs them safely.

A tool declares its arguments as a pydantic model: the same model gives the JSON schema the model
sees and validates what the model sends. Whatever goes wrong (bad JSON, invalid arguments, an
exception, a timeout) comes back as a structured error the model can act on; nothing raises out
of `ToolRegistry.call`, so the session never dies from a tool.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

log = logging.getLogger(__name__)

# When the running tool call must stop changing things (time.monotonic()), a little before the model is told it
# timed out. A context variable, so the tool's worker threads see it too (asyncio.to_thread copies the context):
# storage checks it before committing, and "timed out" then means "not done", not "may still land later".
_DEADLINE: ContextVar[float | None] = ContextVar("tool_deadline", default=None)
COMMIT_MARGIN_SECONDS = 0.5  # at most; a quarter of the timeout when that is shorter


def tool_time_left() -> float | None:
    """Seconds the current tool call may still change things (<= 0: too late); None outside a tool call."""
    deadline = _DEADLINE.get()
    return None if deadline is None else deadline - time.monotonic()


@dataclass(frozen=True)
class ToolContext:
    """Who a tool call is for: the guild (tenant), channel, caller and conversation, when known."""

    guild_id: int
    channel_id: int | None = None
    user_id: int | None = None
    user_name: str | None = None
    conversation_id: int | None = None


ToolHandler = Callable[[Any, ToolContext], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class Tool:
    """One function tool: its name, a description written for the model, its argument model and handler."""

    name: str
    description: str
    arguments: type[BaseModel]
    handler: ToolHandler

    @property
    def parameters(self) -> dict[str, Any]:
        """The JSON schema of the arguments, as the Realtime API expects it."""
        schema = self.arguments.model_json_schema()
        schema.pop("title", None)
        schema.setdefault("properties", {})
        return schema

    def spec(self) -> dict[str, Any]:
        return {"type": "function", "name": self.name, "description": self.description,
                "parameters": self.parameters}


def tool_error(code: str, message: str, **details: Any) -> dict[str, Any]:
    """The one shape of every tool failure the model sees."""
    error: dict[str, Any] = {"code": code, "message": message}
    if details:
        error["details"] = details
    return {"ok": False, "error": error}


class ToolFailure(Exception):
    """Raised by a handler for an expected failure the model should hear about (not a bug)."""

    def __init__(self, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details


@dataclass
class ToolRegistry:
    """The tools offered to the model, and the one place that runs them."""

    tools: dict[str, Tool] = field(default_factory=dict)
    timeout_seconds: float = 10.0

    @classmethod
    def of(cls, tools: Iterable[Tool], timeout_seconds: float = 10.0) -> ToolRegistry:
        registry = cls(timeout_seconds=timeout_seconds)
        for tool in tools:
            registry.register(tool)
        return registry

    def register(self, tool: Tool) -> None:
        if tool.name in self.tools:
            raise ValueError(f"duplicate tool name: {tool.name}")
        self.tools[tool.name] = tool

    def specs(self) -> list[dict[str, Any]]:
        """The `tools` list for `session.update`."""
        return [tool.spec() for tool in self.tools.values()]

    async def call(self, name: str, arguments: str | dict[str, Any], context: ToolContext) -> dict[str, Any]:
        """Run one tool call; always returns a JSON-serialisable dict, never raises (except cancellation)."""
        tool = self.tools.get(name)
        if tool is None:
            return tool_error("unknown_tool", f"There is no tool named {name!r}.", available=sorted(self.tools))
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError as exc:
                return tool_error("invalid_json", f"Arguments are not valid JSON: {exc.msg}.")
        if not isinstance(arguments, dict):
            return tool_error("invalid_arguments", "Arguments must be a JSON object.")
        try:
            parsed = tool.arguments.model_validate(arguments)
        except ValidationError as exc:
            problems = [
                {"field": ".".join(str(part) for part in err["loc"]) or "(arguments)", "problem": err["msg"]}
                for err in exc.errors()
            ]
            return tool_error("invalid_arguments", "Some arguments are missing or invalid.", problems=problems)
        margin = min(COMMIT_MARGIN_SECONDS, self.timeout_seconds / 4)
        token = _DEADLINE.set(time.monotonic() + self.timeout_seconds - margin)
        try:
            result = await asyncio.wait_for(tool.handler(parsed, context), self.timeout_seconds)
        except asyncio.CancelledError:
            raise
        except ToolFailure as exc:
            return tool_error(exc.code, exc.message, **exc.details)
        except TimeoutError:
            log.warning("tool %s timed out after %.1f s", name, self.timeout_seconds)
            return tool_error("timeout", f"The {name} tool did not answer in time and changed nothing; "
                                         "try again or go on without it.")
        except Exception:
            log.exception("tool %s failed", name)
            return tool_error("tool_failed", f"The {name} tool failed unexpectedly; tell the caller and go on.")
        finally:
            _DEADLINE.reset(token)
        if not isinstance(result, dict):
            result = {"result": result}
        result.setdefault("ok", True)
        return result
