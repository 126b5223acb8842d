#!/usr/bin/env bash
# Builds the service images of a system by hand, the same way `nox -s build` does: each from the
# system's root with `-f services/<name>/Dockerfile`, labelled with the hash of its inputs.
#
#   scripts/build_test_images.sh [ROOT] [--force]
#
# ROOT defaults to $INTEGRATION_ROOT, else the bundled example. Images are snapshots: an image holds the
# code as it was when it was built, so rebuild after every code change. The toolkit enforces this: a test
# run refuses an image whose inputs changed since its build, and names the changed files.
#
# Works from a fresh clone, nothing installed: the toolkit is this checkout's (its root goes first on
# PYTHONPATH), run by $PYTHON (default python3) when that has the toolkit's dependencies, else by this
# checkout's .venv, which the first such run makes and installs them into (later runs reuse it).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
root=${INTEGRATION_ROOT:-$here/examples/shortener}
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
    root=$1
    shift
fi
[ -f "$root/architecture/services.yml" ] || {
    echo "error: $root/architecture/services.yml not found; give the system's root folder" >&2
    exit 2
}
root=$(cd "$root" && pwd)

export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
PYTHON=${PYTHON:-python3}
# The modules a build runs, not only the CLI: the CLI imports them (and their dependencies) lazily.
has_toolkit() {
    "$1" -c 'import integration.cli, integration.discovery, integration.images' >/dev/null 2>&1
}
if ! has_toolkit "$PYTHON"; then
    venv=$here/.venv
    if ! has_toolkit "$venv/bin/python"; then
        echo "$PYTHON lacks the toolkit's dependencies: installing them into $venv (once)" >&2
        if [ ! -x "$venv/bin/python" ] && ! "$PYTHON" -m venv "$venv" >&2; then
            echo "error: $PYTHON cannot make a virtual environment (on Debian: apt-get install python3-venv)," \
                "or set PYTHON to a Python that has the toolkit: pip install -e $here" >&2
            exit 2
        fi
        "$venv/bin/python" -m pip install -q --disable-pip-version-check -e "$here" >&2 || {
            echo "error: installing the toolkit into $venv failed (see above)" >&2
            exit 2
        }
    fi
    PYTHON=$venv/bin/python
fi

cat >&2 <<'WARN'
warning: images are snapshots of the code at build time. Rebuild after every code change (this script
or `nox -s build`); a test run refuses images whose inputs changed since they were built.
WARN
cd "$root"
exec "$PYTHON" -m integration build --root "$root" "$@"
