"""Library loggers stay at WARNING when the function logs at DEBUG: botocore's DEBUG records carry
request and response bodies (a KMS data key's plaintext, a prompt), so they must never be made."""

from __future__ import annotations

import base64
import importlib
import logging
from collections.abc import Iterator

import pytest
from aws_lambda_powertools import Logger

import handlers._logging
from handlers._logging import PINNED_LOGGERS

PLAINTEXT_KEY = base64.b64encode(bytes(range(32))).decode("ascii")


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def debug_everywhere(monkeypatch: pytest.MonkeyPatch) -> Iterator[Capture]:
    """The function set to DEBUG every way it can be: Powertools' level, PAI's, and the root logger
    (Lambda's ApplicationLogLevel), with the library loggers reset to inherit it."""
    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("PAI_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("AWS_LAMBDA_LOG_LEVEL", "DEBUG")
    root = logging.getLogger()
    saved = root.level, {name: logging.getLogger(name).level for name in PINNED_LOGGERS}
    root.setLevel(logging.DEBUG)
    for name in PINNED_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET)
    capture = Capture()
    root.addHandler(capture)
    try:
        yield capture
    finally:
        root.removeHandler(capture)
        root.setLevel(saved[0])
        for name, level in saved[1].items():
            logging.getLogger(name).setLevel(level)


def test_importing_the_handlers_pins_the_library_loggers_at_warning(debug_everywhere: Capture) -> None:
    assert logging.getLogger("botocore").getEffectiveLevel() == logging.DEBUG  # unpinned, they would log
    importlib.reload(handlers._logging)  # what a cold start's first import of handlers._http runs
    service = Logger(service="pai-test-loggers")
    assert service.log_level == logging.DEBUG  # the function itself does log at DEBUG
    for name in PINNED_LOGGERS:
        assert logging.getLogger(name).getEffectiveLevel() == logging.WARNING, name
        assert logging.getLogger(f"{name}.any.child").getEffectiveLevel() == logging.WARNING, name


def test_a_botocore_debug_record_of_a_data_key_is_never_emitted(debug_everywhere: Capture) -> None:
    importlib.reload(handlers._logging)
    # What botocore's parsers log at DEBUG for a KMS GenerateDataKey answer.
    body = f'{{"CiphertextBlob": "...", "KeyId": "arn:aws:kms:...", "Plaintext": "{PLAINTEXT_KEY}"}}'
    logging.getLogger("botocore.parsers").debug("Response body:\n%s", body.encode())
    logging.getLogger("botocore.endpoint").debug("Sending http request: %s", body)
    logging.getLogger("urllib3.connectionpool").debug("https://kms.eu-west-1.amazonaws.com:443 POST / 200")
    logging.getLogger("httpx").debug("HTTP Request: POST https://api.openai.com/v1/chat/completions")
    logging.getLogger("openai._base_client").debug("Request options: {'json_data': {'messages': ['secret']}}")
    function_logger = logging.getLogger("test_library_loggers.function")  # stands for the function's own
    function_logger.setLevel(logging.DEBUG)
    function_logger.debug("PAI's own DEBUG record")
    emitted = [record.getMessage() for record in debug_everywhere.records]
    assert emitted == ["PAI's own DEBUG record"]
    assert not any(PLAINTEXT_KEY in message for message in emitted)
    # A library warning still gets through.
    logging.getLogger("botocore.credentials").warning("credentials expire soon")
    assert debug_everywhere.records[-1].getMessage() == "credentials expire soon"


def test_every_handler_module_pins_them_through_the_shared_http_module() -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "handlers"
    assert "import handlers._logging" in (root / "_http.py").read_text(encoding="utf-8")
    for module in sorted(root.glob("[!_]*.py")):
        text = module.read_text(encoding="utf-8")
        pins = ("from handlers._http import", "from handlers._queue import", "import handlers._logging")
        assert any(line in text for line in pins), module.name
    assert "from handlers._http import" in (root / "_queue.py").read_text(encoding="utf-8")
