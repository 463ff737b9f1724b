"""`cap-bot console`: one conversation with Cap from a WAV file, through the same engine Discord uses."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import wave
from pathlib import Path

from bot.cli.database import open_database, settings_database
from bot.cli.errors import CommandError
from bot.session_factory import make_session_config
from bot.settings import Settings
from bot.storage.conversations import ConversationRecorder
from bot.storage.database import Database
from bot.tools import build_registry
from bot.tools.context import CONSOLE_GUILD_ID, CONSOLE_USER_ID, console_context
from realtime.audio import FRAME_BYTES, SAMPLE_RATE_DISCORD, Framer, to_discord_pcm
from realtime.engine import VoiceSession
from realtime.errors import RealtimeFatalError
from realtime.file_transport import run_file_conversation
from realtime.protocol import SessionConfig
from realtime.tools import ToolRegistry
from realtime.transcript import TranscriptEntry

log = logging.getLogger(__name__)

MAX_TAIL_SECONDS = 600.0
MIN_RATE, MAX_RATE = 4_000, 384_000  # Hz; outside this a header is corrupt, not a recording
WAVE_FORMAT_PCM, WAVE_FORMAT_EXTENSIBLE = 1, 0xFFFE

def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("console", help="talk to Cap with a WAV file instead of Discord")
    parser.add_argument("--input", type=Path, required=True, help="caller audio: any 16-bit PCM WAV")
    parser.add_argument("--output", type=Path, required=True,
                        help="Cap's audio, 48 kHz stereo, time-aligned with the input")
    parser.add_argument("--tail", type=_tail_seconds, default=20.0,
                        help="seconds of silence to keep listening after the input ends (default 20)")
    parser.set_defaults(handler=run_console, log_level=logging.WARNING)


def _tail_seconds(text: str) -> float:
    value = float(text)
    if not 0 <= value <= MAX_TAIL_SECONDS:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"must be between 0 and {MAX_TAIL_SECONDS:g} seconds")
    return value


def read_wav_frames(path: Path) -> list[bytes]:
    """The WAV as 20 ms frames of 48 kHz stereo s16le, as Discord would deliver it (last frame padded)."""
    try:
        pcm, rate, channels, width = _read_wav(path)
    except FileNotFoundError:
        raise CommandError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CommandError(f"{path}: is a folder, not a WAV file") from None
    except (wave.Error, EOFError) as exc:
        raise CommandError(f"{path}: not a PCM WAV file ({exc or 'too short'})") from None
    if width != 2:
        raise CommandError(f"{path}: only 16-bit PCM WAV is supported")
    if channels not in (1, 2):
        raise CommandError(f"{path}: only mono or stereo WAV is supported")
    if not MIN_RATE <= rate <= MAX_RATE:
        raise CommandError(f"{path}: sample rate {rate} Hz is not one a microphone records ({MIN_RATE}-{MAX_RATE})")
    framer = Framer(FRAME_BYTES)
    frames = framer.push(to_discord_pcm(pcm, rate, channels))
    tail = framer.flush()
    return [*frames, tail] if tail else frames


def _read_wav(path: Path) -> tuple[bytes, int, int, int]:
    """(pcm, rate, channels, bytes per sample)."""
    try:
        with wave.open(str(path), "rb") as wav:
            return wav.readframes(wav.getnframes()), wav.getframerate(), wav.getnchannels(), wav.getsampwidth()
    except wave.Error as exc:
        if f"{WAVE_FORMAT_EXTENSIBLE}" not in str(exc):
            raise
    return _read_extensible_pcm(path)


def _read_extensible_pcm(path: Path) -> tuple[bytes, int, int, int]:
    """Python 3.11's wave refuses WAVE_FORMAT_EXTENSIBLE headers (3.12 reads them): walk the same RIFF chunks,
    taking the PCM sub-format only."""
    data = path.read_bytes()
    chunks: dict[bytes, bytes] = {}
    offset = 12
    while offset + 8 <= len(data):
        size = int.from_bytes(data[offset + 4 : offset + 8], "little")
        chunks.setdefault(data[offset : offset + 4], data[offset + 8 : offset + 8 + size])
        offset += 8 + size + (size & 1)  # chunks are word-aligned
    fmt, pcm = chunks.get(b"fmt "), chunks.get(b"data")
    if fmt is None or pcm is None or len(fmt) < 26:
        raise wave.Error("no fmt or data chunk")
    sub_format = int.from_bytes(fmt[24:26], "little")
    if sub_format != WAVE_FORMAT_PCM:
        raise wave.Error(f"extensible WAV of sub-format {sub_format}, not PCM")
    channels, rate = int.from_bytes(fmt[2:4], "little"), int.from_bytes(fmt[4:8], "little")
    return pcm, rate, channels, int.from_bytes(fmt[14:16], "little") // 8


def check_output(path: Path) -> None:
    """Created empty before the conversation: a path that cannot be written must fail before the (paid) call."""
    if not path.parent.exists():
        raise CommandError(f"{path.parent}: no such directory")
    try:
        with path.open("wb"):
            pass
    except OSError as exc:
        raise CommandError(f"{path}: cannot be written ({exc.strerror or type(exc).__name__})") from None


def write_wav(path: Path, frames: list[bytes]) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(SAMPLE_RATE_DISCORD)
        wav.writeframes(b"".join(frames))


def print_transcript(entry: TranscriptEntry) -> None:
    who = "caller" if entry.role == "caller" else "Cap"
    suffix = " [interrupted]" if entry.interrupted else ""
    print(f"{who}: {entry.text}{suffix}", flush=True)


def run_console(args: argparse.Namespace, settings: Settings) -> int:
    config = make_session_config(settings)
    frames = read_wav_frames(args.input)
    check_output(args.output)
    written = False
    try:
        database = open_database(settings_database(settings))
        try:
            output = asyncio.run(_converse(config, build_registry(settings, database), database, frames, args.tail))
        finally:
            database.close()
        write_wav(args.output, output)
        written = True
    finally:
        if not written:
            args.output.unlink(missing_ok=True)  # no empty file left behind by a failed conversation
    return 0


async def _converse(config: SessionConfig, registry: ToolRegistry, database: Database, frames: list[bytes],
                    tail: float) -> list[bytes]:
    recorder = ConversationRecorder(database, CONSOLE_GUILD_ID)
    conversation_id = await recorder.start()

    def on_transcript(entry: TranscriptEntry) -> None:
        print_transcript(entry)
        recorder.record(entry)

    session = VoiceSession(config, registry, on_transcript=on_transcript,
                           context_factory=lambda speakers: console_context(conversation_id))
    try:
        try:
            await session.start()
        except RealtimeFatalError as exc:
            raise CommandError(str(exc)) from None
        try:
            output = await run_file_conversation(session, frames, tail_seconds=tail,
                                                 speakers=frozenset({CONSOLE_USER_ID}))
        finally:
            await session.aclose()
    finally:
        await recorder.close()
    fatal = await session.wait_closed()
    if fatal:
        raise CommandError(fatal)
    summary = session.metrics.summary()
    print(f"-- {summary['turns']} turns, {summary['barge_ins']} barge-ins, median reply latency "
          f"{_ms(summary['median_reply_latency_ms'])}, {summary['tool_calls']} tool calls, "
          f"{summary['reconnects']} reconnects, {summary['failed_responses']} failed replies, "
          f"{summary['total_tokens']} tokens, "
          f"~${summary['estimated_cost_usd']:.4f}", file=sys.stderr)
    return output


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value} ms"
