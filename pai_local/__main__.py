"""`python -m pai_local` (what `make run` runs): PAI on this machine, offline."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from pai_core.config import ConfigError, Settings
from pai_core.errors import PaiError
from pai_local.emulator import DEFAULT_EMULATOR_PORT, endpoint_answers
from pai_local.stack import LOCAL_API_KEY_FILE, ensure_local_api_key, start_stack


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m pai_local", description=__doc__)
    parser.add_argument("--port", type=int, default=int(os.environ.get("PAI_PORT", "8080")), help="API port (PAI_PORT)")
    parser.add_argument(
        "--host",
        default=os.environ.get("PAI_HOST", "127.0.0.1"),
        help="API address (PAI_HOST); only a container sets 0.0.0.0, behind a port published on 127.0.0.1",
    )
    parser.add_argument("--emulator-port", type=int, default=DEFAULT_EMULATOR_PORT)
    parser.add_argument(
        "--api-key-file", type=Path, default=LOCAL_API_KEY_FILE, help="where the local user's API key is kept"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        settings = Settings.from_env()
        if settings.endpoint_url and not endpoint_answers(settings.endpoint_url):
            raise RuntimeError(
                f"AWS_ENDPOINT_URL={settings.endpoint_url}: no emulator answers there "
                "(start it, or unset AWS_ENDPOINT_URL to use the embedded one)"
            )
        stack = start_stack(
            settings,
            emulator_port=args.emulator_port,
            gateway_port=args.port,
            gateway_host=args.host,
            execution="process",
        )
    except (ConfigError, RuntimeError, OSError) as exc:
        print(f"pai: cannot start: {exc}", file=sys.stderr)
        return 1
    where = "embedded moto" if stack.emulator else "external emulator"
    print(f"AWS emulator ({where}): {stack.endpoint_url}", flush=True)
    try:
        api_key = ensure_local_api_key(stack.container.api_keys, settings.owner, args.api_key_file)
    except (PaiError, OSError) as exc:
        stack.stop()
        print(f"pai: cannot set up the local API key: {exc}", file=sys.stderr)
        return 1
    key_file = _shown(api_key.path)
    if api_key.created:
        print(f"new API key for user {api_key.user_id!r} (shown once; saved to {key_file}):", flush=True)
        print(f"  {api_key.key}", flush=True)
    else:
        print(f"API key for user {api_key.user_id!r}: the one in {key_file}", flush=True)
    print("loading the embedding model and the offline chat model ...", flush=True)
    stack.container.embedder.embed(["warm up"])
    stack.container.chat_model.count_tokens("warm up")
    print(f"PAI API: {stack.gateway_url}   (Ctrl-C stops it)", flush=True)
    print(
        f"  try: curl -s -X POST {stack.gateway_url}/memory "
        f'-H "Authorization: Bearer $(cat {key_file})" '
        """-H 'content-type: application/json' -d '{"action":"store","content":"My cat is called Miso."}'""",
        flush=True,
    )
    stopped = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopped.set())
    stopped.wait()
    stack.stop()
    return 0


def _shown(path: Path) -> str:
    """The path as the user would type it: relative to the working directory when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    sys.exit(main())
