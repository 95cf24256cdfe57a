"""The embedded emulator's state on disk: a snapshot of moto's in-memory backends for the services
the stack uses, written whole and atomically, read back before the emulator serves its first request.

moto keeps everything in Python objects and has no persistence of its own (its recorder replays
requests, which cannot bring back the random key material KMS generated), so the snapshot is those
objects, pickled. What pickle cannot take as it is gets an explicit reduction here: the private keys
moto's KMS makes for every key (cryptography's keys are not picklable; they are kept as PKCS#8 DER),
and moto's dict subclasses, whose overridden item access would otherwise rebuild them wrongly (S3's
versioned key store would keep only the newest version of each object). Reading accepts only the
classes a snapshot is made of, so the file is data and nothing else.

File layout: a magic line, one line of JSON header (format version, moto version, services, payload
length and SHA-256), then the pickle."""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import io
import json
import os
import pickle
import sys
import types
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

STATE_FILE_NAME = "emulator.state"
LOG_FILE_NAME = "emulator.log"
LOCK_FILE_NAME = "lock"
FORMAT_VERSION = 1
MAGIC = b"PAI-EMULATOR-STATE\n"
# What the stack creates: the key, the tables and the bucket (STS only answers who is calling).
SERVICES = ("dynamodb", "kms", "s3")

_PRIVATE_KEYS = (
    rsa.RSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
    dsa.DSAPrivateKey,
)
_PLAIN_DICTS = (dict, OrderedDict, defaultdict)
_ALLOWED_GLOBALS = {
    "builtins": {"dict", "list", "set", "frozenset", "tuple", "bytearray", "bytes", "str", "int", "float", "complex"},
    "collections": {"OrderedDict", "defaultdict", "deque"},
    "datetime": {"datetime", "date", "time", "timedelta", "timezone"},
    "decimal": {"Decimal"},
    "uuid": {"UUID", "SafeUUID"},
    __name__: {"_private_key", "_rebuilt_dict"},
}


class StateError(RuntimeError):
    """A state file that cannot be used; the message names it and says what to do."""


def moto_version() -> str:
    return version("moto")


def prepare_dir(state_dir: Path) -> Path:
    """The state directory, created (or tightened) readable by its owner only: its files hold
    ciphertext, wrapped keys and the emulator's own KMS key material."""
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(state_dir, 0o700)
    state_file = state_dir / STATE_FILE_NAME
    if state_file.exists():
        os.chmod(state_file, 0o600)
    return state_dir


@contextlib.contextmanager
def exclusive(state_dir: Path) -> Iterator[None]:
    """Held while an emulator uses the directory: two emulators saving into one file would each
    overwrite the other's writes. The kernel releases it when the process dies, even by kill -9."""
    import fcntl

    descriptor = os.open(state_dir / LOCK_FILE_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StateError(
                f"{state_dir} is in use by another running emulator: stop it, or set PAI_STATE_DIR to another directory"
            ) from None
        yield
    finally:
        os.close(descriptor)


def capture() -> dict[str, dict[str, dict[str, Any]]]:
    """service -> account -> region -> moto's backend object. Call it with the emulator quiet
    (under the lock every request takes), then serialize before letting requests in again."""
    from moto.backends import get_backend

    captured: dict[str, dict[str, dict[str, Any]]] = {}
    for service in SERVICES:
        backends: Any = get_backend(service)  # type: ignore[call-overload]
        captured[service] = {account: dict(regions.items()) for account, regions in backends.items()}
    return captured


def install(captured: dict[str, dict[str, dict[str, Any]]]) -> None:
    """Puts restored backends where moto's request handlers look them up. moto's backends are
    per process, so one emulator with state per process."""
    from moto.backends import get_backend

    for service, accounts in captured.items():
        backends: Any = get_backend(service)  # type: ignore[call-overload]
        for account, regions in accounts.items():
            account_backends = backends[account]
            for region, backend in regions.items():
                dict.__setitem__(account_backends, region, backend)


def dumps(captured: dict[str, dict[str, dict[str, Any]]]) -> bytes:
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=5).dump(captured)
    payload = buffer.getvalue()
    header = {
        "format": FORMAT_VERSION,
        "moto": moto_version(),
        "python": ".".join(map(str, sys.version_info[:3])),
        "services": list(captured),
        "saved_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "bytes": len(payload),
        "sha256": hashlib.sha256(payload).hexdigest(),
    }
    return MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n" + payload


def loads(data: bytes, path: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """The snapshot in `data` (read from `path`, which messages name), or StateError."""
    if not data.startswith(MAGIC):
        raise _unusable(path, "it is not an emulator state file PAI wrote")
    header_line, newline, payload = data[len(MAGIC) :].partition(b"\n")
    try:
        header = json.loads(header_line) if newline else None
    except ValueError:
        header = None
    if not isinstance(header, dict):
        raise _unusable(path, "its header is damaged")
    if header.get("format") != FORMAT_VERSION:
        raise _unusable(path, f"it has format {header.get('format')!r}; this PAI reads format {FORMAT_VERSION}")
    if header.get("moto") != moto_version():
        raise _unusable(
            path,
            f"it was written by moto {header.get('moto')}, this environment has moto {moto_version()} "
            f"(pip install moto=={header.get('moto')} reads it)",
        )
    if header.get("bytes") != len(payload) or header.get("sha256") != hashlib.sha256(payload).hexdigest():
        raise _unusable(path, "it is damaged (its checksum does not match)")
    try:
        captured = _Unpickler(io.BytesIO(payload)).load()
    except Exception as exc:
        raise _unusable(path, f"it cannot be read ({type(exc).__name__}: {exc})") from None
    if not isinstance(captured, dict):
        raise _unusable(path, "it holds no emulator state")
    return captured


def read(path: Path) -> dict[str, dict[str, dict[str, Any]]] | None:
    """The snapshot at `path`, or None when there is none yet."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _unusable(path, f"it cannot be opened ({exc.strerror})") from None
    return loads(data, path)


def write_atomic(path: Path, data: bytes) -> None:
    """Readers see the old file or the new one, never a mix: a kill -9 mid-write leaves the last
    complete snapshot in place."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as file:
            os.fchmod(file.fileno(), 0o600)
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a power cut
    finally:
        os.close(directory)


def _unusable(path: Path, problem: str) -> StateError:
    return StateError(
        f"the emulator's state file {path} cannot be used: {problem}. Nothing was changed. "
        f"To start with empty storage, move it aside (mv {path} {path}.old); "
        "for a throwaway stack that reads and writes no state, run `python -m pai_local --fresh`"
    )


def _private_key(der: bytes) -> Any:
    return serialization.load_der_private_key(der, password=None)


def _rebuilt_dict(cls: type[dict[Any, Any]], items: dict[Any, Any], attributes: dict[str, Any]) -> dict[Any, Any]:
    rebuilt = cls.__new__(cls)
    dict.update(rebuilt, items)
    rebuilt.__dict__.update(attributes)
    return rebuilt


def _allowed(module: str, name: str) -> bool:
    return module == "moto" or module.startswith("moto.") or name in _ALLOWED_GLOBALS.get(module, ())


class _Pickler(pickle.Pickler):
    """Each type is sorted once (a snapshot holds a few dozen types and a great many objects)."""

    def __init__(self, file: io.BytesIO, *, protocol: int) -> None:
        super().__init__(file, protocol=protocol)
        self._reducers: dict[type, Callable[[Any], Any] | None] = {}

    def reducer_override(self, obj: Any) -> Any:
        kind = type(obj)
        try:
            reducer = self._reducers[kind]
        except KeyError:
            reducer = self._reducers[kind] = _reducer_for(kind)
        return NotImplemented if reducer is None else reducer(obj)


def _reducer_for(kind: type) -> Callable[[Any], Any] | None:
    if issubclass(kind, _PRIVATE_KEYS):
        return _reduce_private_key
    if issubclass(kind, dict) and kind not in _PLAIN_DICTS:
        return _reduce_dict
    if issubclass(kind, type) or kind in (types.FunctionType, types.BuiltinFunctionType):
        return _check_global
    return None


def _reduce_private_key(key: Any) -> Any:
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return _private_key, (der,)


def _reduce_dict(mapping: Any) -> Any:
    items = {key: dict.__getitem__(mapping, key) for key in dict.keys(mapping)}
    return _rebuilt_dict, (type(mapping), items, dict(getattr(mapping, "__dict__", {})))


def _check_global(named: Any) -> Any:
    """A class or function the pickle refers to by name: refused now, rather than written into a
    file that could not be read back."""
    module, name = getattr(named, "__module__", ""), getattr(named, "__qualname__", "")
    if not _allowed(module, name):
        raise pickle.PicklingError(f"the emulator's state refers to {module}.{name}, which a snapshot may not hold")
    return NotImplemented


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if not _allowed(module, name):
            raise pickle.UnpicklingError(f"{module}.{name} is not part of an emulator snapshot")
        return super().find_class(module, name)
