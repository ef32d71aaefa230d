"""Every command in the docs runs from a clone (issue 22 item 17): the repository paths,
`manage.py` commands and `make` targets that README.md, docs/*.md and contrib/**/README.md
name in their code exist in the repository, and no command reaches outside it."""

from __future__ import annotations

import fnmatch
import os
import posixpath
import re
import shlex
import subprocess
import time

import pytest
from django.core.management import get_commands

from tests.live import REPO

DOCS = sorted(
    str(path.relative_to(REPO))
    for path in [REPO / "README.md", *(REPO / "docs").glob("*.md"), *(REPO / "contrib").rglob("README.md")]
)
FENCE = re.compile(r"^[ \t]*```([\w-]*)[^\n]*\n(.*?)^[ \t]*```", re.M | re.S)  # in a list item too
SHELL_FENCES = {"", "sh", "bash", "shell", "console"}
# File names worth checking when a code span names one alone (not data or output names).
SOURCE_SUFFIXES = (".py", ".sh", ".md", ".toml", ".yaml", ".yml", ".cfg", ".service")
INTERPRETERS = re.compile(r"(.*/)?(python[\d.]*|bash|sh|source|\.)")
WRAPPERS = {"exec", "sudo", "env", "nohup", "time", "command"}
# A path of the machine the docs were written on, which no clone has.
MACHINE_PATHS = ("/work/", "/root/")


def tracked() -> set[str]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    return {name for name in out.decode().split("\0") if name and (REPO / name).exists()}


TRACKED = tracked()
DIRECTORIES = {"/".join(name.split("/")[:i]) for name in TRACKED for i in range(1, name.count("/") + 1)}
# Where a relative path names the repository: its top folders, those `make` creates, and
# the folders that hold helpers in many projects (a doc naming `tools/x` means a file here).
REPO_ROOTS = {name.split("/")[0] for name in TRACKED if "/" in name} | {".venv", "var"}
REPO_ROOTS |= {"tools", "scripts", "script", "bin", "utils", "helpers", "hack"}


def generated(paths: list[str]) -> set[str]:
    """Those of `paths` that git ignores: made at run time (var/, .venv/, bench/out/)."""
    done = subprocess.run(
        ["git", "check-ignore", "--no-index", "--stdin"],
        cwd=REPO,
        input="\n".join(paths),
        capture_output=True,
        text=True,
    )
    return set(done.stdout.split())


def beside_the_checkout(word: str) -> bool:
    """`../name/...` where name is none of the repository's folders (`../.venv/bin/python`,
    written from inside bench/, is the repository's own)."""
    parts = word.split("/")
    return len(parts) > 2 and parts[0] == ".." and parts[1] not in REPO_ROOTS


def code_of(markdown: str) -> tuple[list[tuple[str, str]], list[str]]:
    """(language, text) of each fenced block, and the text of each inline code span."""
    fences = [(match.group(1), match.group(2)) for match in FENCE.finditer(markdown)]
    prose = FENCE.sub("", markdown)
    spans = re.findall(r"`((?:[^`\n]|\n(?![ \t]*\n))+)`", prose)  # a span may wrap, within its paragraph
    return fences, [span.replace("\n", " ") for span in spans]


def words(span: str) -> list[str]:
    """The path-like words of a code span, without quoting, `@file` or pytest's `::test`."""
    found = []
    for word in re.split(r"[\s=,()\[\]'\"]+", span):
        word = word.removeprefix("@").split("::")[0].rstrip(".,;:")
        if word and not re.search(r"[<>{}$…%]|://", word):
            found.append(word)
    return found


def simple_commands(script: str) -> list[list[str]]:
    """A shell block's commands as word lists: comments, prompts and continuations handled."""
    commands = []
    for line in script.replace("\\\n", " ").splitlines():
        line = re.sub(r"^\s*\$ ", "", line)
        for part in re.split(r"&&|\|\||;|\||\$\(|\)", line):
            try:
                argv = shlex.split(part, comments=True)
            except ValueError:
                argv = part.split("#")[0].split()
            while argv and (re.fullmatch(r"\w+=\S*", argv[0]) or argv[0] in WRAPPERS):
                argv = argv[1:]
            if argv:
                commands.append(argv)
    return commands


def make_targets() -> set[str]:
    return set(re.findall(r"^([\w.-]+):(?!=)", (REPO / "Makefile").read_text(), re.M))


class Finder:
    """Collects the references of one document that a clone cannot satisfy."""

    def __init__(self, doc: str) -> None:
        self.doc = doc
        self.paths: list[tuple[str, str]] = []  # (path from the repository's root, as written)
        self.problems: dict[str, str] = {}  # what is written: why a clone lacks it (the first reason)

    def path(self, written: str, cwd: str = "") -> None:
        if written.startswith(MACHINE_PATHS):
            self.problems.setdefault(written, "a path of one machine, not in a clone")
        elif not written.startswith(("/", "~", "-")):
            resolved = posixpath.normpath(posixpath.join(cwd, written))
            if resolved.startswith(".."):
                self.problems.setdefault(written, "outside the repository")
            else:
                self.paths.append((resolved, written))

    def suffix(self, written: str) -> None:
        """A path written from inside a package (`imports/bulk.py` in ingest/'s section)."""
        if not any(name == written or name.endswith("/" + written) for name in TRACKED):
            self.problems.setdefault(written, "no such file in the repository")

    def test(self, module: str | None, name: str) -> None:
        """A test named as `test_x.py::test_name` (docs/reliability.md's "proved by")."""
        path = REPO / "tests" / (module or "")
        if module is None or not path.is_file() or not re.search(rf"^\s*(async )?def {name}\(", path.read_text(), re.M):
            self.problems.setdefault(f"{module or ''}::{name}", "no such test")

    def management_command(self, name: str) -> None:
        if name not in get_commands():
            self.problems.setdefault(f"manage.py {name}", "no such management command")

    def make_target(self, name: str) -> None:
        if name not in make_targets():
            self.problems.setdefault(f"make {name}", "no such target in the Makefile")

    def missing(self) -> list[str]:
        ignored = generated([resolved for resolved, _ in self.paths])
        for resolved, written in self.paths:
            pattern = resolved.rstrip("/")
            found = (
                pattern in TRACKED
                or pattern in DIRECTORIES
                or resolved in ignored
                or (any(c in pattern for c in "*?[") and fnmatch.filter(TRACKED, pattern))
            )
            if not found:
                self.problems.setdefault(written, "no such path in the repository")
        return [f"{self.doc}: {written}: {why}" for written, why in self.problems.items()]


def references(doc: str, markdown: str | None = None) -> Finder:
    """What `doc` (or `markdown`, read as `doc`) names in its code that a clone must have."""
    finder = Finder(doc)
    markdown = (REPO / doc).read_text() if markdown is None else markdown
    fences, spans = code_of(markdown)
    for line in markdown.splitlines():  # a `::test` after a `tests/x.py::test` in a line is x.py's too
        module = None
        for match in re.finditer(r"`(?:tests/)?(test_\w+\.py)?::(\w+)(?:::(\w+))?", line):
            module = match.group(1) or module
            finder.test(module, match.group(3) or match.group(2))  # a method: `x.py::TestClass::test_y`
    # Not other languages' fences: they show code to write (`# events/sensor.py`), not commands.
    texts = [(text, True) for text in spans] + [(text, False) for lang, text in fences if lang in SHELL_FENCES]
    for text, inline in texts:
        for name in re.findall(r"manage\.py\s+([a-z][\w-]*)", text):
            finder.management_command(name)
        for word in words(text):
            head, _, tail = word.rpartition("/")
            here = inline and word.startswith("./")  # in a block, `./x` is where its `cd`s lead: commands()
            if beside_the_checkout(word):  # `../data/x`: a folder next to this checkout, not in a clone
                finder.problems.setdefault(word, "beside the checkout, not in a clone")
            elif word.startswith(MACHINE_PATHS) or here or head.split("/")[0] in REPO_ROOTS:
                finder.path(word)
            elif head and not word.startswith("/") and re.search(r"\.\w+$", tail):
                finder.suffix(word)  # a file named from inside its package
            elif not head and word.endswith(SOURCE_SUFFIXES) and word != "manage.py":
                finder.suffix(word)
    for language, text in fences:
        if language in SHELL_FENCES:
            commands(finder, text)
    return finder


def commands(finder: Finder, script: str) -> None:
    """The programs a shell block runs, the scripts it hands to interpreters and the `make`
    targets it asks for, each from the folder its `cd`s lead to (the repository's root first)."""
    cwd: str | None = ""
    for argv in simple_commands(script):
        program, arguments = argv[0], argv[1:]
        operands = [a for a in arguments if not a.startswith("-")]
        if program == "cd":
            target = operands[0] if operands else "~"
            if cwd is not None and not target.startswith(("/", "~", "$")):
                finder.path(target, cwd)
                cwd = posixpath.normpath(posixpath.join(cwd, target))
            else:
                cwd = None  # somewhere outside the repository: not followed
            continue
        if cwd is None:
            continue
        if "/" in program and not program.startswith("$"):  # `$PG/initdb`: a variable's folder, not ours
            finder.path(program, cwd)
        if INTERPRETERS.fullmatch(program) and operands and not {"-m", "-c"} & set(arguments):
            finder.path(operands[0], cwd)
            if operands[0].endswith("manage.py") and len(operands) > 1:
                finder.management_command(operands[1])
        if program == "make":
            values = {arguments[i + 1] for i, a in enumerate(arguments[:-1]) if a in ("-C", "-f")}
            for target in operands:
                if target not in values and "=" not in target:
                    finder.make_target(target)


@pytest.mark.parametrize("doc", DOCS)
def test_every_path_command_and_target_the_docs_name_is_in_the_repository(doc):
    assert references(doc).missing() == []


def test_the_finder_catches_what_a_clone_lacks():
    """Each kind of reference a clone cannot run, in a document of its own."""
    markdown = (
        "Run `tools/exclusive make test`, `scripts/deploy`, `bench/no_such.py`; see `ingest/no_such_module.py`\n"
        "and `no_such_module.py`, `./bench/gone`; fine: `application/json`, `6000/min`, `imports/bulk.py`.\n"
        "| proved by `tests/test_docs.py::test_the_finder_catches_what_a_clone_lacks`, `::test_gone` |\n"
        "| `test_docs.py::test_the_benchmark_lock_runs_one_command_at_a_time` | `::test_also_gone` |\n\n"
        "```sh\n/work/tools/exclusive .venv/bin/python bench/import_bench.py\n"
        ".venv/bin/python manage.py no_such_command\ncd bench\n./missing_helper --x\n"
        "../.venv/bin/python not_here.py && ../.venv/bin/python http_bench.py\nmake no-such-target\n```\n"
    )

    problems = "\n".join(references("README.md", markdown).missing())

    for expected in (
        "tools/exclusive: no such path",
        "scripts/deploy: no such path",
        "bench/no_such.py: no such path",
        "ingest/no_such_module.py: no such path",
        "no_such_module.py: no such file",
        "./bench/gone: no such path",
        "/work/tools/exclusive: a path of one machine",
        "manage.py no_such_command: no such management command",
        "./missing_helper: no such path",
        "not_here.py: no such file",
        "make no-such-target: no such target",
        "test_docs.py::test_gone: no such test",
        "::test_also_gone: no such test",
    ):
        assert expected in problems, problems
    for fine in ("import_bench.py", "http_bench.py", ".venv/bin/python", "application/json", "6000/min", "bulk.py"):
        assert fine not in problems, problems
    assert len(problems.splitlines()) == 13, problems


def test_the_benchmark_lock_runs_one_command_at_a_time(tmp_path):
    env = {**os.environ, "SWITCHBOARD_BENCH_LOCK": str(tmp_path / "lock")}
    first = subprocess.Popen(
        ["bench/exclusive", "sh", "-c", f"touch {tmp_path}/first; sleep 1; touch {tmp_path}/first-done"],
        cwd=REPO,
        env=env,
    )
    deadline = time.monotonic() + 30
    while not (tmp_path / "first").exists():
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.05)

    second = subprocess.run(["bench/exclusive", "test", "-e", f"{tmp_path}/first-done"], cwd=REPO, env=env)

    assert first.wait(timeout=30) == 0
    assert second.returncode == 0  # it waited for the first to finish
    assert subprocess.run(["bench/exclusive", "false"], cwd=REPO, env=env).returncode == 1
    assert subprocess.run(["bench/exclusive"], cwd=REPO, env=env, capture_output=True).returncode == 2
