#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for development, tests and benchmarks.
#
#   scripts/postgres.sh run CMD...   run CMD with DATABASE_URL set: the caller's own if already set,
#                                    otherwise a new cluster on a free port, removed when CMD ends
#   scripts/postgres.sh start DIR    start a new cluster in DIR (a new empty folder) and print its URL
#   scripts/postgres.sh restart DIR  restart the cluster in DIR (fast: connections are cut)
#   scripts/postgres.sh stop DIR     stop the cluster in DIR and delete DIR
#   scripts/postgres.sh pause DIR    stop the server in DIR but keep its data (an outage, for tests)
#   scripts/postgres.sh resume DIR   start a paused server again, on its port
#
# PostgreSQL refuses to run as root, so as root the server runs as the 'postgres' user.
set -euo pipefail

bindir() {
    local dir
    dir=$(find /usr/lib/postgresql -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)
    if [ -z "$dir" ]; then
        echo "postgres.sh: no PostgreSQL server found under /usr/lib/postgresql; run 'make deps'" >&2
        exit 1
    fi
    echo "$dir"
}

as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# A port below the kernel's ephemeral range, where client connections take their local ports: a port
# that a client socket holds cannot be bound by a server even though nothing listens on it.
free_port() {
    local port low
    low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
    for _ in $(seq 1 50); do
        port=$((10000 + RANDOM % (low - 10000)))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    echo "postgres.sh: no free port found" >&2
    exit 1
}

start() {
    local dir=$1 bin port
    bin=$(bindir)
    port=$(free_port)
    mkdir -p "$dir"
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres: "$dir"
    fi
    chmod 700 "$dir"
    as_owner "$bin/initdb" --pgdata="$dir/data" --auth=trust --username=postgres --encoding=UTF8 \
        --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
    # Another cluster starting at the same moment may take the same port: try a few.
    for attempt in 1 2 3 4 5; do
        echo "$port" >"$dir/port"
        if serve "$dir" 2>"$dir/start.err"; then
            echo "postgresql://postgres@127.0.0.1:$port/postgres"
            return 0
        fi
        if [ "$attempt" -lt 5 ] && grep -q 'Address already in use' "$dir/server.log" 2>/dev/null; then
            port=$(free_port)
            continue
        fi
        cat "$dir/start.err" >&2
        exit 1
    done
}

# Starts the server of the cluster in DIR on the port recorded there.
serve() {
    local dir=$1
    as_owner "$(bindir)/pg_ctl" --pgdata="$dir/data" --log="$dir/server.log" --wait --timeout=60 \
        -o "-c port=$(cat "$dir/port") -c listen_addresses=127.0.0.1 -c unix_socket_directories=$dir -c max_connections=300" \
        start >/dev/null || { cat "$dir/server.log" >&2; return 1; }
}

pause() {
    local dir=$1
    as_owner "$(bindir)/pg_ctl" --pgdata="$dir/data" --mode=fast --wait --timeout=60 stop >/dev/null
}

restart() {
    local dir=$1
    as_owner "$(bindir)/pg_ctl" --pgdata="$dir/data" --log="$dir/server.log" --mode=fast --wait --timeout=60 \
        restart >/dev/null
}

stop() {
    local dir=$1
    if [ -d "$dir/data" ]; then
        as_owner "$(bindir)/pg_ctl" --pgdata="$dir/data" --mode=fast --wait stop >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
}

case "${1:-}" in
run)
    shift
    if [ -n "${DATABASE_URL:-}" ]; then
        exec "$@"
    fi
    dir=$(mktemp -d /tmp/sluice-pg.XXXXXX)
    trap 'stop "$dir"' EXIT
    trap 'exit 130' INT TERM
    DATABASE_URL=$(start "$dir")
    export DATABASE_URL
    echo "postgres.sh: throwaway PostgreSQL at $DATABASE_URL (removed on exit)" >&2
    "$@"
    ;;
start) start "$2" ;;
restart) restart "$2" ;;
stop) stop "$2" ;;
pause) pause "$2" ;;
resume) serve "$2" ;;
*)
    echo "usage: scripts/postgres.sh run CMD... | start DIR | restart DIR | stop DIR | pause DIR | resume DIR" >&2
    exit 2
    ;;
esac
