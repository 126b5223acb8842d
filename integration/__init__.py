"""Run a service-oriented repository's use-case tests against its real services in containers.

Modules, one job each: model (dataclasses), discovery (services.yml and contracts -> model), ports and
compose (model -> compose file), buildinputs and images (content-hashed service images), baseimages
(registry images or offline stand-ins), stack (the compose lifecycle), database and broker (the harness's
access to PostgreSQL and RabbitMQ), harness (RealServiceHarness), plugin (pytest), doctor, cli, sessions.

This package's top level imports nothing: the noxfile imports `integration.sessions` from nox's own
interpreter, where the toolkit's dependencies are not installed.
"""
