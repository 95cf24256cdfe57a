"""docker-compose.yml and the Dockerfile, checked without a Docker engine (none runs here): they
parse, say what the README says, bind only to loopback, and run what `make run` runs."""

from __future__ import annotations

import json
import re

import yaml

from pai_core.config import REPO_ROOT

COMPOSE = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
DOCKERFILE = (REPO_ROOT / "Dockerfile").read_text()


def locked_version(package: str) -> str:
    match = re.search(rf"^{package}==(\S+)", (REPO_ROOT / "requirements" / "dev.txt").read_text(), flags=re.M)
    assert match, f"requirements/dev.txt pins no {package}"
    return match.group(1)


def test_services_and_profiles() -> None:
    services = COMPOSE["services"]
    assert set(services) == {"moto", "localstack", "pai"}
    assert "profiles" not in services["pai"]  # `docker compose up` needs no emulator container nor account
    assert services["moto"]["profiles"] == ["moto"]
    assert services["localstack"]["profiles"] == ["localstack"]
    assert re.fullmatch(r"localstack/localstack:\d+\.\d+\.\d+", services["localstack"]["image"])  # pinned
    assert services["localstack"]["environment"]["LOCALSTACK_AUTH_TOKEN"] == "${LOCALSTACK_AUTH_TOKEN:-}"


def test_the_moto_image_is_the_locked_moto() -> None:
    assert COMPOSE["services"]["moto"]["image"] == f"motoserver/moto:{locked_version('moto')}"


def test_every_published_port_is_loopback_only() -> None:
    published = [port for service in COMPOSE["services"].values() for port in service.get("ports", [])]
    assert published
    assert all(str(port).startswith("127.0.0.1:") for port in published)
    assert "127.0.0.1:8080:8080" in COMPOSE["services"]["pai"]["ports"]


def test_state_survives_restarts_on_a_named_volume() -> None:
    pai = COMPOSE["services"]["pai"]
    assert pai["environment"]["PAI_STATE_DIR"] == "/data/state"
    assert "pai-state:/data" in pai["volumes"]
    assert "pai-state" in COMPOSE["volumes"]
    assert "PAI_STATE_DIR=/data/state" in DOCKERFILE
    assert "ln -s /data /app/.pai" in DOCKERFILE  # the API key file stays beside the state


def test_an_external_emulator_is_chosen_by_botocores_own_variable() -> None:
    """AWS_ENDPOINT_URL passes through from the shell (None: left unset, so the embedded emulator runs)."""
    pai = COMPOSE["services"]["pai"]
    assert "AWS_ENDPOINT_URL" in pai["environment"]
    assert pai["environment"]["AWS_ENDPOINT_URL"] is None
    for emulator in ("moto", "localstack"):
        assert pai["depends_on"][emulator] == {"condition": "service_healthy", "required": False}
        assert "healthcheck" in COMPOSE["services"][emulator]
    assert "HEALTHCHECK" in DOCKERFILE and "/health" in DOCKERFILE


def test_the_dockerfile_runs_what_make_run_runs() -> None:
    makefile = (REPO_ROOT / "Makefile").read_text()
    run_recipe = makefile.split("\nrun:", 1)[1].splitlines()[1].strip()
    assert run_recipe == "$(BIN)/python -m pai_local"
    (cmd,) = re.findall(r"^CMD (.+)$", DOCKERFILE, flags=re.M)
    assert json.loads(cmd) == ["python", "-m", "pai_local"]
    assert "FROM python:3.12" in DOCKERFILE  # the Lambda runtime's Python


def test_the_dockerfile_installs_from_the_lock_with_portable_llama() -> None:
    assert "python scripts/llama_wheel.py --lock requirements/local.txt" in DOCKERFILE
    assert "pip install --no-cache-dir --require-hashes -r requirements/local.txt" in DOCKERFILE
    assert "-march=native" not in DOCKERFILE
