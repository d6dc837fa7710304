"""A target that says whether its process found ``dill`` imported: kept to the standard
library, since its process imports this module to load it (by reference)."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def say_whether_dill_is_loaded(leadership: object) -> None:
    """Write ``True`` or ``False`` to ``$GOMASTER_TEST_MARK``."""
    del leadership
    Path(os.environ["GOMASTER_TEST_MARK"]).write_text(str("dill" in sys.modules))
