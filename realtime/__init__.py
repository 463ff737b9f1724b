"""Transport-agnostic voice engine: audio DSP, OpenAI Realtime (GA) client, conversation engine.

Nothing here imports Discord or the database: the same engine runs under Discord, the console
file transport and the tests.
"""
