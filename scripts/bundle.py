"""Build the Lambda deployment artifacts for Python 3.12 on arm64 (`make bundle`).

Three zips in build/bundle/, because they change at very different rates:

    function.zip    handlers/ and pai_core/: our code, small, changes with every commit; and run.sh
                    at its root, the streamed chat function's entry point (the Web Adapter runs it)
    deps-layer.zip  python/...: the run-time dependencies as manylinux aarch64 wheels (onnxruntime,
                    numpy, tokenizers, cryptography, aws-lambda-powertools, usearch): heavy, rarely changing
    model-layer.zip model/all-MiniLM-L6-v2/...: the int8 embedding model (PAI_EMBEDDING_MODEL_DIR
                    = /opt/model/all-MiniLM-L6-v2): heavy, changes only when rebuilt

A code change then uploads a few hundred kilobytes instead of ~80 MB. The dependencies are exactly
the hash-checked pins of requirements/lambda.txt (`make lock` writes it) that apply to Python 3.12 on
Linux arm64, each a wheel, none resolved here, so the same lock gives the same layer. boto3 is not
bundled: the Lambda Python runtime provides it. Never bundled: torch, sentence-transformers,
llama-cpp-python, moto, the local harness, scripts, tests.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from packaging.markers import Marker

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = REPO_ROOT / "build" / "bundle"
PYTHON_VERSION = "3.12"
PLATFORMS = ("manylinux2014_aarch64", "manylinux_2_28_aarch64")
LOCK = REPO_ROOT / "requirements" / "lambda.txt"
# The environment markers of the Lambda Python 3.12 runtime on arm64 (the lock covers every platform).
LAMBDA_ENVIRONMENT = {
    "implementation_name": "cpython",
    "implementation_version": "3.12.0",
    "os_name": "posix",
    "platform_machine": "aarch64",
    "platform_python_implementation": "CPython",
    "platform_system": "Linux",
    "python_full_version": "3.12.0",
    "python_version": PYTHON_VERSION,
    "sys_platform": "linux",
}
FUNCTION_PACKAGES = ("handlers", "pai_core")
MODEL_DIR = REPO_ROOT / "models" / "all-MiniLM-L6-v2"
LAMBDA_MODEL_DIR = "/opt/model/all-MiniLM-L6-v2"
PRUNE = ("__pycache__", "*.pyc", "tests", "bin")
# The streamed chat function's Handler (infra/template.yaml, ChatStreamFunction): an executable at the root.
STREAM_ENTRY = REPO_ROOT / "handlers" / "run.sh"


def lambda_requirements(lock: Path) -> str:
    """The lock's pins that apply on Lambda, each with its hashes, as a requirements file's text."""
    entries = []
    for raw in lock.read_text(encoding="utf-8").replace("\\\n", " ").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        requirement, *hashes = line.split(" --hash=")
        pin, _, marker = requirement.partition(";")
        if not hashes:
            raise SystemExit(f"{lock}: {pin.strip()} has no hash: run `make lock`")
        if not marker.strip() or Marker(marker).evaluate(LAMBDA_ENVIRONMENT):
            entries.append(" ".join([pin.strip(), *(f"--hash={digest.strip()}" for digest in hashes)]))
    if not entries:
        raise SystemExit(f"{lock} pins nothing: run `make lock`")
    return "\n".join(entries) + "\n"


def pip_install_aarch64(target: Path, lock: Path) -> None:
    """Every pinned wheel for Python 3.12 on manylinux aarch64, hash-checked, with nothing resolved here."""
    with tempfile.TemporaryDirectory() as scratch:
        requirements = Path(scratch) / "lambda-requirements.txt"
        requirements.write_text(lambda_requirements(lock), encoding="utf-8")
        command = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--target",
            str(target),
            "--implementation",
            "cp",
            "--python-version",
            PYTHON_VERSION,
            "--only-binary=:all:",
            "--upgrade",
            "--no-deps",
            "--require-hashes",
            "-r",
            str(requirements),
        ]
        for platform in PLATFORMS:
            command += ["--platform", platform]
        subprocess.run(command, check=True)


def prune(root: Path) -> None:
    for pattern in PRUNE:
        for path in sorted(root.rglob(pattern), reverse=True):
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()


def stage_function(root: Path) -> None:
    """The function zip's tree: our packages, pruned, and the streamed chat's entry point at the root."""
    for package in FUNCTION_PACKAGES:
        shutil.copytree(REPO_ROOT / package, root / package)
    prune(root)
    shutil.copy2(STREAM_ENTRY, root / STREAM_ENTRY.name)


def zip_tree(source: Path, archive: Path) -> None:
    """Deterministic zip: sorted entries, fixed timestamps, so an unchanged tree gives the same bytes."""
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as bundle:
        for path in sorted(p for p in source.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(str(path.relative_to(source)), date_time=(2020, 1, 1, 0, 0, 0))
            executable = path.suffix in {".so", ".sh"} or ".so." in path.name
            info.external_attr = (0o755 if executable else 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            bundle.writestr(info, path.read_bytes())


def tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build(output: Path, lock: Path = LOCK) -> dict[str, dict[str, object]]:
    staging = output / "staging"
    shutil.rmtree(staging, ignore_errors=True)
    output.mkdir(parents=True, exist_ok=True)

    function_root = staging / "function"
    stage_function(function_root)

    deps_root = staging / "deps-layer"
    pip_install_aarch64(deps_root / "python", lock)
    prune(deps_root)

    model_root = staging / "model-layer"
    shutil.copytree(MODEL_DIR, model_root / "model" / MODEL_DIR.name)

    artifacts: dict[str, dict[str, object]] = {}
    for name, root in (("function", function_root), ("deps-layer", deps_root), ("model-layer", model_root)):
        archive = output / f"{name}.zip"
        zip_tree(root, archive)
        artifacts[name] = {
            "zip": archive.name,
            "zipped_bytes": archive.stat().st_size,
            "unzipped_bytes": tree_bytes(root),
            "sha256": sha256(archive),
        }
    (output / "manifest.json").write_text(json.dumps(artifacts, indent=2) + "\n", encoding="utf-8")
    return artifacts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--lock", type=Path, default=LOCK, help="the hashed lock file of the deps layer")
    args = parser.parse_args()
    artifacts = build(args.output, args.lock)
    total = sum(int(str(a["unzipped_bytes"])) for a in artifacts.values())
    for name, facts in artifacts.items():
        zipped, unzipped = int(str(facts["zipped_bytes"])), int(str(facts["unzipped_bytes"]))
        print(f"{name:12} {zipped / 1e6:7.1f} MB zipped {unzipped / 1e6:7.1f} MB unzipped")
    print(f"{'total':12} {'':15} {total / 1e6:7.1f} MB unzipped (Lambda's limit: 262 MB)")


if __name__ == "__main__":
    main()
