"""One logging setup for every entry point (`distill ...`, `python -m pipeline.push.hub`): time, level, logger,
message on stderr; the level from DISTILL_LOG_LEVEL (INFO by default)."""

from __future__ import annotations

import logging
import os


def setup() -> None:
    logging.basicConfig(
        level=os.environ.get("DISTILL_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
