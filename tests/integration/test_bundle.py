"""The ARM64 Lambda bundle: built for real (manylinux aarch64 wheels from PyPI, exactly the pins of
requirements/lambda.txt), then inspected."""

from __future__ import annotations

import json
import re
import sys
import zipfile
from pathlib import Path

import pytest

from pai_core.config import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "scripts"))
import bundle

pytestmark = pytest.mark.integration
EM_AARCH64 = 183
LAMBDA_UNZIPPED_LIMIT = 250 * 1024 * 1024  # function and all its layers together
DIRECT_UPLOAD_LIMIT = 50 * 1024 * 1024
EXPORT_ONLY = {"torch", "sentence_transformers", "transformers", "optimum", "llama_cpp", "moto", "huggingface_hub"}


@pytest.fixture(scope="session")
def built_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("bundle")
    bundle.build(output)
    return output


def elf_machine(path: Path) -> int | None:
    header = path.read_bytes()[:20]
    if header[:4] != b"\x7fELF":
        return None
    byteorder = "little" if header[5] == 1 else "big"
    return int.from_bytes(header[18:20], byteorder)


def test_every_native_library_is_aarch64(built_bundle: Path) -> None:
    native = [
        path
        for path in (built_bundle / "staging").rglob("*")
        if path.is_file() and (path.suffix == ".so" or ".so." in path.name)
    ]
    assert len(native) > 10  # onnxruntime, numpy, tokenizers, cryptography at least
    wrong = {str(p.relative_to(built_bundle)): elf_machine(p) for p in native if elf_machine(p) != EM_AARCH64}
    assert wrong == {}


def test_sizes_are_within_lambda_limits(built_bundle: Path) -> None:
    manifest = (built_bundle / "manifest.json").read_text()
    artifacts = json.loads(manifest)
    assert set(artifacts) == {"function", "deps-layer", "model-layer"}
    total = sum(a["unzipped_bytes"] for a in artifacts.values())
    assert total < LAMBDA_UNZIPPED_LIMIT
    # deploy.py uploads every zip through S3; the function zip would fit a direct upload too.
    assert artifacts["function"]["zipped_bytes"] < DIRECT_UPLOAD_LIMIT
    for name, facts in artifacts.items():
        assert (built_bundle / f"{name}.zip").stat().st_size == facts["zipped_bytes"]


def test_layers_hold_no_export_only_or_local_packages(built_bundle: Path) -> None:
    with zipfile.ZipFile(built_bundle / "deps-layer.zip") as deps:
        top_level = {name.split("/")[1] for name in deps.namelist() if name.startswith("python/")}
    assert {"onnxruntime", "numpy", "tokenizers", "cryptography", "aws_lambda_powertools"} <= top_level
    assert not (top_level & EXPORT_ONLY)
    with zipfile.ZipFile(built_bundle / "function.zip") as function:
        packages = {name.split("/")[0] for name in function.namelist()}
    assert packages == {"handlers", "pai_core", "run.sh"}  # run.sh: the streamed chat's entry point


def test_the_deps_layer_holds_exactly_the_locked_pins(built_bundle: Path) -> None:
    def canonical(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    with zipfile.ZipFile(built_bundle / "deps-layer.zip") as deps:
        dist_infos = {name.split("/")[1] for name in deps.namelist() if name.split("/")[1].endswith(".dist-info")}
    installed = {
        (canonical(d.removesuffix(".dist-info").rsplit("-", 1)[0]), d.removesuffix(".dist-info").rsplit("-", 1)[1])
        for d in dist_infos
    }
    locked = {
        (canonical(line.split("==")[0]), line.split("==")[1].split()[0])
        for line in bundle.lambda_requirements(bundle.LOCK).splitlines()
    }
    assert installed == locked


def test_model_layer_puts_the_model_where_the_template_says(built_bundle: Path) -> None:
    template = (REPO_ROOT / "infra" / "template.yaml").read_text()
    assert f"PAI_EMBEDDING_MODEL_DIR: {bundle.LAMBDA_MODEL_DIR}" in template
    with zipfile.ZipFile(built_bundle / "model-layer.zip") as layer:
        names = set(layer.namelist())
    # Layers are unpacked under /opt.
    prefix = bundle.LAMBDA_MODEL_DIR.removeprefix("/opt/")
    assert {f"{prefix}/model_qint8_arm64.onnx", f"{prefix}/tokenizer.json", f"{prefix}/manifest.json"} <= names


def test_the_build_is_reproducible(built_bundle: Path, tmp_path: Path) -> None:
    """Unchanged sources give byte-identical function zips, so a redeploy uploads nothing new."""
    bundle.stage_function(tmp_path / "function")
    bundle.zip_tree(tmp_path / "function", tmp_path / "again.zip")
    assert (tmp_path / "again.zip").read_bytes() == (built_bundle / "function.zip").read_bytes()


def test_the_streamed_chat_entry_point_is_an_executable_at_the_functions_root(built_bundle: Path) -> None:
    with zipfile.ZipFile(built_bundle / "function.zip") as bundle:
        entry = bundle.getinfo("run.sh")
        assert (entry.external_attr >> 16) & 0o111 == 0o111
        assert b"python3 -m handlers.chat_stream_server" in bundle.read("run.sh")
        names = set(bundle.namelist())
    assert {"handlers/chat_stream_server.py", "handlers/_events.py", "handlers/_snapstart.py"} <= names
