"""docs/configuration.md documents every key the settings module accepts, and nothing it does not."""

from __future__ import annotations

import re
from pathlib import Path

from integration.settings import EVENT_KEYS, KEYS, SERVICE_KEYS, WIRING_KEYS

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def _documented(section: str) -> set[str]:
    text = DOCS.read_text()
    start = text.index(section)
    end = text.find("\n## ", start + len(section))
    table = text[start : end if end != -1 else None]
    return set(re.findall(r"^\| `([a-z_]+)` \|", table, flags=re.MULTILINE))


def test_every_key_is_documented_in_its_section():
    assert _documented("## Top level") == {k for k, (kind, _) in KEYS.items() if kind != "table"}
    assert _documented("## `[tool.integration.database]`") == {"user", "password"}
    assert _documented("## `[tool.integration.wiring]`") == set(WIRING_KEYS)
    assert _documented("## `[tool.integration.events]`") == set(EVENT_KEYS)
    assert _documented("## `[tool.integration.services.<name>]`") == set(SERVICE_KEYS)
