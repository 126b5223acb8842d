"""What the toolkit does differently on Podman, without an engine: recognising Podman from `docker
version`, the classic builder's command line and failure, Buildah's step lines in the build progress, and
log lines whose timestamps have whole seconds only (Podman's `docker logs --timestamps`)."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from python_on_whales import DockerClient
from python_on_whales.exceptions import DockerException

from integration import podman
from integration.failure_report import Window, lines_in_window, parse_log_lines
from integration.images import _PODMAN_STEP, _STEP


def fake_cli(tmp_path: Path, body: str) -> DockerClient:
    """A DockerClient whose CLI is a shell script (`body`), which records its arguments in args.txt."""
    script = tmp_path / "docker"
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > "{tmp_path}/args.txt"\n{body}\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return DockerClient(client_call=[str(script)])


def components(*names: str) -> str:
    return json.dumps([{"Name": name, "Version": "1"} for name in names])


def test_podman_is_recognised_by_its_server_component(tmp_path: Path) -> None:
    client = fake_cli(tmp_path, f"echo '{components('Podman Engine', 'Conmon')}'")
    assert podman.is_podman(client)


@pytest.mark.parametrize(
    "body",
    [
        f"echo '{components('Engine', 'containerd', 'runc')}'",  # a Docker engine
        "echo 'Cannot connect to the Docker daemon' >&2; exit 1",  # no engine
        "echo 'not json'",
    ],
)
def test_anything_else_is_not_podman(tmp_path: Path, body: str) -> None:
    assert not podman.is_podman(fake_cli(tmp_path, body))


def test_the_classic_build_streams_its_lines_and_names_every_input(tmp_path: Path) -> None:
    client = fake_cli(tmp_path, 'echo "STEP 1/2: FROM base"; echo "STEP 2/2: RUN true"')
    lines = list(
        podman.classic_build(
            client,
            tmp_path / "ctx",
            tags=["app:test"],
            file=tmp_path / "Dockerfile",
            labels={"io.integration.service": "app"},
            build_args={"PYTHON_IMAGE": "python:3.11-slim"},
        )
    )
    assert [line.strip() for line in lines] == ["STEP 1/2: FROM base", "STEP 2/2: RUN true"]
    args = (tmp_path / "args.txt").read_text().splitlines()
    assert args[:2] == ["build", "--force-rm"]
    assert args[args.index("--file") + 1] == str(tmp_path / "Dockerfile")
    assert args[args.index("--tag") + 1] == "app:test"
    assert args[args.index("--label") + 1] == "io.integration.service=app"
    assert args[args.index("--build-arg") + 1] == "PYTHON_IMAGE=python:3.11-slim"
    assert args[-1] == str(tmp_path / "ctx")


def test_the_classic_builder_runs_without_buildkit(tmp_path: Path) -> None:
    client = fake_cli(tmp_path, 'echo "buildkit=$DOCKER_BUILDKIT"')
    assert [line.strip() for line in podman.classic_build(client, tmp_path, tags=["t"])] == ["buildkit=0"]


def test_a_failed_classic_build_raises_with_its_whole_output(tmp_path: Path) -> None:
    client = fake_cli(tmp_path, 'echo "STEP 1/1: RUN false"; echo "error building at STEP" >&2; exit 1')
    with pytest.raises(DockerException) as caught:
        podman.classic_build_quietly(client, tmp_path, tags=["t"])
    assert caught.value.return_code == 1
    assert "STEP 1/1: RUN false" in (caught.value.stderr or "")
    assert "error building at STEP" in (caught.value.stderr or "")


def test_buildah_step_lines_are_progress_but_its_label_steps_are_not() -> None:
    step = _PODMAN_STEP.match("STEP 3/11: RUN pip install -r /srv/requirements.txt")
    assert step and step.group(1) == "RUN pip install -r /srv/requirements.txt"
    assert _PODMAN_STEP.match('STEP 11/11: LABEL "io.integration.service"="links"') is None
    assert _PODMAN_STEP.match("#7 [2/6] RUN pip install") is None
    assert _STEP.match("STEP 3/11: RUN true") is None


def test_whole_second_log_lines_count_when_their_second_overlaps_the_window() -> None:
    start = datetime(2026, 12, 1, 23, 47, 3, 577000, tzinfo=UTC)
    window = Window(start, start + timedelta(milliseconds=550))  # 23:47:03.577 to 23:47:04.127
    lines = parse_log_lines(
        "2026-12-01T23:47:02Z before\n"
        "2026-12-01T23:47:03Z during\n"
        "2026-12-01T23:47:04Z also during\n"
        "2026-12-01T23:47:05Z after\n"
    )
    assert [line.text for line in lines_in_window(lines, window)] == ["during", "also during"]


def test_nanosecond_log_lines_are_filtered_exactly_as_before() -> None:
    start = datetime(2026, 12, 1, 23, 47, 3, 577000, tzinfo=UTC)
    window = Window(start, start + timedelta(milliseconds=550))
    lines = parse_log_lines(
        "2026-12-01T23:47:03.000000001Z before\n"
        "2026-12-01T23:47:03.600000000Z during\n"
        "2026-12-01T23:47:04.200000000Z after\n"
    )
    assert [line.text for line in lines_in_window(lines, window)] == ["during"]
