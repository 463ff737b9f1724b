"""VoiceReceiver end to end on real packets: ordering faults, padding, SSRC bookkeeping, DAVE, garbage."""

from __future__ import annotations

import random
import struct
from types import SimpleNamespace

import pytest

from bot.voice.opus_decoder import HEARD_PCM
from bot.voice.receiver import PENDING_SSRCS, VoiceReceiver
from tests.bot.voice.rust_panic import raise_rust_panic
from tests.bot.voice.test_dave import StandInSession
from tests.bot.voice.voice_packets import (
    MODE,
    SECRET_KEY,
    PacketSender,
    correlation,
    frames_of,
    opus_encode,
    reference_decode,
    rms,
    to_heard_pcm,
    vowel_pcm,
)

ALICE, BOB, HELPER_BOT = 111, 222, 999
ALICE_SSRC, BOB_SSRC, BOT_SSRC, CAP_SSRC = 0x1001, 0x2002, 0x3003, 0x4004


def connection(**overrides: object) -> SimpleNamespace:
    """Stands in for discord.py's VoiceConnectionState (the attributes the receiver reads)."""
    values = {"mode": MODE, "secret_key": SECRET_KEY, "dave_session": None, "ssrc": CAP_SSRC}
    values.update(overrides)
    return SimpleNamespace(**values)


def speaking(user_id: int, ssrc: int) -> dict:
    return {"op": 5, "d": {"user_id": str(user_id), "ssrc": ssrc, "speaking": 1}}


@pytest.fixture(scope="module")
def speech() -> tuple[bytes, list[bytes], list[bytes]]:
    pcm = vowel_pcm(1.0)
    packets = opus_encode(frames_of(pcm))
    return pcm, packets, reference_decode(packets)


def make_receiver(**options: object) -> VoiceReceiver:
    receiver = VoiceReceiver(connection(), **options)  # type: ignore[arg-type]
    receiver.on_ws_message(speaking(ALICE, ALICE_SSRC))
    return receiver


def run(receiver: VoiceReceiver, arrivals: list[list[bytes]], extra_ticks: int = 6) -> list[dict[int, bytes]]:
    """Deliver arrivals[i] (datagrams) before tick i, like the socket thread between two mixer ticks."""
    out = []
    for batch in [*arrivals, *([[]] * extra_ticks)]:
        for datagram in batch:
            receiver.on_packet(datagram)
        out.append(receiver.pull_frames())
    return out


def heard(ticks: list[dict[int, bytes]], user_id: int) -> list[bytes]:
    return [tick[user_id] for tick in ticks if user_id in tick]


def test_in_order_stream_decodes_exactly(speech) -> None:
    _, packets, expected = speech
    sender = PacketSender(ALICE_SSRC)
    receiver = make_receiver()
    frames = heard(run(receiver, [[sender.packet(p)] for p in packets]), ALICE)
    assert frames[: len(expected)] == expected
    assert all(len(frame) == HEARD_PCM.frame_bytes for frame in frames)
    stats = receiver.stats()
    assert stats["delivered"] == len(packets)
    assert stats["decoded"] == len(packets)
    assert stats.get("fec", 0) == 0


def test_reordered_duplicated_and_padded_packets_still_decode_exactly(speech) -> None:
    _, packets, expected = speech
    sender = PacketSender(ALICE_SSRC)
    datagrams = [sender.packet(p, padding=(i % 4) * 3) for i, p in enumerate(packets)]
    arrivals: list[list[bytes]] = [[] for _ in datagrams]
    for i, datagram in enumerate(datagrams):
        slot = i + 1 if i % 5 == 2 else i  # every fifth packet arrives one tick late (after its successor)
        arrivals[slot if slot < len(arrivals) else i].append(datagram)
        if i % 6 == 0:
            arrivals[i].append(datagram)  # and some arrive twice
    receiver = make_receiver()
    frames = heard(run(receiver, arrivals), ALICE)
    # The buffer starts at one frame of delay; the first reordered packet grows it by one concealed frame,
    # and from then on every packet plays in order.
    assert frames[:2] == expected[:2]
    assert correlation(b"".join(expected), b"".join(frames[1 : len(expected) + 1]), max_lag=0, channels=1) > 0.95
    stats = receiver.stats()
    assert stats["duplicate"] == len(range(0, len(packets), 6))
    assert stats.get("late", 0) == 0
    assert stats["decoded"] == len(packets)
    assert stats["plc"] == 1 + 3  # the growth, and the concealment after the last packet
    assert stats.get("bad_padding", 0) == 0


def test_lost_packets_are_concealed_and_timing_kept(speech) -> None:
    pcm, packets, expected = speech
    sender = PacketSender(ALICE_SSRC)
    datagrams = [sender.packet(p) for p in packets]
    arrivals = [[datagram] if i % 10 != 5 else [] for i, datagram in enumerate(datagrams)]
    receiver = make_receiver()
    frames = heard(run(receiver, arrivals), ALICE)
    assert len(frames) >= len(packets)
    stats = receiver.stats()
    # At one frame of delay the next packet is not there yet when a loss is due: PLC, in place.
    assert stats["jitter_lost"] == len(range(5, len(packets), 10))
    assert stats["decoded"] == len(packets) - stats["jitter_lost"]
    assert correlation(b"".join(expected), b"".join(frames[: len(expected)]), max_lag=0, channels=1) > 0.9
    assert correlation(b"".join(expected), b"".join(frames[: len(expected)]), channels=1) > 0.9
    assert correlation(to_heard_pcm(pcm), b"".join(frames), channels=1) > 0.8


def test_a_late_packet_still_plays_after_an_underrun(speech) -> None:
    _, packets, expected = speech
    sender = PacketSender(ALICE_SSRC)
    datagrams = [sender.packet(p) for p in packets[:20]]
    arrivals: list[list[bytes]] = [[d] for d in datagrams]
    arrivals[8] = arrivals[9] = arrivals[10] = []
    arrivals[11] = datagrams[8:12]  # a 60 ms delay spike: nothing lost, three packets arrive late at once
    receiver = make_receiver()
    frames = heard(run(receiver, arrivals), ALICE)
    assert receiver.stats().get("late", 0) == 0
    assert receiver.stats()["decoded"] == 20  # every packet played; the spike was bridged with PLC
    assert frames[:8] == expected[:8]
    assert correlation(b"".join(expected[8:20]), b"".join(frames[10:22]), channels=1) > 0.9  # two PLC frames later


def test_silence_between_talk_spurts_and_a_quiet_speaker_is_absent(speech) -> None:
    _, packets, _ = speech
    sender = PacketSender(ALICE_SSRC)
    spurt = [[sender.packet(p)] for p in packets[:10]]
    gap: list[list[bytes]] = [[] for _ in range(20)]
    spurt2 = [[sender.packet(p)] for p in packets[10:20]]
    receiver = make_receiver()
    ticks = run(receiver, [*spurt, *gap, *spurt2])
    present = [ALICE in tick for tick in ticks]
    # Playing while packets flow, absent (not zero frames) during the 400 ms gap.
    assert present[15:25] == [False] * 10
    assert sum(present) >= 20
    assert all(rms(frame) > 100 for frame in heard(ticks, ALICE)[2:8])


def test_sequence_wraparound_mid_stream(speech) -> None:
    _, packets, expected = speech
    sender = PacketSender(ALICE_SSRC, sequence=65530)
    receiver = make_receiver()
    frames = heard(run(receiver, [[sender.packet(p)] for p in packets[:20]]), ALICE)
    assert frames[:20] == expected[:20]


def test_unknown_ssrc_is_held_briefly_then_delivered_when_announced(speech) -> None:
    _, packets, expected = speech
    sender = PacketSender(BOB_SSRC)
    receiver = make_receiver()
    for packet in packets[:3]:
        receiver.on_packet(sender.packet(packet))
    assert receiver.pull_frames() == {}
    assert receiver.stats()["unknown_ssrc"] == 3
    receiver.on_ws_message(speaking(BOB, BOB_SSRC))
    frames = heard(run(receiver, [[sender.packet(p)] for p in packets[3:10]]), BOB)
    assert frames[:10] == expected[:10]


def test_streams_whose_owner_never_comes_do_not_crowd_out_a_new_speaker(speech) -> None:
    _, packets, expected = speech
    receiver = make_receiver()
    for n in range(PENDING_SSRCS):  # sixteen streams nobody ever announces
        receiver.on_packet(PacketSender(0x9000 + n).packet(packets[0]))
    sender = PacketSender(BOB_SSRC)
    for packet in packets[:3]:
        receiver.on_packet(sender.packet(packet))
    receiver.on_ws_message(speaking(BOB, BOB_SSRC))
    frames = heard(run(receiver, [[sender.packet(p)] for p in packets[3:10]]), BOB)
    assert frames[:10] == expected[:10], "Bob's first words were held, not refused"
    assert receiver.stats()["pending_evicted"] == 1


def test_video_rtcp_own_garbage_and_ip_discovery_are_ignored(speech) -> None:
    _, packets, expected = speech
    receiver = make_receiver()
    receiver.on_ws_message(
        {
            "op": 12,
            "d": {
                "user_id": str(BOB),
                "audio_ssrc": BOB_SSRC,
                "video_ssrc": 0x5005,
                "rtx_ssrc": 0x5006,
                "streams": [{"ssrc": 0x5007, "rtx_ssrc": 0x5008, "active": True}],
            },
        }
    )
    alice = PacketSender(ALICE_SSRC)
    noise = [
        PacketSender(0x5005).packet(b"video frame"),
        struct.pack(">BBHII", 0x80, 0x66, 1, 2, 0x5009) + bytes(40),  # video payload type, unknown ssrc
        struct.pack(">BBHI", 0x81, 200, 6, 0x1234) + bytes(24),  # RTCP sender report
        PacketSender(CAP_SSRC).packet(packets[0]),  # our own stream echoed
        b"\x00\x02\x00\x46" + bytes(70),  # an IP discovery reply
        b"\x80",
        b"",
    ]
    rng = random.Random(9)
    noise += [bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 300))) for _ in range(300)]
    arrivals = [[alice.packet(p), *noise[i * 30 : (i + 1) * 30]] for i, p in enumerate(packets)]
    frames = heard(run(receiver, arrivals), ALICE)
    assert frames[: len(expected)] == expected
    stats = receiver.stats()
    assert stats["video"] >= 1
    assert stats["other_payload_type"] >= 1
    assert stats["rtcp"] >= 1
    assert stats["own"] == 1
    assert stats["not_rtp"] >= 1
    assert stats.get("internal_error", 0) == 0
    assert receiver.speakers == {ALICE_SSRC: ALICE, BOB_SSRC: BOB}
    receiver.on_ws_message({"op": 13, "d": {"user_id": str(BOB)}})  # Bob leaves: his video SSRCs go too
    assert receiver._video_ssrcs == set()


def test_other_bots_are_ignored_before_decryption(speech) -> None:
    _, packets, _ = speech
    receiver = make_receiver(is_bot=lambda user_id: user_id == HELPER_BOT)
    receiver.on_ws_message(speaking(HELPER_BOT, BOT_SSRC))
    bot_sender = PacketSender(BOT_SSRC)
    ticks = run(receiver, [[bot_sender.packet(p)] for p in packets[:10]])
    assert all(HELPER_BOT not in tick for tick in ticks)
    assert receiver.stats()["bot"] == 10

    keep = make_receiver(is_bot=lambda user_id: True, ignore_bots=False)
    keep.on_ws_message(speaking(HELPER_BOT, BOT_SSRC))
    bot_sender = PacketSender(BOT_SSRC)
    assert heard(run(keep, [[bot_sender.packet(p)] for p in packets[:10]]), HELPER_BOT)


def test_disconnect_and_new_session_clean_up(speech) -> None:
    _, packets, _ = speech
    receiver = make_receiver()
    receiver.on_ws_message(speaking(BOB, BOB_SSRC))
    receiver.on_ws_message({"op": 11, "d": {"user_ids": [str(ALICE), str(BOB)]}})
    assert receiver.connected_users == {ALICE, BOB}
    receiver.on_ws_message({"op": 13, "d": {"user_id": str(BOB)}})
    assert receiver.speakers == {ALICE_SSRC: ALICE}
    assert receiver.connected_users == {ALICE}
    receiver.on_packet(PacketSender(BOB_SSRC).packet(packets[0]))
    assert receiver.stats()["departed"] == 1  # Bob's packets are no longer attributed to him
    receiver.on_ws_message({"op": 2, "d": {"ssrc": CAP_SSRC, "ip": "1.2.3.4", "port": 5, "modes": [MODE]}})
    assert receiver.speakers == {}
    receiver.on_ws_message({"op": 5, "d": None})  # malformed: ignored
    receiver.on_ws_message({"op": 13, "d": {}})


def test_user_changing_ssrc_moves_their_stream(speech) -> None:
    _, packets, expected = speech
    receiver = make_receiver()
    receiver.on_ws_message(speaking(ALICE, 0x7777))
    assert receiver.speakers == {0x7777: ALICE}
    sender = PacketSender(0x7777)
    frames = heard(run(receiver, [[sender.packet(p)] for p in packets[:10]]), ALICE)
    assert frames[:10] == expected[:10]


def test_no_key_yet_and_unsupported_mode_are_counted_and_logged_once(speech, caplog) -> None:
    _, packets, _ = speech
    conn = connection(secret_key=None, mode=None)
    receiver = VoiceReceiver(conn)  # type: ignore[arg-type]
    receiver.on_ws_message(speaking(ALICE, ALICE_SSRC))
    sender = PacketSender(ALICE_SSRC)
    receiver.on_packet(sender.packet(packets[0]))
    assert receiver.stats()["no_transport_key"] == 1
    conn.mode, conn.secret_key = "aead_aes256_gcm_rtpsize", SECRET_KEY
    for packet in packets[1:20]:
        receiver.on_packet(sender.packet(packet))
    assert receiver.stats()["unsupported_mode"] == 19
    assert len([r for r in caplog.records if "cannot hear" in r.message]) == 1
    conn.mode, conn.secret_key = MODE, list(SECRET_KEY)  # a new session description
    receiver.on_packet(sender.packet(packets[20]))
    assert receiver.stats()["delivered"] == 1


def test_dave_frames_use_the_current_session_and_the_speakers_user_id(speech) -> None:
    _, packets, expected = speech
    conn = connection(dave_session=StandInSession(0x33))
    receiver = VoiceReceiver(conn)  # type: ignore[arg-type]
    receiver.on_ws_message(speaking(ALICE, ALICE_SSRC))
    sender = PacketSender(ALICE_SSRC)
    ticks = []
    for i, packet in enumerate(packets):
        if i == 20:
            conn.dave_session = StandInSession(0x44)  # DAVE re-initialised mid-stream
        sealed_by = StandInSession(0x33) if i == 30 else conn.dave_session  # one frame from the old epoch
        receiver.on_packet(sender.packet(sealed_by.seal(packet)))
        ticks.append(receiver.pull_frames())
    ticks += run(receiver, [])
    frames = heard(ticks, ALICE)
    assert frames[:30] == expected[:30]
    assert len(frames) >= len(packets)  # the frame that could not be opened was concealed, timing kept
    assert correlation(b"".join(expected[32:]), b"".join(frames[32 : len(expected)]), channels=1) > 0.95
    assert {user for user, _ in conn.dave_session.calls} == {ALICE}
    assert receiver.stats()["dave_decrypted"] == len(packets)


def test_plain_audio_claiming_a_dave_members_ssrc_is_not_heard(speech) -> None:
    _, packets, _ = speech
    conn = connection(dave_session=StandInSession(0x33, members=(ALICE, BOB)))
    receiver = VoiceReceiver(conn)  # type: ignore[arg-type]
    receiver.on_ws_message(speaking(ALICE, ALICE_SSRC))
    sender = PacketSender(ALICE_SSRC)
    forged = run(receiver, [[sender.packet(p)] for p in packets[:20]])  # unencrypted, outside a transition
    assert not any(rms(frame) > 100 for frame in heard(forged, ALICE))
    assert receiver.stats()["dave_plaintext_refused"] == 20
    sealed = run(receiver, [[sender.packet(conn.dave_session.seal(p))] for p in packets[20:40]])
    assert sum(rms(frame) > 100 for frame in heard(sealed, ALICE)) >= 18  # the real, encrypted stream is heard


def test_dave_no_key_conceals_the_frame_and_listening_goes_on(speech) -> None:
    import davey

    _, packets, expected = speech
    conn = connection(dave_session=davey.DaveSession(1, 1, 2))  # real davey: no decryptor for anyone yet
    receiver = VoiceReceiver(conn)  # type: ignore[arg-type]
    receiver.on_ws_message(speaking(ALICE, ALICE_SSRC))
    sender = PacketSender(ALICE_SSRC)
    arrivals = [[sender.packet(p + b"\xfa\xfa" if i == 7 else p)] for i, p in enumerate(packets)]
    frames = heard(run(receiver, arrivals), ALICE)
    stats = receiver.stats()
    assert stats["dave_no_key"] == 1
    assert stats["dave_passthrough"] == len(packets) - 1
    assert frames[:7] == expected[:7]
    assert len(frames) >= len(packets)


def test_a_rust_panic_in_the_packet_pipeline_costs_one_packet(speech) -> None:
    """davey's panics are BaseExceptions: `except Exception` let them kill the socket reader thread."""
    _, packets, _ = speech

    class PanickingOnce(SimpleNamespace):
        panics = 1

        def __getattribute__(self, name: str) -> object:
            if name == "mode" and object.__getattribute__(self, "panics"):
                self.panics = 0
                raise_rust_panic()  # stands in for any Rust code reached from the pipeline
            return object.__getattribute__(self, name)

    receiver = VoiceReceiver(PanickingOnce(mode=MODE, secret_key=SECRET_KEY, dave_session=None, ssrc=CAP_SSRC))
    receiver.on_ws_message(speaking(ALICE, ALICE_SSRC))
    sender = PacketSender(ALICE_SSRC)
    for packet in packets[:10]:
        receiver.on_packet(sender.packet(packet))  # must not raise
    stats = receiver.stats()
    assert stats["internal_error"] == 1
    assert stats["delivered"] == 9


def test_interrupts_still_pass_through_the_packet_handler(speech) -> None:
    _, packets, _ = speech
    conn = connection()
    receiver = VoiceReceiver(conn)  # type: ignore[arg-type]
    receiver.on_ws_message(speaking(ALICE, ALICE_SSRC))

    class Interrupting:
        def __eq__(self, other: object) -> bool:
            raise KeyboardInterrupt

        __hash__ = object.__hash__

    conn.mode = Interrupting()
    with pytest.raises(KeyboardInterrupt):
        receiver.on_packet(PacketSender(ALICE_SSRC).packet(packets[0]))
