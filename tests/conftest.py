from __future__ import annotations

import os

# Nothing in the test suite may reach real AWS: fixed emulator credentials, a fixed region.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "test")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["POWERTOOLS_SERVICE_NAME"] = "pai-test"
