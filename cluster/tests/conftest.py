"""Make ``localcluster`` importable from the tests (it lives in ``cluster/``)."""

import sys
from pathlib import Path

CLUSTER = str(Path(__file__).resolve().parents[1])
if CLUSTER not in sys.path:
    sys.path.insert(0, CLUSTER)
