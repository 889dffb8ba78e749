#!/bin/bash
# The Debian package, end to end, as root: builds the .deb from this checkout
# as a distribution would (debian/vendor-crates with registry access, then
# dpkg-buildpackage with Debian's own toolchain and no network at all),
# checks source and binary with lintian (0 errors, 0 warnings), installs it with dpkg -i, runs a lab
# pull and re-plug against the installed files (tests/installed.rs), removes
# it and checks that nothing of it is left. Run by tests/run.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
    echo "tests/package-deb.sh: SKIPPED: not root (dpkg -i and the lab need root)" >&2
    [ -z "${CI:-}" ] || exit 1
    exit 0
fi
if dpkg-query -W -f='${Status}' nm-handover 2>/dev/null | grep -q "install ok installed"; then
    echo "tests/package-deb.sh: nm-handover is installed on this machine already; not replacing it" >&2
    exit 1
fi
version=$(dpkg-parsechangelog -S Version | sed 's/-[^-]*$//')
work=$(mktemp -d /tmp/nmh-deb.XXXXXX)
installed=
cleanup() {
    if [ -n "$installed" ]; then dpkg --purge nm-handover >/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

# A clean copy of the checkout's files (dpkg-buildpackage writes beside it).
src="$work/nm-handover-$version"
mkdir "$src"
git ls-files -z -co --exclude-standard | tar --null -T - -cf - | tar -C "$src" -xf -
(cd "$src" && debian/vendor-crates)
# debian/copyright states each vendored crate's licence as its Cargo.toml does.
(cd "$src" && debian/check-copyright)
start=$(date +%s)
# Debian's cargo and rustc (PATH without rustup's), and no network: the build
# must need nothing but the source and vendor/.
# The source package too (both orig tarballs), so that lintian checks it.
(cd "$src" && PATH=/usr/sbin:/usr/bin:/sbin:/bin unshare --net dpkg-buildpackage -uc -us >"$work/build.log" 2>&1) || {
    tail -40 "$work/build.log" >&2
    echo "tests/package-deb.sh: dpkg-buildpackage failed (log above)" >&2
    exit 1
}
echo "tests/package-deb.sh: built $(cd "$work" && ls ./*.deb) in $(($(date +%s) - start)) s with $(PATH=/usr/bin:/bin rustc --version)"
# Source and binary: no error and no warning (each one fixed, or overridden
# in debian/ with the reason); informational tags are shown.
lintian --fail-on error,warning --info "$work"/nm-handover_*.changes

# What the package will create (files, links and directories not there now): none may stay after the purge.
dpkg-deb -c "$work"/nm-handover_"$version"-*_*.deb | awk '{print $6}' | sed 's#^\./#/#; s#/$##' \
    | while read -r path; do [ -z "$path" ] || [ -e "$path" ] || [ -L "$path" ] || echo "$path"; done >"$work/new-paths"
installed=1
dpkg -i "$work"/nm-handover_"$version"-*_*.deb
# What the package put on the system (its files and links, not the directories it shares).
dpkg -L nm-handover | while read -r path; do [ -d "$path" ] && [ ! -L "$path" ] || echo "$path"; done >"$work/files"
[ -s "$work/files" ] || { echo "tests/package-deb.sh: dpkg -L lists no file of the package" >&2; exit 1; }
NM_HANDOVER_INSTALLED=/usr/lib/NetworkManager cargo test --locked --test installed -- --ignored --test-threads=1 --nocapture

# Removal with a pair still recorded warns and says what stays (a record of
# the test's own, in the host's record directory, for the length of the purge).
records=/etc/NetworkManager/nm-handover
made_records_dir=
[ -d "$records" ] || { mkdir -p "$records"; made_records_dir=1; }
dummy="$records/00000000-0000-4000-8000-0000000000aa.pair"
: >"$dummy"
dpkg --purge nm-handover 2>"$work/purge.err" || { cat "$work/purge.err" >&2; rm -f "$dummy"; exit 1; }
installed=
rm -f "$dummy"
[ -z "$made_records_dir" ] || rmdir "$records"
cat "$work/purge.err" >&2
grep -q "1 pair(s) are still recorded" "$work/purge.err" && grep -q "nm-handover unpair" "$work/purge.err" || {
    echo "tests/package-deb.sh: the purge did not warn about the recorded pair" >&2
    exit 1
}
left=$(sort -u "$work/files" "$work/new-paths" | while read -r path; do [ ! -e "$path" ] && [ ! -L "$path" ] || echo "$path"; done)
if [ -n "$left" ]; then
    echo "tests/package-deb.sh: left after purge: $left" >&2
    exit 1
fi
echo "tests/package-deb.sh: installed, ran the lab scenario, purged: none of its $(wc -l <"$work/files") files and $(wc -l <"$work/new-paths") new paths left"
