"""docker-compose.yml and the Dockerfile, checked without a Docker engine (none runs here): they
parse, say what the README says, bind only to loopback, and run what `make run` runs."""

from __future__ import annotations

import json
import re

import yaml

from pai_core.config import REPO_ROOT

COMPOSE = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
DOCKERFILE = (REPO_ROOT / "Dockerfile").read_text()


def test_services_and_profiles() -> None:
    services = COMPOSE["services"]
    assert set(services) == {"moto", "localstack", "pai"}
    assert "profiles" not in services["moto"]  # the default emulator needs no account
    assert services["localstack"]["profiles"] == ["localstack"]
    assert re.fullmatch(r"localstack/localstack:\d+\.\d+\.\d+", services["localstack"]["image"])  # pinned
    assert re.fullmatch(r"motoserver/moto:\d+\.\d+\.\d+", services["moto"]["image"])
    assert services["localstack"]["environment"]["LOCALSTACK_AUTH_TOKEN"] == "${LOCALSTACK_AUTH_TOKEN:-}"


def test_every_published_port_is_loopback_only() -> None:
    published = [port for service in COMPOSE["services"].values() for port in service.get("ports", [])]
    assert published
    assert all(str(port).startswith("127.0.0.1:") for port in published)
    assert "127.0.0.1:8080:8080" in COMPOSE["services"]["pai"]["ports"]


def test_pai_points_at_the_emulator_and_waits_for_it() -> None:
    pai = COMPOSE["services"]["pai"]
    assert pai["build"] == "."
    assert pai["environment"]["AWS_ENDPOINT_URL"] == "${PAI_EMULATOR_URL:-http://moto:4566}"
    assert pai["depends_on"]["moto"]["condition"] == "service_healthy"
    assert all("healthcheck" in COMPOSE["services"][name] for name in ("moto", "localstack"))
    assert "HEALTHCHECK" in DOCKERFILE and "/health" in DOCKERFILE


def test_the_dockerfile_runs_what_make_run_runs() -> None:
    makefile = (REPO_ROOT / "Makefile").read_text()
    run_recipe = makefile.split("\nrun:", 1)[1].splitlines()[1].strip()
    assert run_recipe == "$(BIN)/python -m pai_local"
    (cmd,) = re.findall(r"^CMD (.+)$", DOCKERFILE, flags=re.M)
    assert json.loads(cmd) == ["python", "-m", "pai_local"]
    assert 'pip install --no-cache-dir -e ".[local]"' in DOCKERFILE
    assert "FROM python:3.12" in DOCKERFILE  # the Lambda runtime's Python
