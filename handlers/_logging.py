"""Library loggers held at WARNING, whatever the function's own log level.

At DEBUG, botocore logs every request and response body: a KMS GenerateDataKey or Decrypt answer
carries the plaintext data key, a Converse request the user's prompt. urllib3, httpx, httpcore and
openai log the same traffic from below and from the OpenAI-compatible provider. The function's level
(POWERTOOLS_LOG_LEVEL, Lambda's ApplicationLogLevel) is for PAI's own records only, so these are
pinned here, once, when a handler module is imported: a DEBUG record of theirs is never created.
"""

from __future__ import annotations

import logging

PINNED_LOGGERS = ("botocore", "boto3", "s3transfer", "urllib3", "httpx", "httpcore", "openai")
PINNED_LEVEL = logging.WARNING


def pin_library_loggers() -> None:
    for name in PINNED_LOGGERS:
        logging.getLogger(name).setLevel(PINNED_LEVEL)


pin_library_loggers()
