#!/usr/bin/env bash
# Restarts this machine's chatbot workers one at a time, each waiting for the previous one
# to answer /readyz over its unix socket: there is always a worker taking visitors, and the
# ones restarted hand their websockets over (close 1012, the widget reconnects through
# nginx to a running worker and resyncs). Run after chatbot-migrate.service on a deploy:
#   systemctl restart chatbot-migrate.service && /srv/chatbot/deploy/rolling-restart.sh
# Exit status 1 (and no further restart) if a worker is not ready within READY_SECONDS.
#
# Environment: SOCKET_DIR (/run/chatbot), READY_SECONDS (180: the embedding model loads at
# start), UNIT (chatbot-worker), SYSTEMCTL (systemctl), CURL (curl).
set -euo pipefail

SOCKET_DIR=${SOCKET_DIR:-/run/chatbot}
READY_SECONDS=${READY_SECONDS:-180}
UNIT=${UNIT:-chatbot-worker}
SYSTEMCTL=${SYSTEMCTL:-systemctl}
CURL=${CURL:-curl}

say() { printf 'rolling-restart: %s\n' "$*"; }

ready() {  # 200 from /readyz: database, channel layer and embedding model ready
    "$CURL" --silent --fail --max-time 5 --output /dev/null \
        --unix-socket "$SOCKET_DIR/worker-$1.sock" "http://localhost/readyz"
}

wait_ready() {
    local instance=$1 deadline=$((SECONDS + READY_SECONDS))
    until ready "$instance"; do
        if ((SECONDS >= deadline)); then
            say "worker $instance not ready within ${READY_SECONDS} s; stopping here (journalctl -u $UNIT@$instance)"
            return 1
        fi
        sleep 1
    done
}

# The instances running now (chatbot-worker@3.service -> 3), in numeric order.
mapfile -t instances < <(
    "$SYSTEMCTL" list-units --type=service --state=active --plain --no-legend "$UNIT@*.service" |
        sed -n "s/^$UNIT@\([^.]*\)\.service.*/\1/p" | sort -n
)
if ((${#instances[@]} == 0)); then
    say "no active $UNIT@*.service instance"
    exit 1
fi

for instance in "${instances[@]}"; do
    say "restarting worker $instance"
    started=$SECONDS
    # Returns once the old process has drained (up to TimeoutStopSec) and the new one started.
    "$SYSTEMCTL" restart "$UNIT@$instance.service"
    wait_ready "$instance"
    say "worker $instance ready after $((SECONDS - started)) s"
done
say "restarted ${#instances[@]} worker(s): ${instances[*]}"
