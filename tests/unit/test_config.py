from __future__ import annotations

from pathlib import Path

import pytest

from pai_core.config import DEFAULT_LOCAL_STATE_DIR, REPO_ROOT, ConfigError, Settings, default_llm_threads


def test_defaults_follow_the_design() -> None:
    settings = Settings.from_env({})
    assert settings.conversations_table == "pai-conversations-dev"
    assert settings.knowledge_table == "pai-knowledge-dev"
    assert settings.kms_key_id == "alias/pai-dev"
    assert settings.region == "us-east-1"
    assert settings.endpoint_url is None


def test_environment_and_explicit_arguments() -> None:
    settings = Settings.from_env({"PAI_ENV": "prod", "AWS_ENDPOINT_URL": "http://127.0.0.1:4566"}, region="eu-west-1")
    assert settings.knowledge_table == "pai-knowledge-prod"
    assert settings.endpoint_url == "http://127.0.0.1:4566"
    assert settings.region == "eu-west-1"


@pytest.mark.parametrize(
    ("environ", "names"),
    [
        ({"PAI_ENV": "Bad Env"}, "PAI_ENV"),
        ({"PAI_LLM_PROVIDER": "nope"}, "PAI_LLM_PROVIDER"),
        ({"PAI_LLM_CONTEXT_TOKENS": "lots"}, "PAI_LLM_CONTEXT_TOKENS"),
        ({"PAI_KEY_CACHE_MAX_AGE_SECONDS": "0"}, "PAI_KEY_CACHE_MAX_AGE_SECONDS"),
        ({"PAI_PORT": "notaport"}, "PAI_PORT"),
        ({"PAI_PORT": "70000"}, "PAI_PORT"),
    ],
)
def test_bad_configuration_fails_fast_naming_the_variable(environ: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        Settings.from_env(environ)


def test_the_offline_model_is_found_in_its_package() -> None:
    path = Settings.from_env({}).resolve_local_llm_path()
    assert path.name.endswith(".gguf") and path.stat().st_size > 50_000_000


def test_the_local_stack_keeps_its_state_under_the_git_ignored_pai_directory_unless_moved() -> None:
    assert Settings.from_env({}).local_state_dir == DEFAULT_LOCAL_STATE_DIR == REPO_ROOT / ".pai" / "state"
    assert Settings.from_env({"PAI_STATE_DIR": "/srv/pai-state"}).local_state_dir == Path("/srv/pai-state")
    assert Settings.from_env({"PAI_STATE_DIR": "~/pai"}).local_state_dir == Path.home() / "pai"
    assert Settings.from_env({"PAI_STATE_DIR": ""}).local_state_dir == DEFAULT_LOCAL_STATE_DIR


def test_the_local_api_address_comes_from_pai_host_and_pai_port() -> None:
    settings = Settings.from_env({})
    assert (settings.local_host, settings.local_port) == ("127.0.0.1", 8080)
    settings = Settings.from_env({"PAI_HOST": "0.0.0.0", "PAI_PORT": "9090"})
    assert (settings.local_host, settings.local_port) == ("0.0.0.0", 9090)


def test_the_offline_models_server_is_a_setting() -> None:
    assert Settings.from_env({}).local_llm_url is None
    settings = Settings.from_env({"PAI_LOCAL_LLM_URL": "http://127.0.0.1:8765/v1"})
    assert settings.local_llm_url == "http://127.0.0.1:8765/v1"


@pytest.mark.parametrize("url", ["127.0.0.1:8765", "ftp://127.0.0.1/v1", "http://", "http://host name/v1"])
def test_a_bad_offline_model_url_fails_fast_naming_the_variable(url: str) -> None:
    with pytest.raises(ConfigError, match="PAI_LOCAL_LLM_URL"):
        Settings.from_env({"PAI_LOCAL_LLM_URL": url})


def test_the_local_provider_without_its_server_says_what_to_set() -> None:
    from pai_core.bootstrap import Container

    with pytest.raises(ConfigError, match="PAI_LOCAL_LLM_URL"):
        _ = Container(Settings.from_env({})).chat_model


@pytest.mark.parametrize(("cores", "threads"), [(1, 1), (2, 1), (4, 3), (64, 4)])
def test_the_offline_model_leaves_a_core_to_the_rest(cores: int, threads: int) -> None:
    assert default_llm_threads(cores) == threads
    assert Settings.from_env({"PAI_LLM_THREADS": "2"}).llm_threads == 2
