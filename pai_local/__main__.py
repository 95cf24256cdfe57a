"""`python -m pai_local` (what `make run` runs): PAI on this machine, offline."""

from __future__ import annotations

import argparse
import io
import logging
import os
import signal
import sys
import threading
from logging.handlers import RotatingFileHandler
from pathlib import Path

from pai_core.config import ConfigError, Settings
from pai_core.errors import PaiError
from pai_local import state
from pai_local.emulator import ACCESS_LOG, DEFAULT_EMULATOR_PORT, endpoint_answers
from pai_local.logs import configure_console_logging
from pai_local.stack import LOCAL_API_KEY_FILE, RunningStack, ensure_local_api_key, start_stack

USAGE_ERROR = 2  # argparse's status for a bad option


def main(argv: list[str] | None = None) -> int:
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"pai: cannot start: {exc}", file=sys.stderr)
        return USAGE_ERROR
    args = _parser(settings).parse_args(argv)
    configure_console_logging()
    state_dir = None if args.fresh else settings.local_state_dir
    log_file = None
    try:
        if settings.endpoint_url is None:
            log_file = _route_emulator_log(state_dir, verbose=args.verbose)
        elif not endpoint_answers(settings.endpoint_url):
            raise RuntimeError(
                f"AWS_ENDPOINT_URL={settings.endpoint_url}: no emulator answers there "
                "(start it, or unset AWS_ENDPOINT_URL to use the embedded one)"
            )
        stack = start_stack(
            settings,
            emulator_port=args.emulator_port,
            gateway_port=args.port,
            gateway_host=args.host,
            state_dir=state_dir,
            execution="process",
            stream_port=args.stream_port,
        )
    except (ConfigError, RuntimeError, OSError) as exc:
        print(f"pai: cannot start: {exc}", file=sys.stderr)
        return 1
    stopped = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopped.set())
    try:
        return _serve(stack, settings, args, log_file, stopped)
    finally:
        # Whatever ends the run, the emulator writes what its last snapshot missed.
        stack.stop()


def _serve(
    stack: RunningStack, settings: Settings, args: argparse.Namespace, log_file: Path | None, stopped: threading.Event
) -> int:
    if stack.emulator is None:
        print(f"AWS emulator (external): {stack.endpoint_url}", flush=True)
        print("  state: kept (or not) by that emulator", flush=True)
    else:
        print(f"AWS emulator (embedded moto): {stack.endpoint_url}", flush=True)
        if stack.emulator.state_file is None:
            print("  state: in memory only (--fresh): gone when this stops", flush=True)
        else:
            print(
                f"  state: {_shown(stack.emulator.state_file)} (kept across restarts; --fresh for a throwaway stack)",
                flush=True,
            )
        print(f"  log: {_shown(log_file) if log_file else 'shown here' if args.verbose else 'not kept'}", flush=True)
    try:
        api_key = ensure_local_api_key(stack.container.api_keys, settings.owner, args.api_key_file)
    except (PaiError, OSError) as exc:
        print(f"pai: cannot set up the local API key: {exc}", file=sys.stderr)
        return 1
    key_file = _shown(api_key.path)
    if api_key.created:
        print(f"new API key for user {api_key.user_id!r} (shown once; saved to {key_file}):", flush=True)
        print(f"  {api_key.key}", flush=True)
    else:
        print(f"API key for user {api_key.user_id!r}: the one in {key_file}", flush=True)
    print(f"PAI API: {stack.gateway_url}   (Ctrl-C stops it)", flush=True)
    print(f"Web app: {stack.gateway_url}/   (sign in with the API key above)", flush=True)
    if stack.stream_url is not None:
        # The Function URL's emulation: the HTTP API answers a streamed chat in one body, as in AWS.
        print(f"PAI streamed chat: {stack.stream_url}/chat   (PAI_STREAM_URL for the CLI)", flush=True)
    print(
        f"  try: curl -s -X POST {stack.gateway_url}/memory "
        f'-H "Authorization: Bearer $(cat {key_file})" '
        """-H 'content-type: application/json' -d '{"action":"store","content":"My cat is called Miso."}'""",
        flush=True,
    )
    stopped.wait()
    print("stopping (saving what the emulator holds) ...", flush=True)
    return 0


def _parser(settings: Settings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pai_local", description=__doc__)
    parser.add_argument("--port", type=_port, default=settings.local_port, help="API port (PAI_PORT)")
    parser.add_argument(
        "--host",
        default=settings.local_host,
        help="API address (PAI_HOST); only a container sets 0.0.0.0, behind a port published on 127.0.0.1",
    )
    parser.add_argument("--emulator-port", type=_port, default=DEFAULT_EMULATOR_PORT)
    parser.add_argument(
        "--stream-port",
        type=_stream_port,
        default=settings.local_stream_port,
        help="port of the streamed chat's Function URL (PAI_STREAM_PORT; 0: any free port)",
    )
    parser.add_argument(
        "--api-key-file", type=Path, default=LOCAL_API_KEY_FILE, help="where the local user's API key is kept"
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="a throwaway stack: the embedded emulator starts empty, and reads and writes no state "
        f"(otherwise it is kept in PAI_STATE_DIR, now {settings.local_state_dir})",
    )
    parser.add_argument("--verbose", action="store_true", help="show the emulator's access log here")
    return parser


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is in 1..65535, got {port}")
    return port


def _stream_port(text: str) -> int:
    return 0 if text.strip() == "0" else _port(text)


def _route_emulator_log(state_dir: Path | None, *, verbose: bool) -> Path | None:
    """The emulator's access log (dozens of lines at start, a few per API request) is for when
    something goes wrong, not for the console: to a file beside the state, or nowhere with --fresh."""
    ACCESS_LOG.propagate = verbose
    if verbose or state_dir is None:
        ACCESS_LOG.addHandler(logging.NullHandler())
        return None
    path = state.prepare_dir(state_dir) / state.LOG_FILE_NAME
    handler = _PrivateLogFile(path, maxBytes=5_000_000, backupCount=1, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    ACCESS_LOG.addHandler(handler)
    return path


class _PrivateLogFile(RotatingFileHandler):
    """Request lines name buckets, tables and object keys: readable by the user only, like the state."""

    def _open(self) -> io.TextIOWrapper:
        descriptor = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        return open(descriptor, "a", encoding=self.encoding)


def _shown(path: Path) -> str:
    """The path as the user would type it: relative to the working directory when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    sys.exit(main())
