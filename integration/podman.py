"""What the toolkit does differently when the engine behind the Docker CLI is Podman.

Podman's Docker-compatible API service (`podman system service`) answers the docker CLI and the compose
plugin, but not BuildKit's session API: `docker buildx build` on it finds no BuildKit and falls back to a
`docker-container` builder, which needs the `moby/buildkit` image from a registry. Images are therefore
built with the classic builder (`DOCKER_BUILDKIT=0 docker build`), which Podman serves with Buildah.

Everything else goes through python-on-whales unchanged; each place that needs this module says why.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path

from python_on_whales import DockerClient
from python_on_whales.exceptions import DockerException

# The name Podman gives itself among the server's components in `docker version`.
PODMAN_COMPONENT = "Podman Engine"


def is_podman(client: DockerClient) -> bool:
    """Whether the engine `client` talks to is Podman (asked once per CLI command line and engine)."""
    docker_cmd = tuple(str(part) for part in client.client_config.docker_cmd)
    return _is_podman(docker_cmd, os.environ.get("DOCKER_HOST", ""), os.environ.get("DOCKER_CONTEXT", ""))


@functools.cache
def _is_podman(docker_cmd: tuple[str, ...], host: str, context: str) -> bool:
    # host and context are part of the cache key only: the CLI reads them from the environment itself.
    del host, context
    try:
        result = subprocess.run(
            [*docker_cmd, "version", "--format", "{{json .Server.Components}}"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    try:
        components = json.loads(result.stdout or "null") or []
    except json.JSONDecodeError:
        return False
    return any(isinstance(c, dict) and c.get("Name") == PODMAN_COMPONENT for c in components)


def classic_build(
    client: DockerClient,
    context: Path,
    *,
    tags: list[str],
    file: Path | None = None,
    labels: Mapping[str, str] | None = None,
    build_args: Mapping[str, str] | None = None,
) -> Iterator[str]:
    """`docker build` with the classic builder, yielding its output lines; a failure raises
    DockerException with the whole output as stderr (what callers show the tail of).

    `--force-rm` because Podman otherwise keeps the working container of a failed step (it then holds
    the base image: `image is in use by a container`)."""
    cmd = [*(str(part) for part in client.client_config.docker_cmd), "build", "--force-rm"]
    if file is not None:
        cmd += ["--file", str(file)]
    for tag in tags:
        cmd += ["--tag", tag]
    for key, value in (labels or {}).items():
        cmd += ["--label", f"{key}={value}"]
    for key, value in (build_args or {}).items():
        cmd += ["--build-arg", f"{key}={value}"]
    cmd.append(str(context))
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    output: list[str] = []
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line)
            yield line
    if process.returncode != 0:
        raise DockerException(cmd, process.returncode, stderr="".join(output).encode())


def classic_build_quietly(
    client: DockerClient,
    context: Path,
    *,
    tags: list[str],
    labels: Mapping[str, str] | None = None,
    build_args: Mapping[str, str] | None = None,
) -> None:
    """`classic_build` run to its end, for builds whose progress nobody reads (stand-ins, the reaper)."""
    for _line in classic_build(client, context, tags=tags, labels=labels, build_args=build_args):
        pass
