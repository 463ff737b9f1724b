"""An announcement (a system note the model acts on at once): sent as a valid item, a reply requested after the
current one, and replayed on a new socket."""

from __future__ import annotations

from realtime.conversation import Conversation
from realtime.metrics import SessionMetrics
from realtime.playback import PlaybackBuffer
from realtime.protocol import SessionConfig
from tests.realtime_fake.schema import validate_client_event


def test_an_announcement_is_sent_answered_and_replayed() -> None:
    clock = lambda: 0.0  # noqa: E731
    conv = Conversation(SessionConfig(api_key="k"), [], PlaybackBuffer(clock), SessionMetrics(), clock)
    conv.on_connected()
    conv.events_to_send()
    conv.announce("Say the disclosure now.")
    events = conv.events_to_send()
    for event in events:
        validate_client_event(event)
    assert [event["type"] for event in events] == ["conversation.item.create", "response.create"]
    assert events[0]["item"]["role"] == "system" and "disclosure" in events[0]["item"]["content"][0]["text"]
    conv.announce("Someone else joined: say it again.")  # a reply is already pending: asked for after it
    assert [event["type"] for event in conv.events_to_send()] == ["conversation.item.create"]
    conv.on_connected()  # a new socket remembers both notes
    texts = [e["item"]["content"][0]["text"] for e in conv.events_to_send() if e["type"] == "conversation.item.create"]
    assert texts == ["Say the disclosure now.", "Someone else joined: say it again."]
