"""The one Dockerfile reader of the toolkit: a Dockerfile's text -> typed, frozen instructions.

The image hash (`buildinputs`), the doctor, the benchmark and the offline substitution of FROM lines
(`substitution`) all read Dockerfiles through `parse` / `read`, so they agree on what a COPY reads and
which image a FROM names. The reader follows BuildKit's parser where it matters: parser directives
(`# syntax=`, `# escape=`, `# check=`) at the top, line continuations with the escape character (comment
and empty lines inside a continuation skipped), heredocs (`RUN <<EOF` ... `EOF`, whose bodies are never
read as instructions), JSON-array and shell forms, flags (`COPY --from=... --chown=...`), quotes, and
`$VAR` / `${VAR}` / `${VAR:-default}` substitution of ARGs in FROM (and of ARGs and ENVs in EXPOSE).

Anything malformed (an unbalanced quote, a byte that is not UTF-8, an unknown instruction, a flag that
does not exist, a port that is not one) is a `DockerfileError`, a `ConfigError` naming the file and the
line ("line 7: ..."); no other exception leaves this module for any input. It reads; it never builds,
rewrites or asks the engine anything.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

INSTRUCTIONS = frozenset(
    {
        "ADD",
        "ARG",
        "CMD",
        "COPY",
        "ENTRYPOINT",
        "ENV",
        "EXPOSE",
        "FROM",
        "HEALTHCHECK",
        "LABEL",
        "MAINTAINER",
        "ONBUILD",
        "RUN",
        "SHELL",
        "STOPSIGNAL",
        "USER",
        "VOLUME",
        "WORKDIR",
    }
)
DIRECTIVES = frozenset({"syntax", "escape", "check"})
HEREDOC_INSTRUCTIONS = frozenset({"RUN", "COPY", "ADD"})
MAX_BYTES = 1 << 20  # a Dockerfile of a megabyte is a mistake, not a Dockerfile

# name -> takes a value (False: a boolean flag, `--link` or `--link=true`); repeatable flags separately.
_COPY_FLAGS = {"from": True, "chown": True, "chmod": True, "link": False, "parents": False, "exclude": True}
_ADD_FLAGS = {
    "chown": True,
    "chmod": True,
    "link": False,
    "parents": False,
    "exclude": True,
    "checksum": True,
    "keep-git-dir": False,
    "unpack": False,
}
_FROM_FLAGS = {"platform": True}
_REPEATABLE = frozenset({"exclude"})
# A parsed flag's value: a boolean flag's, a valued flag's, or a repeatable flag's (each value given).
_Flag = str | bool | tuple[str, ...]

_DIRECTIVE = re.compile(r"^#[ \t]*([A-Za-z][A-Za-z0-9_-]*)[ \t]*=[ \t]*(.*?)[ \t]*$")
_HEREDOC_WORD = re.compile(r"^[0-9]*<<(-?)(\"|'|)([^\s\"'<>|&;]+)\2$")
_STAGE_NAME = re.compile(r"^[a-z][a-z0-9._-]*$", re.IGNORECASE)
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_KEYWORD = re.compile(r"\s*(\S+)\s*(.*)", re.DOTALL)
_PORT = re.compile(r"^([0-9]{1,5})(?:-([0-9]{1,5}))?(?:/([A-Za-z]+))?$")
_PROTOCOLS = frozenset({"tcp", "udp", "sctp"})


class DockerfileError(ConfigError):
    """A Dockerfile the reader refuses: `path: line N: problem`; `.line` holds N (None: the whole file)."""

    def __init__(self, path: object, line: int | None, problem: str) -> None:
        super().__init__(path, None, f"line {line}: {problem}" if line else problem)
        self.line = line


@dataclass(frozen=True)
class Heredoc:
    """The inline body of `<<NAME` (`<<-NAME` strips leading tabs), on lines `line`..`end_line`."""

    name: str
    body: str
    strip_tabs: bool
    line: int  # the body's first line (the line after the instruction)
    end_line: int  # the closing NAME line


@dataclass(frozen=True)
class Instruction:
    """Any instruction, as written: its keyword in upper case and the arguments after it."""

    line: int  # 1-based line the instruction starts on
    end_line: int  # its last line: continuation lines and heredoc bodies included
    keyword: str
    args: str  # the arguments, continuation lines joined as BuildKit joins them; heredoc bodies apart
    stage: int  # index of the FROM it belongs to; -1 before the first FROM
    heredocs: tuple[Heredoc, ...] = ()

    @property
    def json_args(self) -> tuple[str, ...] | None:
        """The arguments when written in JSON-array form (`CMD ["python", "x"]`), else None."""
        return _json_list(self.args)


@dataclass(frozen=True)
class From:
    """`FROM [--platform=<p>] <image> [AS <name>]`; `image` unexpanded (`${PYTHON_IMAGE}`)."""

    line: int
    end_line: int
    image: str
    platform: str | None
    name: str | None  # the stage name as written; stages are matched case-insensitively
    stage: int
    written_image: str  # the image word with its quotes, what `Dockerfile.base_image` expands


@dataclass(frozen=True)
class Arg:
    """One name of `ARG NAME[=default] ...`; `stage` -1 is a global ARG (before the first FROM)."""

    line: int
    name: str
    default: str | None  # quotes removed, variables unexpanded; None: no default
    stage: int
    written_default: str | None  # with its quotes, what later expansion reads


@dataclass(frozen=True)
class Copy:
    """`COPY`/`ADD [flags] <src>... <dest>`, shell or JSON form, sources as written (quotes removed)."""

    line: int
    end_line: int
    keyword: str  # COPY or ADD
    sources: tuple[str, ...]  # files named by the instruction (heredoc sources are in `heredocs`)
    dest: str
    stage: int
    from_: str | None = None  # --from=<stage, index or image>: not the build context
    chown: str | None = None
    chmod: str | None = None
    link: bool = False
    parents: bool = False
    excludes: tuple[str, ...] = ()
    checksum: str | None = None  # ADD --checksum
    heredocs: tuple[str, ...] = ()  # names of inline heredoc sources (`COPY <<EOF /etc/x`)
    json_form: bool = False

    @property
    def reads_context(self) -> bool:
        """Whether it copies files from the build context (no --from, at least one file source)."""
        return self.from_ is None and bool(self.sources)


@dataclass(frozen=True)
class Port:
    """One port of EXPOSE: `8000`, `8000/tcp`, `53/udp`; a range `8000-8002` is one Port per number."""

    number: int
    protocol: str  # tcp, udp or sctp
    line: int


@dataclass(frozen=True)
class Expose:
    line: int
    ports: tuple[Port, ...]
    stage: int
    unresolved: tuple[str, ...] = ()  # words with a variable this reader cannot resolve (`$PORT`)


@dataclass(frozen=True)
class Dockerfile:
    """A parsed Dockerfile. `text` is the file as Python reads it (newlines normalized), for hashing."""

    path: str
    text: str
    directives: tuple[tuple[str, str], ...]  # (lower-case name, value), in file order
    escape: str
    instructions: tuple[Instruction, ...]
    froms: tuple[From, ...]
    args: tuple[Arg, ...]
    copies: tuple[Copy, ...]
    exposes: tuple[Expose, ...]
    envs: tuple[tuple[int, int, str, str | None], ...] = ()  # (stage, line, name, written value)

    def directive(self, name: str) -> str | None:
        return dict(self.directives).get(name.lower())

    @property
    def global_args(self) -> tuple[Arg, ...]:
        return tuple(a for a in self.args if a.stage == -1)

    @property
    def bind_mounted(self) -> bool:
        """Whether a RUN bind-mounts files (`RUN --mount=type=bind`): reads the context invisibly."""
        return any(
            i.keyword == "RUN" and "--mount" in i.args and "type=bind" in i.args for i in self.instructions
        )

    def stage_index(self, name: str, before: int | None = None) -> int | None:
        """The index of the stage called `name` (case-insensitive), among those before `before`."""
        wanted = name.casefold()
        for from_ in self.froms[:before]:
            if from_.name is not None and from_.name.casefold() == wanted:
                return from_.stage
        return None

    def base_image(self, from_: From, build_args: Mapping[str, str] | None = None) -> str | None:
        """The image a FROM names once the global ARGs are substituted (`build_args` override their
        defaults); None when a variable cannot be resolved or the result is empty."""
        variables = self._global_values(build_args or {})
        try:
            image = _expand(from_.written_image, self.escape, variables)
        except _Malformed as exc:  # the parser checked every FROM; kept so that nothing else escapes
            raise DockerfileError(self.path, from_.line, f"FROM: {exc}") from None
        return image or None

    def external_bases(self, build_args: Mapping[str, str] | None = None) -> tuple[tuple[From, str], ...]:
        """(FROM, resolved image) for every FROM that names an image: not `scratch`, not an earlier
        stage, not an unresolvable variable."""
        found = []
        for from_ in self.froms:
            image = self.base_image(from_, build_args)
            if image is None or image == "scratch" or self.stage_index(image, from_.stage) is not None:
                continue
            found.append((from_, image))
        return tuple(found)

    def exposed(self) -> tuple[Port, ...]:
        """The final stage's EXPOSE ports, with those of the earlier stages it is built FROM."""
        if not self.froms:
            return ()
        chain: list[int] = []
        stage: int | None = len(self.froms) - 1
        while stage is not None and stage not in chain:
            chain.append(stage)
            parent = self.froms[stage]
            stage = self.stage_index(parent.image, parent.stage)
        ports: list[Port] = []
        seen: set[tuple[int, str]] = set()
        for index in reversed(chain):
            for expose in self.exposes:
                if expose.stage != index:
                    continue
                for port in expose.ports:
                    if (port.number, port.protocol) not in seen:
                        seen.add((port.number, port.protocol))
                        ports.append(port)
        return tuple(ports)

    def _global_values(self, build_args: Mapping[str, str]) -> dict[str, str]:
        values: dict[str, str] = {}
        for arg in self.global_args:
            if arg.name in build_args:
                values[arg.name] = build_args[arg.name]
            elif arg.written_default is not None:
                value = _expand_or_none(arg.written_default, self.escape, values)
                if value is None:
                    values.pop(arg.name, None)
                else:
                    values[arg.name] = value
        return values


# --- public functions --------------------------------------------------------------------------------


def read(path: Path | str) -> Dockerfile:
    """Read and parse the Dockerfile at `path`; a file that cannot be read is a DockerfileError too."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise DockerfileError(path, None, f"cannot be read: {exc.strerror or exc}") from None
    if len(data) > MAX_BYTES:
        raise DockerfileError(path, None, f"is larger than {MAX_BYTES // 1024} KiB; not a Dockerfile")
    return parse(data, path)


def parse(source: str | bytes, path: Path | str = "Dockerfile") -> Dockerfile:
    """Parse Dockerfile text (or its bytes); `path` is only what error messages name."""
    path = str(path)
    if isinstance(source, bytes):
        try:
            text = source.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = source.count(b"\n", 0, exc.start) + 1
            byte = source[exc.start : exc.start + 1].hex()
            raise DockerfileError(
                path, line, f"byte 0x{byte} is not UTF-8; save the Dockerfile as UTF-8"
            ) from None
    else:
        text = source
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _Parser(path, text).run()


def exposed_ports(path: Path | str) -> tuple[int, ...]:
    """The TCP ports the final stage of the Dockerfile at `path` EXPOSEs (with those of the stages it is
    built FROM), in order; () when it exposes none. A service's HTTP port is never UDP, so UDP and SCTP
    ports are left out. Raises DockerfileError (a ConfigError) for a malformed Dockerfile."""
    ports = read(path).exposed()
    return tuple(dict.fromkeys(p.number for p in ports if p.protocol == "tcp"))


# --- words: quotes, escapes and variables ----------------------------------------------------------------


class _Malformed(Exception):
    """A problem found inside one instruction; the parser adds the file and the line."""


class _Anything(Mapping[str, str]):
    """Every variable set (to "x"): expanding with it checks a word's syntax through to its end."""

    def __getitem__(self, key: str) -> str:
        return "x"

    def __contains__(self, key: object) -> bool:
        return True

    def __iter__(self) -> Iterator[str]:  # pragma: no cover - never iterated
        return iter(())

    def __len__(self) -> int:  # pragma: no cover
        return 0


_ANY = _Anything()


def _expand_or_none(word: str, escape: str, variables: Mapping[str, str]) -> str | None:
    try:
        return _expand(word, escape, variables)
    except _Malformed:
        return None


def _split_words(text: str, escape: str) -> list[str]:
    """Whitespace-separated words with their quotes kept; an unbalanced quote is _Malformed."""
    words: list[str] = []
    current: list[str] = []
    quote: str | None = None
    in_word = False
    i = 0
    while i < len(text):
        c = text[i]
        if quote:
            current.append(c)
            if c == escape and quote == '"' and i + 1 < len(text):
                current.append(text[i + 1])
                i += 1
            elif c == quote:
                quote = None
        elif c in " \t\n":
            if in_word:
                words.append("".join(current))
                current, in_word = [], False
        else:
            in_word = True
            current.append(c)
            if c == escape and i + 1 < len(text):
                current.append(text[i + 1])
                i += 1
            elif c in "'\"":
                quote = c
        i += 1
    if quote:
        kind = "double" if quote == '"' else "single"
        raise _Malformed(f"unbalanced {kind} quote ({quote}) in {text.strip()[:80]!r}")
    if in_word:
        words.append("".join(current))
    return words


def _unquote(word: str, escape: str) -> str:
    """A word with its quotes and escapes removed, variables left as written."""
    out: list[str] = []
    quote: str | None = None
    i = 0
    while i < len(word):
        c = word[i]
        if quote == "'":
            if c == "'":
                quote = None
            else:
                out.append(c)
        elif c == escape and i + 1 < len(word):
            out.append(word[i + 1])
            i += 1
        elif c in "'\"" and quote in (None, c):
            quote = None if quote else c
        else:
            out.append(c)
        i += 1
    return "".join(out)


def _expand(word: str, escape: str, variables: Mapping[str, str]) -> str | None:
    """The word with quotes removed and `$NAME`, `${NAME}`, `${NAME:-x}`, `${NAME-x}`, `${NAME:+x}`,
    `${NAME+x}` substituted (not inside single quotes); None when a variable is unset or uses another
    modifier. A `${` without its `}` is _Malformed."""
    out: list[str] = []
    quote: str | None = None
    i = 0
    while i < len(word):
        c = word[i]
        if quote == "'":
            if c == "'":
                quote = None
            else:
                out.append(c)
            i += 1
            continue
        if c == escape and i + 1 < len(word):
            out.append(word[i + 1])
            i += 2
            continue
        if c in "'\"" and quote in (None, c):
            quote = None if quote else c
            i += 1
            continue
        if c == "$" and i + 1 < len(word):
            if word[i + 1] == "{":
                end = _closing_brace(word, i + 2)
                if end is None:
                    raise _Malformed(f"missing '}}' in {word[:80]!r}")
                value = _braced(word[i + 2 : end], escape, variables)
                if value is None:
                    return None
                out.append(value)
                i = end + 1
                continue
            name = _VAR_NAME.match(word, i + 1)
            if name:
                if name.group() not in variables:
                    return None
                out.append(variables[name.group()])
                i = name.end()
                continue
        out.append(c)
        i += 1
    return "".join(out)


def _closing_brace(word: str, start: int) -> int | None:
    depth = 1
    for i in range(start, len(word)):
        if word[i] == "{" and word[i - 1] == "$":
            depth += 1
        elif word[i] == "}":
            depth -= 1
            if depth == 0:
                return i
    return None


def _braced(inner: str, escape: str, variables: Mapping[str, str]) -> str | None:
    name = _VAR_NAME.match(inner)
    if not name:
        raise _Malformed(f"bad substitution ${{{inner[:60]}}}")
    rest = inner[name.end() :]
    value = variables.get(name.group())
    if not rest:
        return value
    for modifier in (":-", ":+", "-", "+"):
        if rest.startswith(modifier):
            alternative = rest[len(modifier) :]
            empty_counts = modifier.startswith(":")
            is_set = value is not None and (value != "" or not empty_counts)
            if modifier.endswith("-"):
                return value if is_set else _expand(alternative, escape, variables)
            return _expand(alternative, escape, variables) if is_set else ""
    return None  # ${X#p}, ${X%p}, ${X/a/b}, ${X:?msg}: not worth guessing


def _json_list(args: str) -> tuple[str, ...] | None:
    if not args.startswith("["):
        return None
    try:
        value = json.loads(args)
    except (ValueError, RecursionError):
        return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    return None


# --- the parser ----------------------------------------------------------------------------------------


@dataclass
class _Logical:
    line: int
    end_line: int
    text: str  # keyword and arguments


class _Parser:
    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.text = text
        self.lines = text.removeprefix("\ufeff").split("\n")
        if self.lines and self.lines[-1] == "":
            self.lines.pop()
        self.escape = "\\"
        self.directives: list[tuple[str, str]] = []
        self.instructions: list[Instruction] = []
        self.froms: list[From] = []
        self.args: list[Arg] = []
        self.copies: list[Copy] = []
        self.exposes: list[Expose] = []
        self.envs: list[tuple[int, int, str, str | None]] = []

    def error(self, line: int | None, problem: str) -> DockerfileError:
        return DockerfileError(self.path, line, problem)

    def run(self) -> Dockerfile:
        i = self._directives()
        while i < len(self.lines):
            stripped = self.lines[i].strip()
            if not stripped or stripped.startswith("#"):
                i += 1
                continue
            logical, i = self._logical_line(i)
            i = self._instruction(logical, i)
        return Dockerfile(
            path=self.path,
            text=self.text,
            directives=tuple(self.directives),
            escape=self.escape,
            instructions=tuple(self.instructions),
            froms=tuple(self.froms),
            args=tuple(self.args),
            copies=tuple(self.copies),
            exposes=tuple(self.exposes),
            envs=tuple(self.envs),
        )

    def _directives(self) -> int:
        """Parser directives: `# name=value` lines before anything else; returns the first other line."""
        for i, raw in enumerate(self.lines):
            match = _DIRECTIVE.match(raw.strip())
            if not match or match.group(1).lower() not in DIRECTIVES:
                return i
            name, value = match.group(1).lower(), match.group(2)
            if any(seen == name for seen, _ in self.directives):
                raise self.error(i + 1, f"the parser directive {name} is given twice")
            if name == "escape":
                if value not in ("\\", "`"):
                    raise self.error(i + 1, f"escape={value!r}: the escape character must be \\ or `")
                self.escape = value
            self.directives.append((name, value))
        return len(self.lines)

    def _continues(self, line: str) -> tuple[str, bool]:
        stripped = line.rstrip(" \t")
        if stripped.endswith(self.escape):
            return stripped[: -len(self.escape)], True
        return line, False

    def _logical_line(self, i: int) -> tuple[_Logical, int]:
        start = i
        text, more = self._continues(self.lines[i].lstrip(" \t"))
        i += 1
        while more and i < len(self.lines):
            raw = self.lines[i]
            i += 1
            if raw.strip().startswith("#") or not raw.strip():
                continue  # comments and empty lines inside a continuation are dropped
            part, more = self._continues(raw)
            text += part
        return _Logical(start + 1, i, text), i

    def _instruction(self, logical: _Logical, i: int) -> int:
        match = _KEYWORD.match(logical.text)
        word, args = (match.group(1), match.group(2)) if match else ("", "")
        keyword, args = word.upper(), args.strip(" \t")
        line = logical.line
        if not keyword:
            return i  # a lone continuation character: an empty line, as BuildKit reads it
        if keyword not in INSTRUCTIONS:
            raise self.error(line, _unknown(word))
        heredocs: tuple[Heredoc, ...] = ()
        if keyword in HEREDOC_INSTRUCTIONS and "<<" in args and _json_list(args) is None:
            heredocs, i = self._heredocs(args, line, i)
        end_line = heredocs[-1].end_line if heredocs else logical.end_line
        stage = len(self.froms) if keyword == "FROM" else len(self.froms) - 1
        self.instructions.append(Instruction(line, end_line, keyword, args, stage, heredocs))
        try:
            self._interpret(keyword, args, line, end_line, stage, heredocs)
        except _Malformed as exc:
            problem = str(exc)
            said = problem.startswith((keyword, "unknown instruction", "--"))
            raise self.error(line, problem if said else f"{keyword}: {problem}") from None
        return i

    def _heredocs(self, args: str, line: int, i: int) -> tuple[tuple[Heredoc, ...], int]:
        try:
            words = _split_words(args, self.escape)
        except _Malformed:
            words = args.split()  # a RUN's quotes belong to its shell
        found = []
        for word in words:
            match = _HEREDOC_WORD.match(word)
            if not match:
                continue
            strip_tabs, name = match.group(1) == "-", match.group(3)
            body, first = [], i + 1
            while True:
                if i >= len(self.lines):
                    raise self.error(line, f"the heredoc <<{name} is never closed: no line {name!r} follows")
                raw = self.lines[i]
                i += 1
                content = raw.lstrip("\t") if strip_tabs else raw
                if content == name:
                    break
                body.append(content)
            found.append(Heredoc(name, "\n".join(body), strip_tabs, first, i))
        return tuple(found), i

    # --- what each instruction means ---------------------------------------------------------------

    def _interpret(
        self, keyword: str, args: str, line: int, end_line: int, stage: int, heredocs: tuple[Heredoc, ...]
    ) -> None:
        if keyword == "FROM":
            self._from(args, line, end_line)
        elif keyword == "ARG":
            self._arg(args, line, stage)
        elif keyword in ("COPY", "ADD"):
            self._copy(keyword, args, line, end_line, stage, heredocs)
        elif keyword == "EXPOSE":
            self._expose(args, line, stage)
        elif keyword == "ENV":
            self._env(args, line, stage)
        elif keyword == "ONBUILD":
            inner = args.split(None, 1)[0].upper() if args.split() else ""
            if inner not in INSTRUCTIONS:
                raise _Malformed(_unknown(inner) if inner else "ONBUILD needs an instruction")
            if inner in ("ONBUILD", "FROM", "MAINTAINER"):
                raise _Malformed(f"{inner} is not allowed as an ONBUILD trigger")

    def _flags(
        self, words: list[str], known: Mapping[str, bool], keyword: str
    ) -> tuple[dict[str, _Flag], list[str]]:
        flags: dict[str, _Flag] = {}
        while words and words[0].startswith("--"):
            word = words.pop(0)
            name, has_value, value = word[2:].partition("=")
            name = name.lower()
            if name not in known:
                allowed = ", ".join(f"--{n}" for n in known)
                raise _Malformed(f"unknown flag --{name} (the flags of {keyword} are {allowed})")
            takes_value = known[name]
            if takes_value and not has_value:
                raise _Malformed(f"--{name} needs a value: --{name}=<value>")
            if name in flags and name not in _REPEATABLE:
                raise _Malformed(f"--{name} is given twice")
            if takes_value:
                text = _unquote(value, self.escape)
                if name in _REPEATABLE:
                    previous = flags.get(name, ())
                    flags[name] = (*(previous if isinstance(previous, tuple) else ()), text)
                else:
                    flags[name] = text
            else:
                text = _unquote(value, self.escape).lower() if has_value else "true"
                if text not in ("true", "false"):
                    raise _Malformed(f"--{name}={value}: a boolean flag takes true or false")
                flags[name] = text == "true"
        return flags, words

    def _from(self, args: str, line: int, end_line: int) -> None:
        flags, words = self._flags(_split_words(args, self.escape), _FROM_FLAGS, "FROM")
        if len(words) == 3 and words[1].upper() == "AS":
            name = _unquote(words[2], self.escape)
            if "$" not in name and not _STAGE_NAME.match(name):
                raise _Malformed(
                    f"invalid stage name {name!r}: it starts with a letter and holds letters, digits, "
                    "'.', '_' and '-' only"
                )
        elif len(words) == 1:
            name = None
        else:
            raise _Malformed(
                "FROM takes an image and optionally `AS <name>`: FROM [--platform=...] image [AS name]"
            )
        _expand(words[0], self.escape, _ANY)  # a `${` without its `}` is an error now, not later
        image = _unquote(words[0], self.escape)
        platform = flags.get("platform")
        self.froms.append(
            From(
                line,
                end_line,
                image,
                platform if isinstance(platform, str) else None,
                name,
                len(self.froms),
                words[0],
            )
        )

    def _arg(self, args: str, line: int, stage: int) -> None:
        words = _split_words(args, self.escape)
        if not words:
            raise _Malformed("ARG needs a name: ARG NAME[=default]")
        for word in words:
            name, has_default, default = word.partition("=")
            name = _unquote(name, self.escape)
            if not name:
                raise _Malformed(f"ARG {word[:60]!r} has no name: ARG NAME[=default]")
            if has_default:
                _expand(default, self.escape, _ANY)
            self.args.append(
                Arg(
                    line,
                    name,
                    _unquote(default, self.escape) if has_default else None,
                    stage,
                    default if has_default else None,
                )
            )

    def _env(self, args: str, line: int, stage: int) -> None:
        """ENV values, kept only to resolve `EXPOSE $PORT`; lenient, as nothing else reads them."""
        try:
            words = _split_words(args, self.escape)
        except _Malformed:
            return
        if not words:
            return
        if "=" in words[0]:
            for word in words:
                name, has_value, value = word.partition("=")
                if has_value and _VAR_NAME.fullmatch(name):
                    self.envs.append((stage, line, name, value))
        elif _VAR_NAME.fullmatch(words[0]):
            self.envs.append((stage, line, words[0], " ".join(words[1:])))

    def _copy(
        self, keyword: str, args: str, line: int, end_line: int, stage: int, heredocs: tuple[Heredoc, ...]
    ) -> None:
        known = _COPY_FLAGS if keyword == "COPY" else _ADD_FLAGS
        # Flags come first, in shell form even when the rest is a JSON array (`COPY --chown=1 ["a", "b"]`).
        rest = args
        flag_words: list[str] = []
        while rest.startswith("--"):
            word, rest = _first_word(rest)
            flag_words.append(word)
        flags, _ = self._flags(_split_words(" ".join(flag_words), self.escape), known, keyword)
        as_json = _json_list(rest)
        if as_json is not None:
            words = list(as_json)
        else:
            words = [_unquote(w, self.escape) for w in _split_words(rest, self.escape)]
        if len(words) < 2:
            raise _Malformed(
                f"{keyword} takes at least a source and a destination: {keyword} <src>... <dest>"
            )
        names = {h.name for h in heredocs}
        sources, inline = [], []
        for word in words[:-1]:
            match = _HEREDOC_WORD.match(word) if as_json is None else None
            if match and match.group(3) in names:
                inline.append(match.group(3))
            else:
                sources.append(word)
        from_ = flags.get("from")
        excludes = flags.get("exclude", ())  # a tuple: --exclude is repeatable
        self.copies.append(
            Copy(
                line=line,
                end_line=end_line,
                keyword=keyword,
                sources=tuple(sources),
                dest=words[-1],
                stage=stage,
                from_=from_ if isinstance(from_, str) else None,
                chown=_str_flag(flags, "chown"),
                chmod=_str_flag(flags, "chmod"),
                link=flags.get("link") is True,
                parents=flags.get("parents") is True,
                excludes=excludes if isinstance(excludes, tuple) else (),
                checksum=_str_flag(flags, "checksum"),
                heredocs=tuple(inline),
                json_form=as_json is not None,
            )
        )

    def _expose(self, args: str, line: int, stage: int) -> None:
        words = _split_words(args, self.escape)
        if not words:
            raise _Malformed("EXPOSE needs a port: EXPOSE 8000[/tcp]")
        variables = self._stage_values(stage)
        ports: list[Port] = []
        unresolved: list[str] = []
        for word in words:
            spec = _expand(word, self.escape, variables)
            if spec is None:
                unresolved.append(_unquote(word, self.escape))
                continue
            for part in spec.split():
                ports.extend(_ports(part, line))
        self.exposes.append(Expose(line, tuple(ports), stage, tuple(unresolved)))

    def _stage_values(self, stage: int) -> dict[str, str]:
        """The ARG defaults and ENV values visible at this point of `stage` (build arguments aside)."""
        global_values: dict[str, str] = {}
        events: list[tuple[int, str, str, str | None]] = []
        for arg in self.args:
            if arg.stage == -1 and arg.written_default is not None:
                value = _expand_or_none(arg.written_default, self.escape, global_values)
                if value is not None:
                    global_values[arg.name] = value
            elif arg.stage == stage:
                events.append((arg.line, "arg", arg.name, arg.written_default))
        events += [(ln, "env", name, value) for st, ln, name, value in self.envs if st == stage]
        values: dict[str, str] = {}
        for _line, kind, name, written in sorted(events, key=lambda e: e[0]):
            if written is None:
                if kind == "arg" and name in global_values:
                    values[name] = global_values[name]
                continue
            value = _expand_or_none(written, self.escape, values)
            if value is None:
                values.pop(name, None)
            else:
                values[name] = value
        return values


def _first_word(text: str) -> tuple[str, str]:
    """(first whitespace-separated word, the rest without its leading whitespace)."""
    parts = re.split(r"[ \t]+", text, maxsplit=1)
    return parts[0], parts[1] if len(parts) > 1 else ""


def _str_flag(flags: Mapping[str, object], name: str) -> str | None:
    value = flags.get(name)
    return value if isinstance(value, str) else None


def _ports(spec: str, line: int) -> Iterable[Port]:
    match = _PORT.match(spec)
    if not match:
        raise _Malformed(f"{spec!r} is not a port: a number 1-65535, optionally /tcp or /udp (8000/tcp)")
    first = int(match.group(1))
    last = int(match.group(2)) if match.group(2) else first
    protocol = (match.group(3) or "tcp").lower()
    if protocol not in _PROTOCOLS:
        raise _Malformed(f"{spec!r}: the protocol is tcp, udp or sctp, not {match.group(3)}")
    if not 1 <= first <= last <= 65535:
        raise _Malformed(f"{spec!r} is not a port or port range within 1-65535")
    return [Port(number, protocol, line) for number in range(first, last + 1)]


def _unknown(word: str) -> str:
    close = difflib.get_close_matches(word.upper(), sorted(INSTRUCTIONS), n=1)
    hint = (
        f"; did you mean {close[0]}?"
        if close
        else f" (the instructions are {', '.join(sorted(INSTRUCTIONS))})"
    )
    return f"unknown instruction {word[:40]!r}{hint}"
