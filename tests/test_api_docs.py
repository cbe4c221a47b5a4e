"""docs/api.md is generated from the docstrings and up to date; every public name has a runnable example.

The examples themselves run as doctests (``--doctest-modules`` over src/modbalance); here we check
that they exist, and that docs/make_api.py's page matches the committed one.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import shlex
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _load_make_api() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_api", ROOT / "docs" / "make_api.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_api"] = module
    spec.loader.exec_module(module)
    return module


make_api = _load_make_api()

#: Modules whose every public name must carry an ``Example:`` (the issue's list, plus the rest
#: that is complete today).
STRICT = (
    "modbalance",
    "modbalance.fusion",
    "modbalance.scores",
    "modbalance.interaction",
    "modbalance.presets",
    "modbalance.methods",
    "modbalance.encoders",
    "modbalance.metrics",
    "modbalance.probe",
    "modbalance.report",
    "modbalance.train",
    "modbalance.data",
)

#: Public names still without an example, in files another change owns right now. Each entry must
#: still be a gap (the test below fails once it is fixed, so the list cannot go stale).
KNOWN_GAPS: set[str] = set()

#: Names that are documented by convention rather than by a docstring.
EXEMPT = {"modbalance.__version__"}


def _gaps(module_name: str) -> list[str]:
    """Public names of ``module_name`` without an example (constants: without a ``#:`` comment)."""
    module = importlib.import_module(module_name)
    missing = []
    for name in module.__all__:
        qualified = f"{module_name}.{name}"
        if qualified in EXEMPT:
            continue
        obj = getattr(module, name)
        if isinstance(obj, ModuleType):
            documented = make_api.has_example(obj) or not _gaps(obj.__name__)
        elif inspect.isclass(obj) or inspect.isroutine(obj):
            documented = make_api.has_example(obj)
        else:
            documented = make_api.constant_comment(module, name) is not None
        if not documented:
            missing.append(qualified)
    return missing


def test_api_page_is_up_to_date():
    committed = (ROOT / "docs" / "api.md").read_text()
    assert committed == make_api.render(), "docs/api.md is stale: run `python docs/make_api.py` and commit it"


def test_api_page_documents_every_public_submodule():
    for module_name in make_api.MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            if isinstance(obj, ModuleType):
                assert obj.__name__ in make_api.MODULES, f"{module_name}.{name} is public but has no api.md section"


def test_api_page_has_no_executed_blocks():
    # tests/test_docs.py executes ```python blocks; signatures and doctests must not be among them.
    assert "```python" not in (ROOT / "docs" / "api.md").read_text()


@pytest.mark.parametrize("module_name", STRICT)
def test_every_public_name_has_an_example(module_name):
    missing = [name for name in _gaps(module_name) if name not in KNOWN_GAPS]
    assert not missing, f"public names without an `Example:` doctest (or `#:` comment for constants): {missing}"


def test_known_gaps_are_still_gaps():
    still = {name for module_name in STRICT for name in _gaps(module_name)}
    fixed = sorted(KNOWN_GAPS - still)
    assert not fixed, f"remove these from KNOWN_GAPS in tests/test_api_docs.py, they are documented now: {fixed}"


def test_has_example_needs_a_doctest_in_the_objects_own_docstring():
    def documented():
        """Do nothing.

        Example:
            >>> documented()
        """

    def prose_only():
        """Do nothing.

        Example:
            call it
        """

    class Child(ValueError):
        pass

    assert make_api.has_example(documented)
    assert not make_api.has_example(prose_only)
    assert not make_api.has_example(Child)  # ValueError's docstring is inherited, not its own


def test_split_docstring_ends_a_section_at_the_base_indentation():
    doc = (
        "Summary.\n\nArgs:\n    x: a (B, D) tensor.\n        more on x.\n\n"
        "A note after the args.\n\nExample:\n    >>> 1\n    1"
    )
    summary, sections = make_api.split_docstring(doc)
    assert summary == "Summary.\n\nA note after the args."
    assert sections["Args"] == "x: a (B, D) tensor.\n    more on x."
    assert sections["Example"] == ">>> 1\n1"


LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("path", [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))], ids=lambda p: p.name)
def test_relative_links_and_images_resolve(path):
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.DOTALL)  # code is not a link
    text = re.sub(r"`[^`\n]*`", "", text)
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        if not (path.parent / target).exists():
            broken.append(target)
    assert not broken, f"{path.name} links to missing files: {broken}"


#: The loop variables used in docs/benchmarks.md, longest name first ("$sp" before "$s").
SHELL_VARS = {"$sp": "update", "$s": "0", "$m": "ogm", "$a": "0.8"}


def _documented_commands() -> list[tuple[str, list[str]]]:
    """Every ``modbalance ...`` command (also after ``torchrun ... -m``) in a ```bash block, as argv."""
    import shlex

    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for block in re.findall(r"```bash\n(.*?)```", path.read_text(), re.DOTALL):
            for line in block.replace("\\\n", " ").splitlines():
                words = shlex.split(line, comments=True)
                if "modbalance" not in words or "pip" in words:
                    continue
                argv = words[words.index("modbalance") + 1 :]
                argv = [next((word.replace(k, v) for k, v in SHELL_VARS.items() if k in word), word) for word in argv]
                argv = argv[: argv.index(";")] if ";" in argv else argv
                argv = [word.rstrip(";") for word in argv if word not in ("done", "do")]
                found.append((f"{path.name}: {line.strip()}", argv))
    return found


@pytest.mark.parametrize("command", _documented_commands(), ids=lambda command: command[0][:70])
def test_documented_commands_parse_and_shipped_configs_load(command):
    """A command shown in the docs parses with the real CLI; a shipped config loads with its overrides."""
    from modbalance.cli import build_parser

    where, argv = command

    try:
        args = build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"{where}: the command line does not parse: {argv}")
    config = getattr(args, "config", None)
    if args.command == "train" and config and not config.endswith((".yaml", ".yml")):
        from modbalance.train import load_config

        load_config(config, args.overrides)  # raises ConfigError naming a bad key or value


def test_documented_commands_are_found():
    commands = [argv for _, argv in _documented_commands()]
    assert ["train", "--config", "lab/ogm"] in commands  # the README's first training command
    assert any(argv[:1] == ["report"] for argv in commands)


def _runnable_here(argv: list[str]) -> bool:
    """Commands that need nothing this machine lacks: no user YAML, no dataset root, no GPU launcher."""
    text = " ".join(argv)
    return "my_run.yaml" not in text and "data.root=" not in text and "my_cremad" not in text


@pytest.mark.slow
def test_readme_training_commands_run_for_real(tmp_path, monkeypatch):
    """The README's "Train from a config" block, executed top to bottom in an empty folder.

    Lines that need a user's YAML, a dataset or several processes are only parsed (above).
    """
    from modbalance.cli import main

    monkeypatch.chdir(tmp_path)
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Train from a config", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    ran = []
    threads = torch.get_num_threads()  # `modbalance demo` sets the process's thread count
    try:
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            if not words or words[0] != "modbalance" or not _runnable_here(words[1:]):
                continue
            assert main(words[1:]) == 0, line
            ran.append(words[1])
    finally:
        torch.set_num_threads(threads)
    assert ran.count("train") >= 3 and "report" in ran and "demo" in ran
    assert (tmp_path / "report" / "report.md").exists()
