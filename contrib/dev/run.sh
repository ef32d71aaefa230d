#!/bin/sh
# The embedded default (`make run`): a Celery worker with the sweeper's beat
# and the web server, stopped together by Ctrl-C or SIGTERM.
set -u
BIN=${BIN:-.venv/bin}
PORT=${PORT:-8000}

"$BIN/celery" -A config worker --beat --loglevel=warning --concurrency=2 &
worker=$!
"$BIN/python" manage.py runserver --noreload "$PORT" &
web=$!

stop() {
    kill -TERM "$web" "$worker" 2>/dev/null
}
trap stop INT TERM
# Whichever stops first (a crash, or a signal) takes the other one down.
while kill -0 "$web" 2>/dev/null && kill -0 "$worker" 2>/dev/null; do
    sleep 1
done
stop
wait
