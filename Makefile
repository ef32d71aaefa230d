# `make run` and `make test` work from a fresh clone: they create .venv and
# install the pinned requirements when either set changes: the runtime set
# (requirements.txt, hash-locked) and the development set (requirements-dev.txt).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | cksum | cut -d' ' -f1)

.PHONY: run test lint venv

venv: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q --require-hashes -r requirements.txt
	$(BIN)/pip install --disable-pip-version-check -q -r requirements-dev.txt
	rm -f $(VENV)/.installed-* && touch $(STAMP)

# The embedded default: SQLite and a filesystem queue under var/, a Celery
# worker (with the sweeper's beat) in the background, gunicorn in front. The
# recipe execs run.sh so that make's SIGTERM reaches it (it stops both).
run: $(STAMP)
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py collectstatic --noinput -v0
	@echo "Switchboard on http://127.0.0.1:$${PORT:-8000}/  (admin: /admin/, API docs: /api/docs/, Prometheus metrics: /metrics)"
	@echo "  key for a client app:  $(BIN)/python manage.py create_app my-site"
	@echo "  post an event:         curl -X POST http://127.0.0.1:$${PORT:-8000}/api/events/ -H 'Authorization: Api-Key <key>' \\"
	@echo "                           -H 'Content-Type: application/json' -d '{\"id\":\"m1\",\"type\":\"message\",\"from\":\"v1\",\"site_id\":\"demo\",\"data\":{\"message\":\"hi\"},\"timestamp\":'$$(date +%s)'}'"
	@echo "  analyst token:         ANALYST_PASSWORD=change-me $(BIN)/python manage.py create_analyst analyst"
	@BIN=$(BIN) exec contrib/dev/run.sh

# Two pytest workers by default (pytest-xdist): the suite starts real servers and
# processes, which wait on I/O much of the time. PYTEST_WORKERS=0 runs in one process.
PYTEST_WORKERS ?= 2
# What the suite runs besides Python, installed with apt-get when missing (as root or
# through sudo; a failed install is reported and the tests say what they lack): PostgreSQL's
# server binaries (tests that start servers of their own), Redis, Debian's chromium (the admin
# in a browser) and promtool (the alert rules).
SYSTEM_PACKAGES = $(shell [ -x /usr/bin/chromium ] || echo chromium) $(shell command -v promtool >/dev/null || echo prometheus)
test: $(STAMP)
	-@bash contrib/dev/services.sh install $(SYSTEM_PACKAGES)
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
