"""Preparation of the raw benchmark releases into the format the loaders read (``modbalance prep``).

Example:
    >>> sorted(PREPARERS)[:2]
    ['ave', 'cremad']
"""

from __future__ import annotations

from modbalance.prep.core import Job, Listing, PrepOptions, process_job, run_prep
from modbalance.prep.registry import PREPARERS, Preparer, prepare

__all__ = ["PREPARERS", "Job", "Listing", "PrepOptions", "Preparer", "prepare", "process_job", "run_prep"]
