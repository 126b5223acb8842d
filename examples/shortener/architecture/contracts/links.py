"""Contract of the `links` service: create, read, delete and follow short links."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from datetime import datetime
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict

from architecture.contracts.events import LinkCreated, LinkDeleted, LinkVisited

CODE_PATTERN = re.compile(r"[A-Za-z0-9_-]{3,32}")
# Paths the service serves itself: a short code may not shadow them.
RESERVED_CODES = frozenset({"links", "health", "docs", "redoc"})
MAX_URL_LENGTH = 2048


def validate_url(url: str) -> str:
    """An absolute http(s) URL with a host, kept exactly as given."""
    if len(url) > MAX_URL_LENGTH:
        raise ValueError(f"url longer than {MAX_URL_LENGTH} characters")
    if any(ch.isspace() for ch in url):
        raise ValueError("url must not contain whitespace")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("url must be an absolute http or https URL")
    return url


def validate_code(code: str) -> str:
    """3 to 32 letters, digits, '-' or '_', and not one of the service's own paths."""
    if not CODE_PATTERN.fullmatch(code):
        raise ValueError("code must be 3 to 32 characters from [A-Za-z0-9_-]")
    if code.lower() in RESERVED_CODES:
        raise ValueError(f"code {code!r} is reserved")
    return code


Url = Annotated[str, AfterValidator(validate_url)]
Code = Annotated[str, AfterValidator(validate_code)]


class CreateLinkRequest(BaseModel):
    """Body of POST /links. Without a code the service generates one."""

    url: Url
    code: Code | None = None


class LinkResponse(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    code: str
    url: str
    created_at: datetime


class ILinksService(ABC):
    """The links service (HTTP, port 8000). Publishes LinkCreated, LinkVisited, LinkDeleted."""

    @abstractmethod
    async def create_link(self, request: CreateLinkRequest) -> LinkResponse:
        """POST /links -> 201 LinkResponse; publishes LinkCreated.

        The same code with the same url again -> 200 with the existing link, nothing published
        (idempotent). Errors: ValueError for 409 (code taken by a different url) and for 422
        (invalid url or code, raised by CreateLinkRequest itself).
        """

    @abstractmethod
    async def get_link(self, code: str) -> LinkResponse:
        """GET /links/{code} -> 200 LinkResponse. Errors: KeyError for 404 (unknown code)."""

    @abstractmethod
    async def delete_link(self, code: str) -> None:
        """DELETE /links/{code} -> 204; publishes LinkDeleted. Errors: KeyError for 404."""

    @abstractmethod
    async def list_links(self) -> list[LinkResponse]:
        """GET /links -> 200 list of LinkResponse, oldest first."""

    @abstractmethod
    async def visit(self, code: str) -> str:
        """GET /{code} -> 307 redirect to the link's url (returned); publishes LinkVisited.

        Errors: KeyError for 404 (unknown code).
        """


EVENTS_PUBLISHED = [LinkCreated, LinkVisited, LinkDeleted]
EVENTS_CONSUMED: list[type] = []
