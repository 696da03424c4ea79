#!/usr/bin/env bash
# Install the Debian packages the archive's tests (and, with --bench, its benchmark) run
# against, when they are missing. Safe to run again: present packages are only reported.
#
#   bash scripts/install_system_deps.sh            # make, dcmtk, postgresql, chromium, npm
#   bash scripts/install_system_deps.sh --bench    # ... and orthanc, orthanc-dicomweb
#
# Installing postgresql or orthanc on Debian normally starts their services; the tests start
# their own throwaway instances instead, so service start-up is blocked while installing
# (a temporary /usr/sbin/policy-rc.d that answers 101, "action forbidden").
set -euo pipefail

bench=0
for arg in "$@"; do
    case "$arg" in
        --bench) bench=1 ;;
        -h | --help)
            sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "install_system_deps: unknown option: $arg" >&2
            exit 2
            ;;
    esac
done

# package name -> test that it is present
has_make() { [ -x /usr/bin/make ] || command -v make >/dev/null 2>&1; }
has_dcmtk() { [ -x /usr/bin/storescu ]; }
has_postgresql() { compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; }
has_chromium() { [ -x /usr/bin/chromium ]; }
has_npm() { command -v npm >/dev/null 2>&1; }
has_orthanc() { [ -x /usr/sbin/Orthanc ]; }
has_orthanc-dicomweb() { [ -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ]; }

# chromium: the viewer's browser tests; npm: fetches the OHIF Viewer (`pacs viewer install`).
packages=(make dcmtk postgresql chromium npm)
if [ "$bench" = 1 ]; then
    packages+=(orthanc orthanc-dicomweb)
fi

missing=()
for package in "${packages[@]}"; do
    if "has_${package}"; then
        echo "$package: already present"
    else
        missing+=("$package")
    fi
done
if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
else
    echo "install_system_deps: not root and no sudo; please install: ${missing[*]}" >&2
    echo "  apt-get install --no-install-recommends ${missing[*]}" >&2
    exit 1
fi

policy=/usr/sbin/policy-rc.d
created_policy=0
cleanup() {
    if [ "$created_policy" = 1 ]; then
        "${as_root[@]}" rm -f "$policy"
    fi
}
trap cleanup EXIT
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# written by scripts/install_system_deps.sh: no service start-up\nexit 101\n' |
        "${as_root[@]}" tee "$policy" >/dev/null
    "${as_root[@]}" chmod 755 "$policy"
    created_policy=1
fi

echo "installing: ${missing[*]}"
"${as_root[@]}" apt-get update
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y --no-install-recommends "${missing[@]}"

status=0
for package in "${missing[@]}"; do
    if "has_${package}"; then
        echo "$package: installed"
    else
        echo "$package: installed, but still not found where expected" >&2
        status=1
    fi
done
exit "$status"
