"""compose/shortener.reference.yml shows users what the generator makes of the bundled example; it must
stay what the generator makes today (regenerate with UPDATE_GOLDEN=1)."""

from __future__ import annotations

import os
from pathlib import Path

from integration.compose import dump_compose, render_compose
from integration.discovery import load_system
from integration.model import BaseImages, checkout_id
from integration.ports import plan_ports

REPO = Path(__file__).resolve().parents[2]
REFERENCE = REPO / "compose" / "shortener.reference.yml"


def test_reference_compose_file_is_what_the_generator_writes() -> None:
    system = load_system(REPO / "examples" / "shortener", BaseImages())
    # The documented default ports and the registry's image names, whatever this machine has.
    rendered = dump_compose(render_compose(system, plan_ports(system, is_free=lambda _port: True)))
    # The default image tags carry the checkout's id, which differs between clones of the repository.
    rendered = rendered.replace(f":{checkout_id(system.root)}\n", ":<checkout>\n")
    if os.environ.get("UPDATE_GOLDEN"):
        REFERENCE.write_text(rendered)
    assert REFERENCE.read_text() == rendered, "regenerate with UPDATE_GOLDEN=1 and review the diff"
