"""Settings pinned for tests (no .env, no surprises from the environment) and a registry over a database."""

from __future__ import annotations

from typing import Any

from bot.settings import Settings, load_settings


def test_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "business_timezone": "America/New_York",
        "business_hours_start": 9,
        "business_hours_end": 17,
        "business_days": "mon,tue,wed,thu,fri",
        "call_duration_minutes": 30,
        "phone_default_region": "US",
        "leads_role_id": None,
        "tool_timeout_seconds": 10.0,
    }
    values.update(overrides)
    return load_settings(_env_file=None, **values)


test_settings.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test
