"""The emulator's state file: what a snapshot keeps, what reading one refuses, how it is written,
and which emulator requests count as changes (tests/integration/test_persistence.py runs it all
end to end)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import stat
import threading
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from moto.dynamodb.models.dynamo_type import DynamoType, LimitedSizeDict
from moto.kms.utils import RSAPrivateKey
from moto.s3.utils import _VersionedKeyStore

from pai_local import state
from pai_local.emulator import _may_change_state


def round_trip(value: Any, tmp_path: Path) -> Any:
    path = tmp_path / state.STATE_FILE_NAME
    state.write_atomic(path, state.dumps({"svc": {"123456789012": {"us-east-1": value}}}))
    restored = state.read(path)
    assert restored is not None
    return restored["svc"]["123456789012"]["us-east-1"]


def with_header(payload: bytes, **changes: object) -> bytes:
    header = {
        "format": state.FORMAT_VERSION,
        "moto": state.moto_version(),
        "bytes": len(payload),
        "sha256": hashlib.sha256(payload).hexdigest(),
        **changes,
    }
    return state.MAGIC + json.dumps(header).encode() + b"\n" + payload


def test_every_version_of_an_s3_object_is_kept(tmp_path: Path) -> None:
    versions = _VersionedKeyStore()
    versions["notes/a"] = "first"
    versions["notes/a"] = "second"
    restored = round_trip(versions, tmp_path)
    assert type(restored) is _VersionedKeyStore
    assert restored.getlist("notes/a") == ["first", "second"]
    assert restored["notes/a"] == "second"


def test_kms_private_keys_survive_so_old_signatures_still_verify(tmp_path: Path) -> None:
    key = RSAPrivateKey(key_size=2048)
    signature = key.sign(b"message", "RSASSA_PSS_SHA_256")
    restored = round_trip(key, tmp_path)
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.MAX_LENGTH)
    restored.private_key.public_key().verify(signature, b"message", pss, hashes.SHA256())
    assert restored.key_size == 2048


def test_dynamodb_items_come_back_as_they_were(tmp_path: Path) -> None:
    item = LimitedSizeDict({"pk": DynamoType({"S": "user#1"}), "blob": DynamoType({"B": b"\x00\xff"})})
    restored = round_trip(item, tmp_path)
    assert type(restored) is LimitedSizeDict and restored == item


def test_the_file_is_written_readable_by_its_owner_only_and_whole(tmp_path: Path) -> None:
    path = tmp_path / state.STATE_FILE_NAME
    path.write_bytes(b"old")
    os.chmod(path, 0o644)
    state.write_atomic(path, b"new")
    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == [state.STATE_FILE_NAME]  # no partial file left


def test_the_directory_is_made_private_even_when_it_was_not(tmp_path: Path) -> None:
    directory = tmp_path / "state"
    directory.mkdir(mode=0o755)
    os.chmod(directory, 0o755)
    (directory / state.STATE_FILE_NAME).write_bytes(b"x")
    os.chmod(directory / state.STATE_FILE_NAME, 0o644)
    state.prepare_dir(directory)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((directory / state.STATE_FILE_NAME).stat().st_mode) == 0o600


def test_no_state_yet_is_not_an_error(tmp_path: Path) -> None:
    assert state.read(tmp_path / state.STATE_FILE_NAME) is None


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "not an emulator state file"),
        (b"PK\x03\x04 a zip file", "not an emulator state file"),
        (state.MAGIC + b"{not json\n" + b"x", "header is damaged"),
        (with_header(b"x", format=99), "format 99"),
        (with_header(b"x", moto="4.0.0"), "written by moto 4.0.0"),
        (with_header(b"payload")[:-1], "checksum does not match"),
        (with_header(b"payload", sha256="0" * 64), "checksum does not match"),
        (with_header(pickle.dumps(os.getcwd)), "cannot be read"),
        (with_header(pickle.dumps([1, 2])), "holds no emulator state"),
    ],
)
def test_an_unusable_file_is_refused_with_what_to_do(tmp_path: Path, data: bytes, problem: str) -> None:
    path = tmp_path / state.STATE_FILE_NAME
    path.write_bytes(data)
    with pytest.raises(state.StateError) as refused:
        state.read(path)
    message = str(refused.value)
    assert problem in message
    assert f"state file {path} cannot be used" in message
    assert f"mv {path} {path}.old" in message and "--fresh" in message
    assert path.read_bytes() == data


def test_a_snapshot_refuses_what_could_not_be_read_back() -> None:
    class NotMoto:
        pass

    with pytest.raises(pickle.PicklingError, match="NotMoto"):
        state.dumps({"svc": {"acct": {"region": NotMoto()}}})


def test_one_emulator_per_state_directory(tmp_path: Path) -> None:
    with (
        state.exclusive(tmp_path),
        pytest.raises(state.StateError, match="in use by another running emulator"),
        state.exclusive(tmp_path),
    ):
        pass
    with state.exclusive(tmp_path):  # released when the first one stopped
        pass


def environ(method: str = "POST", *, target: str | None = None, form: str | None = None, query: str = "") -> Any:
    env: dict[str, Any] = {"REQUEST_METHOD": method, "QUERY_STRING": query}
    if target is not None:
        env["HTTP_X_AMZ_TARGET"] = target
    if form is not None:
        env["CONTENT_TYPE"] = "application/x-www-form-urlencoded; charset=utf-8"
        env["CONTENT_LENGTH"] = str(len(form))
        env["wsgi.input"] = io.BytesIO(form.encode())
    return env


@pytest.mark.parametrize(
    ("request_environ", "changes"),
    [
        (environ(target="DynamoDB_20120810.GetItem"), False),
        (environ(target="DynamoDB_20120810.Query"), False),
        (environ(target="DynamoDB_20120810.Scan"), False),
        (environ(target="DynamoDB_20120810.BatchGetItem"), False),
        (environ(target="DynamoDB_20120810.DescribeTable"), False),
        (environ(target="DynamoDB_20120810.PutItem"), True),
        (environ(target="DynamoDB_20120810.UpdateItem"), True),
        (environ(target="DynamoDB_20120810.DeleteItem"), True),
        (environ(target="DynamoDB_20120810.BatchWriteItem"), True),
        (environ(target="DynamoDB_20120810.TransactWriteItems"), True),
        (environ(target="DynamoDB_20120810.CreateTable"), True),
        (environ(target="TrentService.Decrypt"), False),
        (environ(target="TrentService.GenerateDataKey"), False),
        (environ(target="TrentService.CreateKey"), True),
        (environ(target="TrentService.ScheduleKeyDeletion"), True),
        (environ(target="TrentService.EnableKeyRotation"), True),
        (environ("GET"), False),
        (environ("HEAD"), False),
        (environ("PUT"), True),
        (environ("DELETE"), True),
        (environ("POST", query="delete"), True),
        (environ(form="Action=GetCallerIdentity&Version=2011-06-15"), False),
        (environ(form="Action=AssumeRole&Version=2011-06-15"), True),
    ],
)
def test_requests_that_can_change_state_are_noted(request_environ: dict[str, Any], changes: bool) -> None:
    assert _may_change_state(request_environ) is changes


def test_a_form_body_read_to_classify_it_is_still_there_for_the_emulator() -> None:
    form = "Action=GetCallerIdentity&Version=2011-06-15"
    request_environ = environ(form=form)
    _may_change_state(request_environ)
    assert request_environ["wsgi.input"].read() == form.encode()


class Recorder:
    """A WSGI app standing in for moto."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        self.calls += 1
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]


def serve(app: Any, request_environ: dict[str, Any]) -> str:
    statuses: list[str] = []
    body = b"".join(app(request_environ, lambda status, headers: statuses.append(status)))
    assert body
    return statuses[0]


def saver_on(tmp_path: Path, *, interval: float) -> tuple[Any, Any, Recorder]:
    from pai_local.emulator import _OneAtATime, _Saver

    moto = Recorder()
    app = _OneAtATime(moto)
    saver = _Saver(tmp_path / state.STATE_FILE_NAME, app, interval=interval)
    app.on_change = saver.changed
    saver.start()
    return app, saver, moto


def test_reads_alone_write_nothing(tmp_path: Path) -> None:
    app, saver, moto = saver_on(tmp_path, interval=0.01)
    assert serve(app, environ("GET")) == "200 OK"
    assert serve(app, environ(target="DynamoDB_20120810.Query")) == "200 OK"
    saver.stop()
    assert moto.calls == 2
    assert not (tmp_path / state.STATE_FILE_NAME).exists()


def test_a_change_is_saved_while_serving_and_on_stop(tmp_path: Path) -> None:
    app, saver, _ = saver_on(tmp_path, interval=0.01)
    path = tmp_path / state.STATE_FILE_NAME
    serve(app, environ(target="DynamoDB_20120810.PutItem"))
    for _ in range(1000):  # the saver thread writes it without being asked
        if path.exists():
            break
        threading.Event().wait(0.01)
    assert state.read(path) is not None
    path.unlink()
    serve(app, environ(target="DynamoDB_20120810.DeleteItem"))
    app.close()
    saver.stop()  # whatever the saver thread had not written yet, stop writes
    assert state.read(path) is not None


def test_after_the_final_snapshot_requests_are_refused_not_lost(tmp_path: Path) -> None:
    app, saver, moto = saver_on(tmp_path, interval=60)
    app.close()
    saver.stop()
    assert serve(app, environ(target="DynamoDB_20120810.PutItem")) == "503 Service Unavailable"
    assert moto.calls == 0


def test_a_failed_save_is_retried_and_said_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / state.STATE_FILE_NAME
    path.mkdir()  # in the way of the rename, as a full disk would be of the write
    app, saver, _ = saver_on(tmp_path, interval=0.01)
    serve(app, environ("PUT"))
    for _ in range(1000):
        if "cannot save the emulator's state" in caplog.text:
            break
        threading.Event().wait(0.01)
    path.rmdir()
    for _ in range(1000):  # retried without another change
        if path.is_file():
            break
        threading.Event().wait(0.01)
    saver.stop()
    assert state.read(path) is not None
    assert caplog.text.count("cannot save the emulator's state") == 1
    assert [p.name for p in tmp_path.iterdir()] == [state.STATE_FILE_NAME]  # no partial file left
