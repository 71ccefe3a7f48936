"""The documentation cannot rot: every `tunesmith` command in it names a verb and flags that
exist, the shell blocks of the README and the guides run as written (offline, on the example
data, with training cut to a few steps), and the site builds with `mkdocs build --strict`.

A block is run unless the line before it says `<!-- not run: why -->` (a server, a GPU, the
network, data that only the project's machines hold). `<!-- test with: --flag value -->` adds
flags to the block's `train` commands (a tiny model where the default would take minutes).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tunesmith.cli import build_parser, main

ROOT = Path(__file__).resolve().parent.parent
RUN_PAGES = ["README.md", "README.zh-CN.md", "docs/getting-started.md", "docs/zh/getting-started.md",
             *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs" / "guides").glob("*.md"))]
ALL_PAGES = [p for p in RUN_PAGES] + sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").rglob("*.md")
                                            if str(p.relative_to(ROOT)) not in RUN_PAGES)
BLOCK = re.compile(r"(?:<!-- (not run|test with)[^:]*: ?(.*?) -->\n)?```(?:bash|sh|shell)\n(.*?)```", re.S)
# Train commands in the docs run for real, but only a few steps: the point is that they work.
FAST_TRAIN = ["--max-steps", "2", "--no-baseline", "--no-quality-checks"]


def _blocks(page: str):
    """(marker kind, marker text, commands) per shell block; continuation lines joined."""
    text = (ROOT / page).read_text(encoding="utf-8")
    for kind, note, body in BLOCK.findall(text):
        joined = re.sub(r"\\\n\s*", " ", body)
        commands = [line.split(" #")[0].strip() for line in joined.splitlines()]
        yield kind, note, [c for c in commands if c and not c.startswith("#")]


def _tunesmith_argv(command: str) -> list[str] | None:
    words = shlex.split(command)
    if words[:1] == ["tunesmith"]:
        return words[1:]
    if words[:3] == ["python", "-m", "tunesmith"]:
        return words[3:]
    return None


def _options(parser) -> dict[str, set[str]]:
    verbs = parser._subparsers._group_actions[0].choices
    found = {}
    for name, sub in verbs.items():
        strings = {s for action in sub._actions for s in action.option_strings}
        for action in sub._actions:  # nested verbs (assistant build/ask/serve)
            if getattr(action, "choices", None) and isinstance(action.choices, dict):
                for nested, nested_parser in action.choices.items():
                    found[f"{name} {nested}"] = {s for a in nested_parser._actions for s in a.option_strings}
        found[name] = strings
    return found


@pytest.mark.parametrize("page", ALL_PAGES)
def test_every_documented_command_names_a_verb_and_flags_that_exist(page):
    options = _options(build_parser())
    for _, _, commands in _blocks(page):
        for command in commands:
            argv = _tunesmith_argv(command)
            if not argv or argv[0].startswith("-"):
                continue
            verb = f"{argv[0]} {argv[1]}" if len(argv) > 1 and f"{argv[0]} {argv[1]}" in options else argv[0]
            assert verb in options, f"{page}: `{command}`: no verb {verb!r}"
            for word in argv:
                flag = word.split("=")[0]
                if flag.startswith("--"):
                    assert flag in options[verb], f"{page}: `{command}`: {verb} has no flag {flag}"


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A fresh folder with the repository's examples/ beside, as a user's clone has them."""
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("page", [p for p in RUN_PAGES if (ROOT / p).is_file()])
def test_the_shell_blocks_run_as_written(page, workdir, tiny_causal_lm, tiny_t5):
    for kind, note, commands in _blocks(page):
        if kind == "not run":
            continue
        note = note.replace("TINY_CAUSAL_LM", tiny_causal_lm).replace("TINY_T5", tiny_t5)
        extra = shlex.split(note) if kind == "test with" else []
        for command in commands:
            argv = _tunesmith_argv(command)
            if argv is None:
                done = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=300,
                                      env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
                assert done.returncode == 0, f"{page}: `{command}`: {done.stderr[-2000:]}"
                continue
            if argv[0] == "train":
                argv = argv + extra + FAST_TRAIN
            assert main(argv) == 0, f"{page}: `{command}` failed"


@pytest.mark.skipif(shutil.which("mkdocs", path=str(Path(sys.executable).parent)) is None,
                    reason="mkdocs is in the dev extra")
def test_the_site_builds_strictly(tmp_path):
    done = subprocess.run([str(Path(sys.executable).parent / "mkdocs"), "build", "--strict", "--site-dir",
                           str(tmp_path / "site")], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "site" / "reference" / "configuration" / "index.html").is_file()
