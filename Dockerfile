# syntax=docker/dockerfile:1
# Cap in a container: `docker compose up -d` (see README, "Deployment"). The image runs as a non-root user,
# applies pending migrations, then runs the bot; `docker compose run --rm bot doctor` runs any other command.

# Build stage: a virtualenv with Cap and the PostgreSQL driver (every dependency ships a wheel: no compiler).
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY cogs ./cogs
COPY realtime ./realtime
RUN python -m venv /opt/cap \
    && /opt/cap/bin/pip install ".[postgres]"

# Runtime stage: libopus0 for voice (discord.py loads it with ctypes), the virtualenv, an unprivileged user.
FROM python:3.11-slim
# Not pinned: the slim base follows Debian's stable point releases, and libopus0 should get their fixes.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libopus0 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 cap \
    && useradd --system --uid 10001 --gid cap --home-dir /app --no-create-home --shell /usr/sbin/nologin cap \
    && mkdir -p /app/data \
    && chown cap:cap /app/data
COPY --from=build /opt/cap /opt/cap
COPY --chmod=0755 docker/entrypoint.sh /usr/local/bin/cap-entrypoint
ENV PATH=/opt/cap/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HEARTBEAT_FILE=/tmp/cap-heartbeat
# Without DATABASE_URL the embedded SQLite lands in /app/data (mount a volume there to keep it).
WORKDIR /app
USER 10001:10001

# Offline checks only (settings, libopus, davey/PyNaCl, database reachable and migrated, token shape) plus
# liveness: the bot touches HEARTBEAT_FILE every 30 s while its Discord connection is alive. A health probe
# must not spend OpenAI sessions or Discord requests. Prints only what fails.
HEALTHCHECK --interval=60s --timeout=30s --start-period=90s --retries=3 \
    CMD ["cap-bot", "doctor", "--offline", "--quiet", "--heartbeat"]
# SIGTERM (docker stop, compose down): Cap leaves its calls, flushes transcripts and closes Realtime sessions.
STOPSIGNAL SIGTERM
ENTRYPOINT ["cap-entrypoint"]
CMD ["run"]
