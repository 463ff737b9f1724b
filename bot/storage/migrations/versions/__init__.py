"""One file per schema revision, applied in order by bot.storage.migrate."""
