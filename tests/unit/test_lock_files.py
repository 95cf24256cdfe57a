"""The lock files drive every install, and llama.cpp is built for a portable instruction set."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from pai_core.config import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "scripts"))
import bundle
import llama_wheel

REQUIREMENTS = REPO_ROOT / "requirements"
PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
MAKEFILE = (REPO_ROOT / "Makefile").read_text()


def pins(lock: str) -> dict[str, set[str]]:
    """name -> the versions a lock file pins (more than one where markers split it)."""
    found: dict[str, set[str]] = {}
    for name, version in re.findall(r"^([a-z0-9._-]+)==(\S+)", (REQUIREMENTS / lock).read_text(), flags=re.M):
        found.setdefault(name, set()).add(version)
    return found


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def direct(*extras: str) -> list[Requirement]:
    groups = [PYPROJECT["project"]["dependencies"], *(PYPROJECT["project"]["optional-dependencies"][e] for e in extras)]
    return [Requirement(line) for group in groups for line in group]


@pytest.mark.parametrize(
    ("lock", "extras"),
    [
        ("export.txt", ("local", "dev", "client", "export")),
        ("dev.txt", ("local", "dev", "client")),
        ("local.txt", ("local",)),
    ],
)
def test_every_direct_dependency_is_pinned_and_locked_at_its_pin(lock: str, extras: tuple[str, ...]) -> None:
    locked = pins(lock)
    for requirement in direct(*extras):
        (specifier,) = requirement.specifier
        assert specifier.operator == "==", f"{requirement} is not pinned"
        versions = locked[canonical(requirement.name)]
        assert any(specifier.contains(version) for version in versions), (requirement, versions)


def test_every_lock_entry_carries_hashes() -> None:
    for lock in ("export.txt", "dev.txt", "local.txt", "lambda.txt", "uv.txt"):
        text = (REQUIREMENTS / lock).read_text()
        entries = re.findall(r"^[a-z0-9._-]+==\S+.*\\\n((?:\s+--hash=sha256:[0-9a-f]{64}.*\n)+)", text, flags=re.M)
        assert len(entries) == len(re.findall(r"^[a-z0-9._-]+==", text, flags=re.M)) > 0, lock


def test_the_smaller_locks_agree_with_export() -> None:
    export = pins("export.txt")
    for lock in ("dev.txt", "local.txt", "lambda.txt"):
        for name, versions in pins(lock).items():
            assert versions <= export[name], (lock, name)


def test_torch_is_a_cpu_build_and_nothing_pulls_cuda() -> None:
    export = pins("export.txt")
    assert export["torch"] == {"2.13.0+cpu", "2.9.1"}
    assert not any(name.startswith(("nvidia-", "cuda-", "triton")) for name in export)
    assert "torch" not in pins("dev.txt")


def test_the_lambda_layer_is_the_runtime_without_what_lambda_provides() -> None:
    shipped = {canonical(line.split("==")[0]) for line in bundle.lambda_requirements(bundle.LOCK).splitlines()}
    assert {"onnxruntime", "numpy", "tokenizers", "cryptography", "aws-lambda-powertools", "openai"} <= shipped
    assert not shipped & {"boto3", "botocore", "s3transfer", "huggingface-hub", "llama-cpp-python", "moto", "torch"}
    assert all("--hash=sha256:" in line for line in bundle.lambda_requirements(bundle.LOCK).splitlines())


def test_every_install_in_the_makefile_is_hash_checked() -> None:
    installs = [line for line in MAKEFILE.splitlines() if re.search(r"(\$\(PIP\)|\bpip) install\b", line)]
    assert installs
    assert all("--require-hashes" in line for line in installs), installs
    assert "-march=native" not in MAKEFILE


def test_llama_cpp_is_built_for_a_portable_instruction_set() -> None:
    x86 = llama_wheel.cmake_flags("x86_64")
    assert "-DGGML_NATIVE=OFF" in x86
    assert {"-DGGML_AVX2=ON", "-DGGML_FMA=ON", "-DGGML_F16C=ON"} <= set(x86)
    # The AMX path is where llama.cpp crashed (ggml_backend_amx_mul_mat); AVX-512 is not on every x86-64.
    for feature in ("AVX512", "AVX512_VBMI", "AVX512_VNNI", "AVX512_BF16", "AMX_TILE", "AMX_INT8", "AMX_BF16"):
        assert f"-DGGML_{feature}=OFF" in x86
    assert "-DGGML_NATIVE=OFF" in llama_wheel.cmake_flags("aarch64")
    with pytest.raises(SystemExit, match=r"no portable llama\.cpp flags"):
        llama_wheel.cmake_flags("riscv64")


def test_the_wheel_cache_key_changes_with_flags_and_sdist(tmp_path: Path) -> None:
    requirement, version = llama_wheel.locked_requirement(REQUIREMENTS / "dev.txt")
    assert requirement.startswith(f"llama-cpp-python=={version} \\\n")
    assert re.search(r"--hash=sha256:[0-9a-f]{64}", requirement)
    x86 = llama_wheel.cmake_flags("x86_64")
    key = llama_wheel.cache_key(version, "x86_64", x86, requirement)
    assert key.startswith(f"{version}-")
    assert key == llama_wheel.cache_key(version, "x86_64", x86, requirement)
    assert key != llama_wheel.cache_key(version, "x86_64", (*x86, "-DGGML_AVX512=ON"), requirement)
    assert key != llama_wheel.cache_key(version, "x86_64", x86, requirement.replace("sha256:", "sha256:0", 1))
    (tmp_path / "lock.txt").write_text("numpy==2.4.6 \\\n    --hash=sha256:" + "0" * 64 + "\n")
    with pytest.raises(SystemExit, match="make lock"):
        llama_wheel.locked_requirement(tmp_path / "lock.txt")
