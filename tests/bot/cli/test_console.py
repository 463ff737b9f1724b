"""`cap-bot console` as a user runs it: a real process, a WAV in, a WAV out, the fake service on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import struct
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from bot.cli import main
from bot.storage.conversations import conversation_turns, get_conversation
from bot.storage.database import Database
from bot.tools.context import CONSOLE_GUILD_ID
from tests.conftest import FIXTURES
from tests.realtime_fake import FakeRealtimeServer, tone_pcm

REPO = Path(__file__).resolve().parents[3]


async def run_cli(*args: str, env: dict[str, str], limit_seconds: float = 60) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", *args, cwd=REPO, env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(process.communicate(), limit_seconds)
    return process.returncode, stdout.decode(), stderr.decode()


def console_env(tmp_path: Path, url: str, key: str = "sk-test") -> dict[str, str]:
    return {"OPENAI_API_KEY": key, "REALTIME_URL": url, "DATABASE_URL": f"sqlite:///{tmp_path / 'cap.db'}",
            "REALTIME_CONNECT_ATTEMPTS": "2"}


async def test_console_writes_a_time_aligned_reply(tmp_path: Path) -> None:
    out = tmp_path / "out.wav"
    async with FakeRealtimeServer(reply_audio=tone_pcm(1.0), user_transcripts=["I want to buy in Austin."]) as server:
        code, stdout, stderr = await run_cli("console", "--input", str(FIXTURES / "hello.wav"),
                                             "--output", str(out), "--tail", "6",
                                             env=console_env(tmp_path, server.url))
    assert code == 0, stderr
    assert "caller: I want to buy in Austin." in stdout and "Cap: Happy to help with that." in stdout
    with wave.open(str(out)) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (48000, 2, 2)
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), "<i2").reshape(-1, 2)
    frames = pcm.reshape(-1, 960, 2)
    loud = np.abs(frames).max(axis=(1, 2)) > 500
    speech_end = int(2.74 / 0.02)  # tests/fixtures/README.md
    assert not loud[:speech_end].any(), "Cap is quiet while the caller speaks"
    first = int(np.argmax(loud))
    # The reply starts after the caller's 500 ms of silence, and lasts its full second.
    assert speech_end + 25 <= first <= speech_end + 60
    assert 48 <= int(loud.sum()) <= 52
    assert server.schema_errors == []
    assert "sk-test" not in stdout + stderr
    assert "0 tool calls, 0 reconnects, 0 failed replies" in stderr  # the console's summary line
    # The conversation is logged under the console guild, like a Discord call.
    database = Database(f"sqlite:///{tmp_path / 'cap.db'}").open()
    with database.session() as session:
        turns = conversation_turns(session, CONSOLE_GUILD_ID, 1)
        assert [(t.role, t.text) for t in turns] == [("caller", "I want to buy in Austin."),
                                                     ("cap", "Happy to help with that.")]
        assert get_conversation(session, CONSOLE_GUILD_ID, 1).ended_at is not None
    database.close()


async def test_console_with_a_rejected_key_exits_with_one_line(tmp_path: Path) -> None:
    async with FakeRealtimeServer(valid_keys=["sk-good"]) as server:
        code, stdout, stderr = await run_cli("console", "--input", str(FIXTURES / "hello.wav"),
                                             "--output", str(tmp_path / "o.wav"),
                                             env=console_env(tmp_path, server.url, key="sk-bad-secret"))
    assert code == 1
    assert stderr.strip().splitlines() == ["cap-bot: OPENAI_API_KEY was rejected by the Realtime API (invalid_api_key)"]
    assert "sk-bad-secret" not in stdout + stderr
    assert len(server.connections) == 1


async def test_console_with_an_unreachable_server_exits_with_one_line(tmp_path: Path) -> None:
    code, _, stderr = await run_cli("console", "--input", str(FIXTURES / "hello.wav"),
                                    "--output", str(tmp_path / "o.wav"),
                                    env=console_env(tmp_path, "ws://127.0.0.1:9/v1/realtime"))
    assert code == 1
    (line,) = [line for line in stderr.splitlines() if line.startswith("cap-bot:")]
    assert "cannot reach ws://127.0.0.1:9/v1/realtime" in line
    assert "Traceback" not in stderr


async def test_console_rejects_a_file_that_is_not_a_wav(tmp_path: Path) -> None:
    bogus = tmp_path / "in.wav"
    bogus.write_bytes(b"definitely not RIFF")
    code, _, stderr = await run_cli("console", "--input", str(bogus), "--output", str(tmp_path / "o.wav"),
                                    env=console_env(tmp_path, "ws://127.0.0.1:9/v1/realtime"))
    assert code == 1 and stderr.strip().startswith(f"cap-bot: {bogus}: not a PCM WAV file")


async def test_a_missing_key_names_the_setting(tmp_path: Path) -> None:
    env = console_env(tmp_path, "ws://127.0.0.1:9/v1/realtime", key="")
    code, _, stderr = await run_cli("console", "--input", str(FIXTURES / "hello.wav"),
                                    "--output", str(tmp_path / "o.wav"), env=env)
    assert code == 1 and stderr.strip().startswith("cap-bot: OPENAI_API_KEY: missing")


def test_bad_paths_and_arguments_fail_before_the_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Each is one line, and none costs a conversation (nothing listens at REALTIME_URL)."""
    monkeypatch.chdir(tmp_path)
    for name, value in console_env(tmp_path, "ws://127.0.0.1:9/v1/realtime").items():
        monkeypatch.setenv(name, value)
    one_hertz = tmp_path / "one_hertz.wav"
    with wave.open(str(one_hertz), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(1)
        wav.writeframes(b"\x00\x00" * 10)
    hello = str(FIXTURES / "hello.wav")
    cases = [
        (["--input", hello, "--output", str(tmp_path)], "cannot be written"),  # a folder
        (["--input", str(tmp_path), "--output", str(tmp_path / "o.wav")], "is a folder, not a WAV file"),
        (["--input", str(one_hertz), "--output", str(tmp_path / "o.wav")], "sample rate 1 Hz"),
    ]
    for argv, words in cases:
        assert main(["console", *argv]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("cap-bot: ") and words in err and "\n" not in err
    assert not (tmp_path / "o.wav").exists()
    for tail in ("nan", "inf", "-1"):
        with pytest.raises(SystemExit) as exited:
            main(["console", "--input", hello, "--output", str(tmp_path / "o.wav"), "--tail", tail])
        assert exited.value.code == 2 and "--tail" in capsys.readouterr().err


async def test_a_failed_conversation_leaves_no_output_file(tmp_path: Path) -> None:
    out = tmp_path / "out.wav"
    code, _, _ = await run_cli("console", "--input", str(FIXTURES / "hello.wav"), "--output", str(out),
                               env=console_env(tmp_path, "ws://127.0.0.1:9/v1/realtime"))
    assert code == 1 and not out.exists()


def test_an_extensible_header_pcm_wav_reads_like_a_plain_one(tmp_path: Path) -> None:
    """Python 3.11's wave refuses WAVE_FORMAT_EXTENSIBLE, which some recorders write for 16-bit PCM too."""
    from bot.cli.console import read_wav_frames

    rate, channels = 16000, 1
    pcm = (np.sin(np.arange(rate // 2) / 5) * 8000).astype("<i2").tobytes()
    plain = tmp_path / "plain.wav"
    with wave.open(str(plain), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm)
    pcm_guid = (1).to_bytes(2, "little") + bytes.fromhex("000000001000800000aa00389b71")
    fmt = struct.pack("<HHIIHHHHI", 0xFFFE, channels, rate, rate * 2 * channels, 2 * channels, 16, 22, 16, 4)
    fmt += pcm_guid
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(pcm)) + pcm
    extensible = tmp_path / "extensible.wav"
    extensible.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    assert read_wav_frames(extensible) == read_wav_frames(plain)


def write_number_read_with_pauses(path: Path) -> float:
    """Six 300 ms 'digits' with 600 ms between them (how people read a phone number or a loan amount), as a
    48 kHz stereo WAV; returns when the last digit ends, in seconds."""
    rate, parts, t = 48000, [np.zeros(int(0.2 * 48000))], 0.2
    for digit in range(6):
        n = np.arange(int(0.3 * rate))
        parts.append(0.3 * 32767 * np.sin(2 * np.pi * (250 + 20 * digit) * n / rate))
        t += 0.3
        if digit < 5:
            parts.append(np.zeros(int(0.6 * rate)))
            t += 0.6
    mono = np.concatenate(parts).astype("<i2")
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(np.repeat(mono, 2).tobytes())
    return t


@pytest.mark.parametrize(("turn_detection", "turns"), [("semantic_vad", 1), ("server_vad", 6)])
async def test_console_semantic_vad_lets_a_caller_read_a_number_with_pauses(
        tmp_path: Path, turn_detection: str, turns: int) -> None:
    """semantic_vad: one turn, answered after the last digit; the seed's server VAD: a turn per digit."""
    number = tmp_path / "number.wav"
    last_digit_ends = write_number_read_with_pauses(number)
    async with FakeRealtimeServer(reply_audio=tone_pcm(0.3),
                                  user_transcripts=["five one two, five five five"]) as server:
        env = {**console_env(tmp_path, server.url), "TURN_DETECTION": turn_detection, "VAD_EAGERNESS": "low"}
        code, _, stderr = await run_cli("console", "--input", str(number), "--output", str(tmp_path / "o.wav"),
                                        "--tail", "6", env=env)
    assert code == 0, stderr
    assert len(server.sent_of("input_audio_buffer.committed")) == turns
    if turns == 1:
        with wave.open(str(tmp_path / "o.wav")) as wav:
            pcm = np.frombuffer(wav.readframes(wav.getnframes()), "<i2").reshape(-1, 960, 2)
        first_reply_s = int(np.argmax(np.abs(pcm).max(axis=(1, 2)) > 500)) * 0.02
        assert first_reply_s > last_digit_ends  # Cap waited for the whole number
    assert server.schema_errors == []
