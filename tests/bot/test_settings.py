"""Settings: the seed's defaults, one-line errors that name the setting, and a complete .env.example."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bot.session_factory import make_session_config
from bot.settings import Settings, SettingsError, load_settings
from realtime.persona import persona_for

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_defaults_are_the_seeds_behaviour_on_the_ga_api() -> None:
    settings = load_settings(openai_api_key="sk-test")
    config = make_session_config(settings)
    assert (config.vad_threshold, config.vad_prefix_padding_ms, config.vad_silence_duration_ms) == (0.5, 300, 500)
    assert config.voice == "alloy"
    assert config.endpoint == "wss://api.openai.com/v1/realtime?model=gpt-realtime-2.1"
    assert config.instructions == persona_for(settings.policy.lender)
    assert "You are Cap, an AI loan companion for Capital Bridge Solutions." in config.instructions
    assert settings.database_url.startswith("sqlite:///")


@pytest.mark.parametrize("name, value", [
    ("REALTIME_VOICE", "robot"),
    ("VAD_THRESHOLD", "loud"),
    ("VAD_SILENCE_DURATION_MS", "-5"),
    ("REALTIME_URL", "https://api.openai.com/v1/realtime"),
    ("REALTIME_URL", "ws://"),
    ("REALTIME_URL", "ws://127.0.0.1:99999/v1/realtime"),
    ("REALTIME_URL", "ws://[::1/v1/realtime"),
    ("INSTRUCTIONS_FILE", "/nonexistent/prompt.txt"),
    ("LENDER_POLICY_FILE", "/nonexistent/policy.toml"),
    ("SHARD_IDS", "[bad"),
    ("OPENAI_API_KEY", "sk-abc\x01def"),
])
def test_a_malformed_setting_is_one_line_naming_it(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert message.startswith(f"{name}: ") and "\n" not in message


def test_files_that_are_not_utf8_are_one_line(tmp_path: Path) -> None:
    prompt = tmp_path / "prompt.txt"
    prompt.write_bytes(b"You are Cap\xff\xfe")
    with pytest.raises(SettingsError, match=r"^INSTRUCTIONS_FILE: cannot be read as UTF-8 text"):
        load_settings(instructions_file=str(prompt))
    (tmp_path / ".env").write_bytes(b"OPENAI_API_KEY=sk-\xff\n")  # cwd is tmp_path
    with pytest.raises(SettingsError, match=r"^\.env: not UTF-8 text$"):
        load_settings()


def test_a_blank_optional_setting_means_its_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LENDER_POLICY_FILE", "")  # as .env.example writes optional settings
    monkeypatch.setenv("BUSINESS_DAYS", "")
    monkeypatch.setenv("DEV_GUILD_ID", "")
    settings = load_settings()
    assert settings.policy.programs["dscr_rental"].min_dscr == 1.0 and settings.dev_guild_id is None
    assert settings.business_weekdays == frozenset(range(5))  # the policy's Monday to Friday


def test_a_policy_file_that_is_not_toml_is_one_line(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text("lender = [unclosed\n", encoding="utf-8")
    with pytest.raises(SettingsError, match=r"^LENDER_POLICY_FILE: policy.toml is not valid TOML"):
        load_settings(lender_policy_file=str(policy))
    policy.write_text('lender = "X"\nsurprise = 1\n', encoding="utf-8")
    with pytest.raises(SettingsError) as info:
        load_settings(lender_policy_file=str(policy))
    assert "\n" not in str(info.value) and str(info.value).startswith("LENDER_POLICY_FILE: ")


def test_a_missing_key_is_named_only_when_needed() -> None:
    settings = load_settings()
    with pytest.raises(SettingsError, match=r"^OPENAI_API_KEY: missing"):
        settings.require_openai_key()
    with pytest.raises(SettingsError, match=r"^DISCORD_TOKEN: missing"):
        settings.require_discord_token()


def test_instructions_can_come_from_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("You are Cap, but brief.\n", encoding="utf-8")
    monkeypatch.setenv("INSTRUCTIONS_FILE", str(prompt))
    assert load_settings().instructions == "You are Cap, but brief."


def test_settings_read_dotenv_and_never_show_secrets(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("OPENAI_API_KEY=sk-from-dotenv\nREALTIME_MODEL=gpt-realtime-2.1-mini\n")
    settings = load_settings()
    assert settings.require_openai_key() == "sk-from-dotenv"
    assert settings.realtime_model == "gpt-realtime-2.1-mini"
    assert "sk-from-dotenv" not in repr(settings) + str(settings)
    assert "sk-from-dotenv" not in repr(make_session_config(settings))


def test_env_example_lists_every_setting() -> None:
    example = (REPO / ".env.example").read_text(encoding="utf-8")
    listed = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", example, flags=re.MULTILINE))
    missing = {name.upper() for name in Settings.model_fields} - listed
    assert not missing, f".env.example lacks {sorted(missing)}"


@pytest.mark.parametrize("value, expected", [("0", [0]), (" 2 ", [2]), ("0,1", [0, 1]), ("[2, 3]", [2, 3]), ("", None)])
def test_shard_ids_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str,
                                       expected) -> None:
    monkeypatch.chdir(tmp_path)  # no .env from the work tree
    monkeypatch.setenv("SHARD_IDS", value)
    assert load_settings().shard_ids == expected  # one shard per process is the usual scale-out


def test_max_tool_rounds_reaches_the_session(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_TOOL_ROUNDS", "2")
    assert make_session_config(load_settings(openai_api_key="sk-test")).max_tool_rounds == 2


def test_the_persona_names_the_lender_of_the_policy_file(tmp_path: Path) -> None:
    """Cap introduces itself for the lender whose policy it runs on, not the demo lender (review 1, finding 9);
    an INSTRUCTIONS_FILE may use the same {lender} placeholder."""
    from bot.policy import SHIPPED_POLICY_FILE

    policy = tmp_path / "policy.toml"
    policy.write_text(SHIPPED_POLICY_FILE.read_text(encoding="utf-8").replace(
        'lender = "Capital Bridge Solutions"', 'lender = "Acme Lending"'), encoding="utf-8")
    instructions = load_settings(lender_policy_file=str(policy)).instructions
    assert "an AI loan companion for Acme Lending." in instructions and "Capital Bridge" not in instructions
    assert "Acme Lending lends on investment properties only" in instructions
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("You are Cap for {lender}.", encoding="utf-8")
    own = load_settings(lender_policy_file=str(policy), instructions_file=str(prompt)).instructions
    assert own == "You are Cap for Acme Lending."
