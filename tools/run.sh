#!/usr/bin/env bash
# `make run`: a local IRC network plus the bot.
#
# Starts InspIRCd (inspircd/inspircd.conf: 127.0.0.1:6667, stock flood limits)
# and Atheme services (inspircd/atheme.conf: NickServ accounts, SASL) in the
# background with their logs in var/, then runs the bot in the foreground:
#     .venv/bin/masterchief run --config-dir config [ARGS...]
# Ctrl-C (or the bot exiting) stops all three. Extra arguments go to the bot.
# MASTERCHIEF_NO_BOT=1 starts only the servers and waits (to try clients by hand).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export MASTERCHIEF_ROOT="$ROOT"   # inspircd.conf spells its paths &env.MASTERCHIEF_ROOT;/...
VAR="$ROOT/var"
HOST=127.0.0.1
PORT=6667
mkdir -p "$VAR/atheme"

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

if port_open "$HOST" "$PORT"; then
    echo "run: something already listens on $HOST:$PORT (an earlier 'make run'? see $VAR/inspircd.pid)" >&2
    exit 1
fi

pids=()
cleanup() {
    trap - EXIT INT TERM
    local pid
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Each daemon gets its own stdout/stderr files (never our pipe) and no stdin.
inspircd --config "$ROOT/inspircd/inspircd.conf" --nofork --runasroot \
    </dev/null >"$VAR/inspircd.stdout" 2>"$VAR/inspircd.stderr" &
pids+=("$!")

for _ in $(seq 100); do
    port_open "$HOST" "$PORT" && break
    kill -0 "${pids[0]}" 2>/dev/null || { echo "run: InspIRCd exited, see $VAR/inspircd.*" >&2; exit 1; }
    sleep 0.1
done
port_open "$HOST" "$PORT" || { echo "run: InspIRCd did not open $HOST:$PORT" >&2; exit 1; }

alog="$VAR/atheme.log"
skip=1
[ -f "$alog" ] && skip=$(( $(wc -l <"$alog") + 1 ))
atheme-services -n -c "$ROOT/inspircd/atheme.conf" -D "$VAR/atheme" -l "$alog" -p "$VAR/atheme.pid" \
    </dev/null >"$VAR/atheme.stdout" 2>"$VAR/atheme.stderr" &
pids+=("$!")

linked=""
for _ in $(seq 200); do
    if tail -n +"$skip" "$alog" 2>/dev/null | grep "finished synching with uplink" >/dev/null; then
        linked=1
        break
    fi
    kill -0 "${pids[1]}" 2>/dev/null || break
    sleep 0.05
done
if [ -z "$linked" ]; then
    echo "run: Atheme did not link (see $VAR/atheme.*); continuing without services" >&2
fi

echo "run: IRC server on $HOST:$PORT${linked:+ with services (NickServ, SASL)}; logs in $VAR/"
if [ -n "${MASTERCHIEF_NO_BOT:-}" ]; then
    echo "run: MASTERCHIEF_NO_BOT set; Ctrl-C to stop the servers"
    wait "${pids[0]}"
    exit 0
fi

status=0
"$ROOT/.venv/bin/masterchief" run --config-dir "$ROOT/config" "$@" || status=$?
exit "$status"
