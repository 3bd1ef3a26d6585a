"""Every shell command in README.md and docs/*.md runs as written: each ``./run.sh`` line is parsed
by the real command line (speedrun.cli.parse, the parser ``./run.sh`` hands its arguments to), its
record loads with its ``--config.`` overrides and passes speedrun.config.validate; scripts it names
exist. Training is not run here (full-length runs take minutes to hours): the README's first command
runs in CI (.ci/run's smoke step) and ``./run.sh test`` is this suite. On the front page each command
says what it prints (a trailing comment)."""

import re
import shlex
from pathlib import Path

import pytest

from speedrun import cli, config

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COMMANDS = ("train", "bench", "report", "eval", "sweep", "profile", "list")


def shell_lines(path: Path) -> list[str]:
    """The command lines of the fenced bash/sh/shell blocks of ``path`` (continuations joined)."""
    text = path.read_text(encoding="utf-8")
    out = []
    for block in re.findall(r"```(?:bash|sh|shell|console)\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                out.append(line)
    return out


CASES = [(p.relative_to(ROOT).as_posix(), line) for p in DOCS for line in shell_lines(p)]


def _words(line: str) -> list[str]:
    words = shlex.split(line, comments=True)
    while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):  # VAR=value prefixes
        words.pop(0)
    return words


@pytest.mark.parametrize("doc, line", CASES, ids=[f"{d}:{i}" for i, (d, _) in enumerate(CASES)])
def test_doc_command_parses_and_its_record_loads(doc, line):
    words = _words(line)
    if not words:
        return
    if words[0] in ("pip", "cd", "export", "git", "sudo") or words[0].endswith("pytest"):
        return  # installs, system setup and the suite: CI runs them
    if words[0].endswith(".sh") and words[0] != "./run.sh":
        assert (ROOT / words[0]).exists(), f"{doc}: {line!r} names {words[0]}, which does not exist"
        return
    if words[0].startswith("python") or words[0].endswith("/python"):
        script = next((w for w in words[1:] if w.endswith(".py")), None)
        if script:
            assert (ROOT / script).exists(), f"{doc}: {line!r} names {script}, which does not exist"
        return
    assert words[0] in ("./run.sh", "speedrun"), f"{doc}: {line!r} is not a command this test knows"
    argv = words[1:]
    if not argv or argv[0] in ("test", "help", "-h", "--help") or "--help" in argv:
        return
    if argv[0] not in COMMANDS:
        argv = ["train", *argv]
    args, overrides = cli.parse(argv)
    record = getattr(args, "record", None)
    if record:
        path = ROOT / record if record.endswith(".py") else record
        config.validate(config.load_record(path, overrides))


def test_front_page_commands_say_what_they_print():
    for line in shell_lines(ROOT / "README.md"):
        if line.startswith("./run.sh"):
            assert "#" in line and "print" in line.split("#", 1)[1], f"README: {line!r} should say what it prints"
