"""The Dockerfile reader: hand-picked cases, then seeded mutations of the example's Dockerfiles that may
only ever give a result or a ConfigError naming the file and the line."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from integration.buildinputs import copy_sources
from integration.dockerfile import DockerfileError, exposed_ports, parse, read
from integration.doctor import load_project, static_findings
from integration.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "shortener"
EXAMPLE_DOCKERFILES = sorted(EXAMPLE.glob("services/*/Dockerfile"))


def refused(text: str | bytes) -> DockerfileError:
    with pytest.raises(DockerfileError) as caught:
        parse(text, "svc/Dockerfile")
    assert isinstance(caught.value, ConfigError)
    return caught.value


# --- the example -----------------------------------------------------------------------------------------


def test_the_example_dockerfiles_read_as_written() -> None:
    links = read(EXAMPLE / "services/links/Dockerfile")

    assert [(i.line, i.keyword) for i in links.instructions] == [
        (1, "ARG"),
        (2, "FROM"),
        (5, "ENV"),
        (9, "WORKDIR"),
        (11, "COPY"),
        (12, "RUN"),
        (14, "COPY"),
        (15, "COPY"),
        (17, "USER"),
        (18, "EXPOSE"),
        (20, "CMD"),
    ]
    assert links.instructions[2].end_line == 8
    assert [(a.name, a.default, a.stage) for a in links.args] == [("PYTHON_IMAGE", "python:3.11-slim", -1)]
    assert [(f.image, f.name, f.platform) for f in links.froms] == [("${PYTHON_IMAGE}", None, None)]
    assert [(c.line, c.sources, c.dest) for c in links.copies] == [
        (11, ("services/links/requirements.txt",), "/srv/requirements.txt"),
        (14, ("architecture/",), "/srv/architecture/"),
        (15, ("services/links/app/",), "/srv/app/"),
    ]
    assert links.instructions[-1].json_args[:3] == ("python", "-m", "uvicorn")
    assert exposed_ports(EXAMPLE / "services/links/Dockerfile") == (8000,)
    assert links.base_image(links.froms[0]) == "python:3.11-slim"
    assert links.base_image(links.froms[0], {"PYTHON_IMAGE": "integration-local/python:3.11-slim"}) == (
        "integration-local/python:3.11-slim"
    )


# --- lines, comments, continuations, directives ---------------------------------------------------------


def test_continuations_join_as_buildkit_joins_them_and_skip_comment_lines() -> None:
    parsed = parse(
        "FROM base\n"
        "RUN echo a\\\n"
        "b \\\n"
        "# a comment inside the continuation\n"
        "\n"
        "  && echo c\n"
        "COPY services/a.py \\\n"
        "     /srv/a.py\n"
    )

    run, copy = parsed.instructions[1], parsed.copies[0]
    assert (run.line, run.end_line, run.args) == (2, 6, "echo ab   && echo c")
    assert (copy.line, copy.end_line, copy.sources, copy.dest) == (7, 8, ("services/a.py",), "/srv/a.py")


def test_lower_case_keywords_crlf_line_ends_and_a_bom() -> None:
    parsed = parse(b"\xef\xbb\xbffrom base\r\ncopy x /y\r\n")

    assert [(i.line, i.keyword) for i in parsed.instructions] == [(1, "FROM"), (2, "COPY")]
    assert parsed.copies[0].sources == ("x",)


def test_parser_directives_and_the_backtick_escape() -> None:
    parsed = parse(
        "# syntax=docker/dockerfile:1\n# escape=`\nFROM base\nCOPY C:\\app\\x.txt `\n    C:\\srv\\\n"
    )

    assert parsed.directive("syntax") == "docker/dockerfile:1"
    assert parsed.escape == "`"
    assert parsed.copies[0].sources == ("C:\\app\\x.txt",)
    assert parsed.copies[0].dest == "C:\\srv\\"


def test_a_directive_after_a_comment_is_a_comment() -> None:
    parsed = parse("# hello\n# escape=`\nFROM base\n")

    assert parsed.directives == () and parsed.escape == "\\"


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("# escape=x\nFROM base\n", 1, "escape character"),
        ("# syntax=a\n# syntax=b\nFROM base\n", 2, "twice"),
    ],
)
def test_bad_directives_are_refused(text: str, line: int, words: str) -> None:
    error = refused(text)

    assert error.line == line and words in str(error)


# --- heredocs ---------------------------------------------------------------------------------------------


def test_heredoc_bodies_are_never_instructions() -> None:
    parsed = parse(
        "FROM base\n"
        "RUN <<EOF\n"
        "COPY not-an-instruction .\n"
        "FROBNICATE either\n"
        "EOF\n"
        "RUN <<-A cat - && cat <<'B'\n"
        "\tfirst\n"
        "\tA\n"
        "second\n"
        "B\n"
        "COPY <<conf /etc/app.conf\n"
        "key = value\n"
        "conf\n"
        "COPY real.txt /srv/\n"
    )

    assert [(i.line, i.end_line, i.keyword) for i in parsed.instructions] == [
        (1, 1, "FROM"),
        (2, 5, "RUN"),
        (6, 10, "RUN"),
        (11, 13, "COPY"),
        (14, 14, "COPY"),
    ]
    assert parsed.instructions[1].heredocs[0].body == "COPY not-an-instruction .\nFROBNICATE either"
    assert [(h.name, h.body) for h in parsed.instructions[2].heredocs] == [("A", "first"), ("B", "second")]
    inline = parsed.copies[0]
    assert (inline.sources, inline.heredocs, inline.dest, inline.reads_context) == (
        (),
        ("conf",),
        "/etc/app.conf",
        False,
    )
    assert parsed.copies[1].sources == ("real.txt",)


def test_shell_operators_are_not_heredocs() -> None:
    parsed = parse('FROM base\nRUN echo $((1<<2)) && cat <<<"x"\nRUN true\n')

    assert [i.line for i in parsed.instructions] == [1, 2, 3]


def test_an_unterminated_heredoc_is_refused() -> None:
    error = refused("FROM base\nRUN <<EOF\necho hi\n")

    assert error.line == 2 and "EOF" in str(error)


# --- FROM and ARG -----------------------------------------------------------------------------------------


def test_from_platform_stage_names_and_bases() -> None:
    parsed = parse(
        "ARG BASE=python:3.11-slim\n"
        "ARG TAG\n"
        "FROM --platform=$BUILDPLATFORM ${BASE} AS Build\n"
        "FROM build AS test\n"
        "FROM scratch\n"
        "FROM python:${TAG:-3.12}-slim\n"
        "FROM $UNDECLARED\n"
        "ARG LATE=x\n"
    )

    build = parsed.froms[0]
    assert (build.image, build.platform, build.name, build.stage) == ("${BASE}", "$BUILDPLATFORM", "Build", 0)
    assert parsed.stage_index("BUILD", before=1) == 0
    assert [(f.line, image) for f, image in parsed.external_bases()] == [
        (3, "python:3.11-slim"),
        (6, "python:3.12-slim"),
    ]
    assert [image for _, image in parsed.external_bases({"BASE": "mine:1", "TAG": "3.13"})] == [
        "mine:1",
        "python:3.13-slim",
    ]
    assert [a.name for a in parsed.global_args] == ["BASE", "TAG"]
    assert parsed.args[-1].stage == 4


def test_arg_defaults_quoted_several_and_chained() -> None:
    parsed = parse("ARG A=\"a b\" B=${A}-c C\nARG D='$A'\nFROM img:${B}\n")

    assert [(a.name, a.default) for a in parsed.args] == [
        ("A", "a b"),
        ("B", "${A}-c"),
        ("C", None),
        ("D", "$A"),
    ]
    assert parsed.base_image(parsed.froms[0]) == "img:a b-c"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("FROM\n", "FROM takes an image"),
        ("FROM a b\n", "FROM takes an image"),
        ("FROM a AS 1stage\n", "invalid stage name"),
        ("FROM --platfrom=linux/amd64 a\n", "unknown flag --platfrom"),
        ("FROM ${BASE\n", "missing '}'"),
        ("ARG\nFROM a\n", "ARG needs a name"),
        ("ARG =1\nFROM a\n", "has no name"),
    ],
)
def test_malformed_from_and_arg_are_refused(text: str, words: str) -> None:
    error = refused(text)

    assert error.line == 1 and words in str(error)
    assert str(error).startswith("svc/Dockerfile: line 1: ")


# --- COPY and ADD -----------------------------------------------------------------------------------------


def test_copy_flags_json_form_and_quoted_sources() -> None:
    parsed = parse(
        "FROM base AS build\n"
        "FROM base\n"
        'COPY --from=build --chown=1:1 --chmod=755 --link ["/build/a", "/build/b c", "/srv/"]\n'
        "COPY --parents --exclude=*.md --exclude=**/__pycache__ services/ /srv/\n"
        "COPY \"services/my app/\" 'x y' /srv/app/\n"
        "ADD --checksum=sha256:abc --link=false https://example.com/x.tgz /opt/\n"
        "COPY [not, json] /dest/\n"
    )

    staged, parents, quoted, add, not_json = parsed.copies
    assert (staged.from_, staged.chown, staged.chmod, staged.link, staged.json_form) == (
        "build",
        "1:1",
        "755",
        True,
        True,
    )
    assert staged.sources == ("/build/a", "/build/b c") and not staged.reads_context
    assert (parents.parents, parents.excludes, parents.stage) == (True, ("*.md", "**/__pycache__"), 1)
    assert quoted.sources == ("services/my app/", "x y")
    assert (add.keyword, add.checksum, add.link, add.sources) == (
        "ADD",
        "sha256:abc",
        False,
        ("https://example.com/x.tgz",),
    )
    assert not_json.sources == ("[not,", "json]")


@pytest.mark.parametrize(
    ("instruction", "words"),
    [
        ("COPY onlyone", "at least a source and a destination"),
        ("COPY --form=build a /b", "unknown flag --form"),
        ("COPY --from a /b", "--from needs a value"),
        ("COPY --from=a --from=b x /y", "given twice"),
        ("COPY --link=maybe a /b", "true or false"),
        ("ADD --parents=1 a /b", "true or false"),
        ('COPY "unbalanced /b', "unbalanced double quote"),
        ("COPY 'unbalanced /b", "unbalanced single quote"),
    ],
)
def test_malformed_copies_are_refused(instruction: str, words: str) -> None:
    error = refused(f"FROM base\n\n{instruction}\n")

    assert error.line == 3 and words in str(error)


def test_the_image_hash_and_the_doctor_read_a_copy_alike(tmp_path: Path) -> None:
    # The doctor used to split COPY on spaces and the hash with shlex: a quoted path with a space was a
    # missing source for one and a file for the other.
    root = tmp_path / "shortener"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("__pycache__", ".integration"))
    (root / "services/links/app/my data").mkdir()
    (root / "services/links/app/my data/x.txt").write_text("x\n")
    dockerfile = root / "services/links/Dockerfile"
    dockerfile.write_text(dockerfile.read_text() + 'COPY "services/links/app/my data/" /srv/data/\n')

    assert "services/links/app/my data/" in copy_sources(read(dockerfile))
    assert [f for f in static_findings(root) if f.code == "D104"] == []
    assert load_project(root).dockerfile(dockerfile).copies[-1].sources == ("services/links/app/my data/",)


# --- EXPOSE -----------------------------------------------------------------------------------------------


def test_expose_ports_protocols_ranges_and_variables(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(
        "ARG ADMIN=9000\n"
        "FROM base AS app\n"
        "EXPOSE 7000\n"
        "FROM app AS final\n"
        "ARG ADMIN\n"
        "ENV PORT=8000\n"
        "EXPOSE $PORT/tcp 53/udp 8100-8102 ${ADMIN}\n"
        "EXPOSE $NOT_SET\n"
    )
    parsed = read(dockerfile)

    assert [(p.number, p.protocol) for p in parsed.exposed()] == [
        (7000, "tcp"),
        (8000, "tcp"),
        (53, "udp"),
        (8100, "tcp"),
        (8101, "tcp"),
        (8102, "tcp"),
        (9000, "tcp"),
    ]
    assert parsed.exposes[-1].unresolved == ("$NOT_SET",)
    assert exposed_ports(dockerfile) == (7000, 8000, 8100, 8101, 8102, 9000)


def test_only_the_final_stage_counts_for_expose(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM base AS build\nEXPOSE 1234\nFROM base\nCMD run\n")

    assert exposed_ports(dockerfile) == ()


@pytest.mark.parametrize("port", ["http", "0", "70000", "80/icmp", "90-80", "EXPOSE"])
def test_a_port_that_is_not_one_is_refused(port: str) -> None:
    error = refused(f"FROM base\nEXPOSE 80 {port}\n")

    assert error.line == 2 and "EXPOSE" in str(error)


# --- what else is refused --------------------------------------------------------------------------------


def test_an_unknown_instruction_names_its_line_and_a_suggestion() -> None:
    error = refused("FROM base\n\n\n\n\n\nCOPPY a /b\n")

    assert error.line == 7
    assert str(error).startswith("svc/Dockerfile: line 7: unknown instruction 'COPPY'")
    assert "did you mean COPY" in str(error)


def test_a_byte_that_is_not_utf8_names_its_line() -> None:
    error = refused(b"FROM base\nRUN echo caf\xe9\n")

    assert error.line == 2 and "0xe9" in str(error) and "UTF-8" in str(error)


def test_an_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        read(tmp_path / "missing" / "Dockerfile")


def test_onbuild_triggers_are_checked() -> None:
    assert parse("FROM base\nONBUILD COPY . /app\n").copies == ()
    assert "not allowed" in str(refused("FROM base\nONBUILD FROM other\n"))
    assert "unknown instruction" in str(refused("FROM base\nONBUILD COPPY . /app\n"))


def test_a_bind_mount_is_noticed() -> None:
    assert parse("FROM base\nRUN --mount=type=bind,target=/src make\n").bind_mounted
    assert not parse("FROM base\nRUN --mount=type=cache,target=/root/.cache pip install x\n").bind_mounted


# --- mutations: a result or a ConfigError, nothing else ---------------------------------------------------

ALPHABET = [*"\"'\\`$ {}[]<>-=#:/\t\n@*?!,.AaZz019_", "<<EOF", "${", "\\\n", "é", "\xa0", "\ufeff"]
BYTES = [b"\xff", b"\xe9", b"\xc3", b"\x00", b"\xed\xa0\x80"]
LINES = [
    "RUN <<EOF",
    "EOF",
    "COPY --from=x",
    "COPY <<A <<B /x",
    "FROM a AS b",
    "FROM ${X:-y}",
    "ARG X=${Y",
    "EXPOSE 8000/tcp $P",
    "# escape=`",
    "# syntax=docker/dockerfile:1",
    "ONBUILD RUN x",
    'COPY ["a", "b"]',
    "ENV P=1 Q='2",
    "\\",
]


def mutate(data: bytes, rng: random.Random) -> bytes:
    for _ in range(rng.randint(1, 4)):
        lines = data.split(b"\n")
        op = rng.randrange(7)
        if op == 0 and data:  # insert a character
            at = rng.randrange(len(data) + 1)
            data = data[:at] + rng.choice(ALPHABET).encode() + data[at:]
        elif op == 1 and data:  # delete a character or a run of them
            at = rng.randrange(len(data))
            data = data[:at] + data[at + rng.randint(1, 3) :]
        elif op == 2 and data:  # duplicate a character
            at = rng.randrange(len(data))
            data = data[: at + 1] + data[at : at + 1] + data[at + 1 :]
        elif op == 3 and len(lines) > 1:  # delete a line
            del lines[rng.randrange(len(lines))]
            data = b"\n".join(lines)
        elif op == 4:  # duplicate a line
            at = rng.randrange(len(lines))
            lines.insert(at, lines[at])
            data = b"\n".join(lines)
        elif op == 5:  # insert a tricky line
            lines.insert(rng.randrange(len(lines) + 1), rng.choice(LINES).encode())
            data = b"\n".join(lines)
        else:  # insert a byte that is not UTF-8
            at = rng.randrange(len(data) + 1)
            data = data[:at] + rng.choice(BYTES) + data[at:]
    return data


def test_mutated_dockerfiles_give_a_result_or_a_config_error() -> None:
    rng = random.Random(20240611)
    originals = [p.read_bytes() for p in EXAMPLE_DOCKERFILES]
    outcomes = {"parsed": 0, "refused": 0}
    for case in range(4000):
        data = mutate(originals[case % len(originals)], rng)
        line_count = data.count(b"\n") + 1
        try:
            parsed = parse(data, "svc/Dockerfile")
            # Everything a caller asks of a result must hold up as well.
            for from_ in parsed.froms:
                parsed.base_image(from_)
                parsed.base_image(from_, {"PYTHON_IMAGE": "integration-local/python:3.11-slim"})
            parsed.external_bases()
            parsed.exposed()
            copy_sources(parsed)
            outcomes["parsed"] += 1
        except ConfigError as error:
            assert isinstance(error, DockerfileError), error
            assert str(error).startswith("svc/Dockerfile: ")
            if error.line is not None:
                assert 1 <= error.line <= line_count, (error, data)
                assert f"line {error.line}: " in str(error)
            outcomes["refused"] += 1
    # Both outcomes are exercised, or the loop proves little.
    assert outcomes["parsed"] > 400 and outcomes["refused"] > 400, outcomes
