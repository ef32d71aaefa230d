# Switchboard's image. compose.yaml runs it as the one-shot migration, the web
# server (gunicorn), the Celery worker and Celery beat, with different commands.
# Slim (Debian's slim Python image, no compiler: every dependency is a wheel),
# non-root (uid 10001; the code is root's and read-only to it), pinned (the base
# image by exact version, the interpreter CI tests with; Python packages by the
# hash-locked runtime set in requirements.txt; no test tooling, no client).

FROM python:3.11.7-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
RUN python -m venv /opt/venv
COPY requirements.txt ./
RUN /opt/venv/bin/pip install --require-hashes -r requirements.txt

FROM python:3.11.7-slim-bookworm
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 BIND=0.0.0.0:8000
RUN groupadd --system --gid 10001 switchboard \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --shell /usr/sbin/nologin switchboard
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY . .
# What the processes write: var/ (static files' folder, a fallback queue) and beat's schedule.
RUN mkdir -p var /var/lib/switchboard && chown switchboard:switchboard var /var/lib/switchboard
USER 10001:10001
EXPOSE 8000
CMD ["gunicorn", "-c", "contrib/deploy/gunicorn.conf.py", "config.wsgi"]
