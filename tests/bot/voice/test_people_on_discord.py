"""Two callers in one channel, through discord.py's own connect code against the emulated Discord: each turn is
posted under the person who said it, also when the other one talks over its start (issue 15)."""

from __future__ import annotations

import asyncio

from tests.bot.voice.emulated_call import ALICE, BOB, cap_on_discord, speech
from tests.discord_emulator import LOBBY_ID, wait_until

SILENCE_GAP = 1.5  # s between the turns: the fake's server VAD ends a turn after 500 ms


async def test_two_callers_speaking_in_turn_and_over_each_other_are_told_apart() -> None:
    said = ("I'm the loan officer, go ahead.", "I'd like a loan on a rental in Austin.")
    async with cap_on_discord(transcript_destination="voice_chat", user_transcripts=said) as cap:
        await cap.discord.join(BOB, LOBBY_ID)
        await cap.join()
        await cap.connected_in(LOBBY_ID)
        await cap.hears(ALICE, frames=100)  # Alice's turn
        await asyncio.sleep(SILENCE_GAP)
        # Bob's turn, with Alice saying "mm-hm" over its first 200 ms.
        await asyncio.gather(cap.discord.say(BOB, speech(frames=120)), cap.discord.say(ALICE, speech(frames=10)))

        def caller_lines() -> list[str]:
            return [text for text in cap.discord.texts(LOBBY_ID) if text.startswith("**") and
                    not text.startswith("**Cap:**")]

        await wait_until(lambda: len(caller_lines()) >= 2, what="both callers' transcript lines")
        assert caller_lines()[:2] == [f"**Alice:** {said[0]}", f"**Bob:** {said[1]}"]
        status = await cap.command("status")
        assert "answers when addressed" in status  # two people: Cap answers only when addressed
