#!/usr/bin/env bash
# The embedded default (`make run`): gunicorn and a Celery worker (with the
# sweeper's beat), started and stopped together.
#
# Stops both on Ctrl-C, SIGTERM or SIGHUP (make passes SIGTERM on to this
# script: its recipe execs it), when make itself is gone, or when either
# process ends. Each process runs in a process group of its own, so that a
# Ctrl-C reaches this script alone and it stops them in order: a signal to
# every process at once can leave Celery's main process waiting forever for
# pool processes that are already gone. What has not stopped after
# STOP_TIMEOUT seconds is killed.
set -u
BIN=${BIN:-.venv/bin}
PORT=${PORT:-8000}
STOP_TIMEOUT=${STOP_TIMEOUT:-30}
# BEAT_SCHEDULE: the sweeper's schedule file (default var/celerybeat-schedule)
parent=$PPID

# Metrics: gunicorn's workers and the Celery worker's pool count into one directory, emptied
# here at each start, so that http://127.0.0.1:$PORT/metrics shows them all (from this machine).
PROMETHEUS_MULTIPROC_DIR=${PROMETHEUS_MULTIPROC_DIR:-$PWD/var/metrics}
rm -rf "$PROMETHEUS_MULTIPROC_DIR" && mkdir -p "$PROMETHEUS_MULTIPROC_DIR" || exit 1
export PROMETHEUS_MULTIPROC_DIR

set -m # background jobs get process groups of their own
"$BIN/celery" -A config worker --beat --loglevel=warning --concurrency=2 \
	--schedule-filename="${BEAT_SCHEDULE:-var/celerybeat-schedule}" &
worker=$!
BIND=127.0.0.1:$PORT WEB_CONCURRENCY=${WEB_CONCURRENCY:-2} \
	"$BIN/gunicorn" -c contrib/deploy/gunicorn.conf.py config.wsgi &
web=$!
set +m

running() { kill -0 -- "-$1" 2>/dev/null; } # any process of that group left

stop() {
	trap '' INT TERM HUP
	kill -TERM "$web" "$worker" 2>/dev/null # each main process stops its own children
	local deadline=$((SECONDS + STOP_TIMEOUT))
	while running "$web" || running "$worker"; do
		if ((SECONDS >= deadline)); then
			echo "run.sh: still running after ${STOP_TIMEOUT}s: killed" >&2
			kill -KILL -- "-$web" "-$worker" 2>/dev/null
			exit 1
		fi
		sleep 0.2
	done
	exit "$1"
}
trap 'stop 0' INT TERM HUP

while running "$web" && running "$worker" && kill -0 "$parent" 2>/dev/null; do
	sleep 1 &
	wait $! # returns at once when a trapped signal arrives
done
running "$web" || echo "run.sh: the web server ended; stopping the worker" >&2
running "$worker" || echo "run.sh: the worker ended; stopping the web server" >&2
stop 1
