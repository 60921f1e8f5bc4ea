"""The README's and the docs' commands still work: every ``qunlearn run ...`` they print loads
its config with its overrides (the checks ``qunlearn run`` makes before it computes), and every
``make TARGET`` is a Makefile target. A renamed config key or target fails here, not for a
reader."""

import re
import shlex
from pathlib import Path

import pytest

from qunlearn.api import prepare

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _code_spans(text: str) -> list[str]:
    """Inline code spans and the lines of fenced blocks."""
    spans = re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S):
        spans += block.splitlines()
    return spans


def _run_commands() -> list[tuple[str, str]]:
    """(first page, command) of each distinct command."""
    found: dict[str, str] = {}
    for page in PAGES:
        for span in _code_spans(page.read_text(encoding="utf-8")):
            command = span.split("#")[0].strip()
            placeholder = "..." in command or any(w.isupper() for w in command.split())
            if command.startswith("qunlearn run ") and not placeholder:
                found.setdefault(command, page.name)
    return [(page, command) for command, page in found.items()]


def test_pages_have_commands():
    pages = {page for page, _ in _run_commands()}
    assert {"README.md", "findings.md", "reproducing.md"} <= pages


@pytest.mark.parametrize("page, command", _run_commands())
def test_run_command_loads(page, command, monkeypatch):
    monkeypatch.chdir(ROOT)
    argv = shlex.split(command)[2:]
    config, overrides, models, tiny = None, [], None, False
    options_with_value = {"--out", "--executor", "--scheduler", "--workers", "--devices"}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--models":
            models, i = argv[i + 1], i + 2
        elif arg in options_with_value:
            i += 2
        elif arg == "--tiny":
            tiny, i = True, i + 1
        elif arg.startswith("--"):
            i += 1
        elif config is None:
            config, i = arg, i + 1
        else:
            overrides, i = [*overrides, arg], i + 1
    prepare(config, None, overrides, tiny=tiny, models=models)


def test_make_targets_exist():
    targets = set(re.findall(r"^([a-z0-9-]+):", (ROOT / "Makefile").read_text(), flags=re.M))
    used = {
        m
        for page in PAGES
        for span in _code_spans(page.read_text(encoding="utf-8"))
        for m in re.findall(r"(?:^|= )make ([a-z0-9-]+)", span.strip())
    }
    assert used and used <= targets, sorted(used - targets)


def test_the_python_on_the_extending_page_runs(capsys):
    """Its minimal model passes the contract check it shows."""
    text = (ROOT / "docs" / "extending.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, "docs/extending.md", "exec"), {"__name__": "extending_page"})
    assert "gradient = finite differences" in capsys.readouterr().out
