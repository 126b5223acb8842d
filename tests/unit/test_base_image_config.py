"""Base images from the environment, and the PostgreSQL stand-in each configured major maps to."""

from __future__ import annotations

import pytest

from integration.baseimages import (
    POSTGRES_SUITES,
    STANDINS,
    configured_base_images,
    postgres_major,
    standin_for,
)
from integration.errors import BuildError, ConfigError
from integration.model import OFFLINE_POSTGRES_IMAGE, BaseImages


def test_defaults_without_variables():
    assert configured_base_images({}) == BaseImages()
    assert configured_base_images({"INTEGRATION_POSTGRES_IMAGE": "  "}) == BaseImages()


def test_each_variable_replaces_its_image():
    chosen = configured_base_images(
        {
            "INTEGRATION_POSTGRES_IMAGE": "postgres:17",
            "INTEGRATION_BROKER_IMAGE": "rabbitmq:4.0-management",
            "INTEGRATION_PYTHON_IMAGE": "registry.example:5000/python:3.12-slim",
        }
    )
    assert chosen == BaseImages(
        "postgres:17", "rabbitmq:4.0-management", "registry.example:5000/python:3.12-slim"
    )


def test_a_malformed_value_names_the_variable():
    with pytest.raises(ConfigError, match=r"\$INTEGRATION_POSTGRES_IMAGE: 'Postgres 17' is not an image"):
        configured_base_images({"INTEGRATION_POSTGRES_IMAGE": "Postgres 17"})


@pytest.mark.parametrize(
    ("image", "major"),
    [
        ("postgres:15", "15"),
        ("postgres:17", "17"),
        ("postgres:17.2-bookworm", "17"),
        ("docker.io/library/postgres:16-alpine", "16"),
        ("integration-local/postgres:17", "17"),
        ("postgres", None),
        ("postgres:latest", None),
        ("localhost:5000/postgres", None),
    ],
)
def test_postgres_major_is_read_from_the_tag(image, major):
    assert postgres_major(image) == major


def test_each_packaged_major_has_its_own_standin_on_its_release():
    for major, suite in POSTGRES_SUITES.items():
        standin = standin_for("postgres", f"postgres:{major}")
        assert standin.image == f"integration-local/postgres:{major}"
        assert standin.suite == suite
        assert dict(standin.build_args) == {"PG_MAJOR": major}
    assert POSTGRES_SUITES == {"15": "bookworm", "17": "trixie"}


def test_the_default_standins_are_unchanged():
    assert STANDINS[0].image == OFFLINE_POSTGRES_IMAGE
    assert standin_for("postgres", "postgres") == STANDINS[0]
    assert standin_for("broker", BaseImages().broker) == STANDINS[1]
    assert standin_for("python", "python:3.12-slim") == STANDINS[2]


def test_a_major_debian_does_not_package_is_an_actionable_error():
    with pytest.raises(
        BuildError, match=r"no offline stand-in for PostgreSQL 16: .*15 \(bookworm\), 17 \(trixie\)"
    ):
        standin_for("postgres", "postgres:16")
