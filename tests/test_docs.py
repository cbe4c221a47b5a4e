"""Every Python code block in README.md and docs/*.md runs; the README's test command is CI's."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


@pytest.mark.parametrize("path", [p for p in DOCS if BLOCK.search(p.read_text())], ids=lambda p: p.name)
def test_python_blocks_run_in_order(path, tmp_path, monkeypatch):
    """A document's blocks share one namespace and run top to bottom, like a reader's session."""
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__doc__"}
    for index, match in enumerate(BLOCK.finditer(path.read_text())):
        exec(compile(match.group(1), f"{path.name}[block {index}]", "exec"), namespace)


def test_readme_has_exactly_two_setup_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    setup = readme.split("## Set-up on a fresh machine", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)\n```", setup, re.DOTALL)
    assert len(commands) == 2
    main_job, test_command = commands
    assert "modbalance demo" in main_job
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci
