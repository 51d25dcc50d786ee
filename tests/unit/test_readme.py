"""README.md as written: every Python block runs, and every command it shows exists."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import click
import pytest

from tracker.cli import main

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
TIMEOUT = 120.0
# The blocks README marks to skip, by reason: a new skip must be added here on purpose.
SKIPPED = {"needs an S3 bucket and credentials", "needs a running tracker server"}

_FENCE = re.compile(
    r"(?:<!--\s*readme-test:\s*skip\s*\((?P<reason>[^)]*)\)\s*-->\s*\n)?"
    r"^```(?P<lang>\w*)\n(?P<code>.*?)^```",
    re.MULTILINE | re.DOTALL,
)


class Block(NamedTuple):
    lang: str
    line: int
    code: str
    skip: str | None


def blocks() -> list[Block]:
    text = README.read_text()
    return [
        Block(m["lang"], text.count("\n", 0, m.start("code")) + 1, m["code"], m["reason"])
        for m in _FENCE.finditer(text)
    ]


PYTHON = [b for b in blocks() if b.lang == "python"]


def _clean_env() -> dict[str, str]:
    """This process's environment without any tracking URI, importing this checkout."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_TRACKING_URI")}
    return {**env, "PYTHONPATH": str(REPO)}


@pytest.mark.parametrize("block", PYTHON, ids=[f"line{b.line}" for b in PYTHON])
def test_python_block_runs_as_written(block: Block, tmp_path: Path) -> None:
    """The block, saved as a script, runs in an empty directory on the embedded store."""
    if block.skip is not None:
        pytest.skip(f"README line {block.line}: {block.skip}")
    script = tmp_path / "example.py"
    script.write_text(block.code)
    try:
        done = subprocess.run(
            [sys.executable, str(script)], cwd=tmp_path, env=_clean_env(), capture_output=True,
            text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail(f"README line {block.line}: still running after {TIMEOUT}s")
    assert done.returncode == 0, f"README line {block.line}:\n{done.stderr}"
    assert (tmp_path / "mlruns" / "tracker.db").is_file()  # it used the embedded default


def test_the_skipped_blocks_are_the_listed_ones() -> None:
    """Only blocks that need outside services are skipped, each with its reason; the rest
    (most of them) run."""
    assert {b.skip for b in PYTHON if b.skip is not None} == SKIPPED
    assert len([b for b in PYTHON if b.skip is None]) >= 3


def _command_words(line: str) -> list[str]:
    """The subcommand words of a README `tracker ...` line (up to options and placeholders)."""
    words = []
    for word in shlex.split(line.split("#", 1)[0])[1:]:
        if word.startswith(("-", "[")) or not word.islower() or "://" in word:
            break
        words.append(word)
    return words


def test_every_command_shown_exists() -> None:
    """Each `tracker ...` line in README's sh blocks names a real command and its options."""
    lines = [
        line.strip()
        for b in blocks()
        if b.lang == "sh"
        for line in b.code.splitlines()
        if line.strip().startswith("tracker ")
    ]
    assert len(lines) >= 12
    for line in lines:
        command: click.Command = main
        for word in _command_words(line):
            assert isinstance(command, click.Group), line
            assert word in command.commands, f"README shows `{line}`: no command {word!r}"
            command = command.commands[word]
        known = {opt for p in command.params for opt in getattr(p, "opts", ())}
        for option in re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", line.split("#", 1)[0]):
            assert option in known, f"README shows `{line}`: {option} is not an option"


def test_the_two_commands_at_the_top_stay_true() -> None:
    """The first sh blocks are the install-and-demo and install-and-test commands, and the
    extras they name exist."""
    sh = [b.code.strip() for b in blocks() if b.lang == "sh"]
    assert sh[:2] == [
        "pip install -e . && tracker demo",
        "pip install -e '.[dev]' && python -m pytest",
    ]
    assert "dev = [" in (REPO / "pyproject.toml").read_text()
    assert 'tracker = "tracker.cli:main"' in (REPO / "pyproject.toml").read_text()


def test_tracker_demo_runs_in_a_fresh_directory(tmp_path: Path) -> None:
    """`tracker demo` (the first command) works from an empty directory and says where."""
    done = subprocess.run(
        [sys.executable, "-m", "tracker.cli", "demo", "--epochs", "1", "--steps", "500"],
        cwd=tmp_path, env=_clean_env(), capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (
        "logged 1,501 points" in done.stdout and "store: sqlite:///mlruns/tracker.db" in done.stdout
    )
