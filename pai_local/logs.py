"""What the local stack prints: a line per request and what goes wrong, not each library's chatter."""

from __future__ import annotations

import logging

# Lines a person running `make run` has no use for: credentials found at every start, and one line
# per call the chat function makes to the offline model's server (the gateway already logs the request).
CHATTY_LOGGERS = ("botocore.credentials", "httpx", "httpx2", "openai", "urllib3")


def configure_console_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(message)s")
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
