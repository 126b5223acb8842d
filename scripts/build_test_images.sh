#!/usr/bin/env bash
# Builds the service images of a system by hand, the same way `nox -s build` does: each from the
# system's root with `-f services/<name>/Dockerfile`, labelled with the hash of its inputs.
#
#   scripts/build_test_images.sh [ROOT] [--force]
#
# ROOT defaults to $INTEGRATION_ROOT, else the bundled example. Images are snapshots: an image holds the
# code as it was when it was built, so rebuild after every code change. The toolkit enforces this: a test
# run refuses an image whose inputs changed since its build, and names the changed files.
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
cat >&2 <<'WARN'
warning: images are snapshots of the code at build time. Rebuild after every code change (this script
or `nox -s build`); a test run refuses images whose inputs changed since they were built.
WARN
cd "$root"
PYTHON=${PYTHON:-python3}
exec "$PYTHON" -m integration build --root "$root" "$@"
