"""The two requirement sets (issue 22 item 4): requirements.txt, what production runs, is
the hash-locked resolution of requirements.in and holds no test or development tool; the
image and the README's production install take it alone, `make` adds requirements-dev.txt.

That requirements.txt resolves requirements.in is checked without an index: the closure of
requirements.in's packages through the installed packages' own dependency metadata (as
pip-compile walked it) must be exactly requirements.txt's packages, at its versions."""

from __future__ import annotations

import re
import shlex
from importlib import metadata

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.live import REPO

# Test and development tools by name; any package of requirements-dev.txt counts as well.
DEV_TOOLS = {
    "pytest", "pytest-django", "pytest-xdist", "playwright", "schemathesis", "hypothesis", "ruff", "pip-tools",
    "build", "docker", "coverage", "mypy", "black", "flake8", "pylint", "isort", "tox", "nox", "pre-commit",
    "ipython", "ipdb", "django-debug-toolbar", "django-extensions", "faker", "factory-boy", "model-bakery",
    "freezegun", "responses", "locust", "duckdb",
}  # fmt: skip
DEV_PREFIXES = ("pytest", "hypothesis", "types-", "django-stubs", "flake8-")
HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}")


def logical_lines(path: str) -> list[str]:
    """A requirements file's lines with continuations joined and comments dropped."""
    text = (REPO / path).read_text().replace("\\\n", " ")
    lines = (re.sub(r"(^|\s)#.*", "", line).strip() for line in text.splitlines())
    return [line for line in lines if line]


def pins(path: str) -> dict[str, tuple[str, list[str]]]:
    """{normalised name: (version, the rest of its line)} for every `name==version` line;
    any other line is an error naming it."""
    found = {}
    for line in logical_lines(path):
        spec, *rest = line.split()
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;,]+)", spec)
        assert match, f"{path}: not a `name==version` pin: {line[:80]!r}"
        found[canonicalize_name(match.group(1))] = (match.group(2), rest)
    return found


def dev_pins() -> set[str]:
    return {canonicalize_name(line.split("==")[0]) for line in logical_lines("requirements-dev.txt") if "==" in line}


def test_the_runtime_set_is_pinned_and_hash_locked():
    locked = pins("requirements.txt")

    assert len(locked) > 10
    for name, (_, rest) in locked.items():
        hashes = [part for part in rest if HASH.fullmatch(part)]
        assert hashes and len(hashes) == len(rest), f"requirements.txt: {name} without sha256 hashes only: {rest}"
    for name, (version, rest) in pins("requirements.in").items():
        assert rest == [], f"requirements.in: {name} carries options: {rest}"
        assert name in locked, f"requirements.in pins {name}, requirements.txt lacks it: run pip-compile"
        assert locked[name][0] == version, f"{name}: {version} in requirements.in, {locked[name][0]} locked"


def test_the_runtime_set_holds_no_test_or_development_tool():
    runtime = set(pins("requirements.txt")) | set(pins("requirements.in"))

    tools = {name for name in runtime if name in DEV_TOOLS or name.startswith(DEV_PREFIXES)}
    assert tools == set(), "test tooling belongs in requirements-dev.txt"
    # The development set repeats no runtime package: what it adds is for development only.
    assert runtime & dev_pins() == set()
    assert {"pytest", "ruff", "playwright", "schemathesis", "hypothesis", "pip-tools"} <= dev_pins()


def closure(roots: set[str]) -> dict[str, str]:
    """{name: installed version} of `roots` and everything they depend on, following each
    installed package's own metadata, markers evaluated here (as pip-compile evaluated them)."""
    found: dict[str, str] = {}
    wanted = [(name, frozenset()) for name in roots]
    seen: set[tuple[str, frozenset]] = set()
    while wanted:
        name, extras = wanted.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        distribution = metadata.distribution(name)
        found[name] = distribution.version
        for line in distribution.requires or []:
            requirement = Requirement(line)
            marker: Marker | None = requirement.marker
            if marker is None or any(marker.evaluate({"extra": extra}) for extra in {"", *extras}):
                wanted.append((canonicalize_name(requirement.name), frozenset(requirement.extras)))
    return found


def test_the_runtime_set_is_exactly_the_resolution_of_requirements_in():
    locked = {name: version for name, (version, _) in pins("requirements.txt").items()}

    resolved = closure(set(pins("requirements.in")))

    installed_elsewhere = {n: (v, locked[n]) for n, v in resolved.items() if n in locked and v != locked[n]}
    assert installed_elsewhere == {}, "(installed, locked): run `make venv`"
    assert sorted(set(resolved) - set(locked)) == [], "needed but not locked: run pip-compile (requirements.in)"
    assert sorted(set(locked) - set(resolved)) == [], "locked but needed by nothing in requirements.in"


def pip_installs(text: str) -> list[list[str]]:
    """The arguments of every `pip install` in a shell text (continuations joined)."""
    commands = []
    for line in text.replace("\\\n", " ").splitlines():
        for part in re.split(r"&&|;|\|", line.split(" #")[0]):
            if not re.search(r"pip install\b", part):
                continue
            words = shlex.split(part)
            for i, word in enumerate(words[:-1]):
                if word.endswith("pip") and words[i + 1] == "install":
                    commands.append(words[i + 2 :])
    return commands


def runtime_only(arguments: list[str]) -> bool:
    """`pip install --require-hashes -r requirements.txt`, other options allowed, nothing else."""
    installs = [a for i, a in enumerate(arguments) if not a.startswith("-") and arguments[i - 1] != "-r"]
    files = [arguments[i + 1] for i, a in enumerate(arguments) if a == "-r"]
    return "--require-hashes" in arguments and files == ["requirements.txt"] and installs == []


def production_section(markdown: str) -> str:
    return markdown.split("\n## Production", 1)[1].split("\n## ", 1)[0]


def test_the_image_and_the_production_install_take_the_runtime_set_only_and_make_both():
    dockerfile = (REPO / "Dockerfile").read_text()
    image = pip_installs(dockerfile)
    production = pip_installs(production_section((REPO / "README.md").read_text()))
    make = pip_installs((REPO / "Makefile").read_text())

    assert image and all(runtime_only(arguments) for arguments in image), image
    assert "requirements-dev" not in dockerfile and "contrib/client" not in dockerfile
    assert production and all(runtime_only(arguments) for arguments in production), production
    assert runtime_only(make[0]) and make[1][-2:] == ["-r", "requirements-dev.txt"], make
