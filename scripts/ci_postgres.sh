#!/usr/bin/env bash
# A PostgreSQL server on 127.0.0.1 for the tests (Debian's package), with a role and database `cap_test`.
# Idempotent and safe to run while the server is already up (or while another copy of this script runs).
# Prints the SQLAlchemy URL on stdout, everything else on stderr; exits non-zero when it cannot deliver one.
set -euo pipefail

DB_NAME=cap_test
DB_USER=cap_test
DB_PASSWORD=cap_test
READY_SECONDS=60

# Stdout carries the URL and nothing else (callers capture it): everything any command below prints goes to
# stderr; fd 3 keeps the real stdout for the final line. (pg_ctlcluster, for one, says "Removed stale pid file."
# on stdout after an unclean stop.)
exec 3>&1 1>&2

say() { echo "ci_postgres: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

sudo_cmd=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || die "needs root (or sudo) to install and start PostgreSQL"
  sudo_cmd=(sudo)
fi

if ! command -v pg_lsclusters >/dev/null || ! compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null; then
  say "installing the Debian package postgresql"
  # 3>&-: the package may start the server itself, which must not hold our caller's stdout pipe.
  "${sudo_cmd[@]}" apt-get update -qq 3>&-
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends postgresql \
    >/dev/null 3>&-
fi

as_postgres() {
  if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi
}

# One copy at a time from here: two test runs starting together must not both create or start a cluster.
exec 9>/tmp/cap-ci-postgres.lock
flock -w 120 9 || die "another ci_postgres.sh holds /tmp/cap-ci-postgres.lock"

# The first cluster Debian knows about (the package creates <version>/main); create one if there is none.
read -r version cluster port status _ < <(pg_lsclusters -h | head -n 1) || true
if [[ -z "${version:-}" ]]; then
  version=$(printf '%s\n' /usr/lib/postgresql/*/bin/postgres | awk -F/ '{print $5}' | sort -V | tail -n 1)
  say "creating cluster $version/main"
  "${sudo_cmd[@]}" pg_createcluster "$version" main >/dev/null 3>&- 9>&-
  read -r version cluster port status _ < <(pg_lsclusters -h | head -n 1)
fi

if [[ "$status" != online* ]]; then
  say "starting cluster $version/$cluster on port $port"
  # Exit 2 means "already running" (a race with another starter): readiness below decides.
  # 3>&- 9>&-: the server must not inherit (and so hold for ever) the lock or our caller's stdout pipe.
  "${sudo_cmd[@]}" pg_ctlcluster "$version" "$cluster" start 3>&- 9>&- || [[ $? -eq 2 ]] \
    || die "pg_ctlcluster $version $cluster start failed (see /var/log/postgresql/postgresql-$version-$cluster.log)"
fi

for ((i = 0; i < READY_SECONDS * 4; i++)); do
  pg_isready -q -h 127.0.0.1 -p "$port" && break
  sleep 0.25
done
pg_isready -q -h 127.0.0.1 -p "$port" || die "PostgreSQL $version/$cluster is not accepting connections on 127.0.0.1:$port"

as_postgres psql -q -v ON_ERROR_STOP=1 -p "$port" -d postgres >/dev/null <<SQL || die "could not create role $DB_USER"
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$DB_USER') THEN
    CREATE ROLE $DB_USER LOGIN PASSWORD '$DB_PASSWORD';
  ELSE
    ALTER ROLE $DB_USER LOGIN PASSWORD '$DB_PASSWORD';
  END IF;
END \$\$;
SQL
if [[ -z $(as_postgres psql -tAq -p "$port" -d postgres -c "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'") ]]; then
  as_postgres createdb -p "$port" -O "$DB_USER" "$DB_NAME" || die "could not create database $DB_NAME"
fi

url="postgresql+psycopg://$DB_USER:$DB_PASSWORD@127.0.0.1:$port/$DB_NAME"
PGPASSWORD=$DB_PASSWORD psql -qtA -h 127.0.0.1 -p "$port" -U "$DB_USER" -d "$DB_NAME" -c "SELECT 1" >/dev/null \
  || die "cannot log in as $DB_USER on 127.0.0.1:$port"
say "PostgreSQL $version ready on 127.0.0.1:$port, database $DB_NAME"
echo "$url" >&3
