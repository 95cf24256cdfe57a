"""Build llama-cpp-python for a portable instruction set, once, and install it (`make setup` runs this).

pip would compile llama.cpp with -march=native, so a wheel built on one CPU can crash on another (the
AMX path of llama.cpp does, on Xeons that have AMX), and pip's own wheel cache would reuse whatever an
earlier build chose. Instead the flags are fixed here by machine type, the sdist is the one the lock
file pins (hash-checked), and the wheel is built with pip's cache off into our own cache, keyed by
version, Python and flags:

    ~/.cache/pai/wheels/<version>-<python>-<machine>-<flags hash>/   ($PAI_WHEEL_CACHE moves it)
        llama_cpp_python-<version>-....whl
        requirements.txt    the wheel's path and sha256, installed with --require-hashes

A later `make setup`, in this clone or another, reuses that wheel instead of compiling again.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_LOCK = REPO_ROOT / "requirements" / "dev.txt"
PACKAGE = "llama-cpp-python"

# x86-64 with AVX2 (Haswell and every later x86 server); AVX-512 and AMX stay off whatever this CPU has.
X86_64_FLAGS = (
    "-DGGML_NATIVE=OFF",
    "-DGGML_AVX=ON",
    "-DGGML_AVX2=ON",
    "-DGGML_FMA=ON",
    "-DGGML_F16C=ON",
    "-DGGML_BMI2=ON",
    "-DGGML_AVX_VNNI=OFF",
    "-DGGML_AVX512=OFF",
    "-DGGML_AVX512_VBMI=OFF",
    "-DGGML_AVX512_VNNI=OFF",
    "-DGGML_AVX512_BF16=OFF",
    "-DGGML_AMX_TILE=OFF",
    "-DGGML_AMX_INT8=OFF",
    "-DGGML_AMX_BF16=OFF",
)
# Generic armv8-a: the compiler's baseline, which every 64-bit ARM CPU runs.
AARCH64_FLAGS = ("-DGGML_NATIVE=OFF",)
COMMON_FLAGS = ("-DGGML_BACKEND_DL=OFF", "-DGGML_CPU_ALL_VARIANTS=OFF")


def cmake_flags(machine: str) -> tuple[str, ...]:
    if machine in {"x86_64", "amd64", "AMD64"}:
        return X86_64_FLAGS + COMMON_FLAGS
    if machine in {"aarch64", "arm64"}:
        return AARCH64_FLAGS + COMMON_FLAGS
    raise SystemExit(f"no portable llama.cpp flags for machine type {machine!r}: add them to {__file__}")


def locked_requirement(lock: Path) -> tuple[str, str]:
    """The lock file's llama-cpp-python entry (version and hash lines) as a requirements file, and its version."""
    text = lock.read_text(encoding="utf-8")
    match = re.search(rf"^{re.escape(PACKAGE)}==(\S+)((?: \\\n\s+--hash=sha256:[0-9a-f]{{64}})+)", text, flags=re.M)
    if match is None:
        raise SystemExit(f"{lock} pins no {PACKAGE}==<version> with --hash lines: run `make lock`")
    return match.group(0) + "\n", match.group(1)


def cache_root() -> Path:
    configured = os.environ.get("PAI_WHEEL_CACHE")
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pai" / "wheels"


def cache_key(version: str, machine: str, flags: tuple[str, ...], requirement: str) -> str:
    # The sdist's hash is part of the key: a re-locked sdist of the same version is a different build.
    digest = hashlib.sha256("\n".join((*flags, requirement)).encode()).hexdigest()[:16]
    return f"{version}-{sys.implementation.cache_tag}-{machine}-{digest}"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build(requirement: str, flags: tuple[str, ...], target: Path) -> Path:
    """Compile the wheel from the hash-checked sdist into `target`; the directory appears only when complete."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        pinned = staging / "sdist.txt"
        pinned.write_text(requirement, encoding="utf-8")
        env = {
            **os.environ,
            "CMAKE_ARGS": " ".join(flags),
            "FORCE_CMAKE": "1",
            "CMAKE_BUILD_PARALLEL_LEVEL": os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 1)),
        }
        print(f"building {PACKAGE} (several minutes, once per version and flags) with CMAKE_ARGS={env['CMAKE_ARGS']}")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--quiet",
                "--disable-pip-version-check",
                "--no-cache-dir",
                "--no-deps",
                "--no-binary",
                PACKAGE,
                "--require-hashes",
                "--wheel-dir",
                str(staging),
                "-r",
                str(pinned),
            ],
            check=True,
            env=env,
        )
        pinned.unlink()
        (wheel,) = staging.glob("*.whl")
        (staging / "requirements.txt").write_text(
            f"{PACKAGE} @ {(target / wheel.name).as_uri()} --hash=sha256:{sha256(wheel)}\n", encoding="utf-8"
        )
        (staging / "flags.txt").write_text(" ".join(flags) + "\n", encoding="utf-8")
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target / "requirements.txt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lock", type=Path, default=DEFAULT_LOCK, help="the lock file that pins the sdist")
    parser.add_argument("--no-install", action="store_true", help="only build (or find) the wheel")
    parser.add_argument("--print-flags", action="store_true", help="print this machine's CMake flags and stop")
    args = parser.parse_args()

    machine = platform.machine()
    flags = cmake_flags(machine)
    if args.print_flags:
        print(" ".join(flags))
        return
    requirement, version = locked_requirement(args.lock)
    target = cache_root() / cache_key(version, machine, flags, requirement)
    wheel_requirement = target / "requirements.txt"
    if wheel_requirement.exists():
        print(f"{PACKAGE} {version}: reusing {target}")
    else:
        wheel_requirement = build(requirement, flags, target)
    if not args.no_install:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-deps",
                "--require-hashes",
                # A llama-cpp-python of the same version built with other flags must not count as installed.
                "--force-reinstall",
                "-r",
                str(wheel_requirement),
            ],
            check=True,
        )


if __name__ == "__main__":
    main()
