"""Run a service-oriented repository's use-case tests against its real services in containers.

Modules, one job each: model (dataclasses), discovery (services.yml and contracts -> model), ports and
compose (model -> compose file), buildinputs and images (content-hashed service images), baseimages
(registry images or offline stand-ins), stack (the compose lifecycle), database and broker (the harness's
access to PostgreSQL and RabbitMQ), harness (RealServiceHarness), plugin (pytest), doctor, cli, sessions.

This package's top level imports nothing: the noxfile imports `integration.sessions` from nox's own
interpreter, where the toolkit's dependencies are not installed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .errors import (
        BuildError,
        ConfigError,
        EngineError,
        HarnessError,
        IntegrationError,
        StackError,
        StaleImageError,
    )
    from .harness import RealServiceHarness, event_map
    from .model import StackEndpoints, SystemSpec
    from .settings import SystemConfig, load_config

# What users import, and where it lives; loaded on first use (PEP 562), so that importing the package
# (the noxfile does, from nox's own interpreter) costs nothing and needs none of the dependencies.
_PUBLIC = {
    "RealServiceHarness": "harness",
    "event_map": "harness",
    "IntegrationError": "errors",
    "ConfigError": "errors",
    "EngineError": "errors",
    "StaleImageError": "errors",
    "BuildError": "errors",
    "StackError": "errors",
    "HarnessError": "errors",
    "StackEndpoints": "model",
    "SystemSpec": "model",
    "SystemConfig": "settings",
    "load_config": "settings",
}
__all__ = [
    "BuildError",
    "ConfigError",
    "EngineError",
    "HarnessError",
    "IntegrationError",
    "RealServiceHarness",
    "StackEndpoints",
    "StackError",
    "StaleImageError",
    "SystemConfig",
    "SystemSpec",
    "event_map",
    "load_config",
]


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'integration' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
