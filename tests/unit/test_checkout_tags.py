"""Default service image tags are a checkout's own: `<system>-<service>:<checkout id>`, different for two
copies of one repository and for two systems with a service of the same name; a tag the user wrote is
used as written. Pure: temporary folders, no Docker."""

from __future__ import annotations

import shutil
from pathlib import Path

from integration.discovery import load_system
from integration.model import IMAGE_RE, BaseImages, checkout_id, default_image
from integration.settings import project_name

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "systems" / "minimal"


def copy(destination: Path) -> Path:
    shutil.copytree(FIXTURE, destination)
    return destination


def tags(root: Path) -> dict[str, str]:
    return {s.name: s.image for s in load_system(root, BaseImages()).services}


def test_two_copies_of_a_system_get_tags_of_their_own(tmp_path: Path) -> None:
    one, two = copy(tmp_path / "one" / "minimal"), copy(tmp_path / "two" / "minimal")
    first, second = tags(one), tags(two)
    assert set(first) == set(second) == {"orders", "billing"}
    assert set(first.values()).isdisjoint(second.values())
    assert first["orders"] == f"minimal-orders:{checkout_id(one)}"
    assert all(IMAGE_RE.fullmatch(tag) for tag in [*first.values(), *second.values()])
    assert tags(one) == first  # stable for a checkout


def test_two_systems_with_a_service_of_the_same_name_get_different_tags(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    assert default_image("shop", "orders", root) != default_image("store", "orders", root)


def test_the_checkout_id_is_the_one_of_its_compose_projects(tmp_path: Path) -> None:
    root = copy(tmp_path / "minimal")
    system = load_system(root, BaseImages())
    assert project_name(system) == f"minimal-{checkout_id(root)[:8]}"


def test_a_tag_the_user_wrote_is_used_as_written(tmp_path: Path) -> None:
    root = copy(tmp_path / "minimal")
    services = root / "architecture" / "services.yml"
    text = services.read_text()
    assert "  orders:\n" in text
    services.write_text(text.replace("  orders:\n", "  orders:\n    image: team/orders:dev\n", 1))
    written = tags(root)
    assert written["orders"] == "team/orders:dev"
    assert written["billing"] == f"minimal-billing:{checkout_id(root)}"
