"""Log formatting shared by the boruta processes: one line per event with key=value fields.

Only a main() configures logging; modules just use logging.getLogger(__name__).
"""

from __future__ import annotations

import logging
import sys

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class KeyValueFormatter(logging.Formatter):
    """Renders the record's extra fields after the message, as key=value pairs."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        if extras:
            line += " " + " ".join(
                f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}"
                for k, v in sorted(extras.items())
            )
        return line


def configure(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    # grpc logs every event-loop hand-off at DEBUG; that drowns everything else.
    logging.getLogger("grpc").setLevel(max(logging.INFO, logging.getLogger().level))
