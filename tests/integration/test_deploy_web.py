"""The web app's part of scripts/deploy.py and scripts/destroy.py against moto's server: deploy
publishes web/ to the stack's bucket (each file with its content type and cache policy, config.json
naming the stack's API, files no longer in web/ removed), and destroy leaves no bucket and no object.

moto's CloudFormation makes no CloudFront resource (it skips AWS::CloudFront::*, as it does
AWS::ApiGatewayV2::*), so deploy picks WebApp=bucket-only on a loopback endpoint and says there is
nothing to invalidate; the distribution, its origin access control and headers are checked from the
template in tests/unit/test_template_web.py. The Lambda artifacts here are stand-ins: the real bundle's
round trip is tests/integration/test_deploy.py."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_deploy import clients, run_script

# Not test_deploy.py's environment: moto keeps one state per process, and that module counts what it made.
ENV = "deployweb"
WEB_BUCKET = f"pai-web-123456789012-{ENV}"
# moto's CloudFormation has no AWS::Lambda::Url, and the ChatStreamUrl output names one (as test_deploy.py).
NO_URL = "--no-chat-stream-url"
pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:Tried to parse:UserWarning"),
]


@pytest.fixture
def stand_in_bundle(tmp_path: Path) -> Path:
    """Three small zips and their manifest, in the shape scripts/bundle.py writes."""
    output = tmp_path / "bundle"
    output.mkdir()
    manifest = {}
    for name in ("function", "deps-layer", "model-layer"):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr(f"{name}.txt", name)
        (output / f"{name}.zip").write_bytes(buffer.getvalue())
        manifest[name] = {"sha256": hashlib.sha256(buffer.getvalue()).hexdigest()}
    (output / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return output


@pytest.fixture
def web_dir(tmp_path: Path) -> Path:
    root = tmp_path / "web"
    (root / "icons").mkdir(parents=True)
    (root / "index.html").write_text("<!doctype html><title>PAI</title><script src=app.js></script>")
    (root / "app.js").write_text("fetch('config.json');\n")
    (root / "app.css").write_text("body { margin: 0 }\n")
    (root / "icons" / "pai.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    (root / "config.json").write_text('{"apiUrl": "http://127.0.0.1:8080"}')  # the local one: not published
    (root / "build.py").write_text("# a build script stays in the repository\n")
    (root / ".hidden").write_text("nope")
    return root


def objects(client: Any) -> dict[str, dict[str, str]]:
    s3 = client("s3")
    listed = s3.list_objects_v2(Bucket=WEB_BUCKET).get("Contents", [])
    heads = {obj["Key"]: s3.head_object(Bucket=WEB_BUCKET, Key=obj["Key"]) for obj in listed}
    return {key: {"type": h["ContentType"], "cache": h.get("CacheControl", "")} for key, h in heads.items()}


def test_deploy_publishes_the_web_app_and_destroy_removes_it(
    moto_endpoint: str, stand_in_bundle: Path, web_dir: Path
) -> None:
    client = clients(moto_endpoint)
    deployed, _ = run_script(
        "deploy.py", moto_endpoint, "--bundle-dir", str(stand_in_bundle), "--web-dir", str(web_dir), NO_URL, env=ENV
    )
    assert deployed.returncode == 0, deployed.stderr[-3000:]
    stack = client("cloudformation").describe_stacks(StackName=f"pai-{ENV}")["Stacks"][0]
    parameters = {p["ParameterKey"]: p["ParameterValue"] for p in stack["Parameters"]}
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
    assert parameters["WebApp"] == "bucket-only"
    assert outputs["WebBucketName"] == WEB_BUCKET
    assert "WebAppUrl" not in outputs
    assert "nothing to invalidate" in deployed.stdout

    assert objects(client) == {
        "index.html": {"type": "text/html; charset=utf-8", "cache": "no-cache"},
        "app.js": {"type": "text/javascript; charset=utf-8", "cache": "public, max-age=300"},
        "app.css": {"type": "text/css; charset=utf-8", "cache": "public, max-age=300"},
        "icons/pai.svg": {"type": "image/svg+xml; charset=utf-8", "cache": "public, max-age=300"},
        "config.json": {"type": "application/json; charset=utf-8", "cache": "no-cache"},
    }
    body = client("s3").get_object(Bucket=WEB_BUCKET, Key="config.json")["Body"].read()
    assert json.loads(body) == {"apiUrl": outputs["ApiUrl"], "chatStreamUrl": None}
    index = client("s3").get_object(Bucket=WEB_BUCKET, Key="index.html")["Body"].read()
    assert index == (web_dir / "index.html").read_bytes()

    # No CSP origins from an emulator's unresolved ApiUrl: the template keeps its regional fallback.
    assert parameters["WebConnectOrigins"] == ""
    assert "narrowing" not in deployed.stdout

    # A file gone from web/ is gone from the bucket at the next deploy.
    (web_dir / "app.css").unlink()
    again, _ = run_script(
        "deploy.py", moto_endpoint, "--bundle-dir", str(stand_in_bundle), "--web-dir", str(web_dir), NO_URL, env=ENV
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert set(objects(client)) == {"index.html", "app.js", "icons/pai.svg", "config.json"}

    destroyed, _ = run_script("destroy.py", moto_endpoint, "--yes", env=ENV)
    assert destroyed.returncode == 0, destroyed.stderr[-3000:]
    assert f"emptying s3://{WEB_BUCKET}" in destroyed.stdout
    assert WEB_BUCKET not in {b["Name"] for b in client("s3").list_buckets()["Buckets"]}


def test_without_the_web_app_nothing_is_published(moto_endpoint: str, stand_in_bundle: Path, web_dir: Path) -> None:
    client = clients(moto_endpoint)
    deployed, _ = run_script(
        "deploy.py",
        moto_endpoint,
        "--bundle-dir",
        str(stand_in_bundle),
        "--web-dir",
        str(web_dir),
        "--web",
        "false",
        NO_URL,
        env=ENV,
    )
    assert deployed.returncode == 0, deployed.stderr[-3000:]
    assert "no web app in this stack" in deployed.stdout
    assert WEB_BUCKET not in {b["Name"] for b in client("s3").list_buckets()["Buckets"]}
    # The emulator's state outlives this module's server (moto keeps it per process): leave no stack.
    destroyed, _ = run_script("destroy.py", moto_endpoint, "--yes", env=ENV)
    assert destroyed.returncode == 0, destroyed.stderr[-3000:]
