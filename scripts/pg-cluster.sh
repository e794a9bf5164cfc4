#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests and benches: `start DIR` runs
# initdb and pg_ctl in DIR (as an unprivileged user when run as root:
# PostgreSQL refuses to run as root) on a free port of 127.0.0.1 and prints
# the URL of a superuser `pmpo`; `stop DIR` stops it, `restart DIR` restarts it
# at once (every connection cut) and `resume DIR` starts a stopped one again. Nothing outside DIR is
# written, except the user `pmpo-pg` created when run as root.
set -euo pipefail

bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
  echo "pg-cluster.sh: PostgreSQL is not installed (apt-get install postgresql)" >&2
  exit 2
fi
as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u pmpo-pg -- "$@"; else "$@"; fi
}

cmd=${1:-}; dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: pg-cluster.sh start|stop DIR" >&2; exit 2; }
case "$cmd" in
  start)
    if [ "$(id -u)" = 0 ] && ! id pmpo-pg >/dev/null 2>&1; then
      useradd --system --no-create-home --shell /usr/sbin/nologin pmpo-pg
    fi
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown pmpo-pg "$dir"
    chmod 700 "$dir"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    as_owner "$bin/initdb" -D "$dir/data" -A trust -U pmpo --no-sync -E UTF8 >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; exit 1; }
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c max_connections=200" start >/dev/null \
      || { cat "$dir/server.log" >&2; exit 1; }
    echo "$port" >"$dir/port"
    echo "postgres://pmpo@127.0.0.1:$port/postgres"
    ;;
  stop)
    [ -d "$dir/data" ] && as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    ;;
  restart)
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -m immediate -w restart >/dev/null
    ;;
  resume)
    # The same settings as `start` (pg_ctl start does not keep them).
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $(cat "$dir/port") -k $dir -c fsync=off -c max_connections=200" start >/dev/null
    ;;
  *) echo "usage: pg-cluster.sh start|stop|restart|resume DIR" >&2; exit 2 ;;
esac
