#!/bin/bash
# Installs what nm-handover's build, lab demo and tests need on Debian 12, as root.
# Idempotent: packages already present are not touched. Services are never
# started by the installation (NetworkManager and dhcpd run only inside the
# lab's network namespaces).
set -euo pipefail

packages=(
    # build: libnm headers for bindgen, libclang for bindgen itself
    libnm-dev libclang-dev clang pkg-config
    # the lab: real NetworkManager, nm-dispatcher, D-Bus, DHCP servers and clients
    network-manager dbus-daemon isc-dhcp-server isc-dhcp-client dnsmasq-base
    # meson-compat and its install test
    meson ninja-build groff-base
    # the Debian package (tests/package-deb.sh), built with Debian's own Rust toolchain,
    # which is also the cargo, rustfmt and clippy on PATH where no other is installed
    dpkg-dev debhelper lintian xz-utils rustc-web cargo-web rustfmt-web rust-web-clippy
    iproute2 socat iputils-ping tcpdump procps psmisc util-linux
    # the benchmark's peak-RSS spawner (GNU time)
    time
    # the MPTCP alternative (tests/alternatives.rs): an MPTCP echo peer via LD_PRELOAD
    mptcpize
    # the Wi-Fi lab (tests/wifi.rs): a VM under TCG whose kernel has mac80211_hwsim,
    # an access point and the station's supplicant; virtme-ng goes into a venv
    qemu-system-x86 linux-image-amd64 busybox-static iw hostapd wpasupplicant python3-venv
)

if [ "$(id -u)" != 0 ]; then
    echo "setup-debian.sh: not root; skipping package installation (the lab tests will skip too)" >&2
    exit 0
fi

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# (bookworm's own rustc, 1.63, is too old for the crates; rustc-web is Debian's newer one,
# and the cargo on PATH where no other is installed.)

if [ ${#missing[@]} -gt 0 ]; then
    echo "setup-debian.sh: installing ${missing[*]}" >&2
    # Keep package scripts from starting NetworkManager or dhcpd in the root namespace.
    policy=/usr/sbin/policy-rc.d
    created_policy=
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy"
        chmod 755 "$policy"
        created_policy=1
    fi
    trap '[ -n "$created_policy" ] && rm -f "$policy"' EXIT
    apt-get update -qq
    # No initrd for the VM kernel: virtme-ng boots without one, and building
    # it (again at every kernel trigger) costs ~30 s.
    INITRD=No DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        -o DPkg::Lock::Timeout=600 "${missing[@]}" >/dev/null
fi
command -v cargo >/dev/null 2>&1 || {
    echo "setup-debian.sh: cargo is still missing after installing cargo-web" >&2
    exit 1
}

# virtme-ng, the Wi-Fi lab's VM runner (PyPI; the version WIFI-LAB.md measured).
venv=/var/cache/nm-handover/venv
if [ ! -x "$venv/bin/vng" ]; then
    echo "setup-debian.sh: installing virtme-ng into $venv" >&2
    mkdir -p "$(dirname "$venv")"
    /usr/bin/python3 -m venv "$venv"
    "$venv/bin/pip" install -q "virtme-ng==1.42"
fi
