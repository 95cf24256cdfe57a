"""Bring the whole local PAI up: emulator (embedded moto unless one is given), resources from the
template, the composition root pointed at the emulator, and the gateway in front of the handlers."""

from __future__ import annotations

from dataclasses import dataclass, replace

import boto3

from pai_core.bootstrap import Container, set_container
from pai_core.config import Settings
from pai_core.ports import ChatModel
from pai_local.emulator import EmbeddedMoto, use_emulator_credentials
from pai_local.gateway import LocalGateway
from pai_local.provision import Provisioned, provision
from pai_local.template import Template


@dataclass
class RunningStack:
    settings: Settings
    container: Container
    resources: Provisioned
    gateway: LocalGateway
    gateway_url: str
    endpoint_url: str
    emulator: EmbeddedMoto | None

    def stop(self) -> None:
        self.gateway.stop()
        set_container(None)
        if self.emulator is not None:
            self.emulator.stop()


def start_stack(
    settings: Settings,
    *,
    emulator_port: int,
    gateway_port: int,
    gateway_host: str = "127.0.0.1",
    chat_model: ChatModel | None = None,
) -> RunningStack:
    """Uses settings.endpoint_url when it is set (LocalStack, a moto container, anything that speaks
    AWS), else starts moto in this process on `emulator_port`."""
    use_emulator_credentials()
    emulator = None
    endpoint_url = settings.endpoint_url
    if endpoint_url is None:
        emulator = EmbeddedMoto(port=emulator_port)
        endpoint_url = emulator.start()
    try:
        session = boto3.session.Session(region_name=settings.region)
        resources = provision(Template.load(Env=settings.env), session, endpoint_url=endpoint_url)
        settings = replace(settings, endpoint_url=endpoint_url, knowledge_bucket=resources.bucket)
        container = Container(settings, chat_model=chat_model)
        set_container(container)
        gateway = LocalGateway(Template.load(Env=settings.env).routes(), host=gateway_host, port=gateway_port)
        gateway_url = gateway.start()
    except BaseException:
        if emulator is not None:
            emulator.stop()
        raise
    return RunningStack(settings, container, resources, gateway, gateway_url, endpoint_url, emulator)
