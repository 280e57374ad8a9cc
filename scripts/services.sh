#!/usr/bin/env bash
# Makes Redis (>= 7, for Functions) and PostgreSQL reachable and prints the
# `export` lines that point the project at them:
#   eval "$(bash scripts/services.sh)"
# Uses the configured addresses (MLCORE_REDIS_URL / MLCORE_PG_DSN, else the
# standard local ports) when they answer; otherwise starts private instances
# from the installed server binaries under .run/services/ on free ports
# (installing the Debian packages first when a binary is missing and we are
# root). A private instance is reused by later runs while it is alive.
source "$(dirname "$0")/lib.sh"

SVC="$RUN_DIR/services"
mkdir -p "$SVC"

if [ "${1:-}" = stop ]; then
  if [ -f "$SVC/redis/redis.pid" ]; then
    say "stopping private Redis"; kill "$(cat "$SVC/redis/redis.pid")" 2>/dev/null || true
  fi
  if [ -f "$SVC/pg/db/postmaster.pid" ]; then
    say "stopping private PostgreSQL"
    bindir="$(dirname "$(ls /usr/lib/postgresql/*/bin/pg_ctl | sort -V | tail -n1)")"
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$bindir/pg_ctl" -D "$SVC/pg/db" -m fast stop >&2
    else "$bindir/pg_ctl" -D "$SVC/pg/db" -m fast stop >&2; fi
  fi
  rm -f "$SVC/redis.url" "$SVC/pg.dsn"
  exit 0
fi

redis_ok() { # url
  local hp="${1#redis://}"; hp="${hp%%/*}"; hp="${hp##*@}"
  [ "$(redis-cli -h "${hp%:*}" -p "${hp##*:}" ping 2>/dev/null)" = PONG ]
}
pg_ok() { # dsn
  psql "$1" -XAtqc 'select 1' >/dev/null 2>&1
}

need_binary redis-cli redis-tools
need_binary redis-server redis-server
need_binary psql postgresql-client
need_binary initdb postgresql

# --- Redis -------------------------------------------------------------------
REDIS_URL="${MLCORE_REDIS_URL:-redis://127.0.0.1:6379/0}"
if redis_ok "$REDIS_URL"; then
  say "Redis answers at $REDIS_URL"
elif [ -f "$SVC/redis.url" ] && redis_ok "$(cat "$SVC/redis.url")"; then
  REDIS_URL="$(cat "$SVC/redis.url")"
  say "reusing private Redis at $REDIS_URL"
else
  port="$(free_port)"
  say "Redis not reachable at $REDIS_URL: starting a private redis-server on 127.0.0.1:$port (data in $SVC/redis)"
  mkdir -p "$SVC/redis"
  # hash-max-listpack-entries 9: the guard's hashes as hash tables, as
  # deployments/redis/README.md advises for a Redis that serves signals.
  redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
    --hash-max-listpack-entries 9 --dir "$SVC/redis" --logfile "$SVC/redis/redis.log" --pidfile "$SVC/redis/redis.pid" >&2
  REDIS_URL="redis://127.0.0.1:$port/0"
  for _ in $(seq 50); do redis_ok "$REDIS_URL" && break; sleep 0.1; done
  redis_ok "$REDIS_URL" || die "private Redis did not start; see $SVC/redis/redis.log"
  echo "$REDIS_URL" > "$SVC/redis.url"
fi
version="$(redis-cli -u "$REDIS_URL" info server | sed -n 's/^redis_version:\([0-9]*\).*/\1/p' | tr -d '\r')"
[ "${version:-0}" -ge 7 ] || die "Redis at $REDIS_URL is version ${version:-unknown}; Redis Functions need >= 7"

# --- PostgreSQL --------------------------------------------------------------
PG_DSN="${MLCORE_PG_DSN:-postgresql://postgres@127.0.0.1:5432/postgres}"
if pg_ok "$PG_DSN"; then
  say "PostgreSQL answers at $PG_DSN"
elif [ -f "$SVC/pg.dsn" ] && pg_ok "$(cat "$SVC/pg.dsn")"; then
  PG_DSN="$(cat "$SVC/pg.dsn")"
  say "reusing private PostgreSQL at $PG_DSN"
else
  bindir="$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n1)")"
  port="$(free_port)"
  data="$SVC/pg"
  say "PostgreSQL not reachable at $PG_DSN: starting a private server on 127.0.0.1:$port (data in $data)"
  rm -rf "$data"; mkdir -p "$data"
  as_pg=()
  if [ "$(id -u)" = 0 ]; then
    # The server refuses to run as root.
    chown postgres: "$data"; chmod 700 "$data"
    as_pg=(runuser -u postgres --)
  fi
  "${as_pg[@]}" "$bindir/initdb" -D "$data/db" -U postgres --auth=trust -E UTF8 >"$SVC/pg-initdb.log" 2>&1 \
    || die "initdb failed; see $SVC/pg-initdb.log"
  "${as_pg[@]}" "$bindir/pg_ctl" -D "$data/db" -l "$data/server.log" -w \
    -o "-p $port -k $data -c listen_addresses=127.0.0.1" start >&2 || die "PostgreSQL did not start; see $data/server.log"
  PG_DSN="postgresql://postgres@127.0.0.1:$port/postgres"
  echo "$PG_DSN" > "$SVC/pg.dsn"
fi

cat <<EOT
export MLCORE_REDIS_URL='$REDIS_URL'
export MLCORE_PG_DSN='$PG_DSN'
export MLCORE_TEST_REDIS_URL='$REDIS_URL'
export MLCORE_TEST_PG_DSN='$PG_DSN'
EOT
