"""Cap's Discord voice path without Discord, for the session benchmarks; plus the far side and small helpers.

`CallRig` wires one call the way CapVoiceClient and VoiceCall do in production, with the same classes:
a UDP voice socket read by Cap's PromptSocketReader thread into VoiceReceiver (transport decrypt, jitter
buffer, Opus decode), the Mixer on the shared Metronome's 20 ms grid feeding VoiceSession.feed_input,
and Cap's voice leaving through EngineAudioSource on the process's shared speaker threads (CapVoiceClient's
own send step: quiet calls sleep), whose send_audio_packet (RTP header and XChaCha20 transport encryption by
CapVoiceClient's own packet builder, UDP send) runs on a stand-in for the VoiceClient. Not modelled: DAVE
(the stand-in has no session, so Opus goes out without E2EE), the voice and gateway WebSockets' heartbeats,
VoiceCall's 1 Hz watch task.
Like `cap-bot run`, the rig freezes the start-up heap before the first call (bot/heap.py).
`FarSide` runs the fake Realtime service and the fake voice relay as processes of their own, pinned away
from Cap's core, so their CPU is neither counted as Cap's nor taken from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # packet builders and the fake live in tests/

import discord  # noqa: E402

from bot.disclosure import ConsentBook  # noqa: E402
from bot.heap import freeze_startup_heap  # noqa: E402
from bot.voice.call import AutoLeave, VoiceCall  # noqa: E402
from bot.voice.client import KEEPALIVE_TICKS, CapVoiceClient, PromptSocketReader  # noqa: E402
from bot.voice.mixer import Mixer, metronome  # noqa: E402
from bot.voice.opus_decoder import VOICE_AUDIO  # noqa: E402
from bot.voice.receiver import RateLimitedLog, VoiceReceiver  # noqa: E402
from bot.voice.source import OPUS_SILENCE, EngineAudioSource  # noqa: E402
from bot.voice.speaker import SendPacing, current_deadline, speaker  # noqa: E402
from realtime.client import RealtimeConnection  # noqa: E402
from realtime.engine import VoiceSession  # noqa: E402
from realtime.protocol import SessionConfig  # noqa: E402
from realtime.tools import ToolRegistry  # noqa: E402
from tests.bot.voice.voice_packets import MODE, SECRET_KEY  # noqa: E402

BENCH = Path(__file__).resolve().parent
PYTHON = sys.executable
CAP_CORE = int(os.environ.get("CAP_BENCH_CORE", "0"))  # bench_processes.py runs a second Cap on core 1
ALL_CORES = frozenset(os.sched_getaffinity(0))  # taken at import, before a bench pins itself to CAP_CORE
TICK_SECONDS = 0.02
LATE_SECONDS = 0.02  # a playback packet is late when it leaves more than 20 ms after its tick's deadline
CALLER_USER_BASE = 100_000
CALLER_SSRC_BASE = 0x1000
CAP_SSRC_BASE = 0x8000


# ----- processes and cores ------------------------------------------------------------------------------


def pin_to_core(core: int = CAP_CORE) -> None:
    os.sched_setaffinity(0, {core})


def far_side_cores() -> set[int]:
    """Every core but Cap's (the same core on a one-core machine: the figures then include the far side)."""
    cores = set(ALL_CORES - {CAP_CORE})
    return cores or {CAP_CORE}


def cpu_seconds() -> float:
    """User + system CPU of this process, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class FarSide:
    """The fake Realtime service and the fake Discord voice relay, each a process on the far-side cores."""

    def __init__(self, realtime_knobs: dict[str, Any] | None = None) -> None:
        self._knobs = realtime_knobs or {}
        self._realtime: asyncio.subprocess.Process | None = None
        self._relay: asyncio.subprocess.Process | None = None
        self.realtime_url = ""
        self.relay_address: tuple[str, int] = ("127.0.0.1", 0)

    async def __aenter__(self) -> FarSide:
        cores = far_side_cores()
        self._realtime, port = await _spawn([str(BENCH / "fake_realtime.py"), json.dumps(self._knobs)], cores)
        self.realtime_url = f"ws://127.0.0.1:{port}/v1/realtime"
        self._relay, relay_port = await _spawn([str(BENCH / "fake_voice_relay.py")], cores)
        self.relay_address = ("127.0.0.1", relay_port)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for process in (self._relay, self._realtime):
            if process is None:
                continue
            assert process.stdin is not None
            process.stdin.close()
            try:
                await asyncio.wait_for(process.wait(), 5)
            except TimeoutError:
                process.kill()
                await process.wait()

    def cpu_seconds(self) -> dict[str, float]:
        """CPU used so far by each far-side process (from /proc), to tell when they, not Cap, were the limit."""
        return {name: _process_cpu_seconds(process.pid)
                for name, process in (("realtime", self._realtime), ("relay", self._relay)) if process is not None}

    async def relay(self, command: dict[str, Any]) -> dict[str, Any]:
        assert self._relay is not None and self._relay.stdin is not None and self._relay.stdout is not None
        self._relay.stdin.write(json.dumps(command).encode() + b"\n")
        await self._relay.stdin.drain()
        return json.loads(await self._relay.stdout.readline())


def _process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


async def _spawn(args: list[str], cores: set[int]) -> tuple[asyncio.subprocess.Process, int]:
    process = await asyncio.create_subprocess_exec(
        PYTHON, *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        preexec_fn=lambda: os.sched_setaffinity(0, cores),
    )
    assert process.stdout is not None
    line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
    if not line.startswith("port "):
        raise RuntimeError(f"{args[0]} did not start: {line!r}")
    return process, int(line.split()[1])


# ----- Cap's side -------------------------------------------------------------------------------------------


class _SpeakingSocket:
    """The voice WebSocket's `speak()` as CapVoiceClient calls it (nothing to send here)."""

    async def speak(self, state: discord.SpeakingState) -> None:
        return None


class PlayerClient:
    """The VoiceClient attributes Cap's send step uses, with Cap's packet path (RTP, encrypt) and discord.py's send.

    Records how late each packet sent by the speaker thread left against that thread's own grid (the deadline
    of the tick it serves) and when Cap's talk spurts started (the first audible packet after silence).
    """

    checked_add = discord.VoiceClient.checked_add
    _get_voice_packet = CapVoiceClient._get_voice_packet
    _build_voice_packet = CapVoiceClient._build_voice_packet
    _current_encryptor = CapVoiceClient._current_encryptor

    def __init__(self, sock: socket.socket, ssrc: int, loop: asyncio.AbstractEventLoop) -> None:
        self.ssrc = ssrc
        self.mode = MODE
        self.secret_key = SECRET_KEY
        self.sequence = 0
        self.timestamp = 0
        self._incr_nonce = 0
        self._connection = SimpleNamespace(
            dave_session=None, can_encrypt=False, send_packet=sock.send, mode=MODE, secret_key=SECRET_KEY, ssrc=ssrc
        )
        self._encryptor = self._encryptor_key = self._encryptor_mode = None
        self._dave_encrypt_failed = 0
        self._log = RateLimitedLog(logging.getLogger("bench"))
        self.ws = _SpeakingSocket()
        self.client = SimpleNamespace(loop=loop)
        self.timeout = 5.0
        self.ticks = 0
        self.late = 0
        self.worst_lateness = 0.0
        self.spurt_starts: list[float] = []
        self._quiet = True

    def is_connected(self) -> bool:
        return True

    def send_audio_packet(self, data: bytes, *, encode: bool = True) -> None:
        now = time.perf_counter()
        deadline = current_deadline()
        if deadline is not None:  # sent by a speaker thread (not a bench calling this directly)
            lateness = now - deadline
            if lateness > LATE_SECONDS:
                self.late += 1
            self.worst_lateness = max(self.worst_lateness, lateness)
            self.ticks += 1
        if data == OPUS_SILENCE:
            self._quiet = True
        elif self._quiet:
            self._quiet = False
            self.spurt_starts.append(now)
        with contextlib.suppress(OSError):  # nobody listening any more: dropped, as discord.py does
            discord.VoiceClient.send_audio_packet(self, data, encode=encode)  # type: ignore[arg-type]

    def reset_counts(self) -> None:
        """Start counting late ticks afresh (after warm-up)."""
        self.ticks = self.late = 0
        self.worst_lateness = 0.0


class Probe:
    """Timestamps around the socket, taken in bench subclasses so Cap's own code carries no timing."""

    def __init__(self) -> None:
        self.feeding_at: float | None = None
        self._appends: dict[int, tuple[dict[str, Any], float]] = {}
        # frame due (its tick's slot on the metronome's 20 ms grid) -> its append written to the socket. Since
        # appends are written from the tick itself, the tick's own lateness is what says whether the loop keeps up.
        self.uplink_lags: list[float] = []
        self.uplink_sends: list[float] = []  # of which inside send() (JSON + WebSocket frame + write)
        self.first_delta_at: dict[str, float] = {}
        self.speech_started_at: list[float] = []

    def stamp(self, events: list[dict[str, Any]]) -> None:
        if self.feeding_at is not None:
            for event in events:
                if event.get("type") == "input_audio_buffer.append":
                    self._appends[id(event)] = (event, self.feeding_at)

    def sent(self, event: dict[str, Any], started: float) -> None:
        stamped = self._appends.pop(id(event), None)
        if stamped is not None:
            now = time.perf_counter()
            self.uplink_lags.append(now - stamped[1])
            self.uplink_sends.append(now - started)

    def received(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "response.output_audio.delta":
            self.first_delta_at.setdefault(event.get("item_id", ""), time.perf_counter())
        elif kind == "input_audio_buffer.speech_started":
            self.speech_started_at.append(time.perf_counter())


class TimedConnection(RealtimeConnection):
    """RealtimeConnection that tells a Probe when an event left or arrived."""

    probe: Probe

    async def send(self, event: dict[str, Any]) -> None:
        started = time.perf_counter()
        await super().send(event)
        self.probe.sent(event, started)

    def try_send_now(self, event: dict[str, Any]) -> bool:
        started = time.perf_counter()
        sent = super().try_send_now(event)
        if sent:  # False: nothing left; the event is queued and timed by send()
            self.probe.sent(event, started)
        return sent

    async def recv(self) -> dict[str, Any]:
        event = await super().recv()
        self.probe.received(event)
        return event


class ProbedSession(VoiceSession):
    """VoiceSession whose uplink events are stamped with the time their frame arrived in feed_input()."""

    def __init__(self, config: SessionConfig, probe: Probe) -> None:
        async def connect(config: SessionConfig) -> RealtimeConnection:
            connection = await TimedConnection.open(config)
            connection.probe = probe
            return connection

        super().__init__(config, ToolRegistry(), connector=connect, transport_audio=VOICE_AUDIO)
        self.probe = probe
        drain = self.conversation.events_to_send

        def events_to_send() -> list[dict[str, Any]]:
            events = drain()
            probe.stamp(events)
            return events

        self.conversation.events_to_send = events_to_send  # type: ignore[method-assign]

    def feed_input(self, frame: bytes, speakers: Iterable[int] = ()) -> None:
        loop = asyncio.get_running_loop()
        due = metronome(loop).deadline  # None when fed outside the metronome's tick (then: due now)
        self.probe.feeding_at = time.perf_counter() - (max(0.0, loop.time() - due) if due is not None else 0.0)
        try:
            super().feed_input(frame, speakers)
        finally:
            self.probe.feeding_at = None


def session_config(url: str) -> SessionConfig:
    return SessionConfig(api_key="sk-test", url=url, instructions="You are Cap.", reconnect_base_seconds=0.05,
                         connect_attempts=3)


class CallRig:
    """One call wired as in production: voice socket -> reader thread -> receiver -> mixer tick -> session;
    playback -> EngineAudioSource -> a shared speaker thread -> encrypt -> voice socket.

    The tick, the send step (with its pacing) and the sink are CapVoiceClient's and VoiceCall's own methods,
    borrowed.
    """

    _tick = CapVoiceClient._tick
    _stop_ticker = CapVoiceClient._stop_ticker
    _send_keepalive = CapVoiceClient._send_keepalive
    sleeping = CapVoiceClient.sleeping
    _feed = VoiceCall._feed

    def __init__(self, session: VoiceSession, relay_address: tuple[str, int], index: int) -> None:
        loop = asyncio.get_running_loop()
        self.session = session
        self.index = index
        self.caller_user = CALLER_USER_BASE + index
        self.caller_ssrc = CALLER_SSRC_BASE + index
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.connect(relay_address)
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        transport = SimpleNamespace(mode=MODE, secret_key=SECRET_KEY, dave_session=None, ssrc=CAP_SSRC_BASE + index)
        self.transport = transport  # bench/dave_rig.py puts a DAVE session here
        self.receiver = VoiceReceiver(transport)  # type: ignore[arg-type]
        self.receiver.on_ws_message({"op": 5, "d": {"user_id": str(self.caller_user), "ssrc": self.caller_ssrc,
                                                    "speaking": 1}})
        self.reader = PromptSocketReader(SimpleNamespace(socket=self.sock), start_paused=False)  # type: ignore[arg-type]
        self.reader.register(self.receiver.on_packet)
        self.mixer = Mixer(self.receiver.pull_frames)
        self.client = PlayerClient(self.sock, CAP_SSRC_BASE + index, loop)
        self.source = EngineAudioSource(session.playback, on_speaking=self._set_speaking)
        self.resumed_at: list[float] = []  # when a tick woke the sleeping call for speech
        # What the borrowed methods read: CapVoiceClient's ...
        self.loop = loop
        self._on_tick = self._tick
        self._on_speak = self._speak_step
        self._sink = self._feed
        self._log = RateLimitedLog(logging.getLogger("bench"))
        self._audio = self.source
        self._playback = session.playback
        self._pacing = SendPacing(KEEPALIVE_TICKS)
        self._was_connected = False
        self._connection = SimpleNamespace(watch_poller=lambda: False)  # no voice WebSocket poller to watch here
        self.send_audio_packet = self.client.send_audio_packet
        self.is_connected = self.client.is_connected
        # ... and VoiceCall's.
        self._spoken: Counter[int] = Counter()
        self.auto_leave = AutoLeave(300.0, 600.0)
        self.consent = ConsentBook(False)  # no spoken yes required: everyone is heard, as by default

    def _speak_step(self) -> bool:
        asleep, started = not self._pacing.awake, time.perf_counter()
        awake = CapVoiceClient._speak_step(self)  # type: ignore[arg-type]
        if asleep and self._pacing.awake:
            self.resumed_at.append(started)  # the tick that woke it (before its first packet went out)
        return awake

    async def start(self) -> None:
        """Connect the Realtime session, then start hearing and speaking (VoiceCall.start's order)."""
        await self.session.start()
        self.reader.start()
        metronome(self.loop).add(self._on_tick)  # as CapVoiceClient.start_conversation does
        speaker().add(self._on_speak)

    def _set_speaking(self, speaking: bool) -> None:
        state = discord.SpeakingState.voice if speaking else discord.SpeakingState.none
        with contextlib.suppress(RuntimeError):
            asyncio.run_coroutine_threadsafe(self.client.ws.speak(state), self.client.client.loop)

    async def aclose(self) -> None:
        self._stop_ticker()
        speaker().discard(self._on_speak)
        self.source.close()
        try:
            self.reader.stop()
            await self.session.aclose()
        finally:
            self.sock.close()


async def open_calls(count: int, far: FarSide, *, probed: bool = False) -> list[CallRig]:
    """`count` connected calls, started a little apart as real calls would be (after freezing the start-up
    heap, as `cap-bot run` does)."""
    if not gc.get_freeze_count():
        freeze_startup_heap()
    calls = []
    for index in range(count):
        config = session_config(far.realtime_url)
        session = (ProbedSession(config, Probe()) if probed
                   else VoiceSession(config, ToolRegistry(), transport_audio=VOICE_AUDIO))  # as VoiceCall makes it
        call = CallRig(session, far.relay_address, index)
        await call.start()
        calls.append(call)
        await asyncio.sleep(TICK_SECONDS / max(1, count))  # spread the 20 ms grids over the period
    return calls


async def add_caller(far: FarSide, call: CallRig, script: list[list[Any]], *, repeat: bool = False,
                     start_after: float = 0.0) -> None:
    """Have the relay play this call's caller (see fake_voice_relay.py for the script steps)."""
    await far.relay({"cmd": "caller", "port": call.port, "ssrc": call.caller_ssrc, "script": script,
                     "repeat": repeat, "start_after": start_after})


async def close_calls(calls: Sequence[CallRig]) -> None:
    await asyncio.gather(*(call.aclose() for call in calls), return_exceptions=True)


# ----- child processes ------------------------------------------------------------------------------------


class _ErrorCount(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


_errors = _ErrorCount()


def count_errors() -> None:
    """In a child: count ERROR log records (a failing tick is logged, not raised), so the parent can refuse
    figures from a run that was broken rather than slow."""
    logging.getLogger().addHandler(_errors)


def logged_errors() -> int:
    return _errors.count


def run_child(script: str, *args: object) -> dict[str, Any]:
    """Run `script --child args...` in a fresh process; its last stdout line is a JSON result. Its stderr (log
    messages, tracebacks) passes through."""
    out = subprocess.run([PYTHON, script, "--child", *map(str, args)], check=True, stdout=subprocess.PIPE, text=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result.get("log_errors"):
        raise RuntimeError(f"{Path(script).name} {args}: {result['log_errors']} errors logged; figures not trusted")
    return result


# ----- figures ----------------------------------------------------------------------------------------------


def ms(seconds: float) -> float:
    return seconds * 1000


def median_max_ms(values: Sequence[float]) -> str:
    if not values:
        return "n/a"
    return f"{ms(statistics.median(values)):.1f} / {ms(max(values)):.1f}"


@dataclass(frozen=True)
class Row:
    """One line of the benchmark table: a figure, the reference measured in the same run, and the goal."""

    item: str
    figure: str
    reference: str
    goal: str = ""
    ok: bool | None = None

    @property
    def verdict(self) -> str:
        return "" if self.ok is None else ("met" if self.ok else "MISSED")


def print_rows(rows: Sequence[Row], out: Callable[[str], None] = print) -> None:
    """The table as Markdown, so the README can carry it verbatim."""
    out("| measure | figure | reference, same run | goal | |")
    out("|---|---|---|---|---|")
    for row in rows:
        out(f"| {row.item} | {row.figure} | {row.reference} | {row.goal} | {row.verdict} |")
