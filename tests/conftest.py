"""Shared test set-up: small thread counts (CI has 2 cores), a fixed seed per test, parallel workers."""

import pytest
import torch

torch.set_num_threads(1)


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    """Run on pytest-xdist workers by default (``-n auto``, at most 4), unless ``-n`` is given.

    Here and not in ``addopts``: an ``-n`` there would break ``-p no:xdist`` (serial runs, and
    installs without pytest-xdist), which still work unchanged.
    """
    if not config.pluginmanager.hasplugin("xdist") or hasattr(config, "workerinput"):
        return
    if config.option.numprocesses is None and not config.option.collectonly:
        config.option.numprocesses = "auto"
        if not config.option.maxprocesses:
            config.option.maxprocesses = 4


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
