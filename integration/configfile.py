"""The reader of the toolkit's own config file: TOML text → a table that can say where each key is.

The config lives where Python tools keep theirs: a `[tool.integration]` table in the system's
`pyproject.toml`, or a file of the toolkit's own, `integration.toml` at the system root, whose top level
is the table (it wins when both exist). tomllib gives no line numbers, so `ConfigTable.line_of` finds
a key's line from the text itself: error messages then name the file, the key and its line.

Reading only; what the keys mean and how they are validated is `integration.settings`.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

OWN_FILE = "integration.toml"
PYPROJECT = "pyproject.toml"
TABLE = ("tool", "integration")
MAX_BYTES = 1 << 20  # a config of a megabyte is a mistake, not a config

_HEADER = re.compile(r"^\s*\[\[?\s*(?P<name>[^\]]+?)\s*\]\]?\s*(?:#.*)?$")
_KEY = re.compile(
    r"^\s*(?P<key>(?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*'))*)\s*="
)
_PART = re.compile(r"\s*(?:\"(?P<dq>[^\"]*)\"|'(?P<sq>[^']*)'|(?P<bare>[A-Za-z0-9_-]+))\s*(?:\.|$)")


def split_key(text: str) -> tuple[str, ...]:
    """The parts of a dotted TOML key or table name: `tool."a.b".c` -> ("tool", "a.b", "c")."""
    parts = []
    for match in _PART.finditer(text.strip()):
        value = match.group("dq")
        if value is None:
            value = match.group("sq")
        if value is None:
            value = match.group("bare")
        parts.append(value or "")
    return tuple(parts)


@dataclass(frozen=True)
class ConfigTable:
    """The toolkit's table of one config file (empty, with `path` None, when there is none)."""

    path: Path | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    text: str = ""
    prefix: tuple[str, ...] = ()  # where the table sits in the file: ("tool", "integration") or ()

    def line_of(self, keys: tuple[str, ...]) -> int | None:
        """The 1-based line that defines `keys` (a key, or the header of a table), else the line of the
        nearest enclosing key that can be found (a key inside an inline table is on that table's line)."""
        for length in range(len(keys), 0, -1):
            line = self._line_of_exactly(keys[:length])
            if line is not None:
                return line
        return self._line_of_exactly(()) if self.prefix else None

    def _line_of_exactly(self, keys: tuple[str, ...]) -> int | None:
        wanted = (*self.prefix, *keys)
        table: tuple[str, ...] = ()
        for number, line in enumerate(self.text.splitlines(), start=1):
            header = _HEADER.match(line)
            if header:
                table = split_key(header.group("name"))
                if table == wanted:
                    return number
                continue
            key = _KEY.match(line)
            if key:
                full = (*table, *split_key(key.group("key")))
                if full[: len(wanted)] == wanted:
                    return number
        return None

    def where(self, keys: tuple[str, ...]) -> str:
        """`tool.integration.events.outbox_table` as it reads in a message, with its line."""
        dotted = ".".join((*self.prefix, *keys))
        line = self.line_of(keys)
        return f"{dotted} (line {line})" if line else dotted

    def error(self, keys: tuple[str, ...], problem: str) -> ConfigError:
        line = self.line_of(keys)
        return ConfigError(self.path or OWN_FILE, ".".join((*self.prefix, *keys)), problem, line=line)


def _read_text(path: Path) -> str:
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise ConfigError(path, None, "is not a regular file")
        if size > MAX_BYTES:
            raise ConfigError(path, None, f"is {size} bytes; a config file is at most {MAX_BYTES} bytes")
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(path, None, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except OSError as exc:
        raise ConfigError(path, None, f"cannot be read: {exc.strerror or exc}") from exc


def _parse(path: Path, text: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = None
        found = re.search(r"line (\d+)", str(exc))
        if found:
            line = int(found.group(1))
        raise ConfigError(path, None, f"not valid TOML: {exc}; fix the syntax", line=line) from exc
    except RecursionError as exc:
        raise ConfigError(path, None, "not valid TOML: nested too deeply") from exc


def read_config(root: Path) -> ConfigTable:
    """The toolkit's table for the system at `root`: integration.toml, else pyproject.toml's
    [tool.integration], else an empty table."""
    own = root / OWN_FILE
    if own.exists():
        text = _read_text(own)
        data = _parse(own, text)
        nested = data.get("tool", {}).get("integration") if isinstance(data.get("tool"), dict) else None
        if isinstance(nested, dict) and len(data) == 1:
            return ConfigTable(own, nested, text, TABLE)  # integration.toml written as [tool.integration]
        return ConfigTable(own, data, text, ())
    pyproject = root / PYPROJECT
    if pyproject.exists():
        text = _read_text(pyproject)
        data = _parse(pyproject, text)
        tool = data.get("tool", {})
        table = tool.get("integration") if isinstance(tool, dict) else None
        if table is None:
            return ConfigTable(pyproject, {}, text, TABLE)
        if not isinstance(table, dict):
            line = ConfigTable(pyproject, {}, text, TABLE).line_of(())
            raise ConfigError(pyproject, "tool.integration", "must be a table", line=line)
        return ConfigTable(pyproject, table, text, TABLE)
    return ConfigTable()
