"""Strict checks of Realtime GA events against the official `openai` SDK models.

The SDK models accept unknown fields silently (pydantic `extra="allow"`), so a stray beta field such as
`session.modalities` would pass a plain validation; the real service rejects it with `unknown_parameter`.
Here every validated model is walked and any non-empty `model_extra` is a violation.
"""

from __future__ import annotations

import typing
from collections.abc import Iterator
from typing import Annotated, Any, Union

import pydantic
from openai.types.realtime import (
    RealtimeClientEvent,
    RealtimeServerEvent,
    RealtimeSessionCreateResponse,
    RealtimeTranscriptionSessionCreateResponse,
)
from pydantic import Field, TypeAdapter

__all__ = ["SchemaViolation", "validate_client_event", "validate_server_event"]


def _event_adapter(union_alias: Any) -> TypeAdapter[Any]:
    """The SDK union marker (`PropertyInfo`) is invisible to pydantic: rebuild a discriminated union."""
    members = typing.get_args(typing.get_args(union_alias)[0])
    return TypeAdapter(Annotated[Union[members], Field(discriminator="type")])  # noqa: UP007


_CLIENT_EVENT = _event_adapter(RealtimeClientEvent)
_SERVER_EVENT = _event_adapter(RealtimeServerEvent)
# The SDK types `session.created/updated.session` as the *request* model, which lacks the `id`, `object`
# and `expires_at` fields the service documents and sends; the response model is the session as served.
_SERVER_SESSION: dict[str, TypeAdapter[Any]] = {
    "realtime": TypeAdapter(RealtimeSessionCreateResponse),
    "transcription": TypeAdapter(RealtimeTranscriptionSessionCreateResponse),
}
_SESSION_EVENTS = frozenset({"session.created", "session.updated"})


class SchemaViolation(ValueError):
    """An event the real service would reject; `code` and `param` mirror the service's `error` object."""

    def __init__(self, message: str, *, code: str = "invalid_value", param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param


def validate_client_event(event: dict[str, Any]) -> None:
    """Raise `SchemaViolation` unless `event` is a GA client event with no unknown field anywhere."""
    model = _validate(_CLIENT_EVENT, event)
    _reject_extras(model, "")


def validate_server_event(event: dict[str, Any]) -> None:
    """Raise `SchemaViolation` unless `event` is a GA server event with no unknown field anywhere."""
    model = _validate(_SERVER_EVENT, event)
    if event.get("type") not in _SESSION_EVENTS:
        _reject_extras(model, "")
        return
    _reject_extras(model, "", skip=frozenset({"session"}))
    session = event.get("session")
    adapter = _SERVER_SESSION.get(session.get("type") if isinstance(session, dict) else None)
    if adapter is None:
        raise SchemaViolation("session.type must be 'realtime' or 'transcription'.", param="session.type")
    _reject_extras(_validate(adapter, session, prefix="session"), "session")


def _validate(adapter: TypeAdapter[Any], data: Any, prefix: str = "") -> Any:
    if not isinstance(data, dict):
        raise SchemaViolation(f"Expected an object, got {type(data).__name__}.", code="invalid_type")
    try:
        return adapter.validate_python(data)
    except pydantic.ValidationError as exc:
        raise _violation_from(exc, prefix) from None


def _violation_from(exc: pydantic.ValidationError, prefix: str) -> SchemaViolation:
    """Summarise pydantic's errors (one per union member tried) as one service-style error."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    kind = first["type"]
    if kind == "union_tag_invalid":
        tag = first.get("ctx", {}).get("tag")
        return SchemaViolation(f"Invalid value: '{tag}'. Unknown event type.", param="type")
    if kind == "union_tag_not_found":
        return SchemaViolation(
            "The 'type' field is missing.", code="missing_required_parameter", param="type"
        )
    details = "; ".join(dict.fromkeys(f"{_loc(err['loc'], prefix)}: {err['msg']}" for err in errors[:8]))
    code = (
        "missing_required_parameter" if all(err["type"] == "missing" for err in errors) else "invalid_value"
    )
    return SchemaViolation(f"Invalid event: {details}", code=code, param=_loc(first["loc"], prefix))


def _loc(loc: tuple[Any, ...], prefix: str) -> str:
    """Render a pydantic location like the service does ("session.tools[0].name"), skipping union tags."""
    path = prefix
    for i, part in enumerate(loc):
        if isinstance(part, int):
            path += f"[{part}]"
        elif i == 0 and not prefix and "." in part:
            continue  # the discriminator tag, e.g. "session.update"
        elif part[:1].isupper() or part.startswith(("function-", "literal[", "str", "int", "list[", "dict[")):
            continue  # a union member name pydantic inserts into the path
        else:
            path = f"{path}.{part}" if path else part
    return path


def _reject_extras(value: Any, path: str, skip: frozenset[str] = frozenset()) -> None:
    where = next(_extras(value, path, skip), None)
    if where is not None:
        raise SchemaViolation(f"Unknown parameter: '{where}'.", code="unknown_parameter", param=where)


def _extras(value: Any, path: str, skip: frozenset[str] = frozenset()) -> Iterator[str]:
    """Yield the path of every field the models did not declare, depth first."""
    if isinstance(value, pydantic.BaseModel):
        for key in value.model_extra or {}:
            yield _join(path, key)
        for name, field in type(value).model_fields.items():
            wire = field.alias or name
            if wire not in skip:
                yield from _extras(getattr(value, name), _join(path, wire))
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _extras(item, f"{path}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _extras(item, _join(path, str(key)))


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
