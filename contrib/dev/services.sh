#!/usr/bin/env bash
# Throwaway PostgreSQL and Redis on loopback, for development and CI.
#
#   eval "$(contrib/dev/services.sh start)"   start both (or reuse running ones), export their URLs
#   contrib/dev/services.sh env               print the export lines again
#   contrib/dev/services.sh status            say what is running (exit 1 if not both)
#   eval "$(contrib/dev/services.sh stop)"    stop both, delete their data, unset the variables
#   contrib/dev/services.sh install [PKG...]  apt-get install PostgreSQL/Redis if missing, plus PKG...
#
# stdout carries only shell lines meant for eval (`export ...` / `unset ...`);
# progress and errors go to stderr. `start` prints:
#
#   export DATABASE_URL=postgres://switchboard@127.0.0.1:54329/switchboard
#   export CELERY_BROKER_URL=redis://127.0.0.1:63799/0
#   export REDIS_URL=redis://127.0.0.1:63799/0
#   export SWITCHBOARD_SERVICES_DIR=/tmp/switchboard-services
#
# The role `switchboard` may create databases (pytest-django creates test_*);
# authentication is `trust`, and both servers listen on 127.0.0.1 only.
#
# Environment:
#   SWITCHBOARD_SERVICES_DIR  state (data, sockets, logs, pids); default /tmp/switchboard-services
#   SWITCHBOARD_PG_PORT       PostgreSQL port; default: first free port from 54329
#   SWITCHBOARD_REDIS_PORT    Redis port; default: first free port from 63799
#   SWITCHBOARD_PG_BIN        directory holding initdb, pg_ctl and postgres; default: found
#   SWITCHBOARD_PG_DURABLE    1: keep PostgreSQL's durable defaults (fsync on), for benchmarks;
#                             read when the data directory is created (a new SWITCHBOARD_SERVICES_DIR)
#   SWITCHBOARD_SERVICE_USER  when run as root, the unprivileged user the servers run as
#                             (PostgreSQL refuses root); default `postgres` if it exists,
#                             else a system user `switchboard-ci` is created.
set -euo pipefail

STATE_DIR=${SWITCHBOARD_SERVICES_DIR:-/tmp/switchboard-services}
PG_DIR=$STATE_DIR/pg
PG_DATA=$PG_DIR/data
PG_LOG=$PG_DIR/postgres.log
REDIS_DIR=$STATE_DIR/redis
REDIS_PID=$REDIS_DIR/redis.pid
REDIS_LOG=$REDIS_DIR/redis.log
ENV_FILE=$STATE_DIR/env
MARKER=$STATE_DIR/.switchboard-services
DB_NAME=switchboard
DB_ROLE=switchboard
ENV_VARS=(DATABASE_URL CELERY_BROKER_URL REDIS_URL SWITCHBOARD_SERVICES_DIR)

log() { printf '%s\n' "services: $*" >&2; }
die() {
	log "error: $*"
	exit 1
}

# --- helpers -------------------------------------------------------------

# Directory with initdb, pg_ctl and postgres of one installation: the
# newest Debian /usr/lib/postgresql/*/bin, else wherever `initdb` resolves to.
# (/usr/local/bin may hold pg_ctl/initdb symlinks without a full server.)
find_pg_bin() {
	local dir candidates=() found
	if [[ -n ${SWITCHBOARD_PG_BIN:-} ]]; then
		candidates+=("$SWITCHBOARD_PG_BIN")
	else
		while IFS= read -r dir; do
			candidates+=("$dir")
		done < <(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r)
		for found in initdb pg_ctl postgres; do
			found=$(command -v "$found" 2>/dev/null) || continue
			candidates+=("$(dirname "$(readlink -f "$found")")")
		done
	fi
	for dir in "${candidates[@]}"; do
		if [[ -x $dir/initdb && -x $dir/pg_ctl && -x $dir/postgres ]]; then
			printf '%s\n' "$dir"
			return 0
		fi
	done
	return 1
}

find_psql() {
	local bin
	if bin=$(find_pg_bin) && [[ -x $bin/psql ]]; then
		printf '%s\n' "$bin/psql"
	else
		command -v psql
	fi
}

# The user the servers run as: ourselves, or an unprivileged one when root.
service_user() {
	if [[ $EUID -ne 0 ]]; then
		id -un
	elif [[ -n ${SWITCHBOARD_SERVICE_USER:-} ]]; then
		printf '%s\n' "$SWITCHBOARD_SERVICE_USER"
	elif id postgres >/dev/null 2>&1; then
		echo postgres
	else
		echo switchboard-ci
	fi
}

ensure_user() {
	local user=$1
	id "$user" >/dev/null 2>&1 && return 0
	[[ $EUID -eq 0 ]] || die "user $user does not exist"
	log "creating system user $user"
	useradd --system --user-group --no-create-home --home-dir /nonexistent \
		--shell /usr/sbin/nologin "$user" >&2
}

# Run a command as the owner of a directory (the service user), from /.
as_owner() {
	local dir=$1 user
	shift
	user=$(stat -c %U "$dir")
	if [[ $EUID -eq 0 && $user != root ]]; then
		(cd / && runuser -u "$user" -- "$@")
	else
		(cd / && "$@")
	fi
}

# A live process (a zombie not yet reaped by PID 1 counts as gone).
alive() {
	local state
	kill -0 "$1" 2>/dev/null || return 1
	state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1) || return 0
	[[ $state != Z ]]
}

# Wait up to $2 tenths of a second for process $1 to be gone.
wait_gone() {
	local i
	for ((i = 0; i < $2; i++)); do
		alive "$1" || return 0
		sleep 0.1
	done
	! alive "$1"
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Ports to try: the one asked for, or 20 from the default on.
candidate_ports() {
	local explicit=$1 default=$2 p
	if [[ -n $explicit ]]; then
		echo "$explicit"
	else
		for ((p = default; p < default + 20; p++)); do echo "$p"; done
	fi
}

make_state_dir() {
	if [[ -e $STATE_DIR && ! -f $MARKER ]] && [[ -n $(ls -A "$STATE_DIR") ]]; then
		die "$STATE_DIR exists, is not empty and was not made by this script"
	fi
	mkdir -p "$STATE_DIR"
	touch "$MARKER"
	# The service user must be able to reach its subdirectory (mktemp -d makes 0700).
	chmod 0755 "$STATE_DIR"
}

# Create a subdirectory owned by the service user, and check it can get there.
make_service_dir() {
	local dir=$1 user
	user=$(service_user)
	ensure_user "$user"
	mkdir -p "$dir"
	chown "$user:" "$dir"
	chmod 0700 "$dir"
	as_owner "$dir" test -w "$dir" ||
		die "user $user cannot write to $dir (is a parent directory private?); set SWITCHBOARD_SERVICES_DIR"
}

# --- PostgreSQL ----------------------------------------------------------

pg_port() { cat "$PG_DIR/port" 2>/dev/null; }

postmaster_pid() { head -n 1 "$PG_DATA/postmaster.pid" 2>/dev/null; }

pg_running() {
	local pid
	[[ -f $PG_DATA/PG_VERSION && -f $PG_DIR/bin ]] || return 1
	pid=$(postmaster_pid) && [[ $pid =~ ^[0-9]+$ ]] && alive "$pid" || return 1
	as_owner "$PG_DATA" "$(cat "$PG_DIR/bin")/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1
}

# SQL on stdin, as the superuser `postgres`.
pg_psql() {
	"$(find_psql)" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$(pg_port)" -U postgres -d postgres
}

start_pg() {
	local bin port pid i started=''
	if pg_running; then
		log "PostgreSQL already running on 127.0.0.1:$(pg_port)"
		return 0
	fi
	bin=$(find_pg_bin) || die "no PostgreSQL server (initdb, pg_ctl, postgres) found; install it: $0 install (as root)"
	find_psql >/dev/null || die "psql not found; install postgresql-client"
	if [[ ! -f $PG_DATA/PG_VERSION ]]; then
		rm -rf "$PG_DIR"
		make_service_dir "$PG_DIR"
		log "initdb ($("$bin/postgres" --version)) in $PG_DATA as $(service_user)"
		as_owner "$PG_DIR" "$bin/initdb" -D "$PG_DATA" -U postgres -A trust -E UTF8 --locale=C \
			--no-sync >"$PG_DIR/initdb.log" 2>&1 || {
			cat "$PG_DIR/initdb.log" >&2
			die "initdb failed"
		}
		local socket_dir=$PG_DIR
		# A Unix socket path is limited to 107 bytes; do with TCP alone past that.
		((${#socket_dir} + 18 < 107)) || socket_dir=
		cat >>"$PG_DATA/postgresql.conf" <<-EOF

			# Server for tests and benchmarks (contrib/dev/services.sh): loopback only.
			listen_addresses = '127.0.0.1'
			unix_socket_directories = '$socket_dir'
			max_connections = 200
		EOF
		if [[ ${SWITCHBOARD_PG_DURABLE:-0} == 1 ]]; then
			# Benchmarks: PostgreSQL's durable defaults (fsync, synchronous_commit,
			# full_page_writes all on), as SPEC section 8 asks.
			echo "# durable defaults (SWITCHBOARD_PG_DURABLE=1)" >>"$PG_DATA/postgresql.conf"
		else
			cat >>"$PG_DATA/postgresql.conf" <<-EOF
				# Throwaway server for tests: no durability.
				fsync = off
				synchronous_commit = off
				full_page_writes = off
			EOF
		fi
	fi
	printf '%s\n' "$bin" >"$PG_DIR/bin"
	# After a crash, PostgreSQL takes a dead-but-unreaped postmaster for a live
	# one and refuses to start; give PID 1 a moment to reap it.
	if pid=$(postmaster_pid) && [[ $pid =~ ^[0-9]+$ ]]; then
		for ((i = 0; i < 100; i++)); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
	fi
	while read -r port; do
		if port_in_use "$port"; then
			log "port $port is taken"
			continue
		fi
		: >"$PG_LOG"
		chown "$(stat -c %U "$PG_DATA"):" "$PG_LOG"
		chmod 0600 "$PG_LOG"
		if as_owner "$PG_DATA" "$bin/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t 60 -o "-p $port" start \
			>/dev/null 2>&1; then
			started=$port
			break
		fi
		if grep -q -e 'could not bind' -e 'could not create any TCP/IP sockets' "$PG_LOG" 2>/dev/null; then
			log "port $port: could not bind; trying the next one"
			continue
		fi
		tail -n 20 "$PG_LOG" >&2 || true
		die "PostgreSQL did not start (log: $PG_LOG)"
	done < <(candidate_ports "${SWITCHBOARD_PG_PORT:-}" 54329)
	[[ -n $started ]] || die "no free port for PostgreSQL"
	echo "$started" >"$PG_DIR/port"
	pg_psql <<-EOF
		SELECT 'CREATE ROLE $DB_ROLE LOGIN CREATEDB'
		WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$DB_ROLE') \gexec
		SELECT 'CREATE DATABASE $DB_NAME OWNER $DB_ROLE'
		WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$DB_NAME') \gexec
	EOF
	log "PostgreSQL listening on 127.0.0.1:$started (log: $PG_LOG)"
}

stop_pg() {
	local bin
	[[ -f $PG_DATA/PG_VERSION ]] || return 0
	if ! pg_running; then
		log "PostgreSQL is not running"
		return 0
	fi
	bin=$(cat "$PG_DIR/bin")
	as_owner "$PG_DATA" "$bin/pg_ctl" -D "$PG_DATA" -m fast -w -t 30 stop >/dev/null 2>&1 ||
		as_owner "$PG_DATA" "$bin/pg_ctl" -D "$PG_DATA" -m immediate -w -t 30 stop >/dev/null 2>&1 ||
		die "could not stop PostgreSQL (data: $PG_DATA)"
	log "PostgreSQL stopped"
}

# --- Redis ---------------------------------------------------------------

redis_port() { cat "$REDIS_DIR/port" 2>/dev/null; }

# The pid in the pid file, if that process is alive and is a redis-server.
redis_pid() {
	local pid
	pid=$(cat "$REDIS_PID" 2>/dev/null) || return 1
	[[ $pid =~ ^[0-9]+$ ]] && alive "$pid" || return 1
	[[ $(cat "/proc/$pid/comm" 2>/dev/null || echo redis-server) == redis-server* ]] || return 1
	echo "$pid"
}

redis_running() { redis_pid >/dev/null; }

redis_cli() { redis-cli -h 127.0.0.1 -p "$1" "${@:2}" 2>/dev/null; }

start_redis() {
	local port pid started='' i
	if redis_running; then
		log "Redis already running on 127.0.0.1:$(redis_port)"
		return 0
	fi
	command -v redis-server >/dev/null || die "redis-server not found; install it: $0 install (as root)"
	command -v redis-cli >/dev/null || die "redis-cli not found; install redis-tools"
	rm -rf "$REDIS_DIR"
	make_service_dir "$REDIS_DIR"
	while read -r port; do
		if port_in_use "$port"; then
			log "port $port is taken"
			continue
		fi
		rm -f "$REDIS_PID"
		: >"$REDIS_LOG"
		chown "$(stat -c %U "$REDIS_DIR"):" "$REDIS_LOG"
		as_owner "$REDIS_DIR" redis-server --bind 127.0.0.1 --port "$port" --protected-mode yes \
			--daemonize yes --pidfile "$REDIS_PID" --logfile "$REDIS_LOG" --dir "$REDIS_DIR" \
			--save '' --appendonly no </dev/null >/dev/null 2>&1 || true
		# Ready when the server on that port reports our pid as its own.
		for ((i = 0; i < 100; i++)); do
			if pid=$(redis_pid) &&
				[[ $(redis_cli "$port" info server | tr -d '\r' | sed -n 's/^process_id://p') == "$pid" ]]; then
				started=$port
				break 2
			fi
			if ((i > 5)) && ! redis_running; then break; fi
			sleep 0.1
		done
		if grep -q -e 'Address already in use' -e 'Could not create server TCP' "$REDIS_LOG" 2>/dev/null; then
			log "port $port: could not bind; trying the next one"
			continue
		fi
		tail -n 20 "$REDIS_LOG" >&2 || true
		die "Redis did not start (log: $REDIS_LOG)"
	done < <(candidate_ports "${SWITCHBOARD_REDIS_PORT:-}" 63799)
	[[ -n $started ]] || die "no free port for Redis"
	echo "$started" >"$REDIS_DIR/port"
	log "Redis listening on 127.0.0.1:$started (log: $REDIS_LOG)"
}

stop_redis() {
	local pid
	if ! pid=$(redis_pid); then
		[[ -d $REDIS_DIR ]] && log "Redis is not running"
		return 0
	fi
	redis_cli "$(redis_port)" shutdown nosave >/dev/null || kill "$pid" 2>/dev/null || true
	wait_gone "$pid" 100 || kill -9 "$pid" 2>/dev/null || true
	log "Redis stopped"
}

# --- commands ------------------------------------------------------------

print_env() {
	local pg redis
	if ! pg=$(pg_port) || ! redis=$(redis_port); then
		die "services are not running (state: $STATE_DIR)"
	fi
	printf 'export DATABASE_URL=%q\n' "postgres://$DB_ROLE@127.0.0.1:$pg/$DB_NAME"
	printf 'export CELERY_BROKER_URL=%q\n' "redis://127.0.0.1:$redis/0"
	printf 'export REDIS_URL=%q\n' "redis://127.0.0.1:$redis/0"
	printf 'export SWITCHBOARD_SERVICES_DIR=%q\n' "$STATE_DIR"
}

cmd_start() {
	make_state_dir
	start_pg
	start_redis
	print_env | tee "$ENV_FILE"
}

cmd_env() {
	if ! pg_running || ! redis_running; then
		die "services are not running (state: $STATE_DIR); start them: $0 start"
	fi
	print_env
}

cmd_status() {
	local rc=0
	if pg_running; then log "PostgreSQL: running on 127.0.0.1:$(pg_port)"; else
		log "PostgreSQL: stopped"
		rc=1
	fi
	if redis_running; then log "Redis: running on 127.0.0.1:$(redis_port)"; else
		log "Redis: stopped"
		rc=1
	fi
	return "$rc"
}

cmd_stop() {
	if [[ ! -d $STATE_DIR ]]; then
		log "not running (no $STATE_DIR)"
	else
		[[ -f $MARKER ]] || die "$STATE_DIR was not made by this script; not touching it"
		stop_redis
		stop_pg
		rm -rf "$PG_DIR" "$REDIS_DIR" "$ENV_FILE" "$MARKER"
		rmdir "$STATE_DIR" 2>/dev/null || true
	fi
	echo "unset ${ENV_VARS[*]}"
}

# apt-get install PostgreSQL and Redis when their binaries are missing, plus
# any packages named on the command line (the caller decides they are needed).
cmd_install() {
	local pkgs=("$@") sudo=()
	find_pg_bin >/dev/null || pkgs+=(postgresql)
	if ! command -v psql >/dev/null && [[ ! " ${pkgs[*]} " == *" postgresql "* ]]; then
		pkgs+=(postgresql-client)
	fi
	command -v redis-server >/dev/null || pkgs+=(redis-server)
	command -v redis-cli >/dev/null || pkgs+=(redis-tools)
	if ((${#pkgs[@]} == 0)); then
		log "PostgreSQL and Redis are installed; nothing to install"
		return 0
	fi
	if [[ $EUID -ne 0 ]]; then
		command -v sudo >/dev/null || die "need root to install: ${pkgs[*]}"
		sudo=(sudo)
	fi
	command -v apt-get >/dev/null || die "no apt-get; install by hand: ${pkgs[*]}"
	log "installing: ${pkgs[*]}"
	"${sudo[@]}" apt-get update -q >&2
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -q --no-install-recommends "${pkgs[@]}" >&2
}

usage() {
	sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2
	exit "${1:-0}"
}

case ${1:-} in
start) cmd_start ;;
stop) cmd_stop ;;
env) cmd_env ;;
status) cmd_status ;;
install)
	shift
	cmd_install "$@"
	;;
-h | --help | help) usage 0 ;;
*) usage 2 ;;
esac
