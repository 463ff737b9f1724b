"""Cap's application layer: settings, CLI, Discord bot, storage, tools and Discord voice I/O."""
