"""A function for the process-mode tests: it answers with its worker's pid, or, asked to hang,
ignores its deadline the way a model running in the function's own process can."""

from __future__ import annotations

import json
import os
import time
from typing import Any


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    if json.loads(event.get("body") or "{}").get("hang"):
        time.sleep(3600)
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/json"},
        "body": json.dumps({"pid": os.getpid()}),
    }
