#!/bin/sh
# The container's entrypoint. `run` (the default): apply pending migrations (unless AUTO_MIGRATE is off,
# in which case `cap-bot run` refuses a schema that is behind), then become the bot, so SIGTERM reaches it.
# Anything else is a cap-bot command: `docker compose run --rm bot doctor`, `... bot db current`.
set -eu
if [ "$#" -eq 0 ]; then
  set -- run
fi
if [ "$1" = "run" ]; then
  auto_migrate=$(printf '%s' "${AUTO_MIGRATE:-true}" | tr '[:upper:]' '[:lower:]')
  case "$auto_migrate" in
    0 | off | f | false | n | no) ;;
    *) cap-bot db upgrade ;;
  esac
fi
exec cap-bot "$@"
