"""One call's per-frame path on one thread, without sockets or other threads: how much of row 3c is Cap's code.

Row 3c prices a whole concurrency run against the floor (Opus decode + encode + resampling alone). That ratio
mixes two things: the Python around the codec in Cap's own path, and what a real run adds around it (a socket
reader and a player thread per call sharing the GIL with the event loop, UDP and WebSocket system calls, the
far side's wake-ups). This bench measures the first alone, with the same classes a call uses
(bench/rig.py wires them the same way), one frame at a time on one core:

- hearing: a caller's encrypted RTP packet (a client's 48 kHz stereo Opus) -> `VoiceReceiver.on_packet`
  (transport decryption, jitter buffer) -> the mixer tick (Opus decode to 48 kHz mono, mix) -> `VoiceCall._feed`
  -> `VoiceSession.feed_input` (onset detector, downsampling, uplink framing, the append event) -> the event
  serialised as `RealtimeConnection.send` does; floor: decode + downsampling.
- speaking: a 200 ms `response.output_audio.delta` every 10 frames -> `Conversation.handle_event` (base64,
  playback queue) -> `EngineAudioSource.read` (Opus encode from 24 kHz mono) -> the RTP packet with transport
  encryption (`PlayerClient`'s packet path, as the rig sends it); floor: encode.

Run as `.venv/bin/python bench/bench_pipeline.py [FRAMES]` (default 1500 per path, a few seconds).
"""

from __future__ import annotations

import base64
import json
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import floor
import rig

from bot.disclosure import ConsentBook
from bot.voice.call import AutoLeave, VoiceCall
from bot.voice.mixer import Mixer
from bot.voice.opus_decoder import VOICE_AUDIO
from bot.voice.receiver import VoiceReceiver
from bot.voice.source import EngineAudioSource
from realtime.audio import REALTIME_FRAME_BYTES, Downsampler
from realtime.engine import VoiceSession
from realtime.protocol import SessionConfig
from realtime.tools import ToolRegistry
from tests.bot.voice.voice_packets import MODE, SECRET_KEY, PacketSender

CALLER_SSRC = 0x1234
DELTA_FRAMES = 10  # the fake Realtime service's deltas carry 200 ms


def _session() -> VoiceSession:
    """A session that is never started: its events stay in the send queue, which the path drains itself."""
    session = VoiceSession(SessionConfig(api_key="sk-test", url="ws://127.0.0.1:9", instructions="You are Cap."),
                           ToolRegistry(), transport_audio=VOICE_AUDIO)  # as VoiceCall makes it
    session.conversation.connected = True  # events are made as for a live socket
    return session


def _serialise_sent(session: VoiceSession) -> None:
    queue = session._send_queue
    while not queue.empty():
        json.dumps(queue.get_nowait(), separators=(",", ":"))  # RealtimeConnection.send's serialisation


def hearing_path(frames: int) -> Callable[[], None]:
    """One step = one caller packet in and one tick of the engine; the steps cycle through the fixture."""
    speech = floor.speech_frames()
    sender = PacketSender(CALLER_SSRC)
    packets = [sender.packet(packet) for packet in floor.client_packets(speech * (frames // len(speech) + 2))]
    transport = SimpleNamespace(mode=MODE, secret_key=SECRET_KEY, dave_session=None, ssrc=99)
    receiver = VoiceReceiver(transport)  # type: ignore[arg-type]
    receiver.on_ws_message({"op": 5, "d": {"user_id": "555", "ssrc": CALLER_SSRC, "speaking": 1}})
    mixer = Mixer(receiver.pull_frames)
    session = _session()
    call = SimpleNamespace(consent=ConsentBook(False), _spoken=Counter(), auto_leave=AutoLeave(300.0, 600.0),
                           session=session)
    feed = VoiceCall._feed.__get__(call)
    packet_iter = iter(packets)

    def step() -> None:
        receiver.on_packet(next(packet_iter))
        frame, speakers = mixer.tick()
        feed(frame, speakers)
        _serialise_sent(session)

    return step


def speaking_path(frames: int) -> tuple[Callable[[], None], Callable[[], None]]:
    """One step = one 20 ms packet of Cap's speech out; every DELTA_FRAMES steps a delta arrives first."""
    down = Downsampler()
    pcm24 = b"".join(down.process(frame) for frame in floor.speech_frames())
    chunk = DELTA_FRAMES * REALTIME_FRAME_BYTES
    deltas = [base64.b64encode(pcm24[i : i + chunk]).decode() for i in range(0, len(pcm24) - chunk + 1, chunk)]
    session = _session()
    conversation = session.conversation
    conversation.handle_event({"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}})
    source = EngineAudioSource(session.playback)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # never sent on: only the packet is built
    client = rig.PlayerClient(sock, 0x8000, asyncio_loop_stub())
    state = {"step": 0}

    def step() -> None:
        n = state["step"]
        if n % DELTA_FRAMES == 0:
            conversation.handle_event({
                "type": "response.output_audio.delta", "event_id": "e", "response_id": "resp_1",
                "item_id": "item_a", "output_index": 0, "content_index": 0,
                "delta": deltas[(n // DELTA_FRAMES) % len(deltas)]})
        state["step"] = n + 1
        packet = source.read()
        client.checked_add("sequence", 1, 65535)
        client._get_voice_packet(packet)
        client.checked_add("timestamp", 960, 4294967295)

    return step, sock.close


def asyncio_loop_stub() -> Any:
    return SimpleNamespace()  # PlayerClient keeps a loop only to announce speaking, which this path never does


def _per_frame_us(step: Callable[[], None], frames: int) -> float:
    for _ in range(50):  # warm: the jitter buffer fills, the converters start
        step()
    started = time.process_time()
    for _ in range(frames):
        step()
    return (time.process_time() - started) / frames * 1e6


def measure(frames: int = 1500) -> list[rig.Row]:
    rig.pin_to_core()
    unit = floor.costs()
    hearing = _per_frame_us(hearing_path(frames + 60), frames)
    speak, close = speaking_path(frames)
    try:
        speaking = _per_frame_us(speak, frames)
    finally:
        close()
    hear_floor, speak_floor = unit["decode"] + unit["down"], unit["encode"]
    return [
        rig.Row("3d. one call hearing a caller, one thread, no sockets: packet -> decrypt, jitter buffer, decode "
                "to 48 kHz mono, engine, downsampling, append JSON",
                f"{hearing:.0f} µs per 20 ms frame = {hearing / hear_floor:.2f}x the floor",
                f"floor: decode {unit['decode']:.0f} + downsampling {unit['down']:.0f} µs"),
        rig.Row("3d. ... Cap speaking: 200 ms delta -> playback, Opus encode from 24 kHz mono, RTP + encryption",
                f"{speaking:.0f} µs per 20 ms frame = {speaking / speak_floor:.2f}x the floor",
                f"floor: encode {unit['encode']:.0f} µs (a 48 kHz stereo path added upsampling: "
                f"{unit['up']:.0f} µs)"),
    ]


def main() -> None:
    frames = int(sys.argv[1]) if len(sys.argv) > 1 else 1500
    rig.print_rows(measure(frames))


if __name__ == "__main__":
    main()
