"""Sub-commands of the ``modbalance`` command line (one module each, see :mod:`modbalance.cli`)."""
