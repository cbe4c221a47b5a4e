"""Regenerate the shipped dataset configs (``src/modbalance/configs/<dataset>/<setting>_<method>.yaml``).

The settings are defined once, in ``modbalance.data.presets`` (``DATASET_PRESETS`` and ``CONFIG_NOTES``);
this script writes their YAML files and ``tests/test_configs.py`` checks that the shipped files equal its
output. Run it after editing a setting::

    python docs/make_configs.py
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from modbalance.data.presets import write_configs  # noqa: E402

if __name__ == "__main__":
    for path in write_configs(ROOT / "src" / "modbalance" / "configs"):
        print(path.relative_to(ROOT))
