"""Builders for the OpenAI Realtime GA client events Cap sends, and the session configuration.

GA only: the 2024 beta shapes (`modalities`, `input_audio_format`, `temperature`, the OpenAI-Beta
header) are gone; the service answers them with `beta_api_shape_disabled`. Every builder here is
checked against the official `openai` package's schema in the tests.

Event order of one caller turn (server VAD), written once:
  input_audio_buffer.speech_started -> .speech_stopped -> .committed -> conversation.item.added
  -> conversation.item.input_audio_transcription.completed (may come after the reply starts)
  response.created -> response.output_item.added -> response.output_audio.delta ... -> .done
  -> response.output_audio_transcript.done -> response.output_item.done -> response.done
A function call replaces the audio item by a function_call item; its output goes back with
conversation.item.create + response.create once response.done says `completed`.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any, Literal

REALTIME_SAMPLE_RATE = 24000
AUDIO_FORMAT = {"type": "audio/pcm", "rate": REALTIME_SAMPLE_RATE}
TurnDetection = Literal["server_vad", "semantic_vad"]
Eagerness = Literal["low", "medium", "high", "auto"]
# Listen mode: nobody hears Cap, so its replies are text notes that only serve to call the tools.
LISTEN_INSTRUCTIONS = (
    "You are in listen mode: nobody can hear you and you must not address anyone. People in the channel are "
    "talking with each other (often a loan officer and a borrower). After each turn, if it gave new facts about "
    "the borrower or the deal, record them with your tools (save_lead, analyze_deal, score_lead); never book a "
    "call or make an offer unless someone asks for it. Then answer with one word: noted. (Do not introduce "
    "yourself: the call's disclosure is posted in the channel's text chat.)"
)


@dataclass(frozen=True)
class SessionConfig:
    """What one Realtime session needs: where to connect and how Cap should sound and listen."""

    api_key: str = field(repr=False)
    url: str = "wss://api.openai.com/v1/realtime"
    model: str = "gpt-realtime-2.1"
    voice: str = "alloy"
    instructions: str = ""
    transcription_model: str = "gpt-transcribe"
    vad_threshold: float = 0.5
    vad_prefix_padding_ms: int = 300
    vad_silence_duration_ms: int = 500
    # `semantic_vad` lets callers pause mid-number (a model judges whether they finished); the seed's server VAD
    # stays the default. `vad_eagerness` is semantic_vad's own knob.
    turn_detection: TurnDetection = "server_vad"
    vad_eagerness: Eagerness = "auto"
    # Who gets an answer when several people share the channel (realtime.address); "always" answers every turn.
    reply_mode: str = "always"
    listen_only: bool = False  # Cap never speaks: text-only replies that fill the lead through the tools
    # The service caps a session at 60 minutes; recycle at a turn boundary before that.
    recycle_after_seconds: float = 50 * 60
    # How long a locally paused reply waits for the server to confirm an interruption.
    barge_in_confirm_seconds: float = 0.6
    connect_timeout_seconds: float = 10.0
    # Reconnect: exponential backoff with full jitter from this base; this many failures in a row end it.
    reconnect_base_seconds: float = 0.5
    connect_attempts: int = 6
    # A socket is dead when a send is stuck this long, or a reply is owed and the server says nothing this long.
    send_stall_seconds: float = 3.0
    reply_silence_seconds: float = 4.0
    # Responses in a row that only call tools, since the caller last spoke; past it the model must speak.
    max_tool_rounds: int = 5
    prices_per_mtok: dict[str, float] = field(default_factory=dict)

    @property
    def endpoint(self) -> str:
        return f"{self.url}?model={self.model}"


# semantic_vad waits at most this long after words that sound unfinished (the SDK's docstring: low, medium and high
# have max timeouts of 8 s, 4 s and 2 s; auto is medium).
SEMANTIC_VAD_MAX_WAIT_MS = {"low": 8000, "medium": 4000, "high": 2000, "auto": 4000}


def turn_end_silence_ms(config: SessionConfig) -> int:
    """The longest silence the service may need to hear before it ends a caller's turn."""
    if config.turn_detection == "semantic_vad":
        return SEMANTIC_VAD_MAX_WAIT_MS[config.vad_eagerness]
    return config.vad_silence_duration_ms


def turn_detection(config: SessionConfig, *, answer_turns: bool = True) -> dict[str, Any]:
    """The session's turn detection. `answer_turns=False` keeps the VAD (turns, barge-in, transcripts) but leaves
    asking for a reply to Cap (the address gate); in listen mode nothing Cap says can be interrupted."""
    detection: dict[str, Any]
    if config.turn_detection == "semantic_vad":
        detection = {"type": "semantic_vad", "eagerness": config.vad_eagerness}
    else:
        detection = {"type": "server_vad", "threshold": config.vad_threshold,
                     "prefix_padding_ms": config.vad_prefix_padding_ms,
                     "silence_duration_ms": config.vad_silence_duration_ms}
    detection["create_response"] = answer_turns
    # While Cap picks which turns to answer it also decides who may cut its reply short (not a bystander's
    # "mm-hm"); in listen mode nothing Cap says is heard, so nothing interrupts it.
    detection["interrupt_response"] = answer_turns and not config.listen_only
    return detection


def session_update(config: SessionConfig, tools: list[dict[str, Any]], event_id: str, *,
                   answer_turns: bool = True) -> dict[str, Any]:
    """The seed's session (persona, server VAD, alloy, 24 kHz PCM16) in GA form. The service names the
    `event_id` in an error about this event: a rejected update would otherwise leave its defaults in place."""
    instructions = config.instructions
    if config.listen_only:
        instructions = f"{instructions}\n\n{LISTEN_INSTRUCTIONS}".strip()
    return {
        "type": "session.update",
        "event_id": event_id,
        "session": {
            "type": "realtime",
            "instructions": instructions,
            "output_modalities": ["text"] if config.listen_only else ["audio"],
            "audio": {
                "input": {
                    "format": dict(AUDIO_FORMAT),
                    "turn_detection": turn_detection(config, answer_turns=answer_turns or config.listen_only),
                    "transcription": {"model": config.transcription_model},
                },
                "output": {"format": dict(AUDIO_FORMAT), "voice": config.voice},
            },
            "tools": tools,
            "tool_choice": "auto",
        },
    }


def turn_detection_update(config: SessionConfig, event_id: str, *, answer_turns: bool) -> dict[str, Any]:
    """Only the turn detection changes (someone joined or left the channel): a partial session.update."""
    return {"type": "session.update", "event_id": event_id,
            "session": {"type": "realtime",
                        "audio": {"input": {"turn_detection": turn_detection(config, answer_turns=answer_turns)}}}}


def input_audio_append(pcm24: bytes) -> dict[str, Any]:
    return {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm24).decode("ascii")}


def item_truncate(item_id: str, audio_end_ms: int) -> dict[str, Any]:
    return {"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0,
            "audio_end_ms": int(audio_end_ms)}


def item_delete(item_id: str) -> dict[str, Any]:
    return {"type": "conversation.item.delete", "item_id": item_id}


def response_create(*, tool_choice: str | None = None) -> dict[str, Any]:
    """Ask for a reply; `tool_choice="none"` makes the model speak instead of calling another tool."""
    if tool_choice is None:
        return {"type": "response.create"}
    return {"type": "response.create", "response": {"tool_choice": tool_choice}}


def text_response_create(instructions: str, metadata: dict[str, str]) -> dict[str, Any]:
    """An out-of-band, text-only reply: not added to the conversation, which it still reads (the call summary)."""
    return {"type": "response.create",
            "response": {"conversation": "none", "output_modalities": ["text"], "instructions": instructions,
                         "metadata": metadata}}


def response_cancel() -> dict[str, Any]:
    return {"type": "response.cancel"}


def function_call_output(call_id: str, output: dict[str, Any]) -> dict[str, Any]:
    return {"type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": call_id,
                     "output": json.dumps(output, ensure_ascii=False, default=str)}}


def replay_message(role: str, text: str) -> dict[str, Any]:
    """A past utterance (or a system note) as text, so a new socket (a new session) remembers the caller."""
    content_type = "output_text" if role == "assistant" else "input_text"
    content = [{"type": content_type, "text": text}]
    return {"type": "conversation.item.create",
            "item": {"type": "message", "role": role, "content": content}}
