"""The contract of a service copy in the benchmark's scaled system: the contract it copies, re-exported.

Written by benchmarks/scaling.py from benchmarks/scaled_system/contract.py, in which
`architecture.contracts.original` stands for the module of the contract copied.
"""

from architecture.contracts.original import *  # noqa: F403
from architecture.contracts.original import (  # noqa: F401
    EVENTS_CONSUMED,
    EVENTS_PUBLISHED,
)
