//! Building and tearing down the lab.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime};

/// The LAN's server address and the DHCP pool.
pub const SERVER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The other LAN's server address (see [`LabConfig::backup_on_other_lan`]).
pub const OTHER_SERVER: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
pub const POOL: (&str, &str) = ("198.18.0.100", "198.18.0.199");
pub const TCP_PORT: u16 = 7000;
/// The LAN's MPTCP echo peer (see [`LabConfig::mptcp_peer`]).
pub const MPTCP_PORT: u16 = 7001;
/// The LAN's IPv6 prefix (documentation range; only inside the lab's
/// namespaces) and the server's address in it, when the lab runs IPv6.
pub const PREFIX6: &str = "2001:db8:198:18";
pub const SERVER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x198, 0x18, 0, 0, 0, 1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DhcpServer {
    IscDhcpd,
    Dnsmasq,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DhcpClient {
    Internal,
    Dhclient,
}

impl DhcpClient {
    pub fn conf_name(self) -> &'static str {
        match self {
            DhcpClient::Internal => "internal",
            DhcpClient::Dhclient => "dhclient",
        }
    }
}

#[derive(Debug, Clone)]
pub struct LabConfig {
    pub server: DhcpServer,
    pub client: DhcpClient,
    pub lease_time_secs: u32,
    pub nm_daemon: PathBuf,
    pub nm_dispatcher: PathBuf,
    /// The dispatcher entry linked into the dispatcher directories, or none (control runs).
    pub companion: Option<PathBuf>,
    /// Dispatcher directories (relative to dispatcher.d) the companion is linked into,
    /// as meson-compat installs it: dispatcher.d itself, and link-up.d on patched NM.
    pub companion_dirs: Vec<&'static str>,
    /// The dispatcher.d entry as a script nm-dispatcher waits for (the earlier
    /// layout; the control for the no-wait layout meson-compat installs).
    pub companion_waits: bool,
    pub extra_nm_conf: String,
    /// Extra dispatcher scripts (path under dispatcher.d, content), installed root-owned 0755.
    pub scripts: Vec<(String, String)>,
    /// Whether NM is expected to manage the links (false for the bonding baseline).
    pub nm_manages_links: bool,
    /// The host's links, each a veth to a bridge port `p-<name>` (two pairs: add wired1, backup1).
    pub links: Vec<&'static str>,
    /// A real 802.11 backup: two mac80211_hwsim radios (only in the Wi-Fi VM,
    /// see `vm.rs`), the station `wlan0` in the host namespace managed by NM
    /// and wpa_supplicant, an access point (hostapd, WPA2-PSK) on the other
    /// radio bridged onto the LAN.
    pub wifi: bool,
    /// NM's device plugins (Wi-Fi) for a daemon built elsewhere: mounted over
    /// the system's plugin directory in the lab's mount namespace.
    pub nm_plugin_dir: Option<PathBuf>,
    /// IPv6 on the LAN too (dnsmasq only): router advertisements with the
    /// autonomous flag (SLAAC) and stateful DHCPv6, `ipv6.method auto` in
    /// the profiles, the TCP echo peer on [`SERVER6`] as well.
    pub ipv6: bool,
    /// An MPTCP-capable echo peer on [`SERVER`]:[`MPTCP_PORT`] (socat run by
    /// `mptcpize`), for the multipath alternative to the companion.
    pub mptcp_peer: bool,
    /// In the Wi-Fi VM booted with `Wired::HardwareNics`: `wired0` is this
    /// NIC of the VM (hardware to NetworkManager) and its cable QEMU's,
    /// asked for through the shared directory.
    pub hardware_wired: Option<(PathBuf, super::vm::VmNic)>,
    /// The backup link on another LAN (ISC dhcpd only): `p-backup0` on a
    /// second bridge `br1` with [`OTHER_SERVER`]/24, whose subnet the same
    /// dhcpd serves (another server identifier, routed to the first LAN),
    /// as where the Wi-Fi is a subnet of its own.
    pub backup_on_other_lan: bool,
}

/// The lab's access point.
pub const WIFI_SSID: &str = "nmh-office";
pub const WIFI_PSK: &str = "correct horse battery";
/// NM's plugin directory on Debian (amd64).
const SYSTEM_NM_PLUGIN_DIR: &str = "/usr/lib/x86_64-linux-gnu/NetworkManager";

impl LabConfig {
    pub fn new(server: DhcpServer, client: DhcpClient) -> LabConfig {
        LabConfig {
            server,
            client,
            lease_time_secs: 600,
            nm_daemon: PathBuf::from("/usr/sbin/NetworkManager"),
            nm_dispatcher: PathBuf::from("/usr/lib/NetworkManager/nm-dispatcher"),
            companion: None,
            companion_dirs: vec!["."],
            companion_waits: false,
            extra_nm_conf: String::new(),
            scripts: Vec::new(),
            nm_manages_links: true,
            links: vec!["wired0", "backup0"],
            wifi: false,
            nm_plugin_dir: None,
            ipv6: false,
            mptcp_peer: false,
            hardware_wired: None,
            backup_on_other_lan: false,
        }
    }

    /// The Wi-Fi lab with a NIC of the VM as the wired link (see
    /// [`LabConfig::hardware_wired`]); only in a VM booted for it.
    pub fn with_hardware_wired(self, nic: super::vm::VmNic) -> LabConfig {
        let mut cfg = self.with_wifi();
        let dir = super::vm::vm_cable_dir().expect("a lab with a hardware NIC runs in the VM booted with Wired::HardwareNics");
        cfg.hardware_wired = Some((dir, nic));
        cfg
    }

    /// The lab with IPv6 on the LAN (see [`LabConfig::ipv6`]).
    pub fn with_ipv6(mut self) -> LabConfig {
        assert_eq!(self.server, DhcpServer::Dnsmasq, "the lab's IPv6 comes from dnsmasq");
        self.ipv6 = true;
        self
    }

    /// The lab with a real Wi-Fi backup (`wlan0`) instead of the `backup0` veth.
    pub fn with_wifi(mut self) -> LabConfig {
        self.wifi = true;
        self.links = vec!["wired0"];
        self
    }

    /// The lab on NetworkManager built with nm-patch's series (`nm-patch/build`),
    /// with the companion also linked into `link-up.d`. `Err` says why it
    /// cannot run (not built yet).
    pub fn patched(server: DhcpServer) -> Result<LabConfig, String> {
        LabConfig::patched_version(server, DhcpClient::Internal, &patched_version_under_test())
    }

    /// The lab on a given patched version (1.58.1 or the 1.42.4 backport).
    pub fn patched_version(server: DhcpServer, client: DhcpClient, version: &str) -> Result<LabConfig, String> {
        let mut cfg = LabConfig::built(server, client, version, true)?;
        cfg.companion_dirs.push("link-up.d");
        Ok(cfg)
    }

    /// The lab on Debian's stock NetworkManager, on the patched build of
    /// `patched`, or on the unpatched build of `unpatched_build` (a benchmark row).
    pub fn of_build(server: DhcpServer, client: DhcpClient, patched: Option<&str>, unpatched_build: Option<&str>) -> Result<LabConfig, String> {
        match (patched, unpatched_build) {
            (Some(version), _) => LabConfig::patched_version(server, client, version),
            (None, Some(version)) => LabConfig::built(server, client, version, false),
            (None, None) => Ok(LabConfig::new(server, client)),
        }
    }

    /// The lab on NetworkManager built by nm-patch/build from Debian's
    /// source, patched or as Debian ships it (`--unpatched`: a stock daemon of
    /// a version Debian 12 does not ship, for comparisons).
    pub fn built(server: DhcpServer, client: DhcpClient, version: &str, patched: bool) -> Result<LabConfig, String> {
        LabConfig::with_nm(server, client, built_nm_paths(version, patched)?)
    }

    /// The lab on a prototype series beside the `link-up` series
    /// (`nm-patch/build --series S`).
    pub fn of_series(server: DhcpServer, client: DhcpClient, version: &str, series: &str) -> Result<LabConfig, String> {
        LabConfig::with_nm(server, client, series_nm_paths(version, series)?)
    }

    fn with_nm(server: DhcpServer, client: DhcpClient, paths: (PathBuf, PathBuf)) -> Result<LabConfig, String> {
        let mut cfg = LabConfig::new(server, client);
        let plugins = paths.0.parent().and_then(Path::parent).map(|usr| usr.join("lib/x86_64-linux-gnu/NetworkManager"));
        cfg.nm_plugin_dir = plugins.filter(|dir| dir.is_dir());
        cfg.nm_daemon = paths.0;
        cfg.nm_dispatcher = paths.1;
        Ok(cfg)
    }

    pub fn with_companion(mut self) -> LabConfig {
        // What meson-compat installs into the dispatcher directories.
        self.companion = Some(companion_binary("nm-handover-dispatch"));
        self
    }
}

#[derive(Debug)]
pub enum LabError {
    /// The lab cannot run here (not root, a tool missing): the test must say so and skip.
    Skip(String),
    Failed(String),
}

impl std::fmt::Display for LabError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LabError::Skip(why) => write!(f, "skipped: {why}"),
            LabError::Failed(why) => write!(f, "{why}"),
        }
    }
}

/// The patched NetworkManager the patched tests run on:
/// `NM_HANDOVER_PATCHED_VERSION`, by default the upstream series' 1.58.1.
pub fn patched_version_under_test() -> String {
    std::env::var("NM_HANDOVER_PATCHED_VERSION").unwrap_or_else(|_| "1.58.1".into())
}

/// The daemon and nm-dispatcher that `nm-patch/build --version V` installed
/// (it prints its cache directory with `--print-dir`; `NM_HANDOVER_PATCHED_NM_DIR`
/// overrides, `NM_HANDOVER_PATCHED_VERSION` picks the version for the patched tests).
pub fn patched_nm_paths(version: &str) -> Result<(PathBuf, PathBuf), String> {
    built_nm_paths(version, true)
}

/// [`patched_nm_paths`], or those of the unpatched build (`--unpatched`).
pub fn built_nm_paths(version: &str, patched: bool) -> Result<(PathBuf, PathBuf), String> {
    nm_paths_of_build(version, patched, None)
}

/// The daemon and nm-dispatcher of `nm-patch/build --version V --series S`:
/// one of the prototypes beside the series (`opt-in-1.58`, `native-1.58`).
pub fn series_nm_paths(version: &str, series: &str) -> Result<(PathBuf, PathBuf), String> {
    nm_paths_of_build(version, true, Some(series))
}

fn nm_paths_of_build(version: &str, patched: bool, series: Option<&str>) -> Result<(PathBuf, PathBuf), String> {
    let dir = match std::env::var_os("NM_HANDOVER_PATCHED_NM_DIR").filter(|_| patched && series.is_none()) {
        Some(dir) => PathBuf::from(dir),
        None => {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("nm-patch/build");
            let out = Command::new("bash")
                .arg(&script)
                .args(["--version", version, "--print-dir"])
                .args((!patched).then_some("--unpatched"))
                .args(series.map(|s| ["--series", s]).into_iter().flatten())
                .output()
                .map_err(|e| format!("{}: {e}", script.display()))?;
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        }
    };
    let series_arg = series.map(|s| format!(" --series {s}")).unwrap_or_default();
    let (what, build) = if patched { ("patched", series_arg) } else { ("unpatched", " --unpatched".to_owned()) };
    let env = fs::read_to_string(dir.join("paths.env"))
        .map_err(|_| format!("the {what} NetworkManager {version} is not built in {} (run nm-patch/build --version {version}{build})", dir.display()))?;
    let get = |key: &str| {
        env.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('=').map(PathBuf::from))
            .ok_or_else(|| format!("{key} missing in {}/paths.env", dir.display()))
    };
    Ok((get("NM_DAEMON")?, get("NM_DISPATCHER")?))
}

/// Starts a lab, or prints why it cannot and returns `None`. Under CI a
/// skip is a failure: CI runs as root and must skip nothing.
pub fn start_or_skip(test: &str, cfg: LabConfig) -> Option<Lab> {
    match Lab::start(cfg) {
        Ok(lab) => Some(lab),
        Err(LabError::Skip(why)) => {
            if std::env::var_os("CI").is_some() {
                panic!("{test}: cannot run the lab under CI: {why}");
            }
            eprintln!("SKIPPED (needs root and the lab's Debian packages): {test}: {why}");
            None
        }
        Err(LabError::Failed(why)) => panic!("{test}: lab failed to start: {why}"),
    }
}

static LAB_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A child process of the lab, stopped by its PID on teardown.
struct Proc {
    what: &'static str,
    child: Child,
}

pub struct Lab {
    pub name: String,
    pub lan: String,
    pub host: String,
    pub dir: PathBuf,
    pub cfg: LabConfig,
    anchor: Option<Child>,
    procs: Vec<Proc>,
    nm: Option<Child>,
    server: Option<Child>,
    _lock: File,
}

fn run(argv: &[&str]) -> Result<Output, LabError> {
    Command::new(argv[0]).args(&argv[1..]).stdin(Stdio::null()).output().map_err(|e| LabError::Failed(format!("{}: {e}", argv.join(" "))))
}

fn must(argv: &[&str]) -> Result<String, LabError> {
    let out = run(argv)?;
    if !out.status.success() {
        return Err(LabError::Failed(format!("{} failed: {}", argv.join(" "), String::from_utf8_lossy(&out.stderr).trim())));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn write(path: &Path, text: &str) {
    fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// The machine-wide lab lock: a lab on the host takes it alone, the Wi-Fi
/// VMs shared (see `vm.rs`).
pub const LAB_LOCK: &str = "/run/nm-handover-lab.lock";

/// Opens `path` (created if missing) and flocks it with `operation`; the
/// lock lasts as long as the file is open.
pub fn flock_file(path: &str, operation: libc::c_int) -> std::io::Result<File> {
    let file = OpenOptions::new().create(true).write(true).truncate(false).open(path)?;
    // SAFETY: flock on a file we own; released when it is closed.
    if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&file), operation) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(file)
}

/// Where the lab takes the companion's binaries from: this build's, or,
/// with `NM_HANDOVER_INSTALLED=DIR` (tests/installed.rs, after the package
/// is installed), those installed in DIR.
pub const INSTALLED: &str = "NM_HANDOVER_INSTALLED";

pub fn companion_binary(name: &str) -> PathBuf {
    match std::env::var_os(INSTALLED) {
        Some(dir) => Path::new(&dir).join(name),
        None => match name {
            "nm-handover" => PathBuf::from(env!("CARGO_BIN_EXE_nm-handover")),
            "nm-handover-dispatch" => PathBuf::from(env!("CARGO_BIN_EXE_nm-handover-dispatch")),
            other => panic!("no companion binary {other}"),
        },
    }
}

fn log_file(dir: &Path, name: &str) -> File {
    OpenOptions::new().create(true).append(true).open(dir.join(name)).expect("lab log file")
}

fn stop_child(child: &mut Child, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let pid = child.id() as i32;
    // SAFETY: signalling our own child by PID.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

const REQUIRED_TOOLS: &[&str] = &["ip", "nsenter", "unshare", "dbus-daemon", "nmcli", "socat", "tcpdump"];

impl Lab {
    pub fn start(cfg: LabConfig) -> Result<Lab, LabError> {
        // SAFETY: plain getter.
        if unsafe { libc::geteuid() } != 0 {
            return Err(LabError::Skip("network namespaces and NetworkManager need root".into()));
        }
        let server_bin = match cfg.server {
            DhcpServer::IscDhcpd => "dhcpd",
            DhcpServer::Dnsmasq => "dnsmasq",
        };
        for tool in REQUIRED_TOOLS.iter().chain([&server_bin]) {
            if which(tool).is_none() {
                return Err(LabError::Skip(format!("{tool} is not installed (run tests/setup-debian.sh)")));
            }
        }
        for bin in [&cfg.nm_daemon, &cfg.nm_dispatcher] {
            if !bin.exists() {
                return Err(LabError::Skip(format!("{} is not installed", bin.display())));
            }
        }
        if cfg.wifi {
            for tool in ["iw", "hostapd", "hostapd_cli", "wpa_supplicant"] {
                if which(tool).is_none() {
                    return Err(LabError::Skip(format!("{tool} is not installed (run tests/setup-debian.sh)")));
                }
            }
            // A lab torn down just before hands its radios back asynchronously.
            let deadline = Instant::now() + Duration::from_secs(10);
            while radios().len() < 2 && Instant::now() < deadline {
                sleep(Duration::from_millis(100));
            }
            if radios().len() < 2 {
                return Err(LabError::Skip("no mac80211_hwsim radios here (the Wi-Fi lab runs in its VM)".into()));
            }
        }
        if cfg.client == DhcpClient::Dhclient && which("dhclient").is_none() && !Path::new("/sbin/dhclient").exists() {
            return Err(LabError::Skip("dhclient is not installed".into()));
        }

        // One lab at a time on this machine: they share the CPU and timing matters.
        let lock = flock_file(LAB_LOCK, libc::LOCK_EX).map_err(|e| LabError::Failed(format!("lab lock: {e}")))?;

        let name = format!("nmh-{}-{}", std::process::id(), LAB_COUNTER.fetch_add(1, Ordering::SeqCst));
        let dir = std::env::temp_dir().join(format!("{name}.lab"));
        let _ = fs::remove_dir_all(&dir);
        for sub in ["run/dbus", "etc/conf.d", "etc/system-connections", "etc/dispatcher.d", "lib", "services", "server"] {
            fs::create_dir_all(dir.join(sub)).map_err(|e| LabError::Failed(format!("{}: {e}", dir.display())))?;
        }
        let mut lab = Lab {
            lan: format!("{name}-lan"),
            host: format!("{name}-host"),
            name,
            dir,
            cfg,
            anchor: None,
            procs: Vec::new(),
            nm: None,
            server: None,
            _lock: lock,
        };
        lab.build()?;
        Ok(lab)
    }

    fn build(&mut self) -> Result<(), LabError> {
        let (lan, host) = (self.lan.clone(), self.host.clone());
        must(&["ip", "netns", "add", &lan])?;
        must(&["ip", "netns", "add", &host])?;
        must(&["ip", "-n", &lan, "link", "set", "lo", "up"])?;
        must(&["ip", "-n", &host, "link", "set", "lo", "up"])?;
        must(&["ip", "-n", &lan, "link", "add", "br0", "type", "bridge", "stp_state", "0", "forward_delay", "0"])?;
        must(&["ip", "-n", &lan, "addr", "add", &format!("{SERVER}/24"), "dev", "br0"])?;
        if self.cfg.ipv6 {
            must(&["ip", "-n", &lan, "addr", "add", &format!("{SERVER6}/64"), "dev", "br0", "nodad"])?;
        }
        must(&["ip", "-n", &lan, "link", "set", "br0", "up"])?;
        if self.cfg.backup_on_other_lan {
            assert_eq!(self.cfg.server, DhcpServer::IscDhcpd, "the other LAN's DHCP comes from the same dhcpd");
            must(&["ip", "-n", &lan, "link", "add", "br1", "type", "bridge", "stp_state", "0", "forward_delay", "0"])?;
            must(&["ip", "-n", &lan, "addr", "add", &format!("{OTHER_SERVER}/24"), "dev", "br1"])?;
            must(&["ip", "-n", &lan, "link", "set", "br1", "up"])?;
        }
        for iface in self.cfg.links.clone() {
            let port = format!("p-{iface}");
            if let (Some(nic), "wired0") = (self.cfg.hardware_wired.as_ref().map(|(_, nic)| *nic), iface) {
                // The VM's two NICs, found by MAC (a lab torn down just before hands them back to the
                // VM's root namespace asynchronously, under whatever name is free there).
                for (mac, ns, name) in [(nic.mac, &host, iface), (nic.peer_mac, &lan, port.as_str())] {
                    let mut found = None;
                    self.wait_until(&format!("the VM's NIC {mac}"), Duration::from_secs(10), || {
                        found = link_with_mac(mac);
                        found.is_some()
                    })?;
                    let dev = found.unwrap();
                    must(&["ip", "link", "set", "dev", &dev, "down"])?;
                    must(&["ip", "link", "set", "dev", &dev, "netns", ns])?;
                    must(&["ip", "-n", ns, "link", "set", "dev", &dev, "name", name])?;
                }
                self.set_cable(iface, true);
            } else {
                // Created inside the lab namespaces only: nothing appears in the root namespace.
                must(&["ip", "-n", &host, "link", "add", iface, "type", "veth", "peer", "name", &port, "netns", &lan])?;
            }
            let bridge = if iface == "backup0" && self.cfg.backup_on_other_lan { "br1" } else { "br0" };
            must(&["ip", "-n", &lan, "link", "set", &port, "master", bridge])?;
            must(&["ip", "-n", &lan, "link", "set", &port, "up"])?;
        }
        if self.cfg.wifi {
            self.start_access_point()?;
        }
        self.start_dhcp_server()?;
        // The TCP echo peers the sessions talk to: one per address family the
        // lab runs, and the MPTCP one where asked for.
        let echo = |listen: String| vec!["socat".to_owned(), listen, "EXEC:cat".to_owned()];
        let mut peers = vec![("tcp peer", echo(format!("TCP-LISTEN:{TCP_PORT},bind={SERVER},fork,reuseaddr")), "peer.log")];
        if self.cfg.mptcp_peer {
            let mut mptcpized = vec!["mptcpize".to_owned(), "run".to_owned()];
            mptcpized.extend(echo(format!("TCP-LISTEN:{MPTCP_PORT},bind={SERVER},fork,reuseaddr")));
            peers.push(("MPTCP peer", mptcpized, "peer-mptcp.log"));
        }
        if self.cfg.ipv6 {
            peers.push(("tcp peer (IPv6)", echo(format!("TCP6-LISTEN:{TCP_PORT},bind=[{SERVER6}],fork,reuseaddr")), "peer6.log"));
        }
        for (what, argv, log) in peers {
            let peer = self.spawn_in_lan(what, &argv.iter().map(String::as_str).collect::<Vec<_>>(), log)?;
            self.procs.push(peer);
        }
        self.write_host_config()?;
        self.start_anchor()?;
        let dbus_conf = self.dir.join("dbus.conf");
        let dbus = self.spawn_in_host("dbus-daemon", &["dbus-daemon", "--config-file", dbus_conf.to_str().unwrap(), "--nofork", "--nopidfile"], "dbus.log")?;
        self.procs.push(Proc { what: "dbus-daemon", child: dbus });
        self.wait_until("private D-Bus socket", Duration::from_secs(5), || self.dir.join("run/dbus/system_bus_socket").exists())?;
        if self.cfg.wifi {
            // Started here: D-Bus activation would start it in no lab namespace.
            let supplicant = self.spawn_in_host("wpa_supplicant", &["wpa_supplicant", "-u", "-O", "/run/wpa_supplicant"], "wpa_supplicant.log")?;
            self.procs.push(Proc { what: "wpa_supplicant", child: supplicant });
            self.wait_until("wpa_supplicant on D-Bus", Duration::from_secs(20), || self.read("wpa_supplicant.log").contains("Successfully initialized"))?;
        }
        self.start_nm()?;
        Ok(())
    }

    fn write_host_config(&self) -> Result<(), LabError> {
        let d = &self.dir;
        write(
            &d.join("dbus.conf"),
            &format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=/run/dbus/system_bus_socket</listen>
  <servicedir>{}</servicedir>
  <policy context="default">
    <allow user="*"/><allow own="*"/><allow send_type="method_call"/>
    <allow send_destination="*"/><allow receive_type="*"/>
  </policy>
</busconfig>
"#,
                d.join("services").display()
            ),
        );
        // nm-dispatcher logs to syslog, which the lab lacks: run it with --debug to a file.
        write(
            &d.join("services/org.freedesktop.nm_dispatcher.service"),
            &format!(
                "[D-BUS Service]\nName=org.freedesktop.nm_dispatcher\nExec=/bin/sh -c 'exec {} --debug 2>>{}'\nUser=root\n",
                self.cfg.nm_dispatcher.display(),
                d.join("dispatcher.log").display()
            ),
        );
        write(
            &d.join("etc/NetworkManager.conf"),
            &format!(
                "[main]\nplugins=keyfile\nauth-polkit=false\ndhcp={}\ndns=none\nrc-manager=unmanaged\n\
                 hostname-mode=none\nno-auto-default=*\n\n[logging]\nlevel=DEBUG\n{}{}\n",
                self.cfg.client.conf_name(),
                // The access points each scan found ("wifi-ap: added"), which NM leaves out by default.
                if self.cfg.wifi { "domains=DEFAULT,WIFI_SCAN\n" } else { "" },
                self.cfg.extra_nm_conf
            ),
        );
        if let Some(companion) = &self.cfg.companion {
            let link = |target: &Path, dir: &Path| -> Result<(), LabError> {
                fs::create_dir_all(dir).map_err(|e| LabError::Failed(e.to_string()))?;
                std::os::unix::fs::symlink(target, dir.join("90-nm-handover")).map_err(|e| LabError::Failed(format!("installing the companion: {e}")))
            };
            for sub in &self.cfg.companion_dirs {
                let dir = d.join("etc/dispatcher.d").join(sub);
                if *sub == "." && !self.cfg.companion_waits {
                    // As meson-compat installs it: nm-dispatcher does not wait for a
                    // script that links into no-wait.d.
                    link(companion, &dir.join("no-wait.d"))?;
                    link(Path::new("no-wait.d/90-nm-handover"), &dir)?;
                } else if *sub == "link-up.d" && !self.cfg.companion_waits {
                    // Also through no-wait.d: not queued behind other requests; NM
                    // still waits for link-up's answer.
                    if !d.join("etc/dispatcher.d/no-wait.d/90-nm-handover").exists() {
                        link(companion, &d.join("etc/dispatcher.d/no-wait.d"))?;
                    }
                    link(Path::new("../no-wait.d/90-nm-handover"), &dir)?;
                } else {
                    link(companion, &dir)?;
                }
            }
        }
        for (rel, text) in &self.cfg.scripts {
            let path = d.join("etc/dispatcher.d").join(rel);
            fs::create_dir_all(path.parent().unwrap()).map_err(|e| LabError::Failed(e.to_string()))?;
            write(&path, text);
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).map_err(|e| LabError::Failed(e.to_string()))?;
        }
        fs::set_permissions(d.join("etc/system-connections"), fs::Permissions::from_mode(0o700)).ok();
        write(
            &d.join("anchor.sh"),
            &format!(
                "set -e\n\
                 mount -n --bind {d}/run /run\n\
                 mount -n --bind {d}/etc /etc/NetworkManager\n\
                 mount -n --bind {d}/lib /var/lib/NetworkManager\n\
                 mount -n -o remount,ro /sys 2>/dev/null || mount -n -t sysfs -o ro sysfs /sys\n\
                 {plugins}\
                 exec sleep infinity\n",
                d = d.display(),
                plugins = self.cfg.nm_plugin_dir.as_ref().map_or(String::new(), |dir| format!("mount -n --bind {} {SYSTEM_NM_PLUGIN_DIR}\n", dir.display())),
            ),
        );
        Ok(())
    }

    fn start_anchor(&mut self) -> Result<(), LabError> {
        // The anchor holds the private mount namespace that NM, nm-dispatcher
        // and every command of the test share (see LAB.md: /sys read-only, or
        // NM waits for udev forever).
        let anchor = Command::new("ip")
            .args(["netns", "exec", &self.host, "unshare", "--mount", "--uts", "--propagation", "private", "sh"])
            .arg(self.dir.join("anchor.sh"))
            .stdin(Stdio::null())
            .stdout(log_file(&self.dir, "anchor.log"))
            .stderr(log_file(&self.dir, "anchor.log"))
            .spawn()
            .map_err(|e| LabError::Failed(format!("anchor: {e}")))?;
        self.anchor = Some(anchor);
        let pid = self.anchor_pid();
        self.wait_until("the lab's mount namespace", Duration::from_secs(5), || {
            fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe.ends_with("sleep"))
        })?;
        Ok(())
    }

    fn anchor_pid(&self) -> String {
        self.anchor.as_ref().expect("anchor started").id().to_string()
    }

    /// A command line that runs `argv` inside the host namespace and the lab's mount namespace.
    pub fn host_command(&self, argv: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &self.anchor_pid(), "-m", "-n", "-u", "--"]).args(argv).stdin(Stdio::null());
        cmd
    }

    pub fn run_in_host(&self, argv: &[&str]) -> Output {
        self.host_command(argv).output().expect("nsenter")
    }

    pub fn run_in_lan(&self, argv: &[&str]) -> Output {
        Command::new("ip").args(["netns", "exec", &self.lan]).args(argv).stdin(Stdio::null()).output().expect("ip netns exec")
    }

    fn spawn_in_host(&self, _what: &'static str, argv: &[&str], log: &str) -> Result<Child, LabError> {
        self.host_command(argv)
            .stdout(log_file(&self.dir, log))
            .stderr(log_file(&self.dir, log))
            .spawn()
            .map_err(|e| LabError::Failed(format!("{}: {e}", argv.join(" "))))
    }

    fn spawn_in_lan(&self, what: &'static str, argv: &[&str], log: &str) -> Result<Proc, LabError> {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.lan])
            .args(argv)
            .stdin(Stdio::null())
            .stdout(log_file(&self.dir, log))
            .stderr(log_file(&self.dir, log))
            .spawn()
            .map_err(|e| LabError::Failed(format!("{what}: {e}")))?;
        Ok(Proc { what, child })
    }

    fn start_dhcp_server(&mut self) -> Result<(), LabError> {
        let d = self.dir.join("server");
        let lease = self.cfg.lease_time_secs.to_string();
        let child = match self.cfg.server {
            DhcpServer::IscDhcpd => {
                write(
                    &d.join("dhcpd.conf"),
                    &format!(
                        "authoritative;\nping-check true;\nping-timeout 1;\n\
                         # Ping even right after the client's last transaction, so conflicts show at once.\n\
                         ping-cltt-secs 1;\ndefault-lease-time {lease};\nmax-lease-time {lease};\n\
                         subnet 198.18.0.0 netmask 255.255.255.0 {{ range {} {}; }}\n{}",
                        POOL.0,
                        POOL.1,
                        if self.cfg.backup_on_other_lan {
                            format!("subnet 198.19.0.0 netmask 255.255.255.0 {{ range 198.19.0.100 198.19.0.199; option routers {OTHER_SERVER}; }}\n")
                        } else {
                            String::new()
                        }
                    ),
                );
                let leases = d.join("dhcpd.leases");
                if !leases.exists() {
                    write(&leases, "");
                }
                let _ = fs::remove_file(d.join("dhcpd.pid"));
                self.spawn_in_lan(
                    "dhcpd",
                    &[
                        "dhcpd",
                        "-4",
                        "-f",
                        "-d",
                        "-cf",
                        d.join("dhcpd.conf").to_str().unwrap(),
                        "-lf",
                        leases.to_str().unwrap(),
                        "-pf",
                        d.join("dhcpd.pid").to_str().unwrap(),
                        "br0",
                    ]
                    .into_iter()
                    .chain(self.cfg.backup_on_other_lan.then_some("br1"))
                    .collect::<Vec<_>>(),
                    "server.log",
                )?
            }
            DhcpServer::Dnsmasq => {
                let mut args = vec![
                    "dnsmasq".to_owned(),
                    "--keep-in-foreground".into(),
                    "--conf-file=/dev/null".into(),
                    "--port=0".into(),
                    "--bind-interfaces".into(),
                    "--interface=br0".into(),
                    format!("--dhcp-range={},{},{lease}", POOL.0, POOL.1),
                    format!("--dhcp-leasefile={}", d.join("dnsmasq.leases").display()),
                    "--log-dhcp".into(),
                    "--log-facility=-".into(),
                    "--dhcp-authoritative".into(),
                    format!("--pid-file={}", d.join("dnsmasq.pid").display()),
                ];
                if self.cfg.ipv6 {
                    // Addresses from stateful DHCPv6 (a range sets the M flag) and from SLAAC (`slaac`: the A flag).
                    args.extend(["--enable-ra".to_owned(), format!("--dhcp-range={PREFIX6}::100,{PREFIX6}::1ff,slaac,64,{lease}")]);
                }
                self.spawn_in_lan("dnsmasq", &args.iter().map(String::as_str).collect::<Vec<_>>(), "server.log")?
            }
        };
        self.server = Some(child.child);
        // Let the server open its sockets before clients start.
        sleep(Duration::from_millis(300));
        Ok(())
    }

    /// Moves one radio into each namespace and starts hostapd on the LAN's.
    fn start_access_point(&mut self) -> Result<(), LabError> {
        // rfkill is not per network namespace: a lab before this one in the
        // same VM may have left the radios blocked (the radio switched off).
        for radio in fs::read_dir("/sys/class/rfkill").into_iter().flatten().flatten() {
            let _ = fs::write(radio.path().join("soft"), "0");
        }
        let phys = radios();
        must(&["iw", "phy", &phys[0], "set", "netns", "name", &self.host])?;
        must(&["iw", "phy", &phys[1], "set", "netns", "name", &self.lan])?;
        let ap_iface = self.access_point_iface()?;
        let d = self.dir.join("server");
        // `wpa_disable_eapol_key_retries=1` (an AP's KRACK mitigation): hostapd
        // resends the handshake's message 3 when message 4 takes over 1 s,
        // which under TCG it sometimes does; the station, done already, then
        // answers a handshake hostapd has moved past ("msg 4/4 in invalid
        // state - dropped"), and the association fails 4 s later for NM to
        // ask for a password no agent gives.
        write(
            &d.join("hostapd.conf"),
            &format!(
                "interface={ap_iface}\nbridge=br0\ndriver=nl80211\nctrl_interface={}\nssid={WIFI_SSID}\nhw_mode=g\nchannel=1\n\
                 wpa=2\nwpa_key_mgmt=WPA-PSK\nrsn_pairwise=CCMP\nwpa_passphrase={WIFI_PSK}\nwpa_disable_eapol_key_retries=1\n",
                d.join("hostapd").display()
            ),
        );
        let ap = self.spawn_in_lan("hostapd", &["hostapd", "-t", d.join("hostapd.conf").to_str().unwrap()], "hostapd.log")?;
        self.procs.push(ap);
        self.wait_until("the access point", Duration::from_secs(30), || self.read("hostapd.log").contains("AP-ENABLED"))?;
        Ok(())
    }

    /// The access point radio's interface (in `lan`).
    fn access_point_iface(&self) -> Result<String, LabError> {
        must(&["ip", "netns", "exec", &self.lan, "iw", "dev"])?
            .lines()
            .find_map(|l| l.trim().strip_prefix("Interface ").map(str::to_owned))
            .ok_or_else(|| LabError::Failed("the access point radio has no interface".into()))
    }

    /// Delays every frame the access point sends its stations by `delay`
    /// (netem on its interface), or no longer (`None`).
    pub fn delay_frames_to_stations(&self, delay: Option<Duration>) {
        let iface = self.access_point_iface().expect("the access point's interface");
        let argv: Vec<String> = match delay {
            Some(d) => ["tc", "qdisc", "replace", "dev", &iface, "root", "netem", "delay", &format!("{}ms", d.as_millis())].map(str::to_owned).to_vec(),
            None => ["tc", "qdisc", "del", "dev", &iface, "root"].map(str::to_owned).to_vec(),
        };
        let mut full = vec!["ip".to_owned(), "netns".to_owned(), "exec".to_owned(), self.lan.clone()];
        full.extend(argv);
        must(&full.iter().map(String::as_str).collect::<Vec<_>>()).unwrap_or_else(|e| panic!("{}: {e}", full.join(" ")));
    }

    fn hostapd_cli(&self, args: &[&str]) -> String {
        let ctrl = self.dir.join("server/hostapd");
        let mut argv = vec!["hostapd_cli", "-p", ctrl.to_str().unwrap()];
        argv.extend_from_slice(args);
        String::from_utf8_lossy(&self.run_in_lan(&argv).stdout).into_owned()
    }

    /// The MAC addresses associated with the access point (hostapd also
    /// lists a station that only authenticated, such as one that asked for an
    /// SSID the renamed access point no longer has: left out).
    pub fn ap_stations(&self) -> Vec<String> {
        let mut stations = Vec::new();
        let mut current: Option<String> = None;
        for line in self.hostapd_cli(&["all_sta"]).lines().map(str::trim) {
            if line.len() == 17 && line.bytes().filter(|b| *b == b':').count() == 5 {
                current = Some(line.to_ascii_lowercase());
            } else if let (Some(mac), Some(flags)) = (&current, line.strip_prefix("flags=")) {
                if flags.contains("[ASSOC]") {
                    stations.push(mac.clone());
                }
            }
        }
        stations
    }

    /// What the access point counted for station `mac` (`hostapd_cli sta`):
    /// frames and bytes it received from it and sent to it, as
    /// (rx_packets, rx_bytes, tx_packets, tx_bytes); `None` when not associated.
    pub fn ap_station_counters(&self, mac: &str) -> Option<(u64, u64, u64, u64)> {
        let out = self.hostapd_cli(&["sta", mac]);
        let get = |key: &str| out.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix('=')?.trim().parse::<u64>().ok());
        Some((get("rx_packets")?, get("rx_bytes")?, get("tx_packets")?, get("tx_bytes")?))
    }

    /// As on a laptop in the office: the Wi-Fi is in NM's scan list before
    /// the cable is pulled (NM's first scan after its start takes seconds).
    pub fn wait_for_access_point_in_scan_list(&self) -> Result<Duration, LabError> {
        self.wait_until("NM to see the access point", Duration::from_secs(60), || {
            self.nmcli(&["-t", "-f", "SSID", "device", "wifi", "list", "--rescan", "no"]).is_ok_and(|list| list.lines().any(|l| l == WIFI_SSID))
        })
    }

    /// The access point broadcasts `ssid` from now on (another network, as
    /// the laptop sees at home).
    pub fn rename_access_point(&self, ssid: &str) {
        // (The PSK is derived from the passphrase and the SSID when the interface is enabled.)
        for (key, value) in [("ssid", ssid), ("wpa_passphrase", WIFI_PSK)] {
            let out = self.hostapd_cli(&["set", key, value]);
            assert!(out.contains("OK"), "hostapd_cli set {key}: {out}");
        }
        self.restart_access_point();
    }

    /// Takes the station's radio out of the lab's host (into the VM's own
    /// namespace), or puts it back: a Wi-Fi device that is not there yet
    /// when NetworkManager starts (a USB adapter, firmware loading late)
    /// and appears later.
    pub fn set_station_radio_present(&self, present: bool) {
        // The radio's wiphy, as `iw dev` names it where the radio is now.
        let wiphy = |listing: &str| listing.lines().find_map(|l| l.trim().strip_prefix("phy#").map(|n| format!("phy{n}")));
        if present {
            let listing = must(&["iw", "dev"]).expect("iw dev");
            let phy = wiphy(&listing).unwrap_or_else(|| panic!("no radio outside the lab: {listing}"));
            must(&["iw", "phy", &phy, "set", "netns", "name", &self.host]).expect("the radio back into the lab's host");
        } else {
            let listing = must(&["ip", "netns", "exec", &self.host, "iw", "dev"]).expect("iw dev in the lab's host");
            let phy = wiphy(&listing).unwrap_or_else(|| panic!("no radio in the lab's host: {listing}"));
            // (Into the network namespace of this process: the VM's own.)
            let here = std::process::id().to_string();
            must(&["ip", "netns", "exec", &self.host, "iw", "phy", &phy, "set", "netns", &here]).expect("the radio out of the lab's host");
        }
    }

    /// Starts the access point's interface again (after an rfkill block
    /// hostapd's interface is down while hostapd holds it "enabled").
    pub fn restart_access_point(&self) {
        let _ = self.hostapd_cli(&["disable"]);
        self.set_access_point(true);
    }

    /// Takes the access point off the air, or back on.
    pub fn set_access_point(&self, on: bool) {
        let out = self.hostapd_cli(&[if on { "enable" } else { "disable" }]);
        assert!(out.contains("OK"), "hostapd_cli {}: {out}", if on { "enable" } else { "disable" });
    }

    pub fn stop_dhcp_server(&mut self) {
        if let Some(mut child) = self.server.take() {
            stop_child(&mut child, Duration::from_secs(3));
        }
    }

    pub fn restart_dhcp_server(&mut self) {
        self.stop_dhcp_server();
        self.start_dhcp_server().expect("restart DHCP server");
    }

    /// Starts NetworkManager (a "boot", when the state it left was flushed).
    pub fn start_nm(&mut self) -> Result<(), LabError> {
        let daemon = self.cfg.nm_daemon.to_str().unwrap().to_owned();
        let nm = self.spawn_in_host("NetworkManager", &[&daemon, "--no-daemon", "--debug"], "nm.log")?;
        self.nm = Some(nm);
        if !self.cfg.nm_manages_links {
            return self.wait_until("NetworkManager to answer", Duration::from_secs(20), || self.nmcli(&["general"]).is_ok()).map(|_| ());
        }
        // (A station whose radio is out of the lab, see `set_station_radio_present`, is not waited for.)
        let station = (self.cfg.wifi && self.run_in_host(&["ip", "link", "show", "wlan0"]).status.success()).then_some(&"wlan0");
        self.wait_until("NetworkManager to manage both links", Duration::from_secs(20), || {
            let out = self.run_in_host(&["nmcli", "-t", "-f", "DEVICE,STATE", "device"]);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            out.status.success()
                && self.cfg.links.iter().chain(station).all(|d| text.lines().any(|l| l.starts_with(&format!("{d}:")) && !l.contains("unmanaged")))
        })?;
        Ok(())
    }

    /// Stops NetworkManager (SIGTERM; it leaves addresses configured, like a crash would).
    pub fn stop_nm(&mut self) {
        if let Some(mut nm) = self.nm.take() {
            stop_child(&mut nm, Duration::from_secs(10));
        }
    }

    /// A "reboot" of the host: NM stopped, its runtime state and the links'
    /// addresses gone, links down; profiles and lease files stay.
    pub fn reboot_nm(&mut self, before_start: impl FnOnce(&Lab)) {
        self.stop_nm();
        let _ = fs::remove_dir_all(self.dir.join("run/NetworkManager"));
        for iface in self.cfg.links.clone() {
            must(&["ip", "-n", &self.host, "addr", "flush", "dev", iface]).unwrap();
            must(&["ip", "-n", &self.host, "link", "set", iface, "down"]).unwrap();
        }
        before_start(self);
        self.start_nm().expect("NetworkManager restart");
    }

    pub fn nmcli(&self, args: &[&str]) -> Result<String, LabError> {
        let mut argv = vec!["nmcli"];
        argv.extend_from_slice(args);
        let out = self.run_in_host(&argv);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(LabError::Failed(format!("nmcli {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim())))
        }
    }

    /// Runs the companion's CLI inside the lab; panics with its output on failure.
    pub fn companion(&self, args: &[&str]) -> String {
        let out = self.companion_command(args).output().expect("nsenter");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "nm-handover {}: {text}", args.join(" "));
        text
    }

    /// The companion's CLI with `args`, inside the lab.
    fn companion_command(&self, args: &[&str]) -> Command {
        let bin = companion_binary("nm-handover");
        let mut argv = vec![bin.to_str().expect("a UTF-8 path")];
        argv.extend_from_slice(args);
        self.host_command(&argv)
    }

    /// [`Lab::companion`] with its stderr (and so the supervisor's it
    /// starts, see `start_supervisor`) appended to the lab's `log`; returns stdout.
    pub fn companion_logging_to(&self, log: &str, args: &[&str]) -> String {
        let out = self.companion_command(args).stderr(log_file(&self.dir, log)).output().expect("nsenter");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "nm-handover {}: {text}\n{}", args.join(" "), self.read(log));
        text
    }

    fn ipv6_method(&self) -> &'static str {
        if self.cfg.ipv6 {
            "auto"
        } else {
            "disabled"
        }
    }

    /// Adds a profile of `kind` (nmcli's `type`) named `name`, bound to
    /// `iface`, with `settings` (nmcli's property/value pairs); returns its UUID.
    pub fn add_profile(&self, kind: &str, name: &str, iface: &str, settings: &[&str]) -> Result<String, LabError> {
        let mut args = vec!["connection", "add", "type", kind, "con-name", name, "ifname", iface];
        args.extend_from_slice(settings);
        self.nmcli(&args)?;
        Ok(self.nmcli(&["-g", "connection.uuid", "connection", "show", name])?.trim().to_owned())
    }

    /// Adds an Ethernet profile bound to `iface`; returns its UUID.
    pub fn add_ethernet_profile(&self, name: &str, iface: &str, autoconnect: bool) -> String {
        self.add_profile("ethernet", name, iface, &["autoconnect", if autoconnect { "yes" } else { "no" }, "ipv6.method", self.ipv6_method()])
            .expect("add profile")
    }

    /// Adds a WPA2-PSK profile of the lab's access point bound to `iface`,
    /// not connecting by itself; returns its UUID.
    pub fn add_wifi_profile(&self, name: &str, iface: &str) -> String {
        self.add_profile(
            "wifi",
            name,
            iface,
            &["ssid", WIFI_SSID, "autoconnect", "no", "wifi-sec.key-mgmt", "wpa-psk", "wifi-sec.psk", WIFI_PSK, "ipv6.method", self.ipv6_method()],
        )
        .expect("add Wi-Fi profile")
    }

    /// The keyfile of the profile named `name`.
    pub fn keyfile_of(&self, name: &str) -> PathBuf {
        let dir = self.nm_conf_dir().join("system-connections");
        fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|path| fs::read_to_string(path).is_ok_and(|text| text.lines().any(|l| l == format!("id={name}"))))
            .unwrap_or_else(|| panic!("no keyfile of '{name}' in {}", dir.display()))
    }

    /// Sets `key=value` in `[section]` of a profile's keyfile and has NM load
    /// it, as a user editing the file by hand would (the lab's nmcli may be
    /// older than the daemon and not know the property). A missing section is added.
    pub fn edit_keyfile(&self, name: &str, section: &str, key: &str, value: &str) {
        let path = self.keyfile_of(name);
        let text = fs::read_to_string(&path).unwrap();
        let header = format!("[{section}]");
        let mut out: Vec<String> = Vec::new();
        let mut in_section = false;
        for line in text.lines() {
            if line.starts_with('[') {
                in_section = line == header;
            }
            if !(in_section && line.starts_with(&format!("{key}="))) {
                out.push(line.to_owned());
            }
            if line == header {
                out.push(format!("{key}={value}"));
            }
        }
        if !out.contains(&header) {
            out.extend([String::new(), header, format!("{key}={value}")]);
        }
        fs::write(&path, out.join("\n") + "\n").unwrap();
        // NM sees the lab's etc/ at /etc/NetworkManager (a bind mount in its namespace).
        let seen_by_nm = Path::new("/etc/NetworkManager/system-connections").join(path.file_name().unwrap());
        self.nmcli(&["connection", "load", &seen_by_nm.to_string_lossy()]).expect("nmcli connection load");
    }

    pub fn pull_cable(&self) {
        self.set_cable("wired0", false);
    }

    pub fn plug_cable(&self) {
        self.set_cable("wired0", true);
    }

    /// Plugs or pulls the cable of one host link (its bridge port in `lan`;
    /// for the VM's virtio NIC, QEMU's link of the NIC itself).
    pub fn set_cable(&self, iface: &str, plugged: bool) {
        match &self.cfg.hardware_wired {
            Some((dir, nic)) if iface == "wired0" => set_vm_cable(dir, nic, plugged),
            _ => {
                must(&["ip", "-n", &self.lan, "link", "set", &format!("p-{iface}"), if plugged { "up" } else { "down" }]).unwrap();
            }
        }
    }

    /// Suspends NetworkManager (`true`) or wakes it, through its `Sleep`
    /// D-Bus method: what logind's PrepareForSleep makes it do.
    pub fn nm_sleep(&self, asleep: bool) {
        let arg = format!("boolean:{asleep}");
        let out = self.run_in_host(&[
            "dbus-send",
            "--system",
            "--print-reply",
            "--dest=org.freedesktop.NetworkManager",
            "/org/freedesktop/NetworkManager",
            "org.freedesktop.NetworkManager.Sleep",
            &arg,
        ]);
        assert!(out.status.success(), "NM Sleep({asleep}): {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Kills NetworkManager with SIGKILL (a crash), leaving its run state behind.
    pub fn kill_nm(&mut self) {
        if let Some(mut nm) = self.nm.take() {
            let _ = nm.kill();
            let _ = nm.wait();
        }
    }

    /// Every dispatcher request NM logged, in order, with its outcome.
    pub fn dispatcher_requests(&self) -> Vec<DispatcherRequest> {
        parse_dispatcher_requests(&self.nm_log())
    }

    /// How long each completed dispatcher request took (failures too).
    pub fn dispatcher_durations(&self) -> Vec<Duration> {
        self.dispatcher_requests().into_iter().filter_map(|r| r.outcome.map(|o| o.took)).collect()
    }

    /// The first global IPv4 address of `iface` in the host namespace.
    pub fn ipv4(&self, iface: &str) -> Option<Ipv4Addr> {
        let out = run(&["ip", "-n", &self.host, "-4", "-o", "addr", "show", "dev", iface, "scope", "global"]).ok()?;
        String::from_utf8_lossy(&out.stdout).split_whitespace().skip_while(|w| *w != "inet").nth(1).and_then(|cidr| cidr.split('/').next()?.parse().ok())
    }

    /// The link's global IPv6 addresses that are usable: neither tentative
    /// (duplicate address detection still running) nor failed.
    pub fn ipv6_usable(&self, iface: &str) -> Vec<Ipv6Addr> {
        let Ok(out) = run(&["ip", "-n", &self.host, "-6", "-o", "addr", "show", "dev", iface, "scope", "global"]) else {
            return Vec::new();
        };
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.contains("tentative") && !l.contains("dadfailed"))
            .filter_map(|l| l.split_whitespace().skip_while(|w| *w != "inet6").nth(1)?.split('/').next()?.parse().ok())
            .collect()
    }

    pub fn mac(&self, iface: &str) -> String {
        let out = must(&["ip", "-n", &self.host, "-o", "link", "show", "dev", iface]).unwrap();
        out.split_whitespace().skip_while(|w| *w != "link/ether").nth(1).unwrap_or_default().to_owned()
    }

    /// Whether the link is administratively up (`UP` among its flags).
    pub fn link_up(&self, iface: &str) -> bool {
        let out = must(&["ip", "-n", &self.host, "-o", "link", "show", "dev", iface]).unwrap();
        out.split_once('<').and_then(|(_, rest)| rest.split_once('>')).is_some_and(|(flags, _)| flags.split(',').any(|f| f == "UP"))
    }

    /// Polls `f` every 10 ms until it holds; returns how long it took.
    pub fn wait_until(&self, what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Result<Duration, LabError> {
        let start = Instant::now();
        loop {
            if f() {
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                return Err(LabError::Failed(format!("timed out after {timeout:?} waiting for {what}")));
            }
            sleep(Duration::from_millis(10));
        }
    }

    /// [`Lab::wait_until`], failing the test with the lab's logs on a timeout.
    pub fn expect_until(&self, what: &str, timeout: Duration, f: impl FnMut() -> bool) -> Duration {
        self.wait_until(what, timeout, f).unwrap_or_else(|e| panic!("{e}\n{}", self.diagnostics()))
    }

    fn read(&self, name: &str) -> String {
        fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }

    pub fn server_log(&self) -> String {
        self.read("server.log")
    }

    pub fn nm_log(&self) -> String {
        self.read("nm.log")
    }

    pub fn dispatcher_log(&self) -> String {
        self.read("dispatcher.log")
    }

    /// Host-side path of the lab's /var/lib/NetworkManager (lease files).
    pub fn nm_state_dir(&self) -> PathBuf {
        self.dir.join("lib")
    }

    /// Host-side path of the lab's /etc/NetworkManager.
    pub fn nm_conf_dir(&self) -> PathBuf {
        self.dir.join("etc")
    }

    /// Everything useful for a failing test, in one string.
    pub fn diagnostics(&self) -> String {
        let tail = |text: String, n: usize| {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        };
        // (NetworkManager's debug lines fill its tail within a second; what
        // failed, and when, is in its info lines and warnings.)
        let nm_log = self.nm_log();
        let nm_info: String = nm_log.lines().filter(|l| !l.starts_with("<debug>") && !l.starts_with("<trace>")).map(|l| format!("{l}\n")).collect();
        let supplicant = fs::read_to_string(self.dir.join("wpa_supplicant.log"))
            .map(|log| format!("--- wpa_supplicant log (tail)\n{}\n", tail(log, 30)))
            .unwrap_or_default();
        format!(
            "--- server log\n{}\n--- dispatcher log\n{}\n--- NM log, info and warnings (tail)\n{}\n{supplicant}--- NM log (tail)\n{}\n",
            tail(self.server_log(), 40),
            tail(self.dispatcher_log(), 60),
            tail(nm_info, 80),
            tail(nm_log, 60)
        )
    }

    /// Appends a line to a file under the lab dir (for test notes).
    pub fn note(&self, text: &str) {
        let mut f = log_file(&self.dir, "notes.log");
        let _ = writeln!(f, "{text}");
    }

    pub fn anchor_ns_path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.host))
    }
}

/// One request of NM to nm-dispatcher, as NM's debug log tells it:
/// `dispatcher: (N) (iface) dispatching action 'A'`, then
/// `dispatcher: (N) succeeded (after X sec, K scripts invoked)` or `... failed (after X sec): why`.
#[derive(Debug, Clone, PartialEq)]
pub struct DispatcherRequest {
    pub iface: Option<String>,
    pub action: String,
    pub outcome: Option<DispatcherOutcome>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DispatcherOutcome {
    pub succeeded: bool,
    pub took: Duration,
    /// What follows the duration: "1 scripts invoked)", or the failure.
    pub detail: String,
}

/// NM numbers requests from 1 again when it restarts: a number refers to the
/// latest request dispatched under it.
pub fn parse_dispatcher_requests(log: &str) -> Vec<DispatcherRequest> {
    let mut requests: Vec<DispatcherRequest> = Vec::new();
    let mut by_id = std::collections::HashMap::new();
    for line in log.lines() {
        let Some(rest) = line.split("dispatcher: (").nth(1) else { continue };
        let Some((id, rest)) = rest.split_once(") ") else { continue };
        if let Some(action) = rest.split("dispatching action '").nth(1).and_then(|a| a.split('\'').next()) {
            let iface = rest.strip_prefix('(').and_then(|r| r.split(')').next()).map(str::to_owned);
            by_id.insert(id.to_owned(), requests.len());
            requests.push(DispatcherRequest { iface, action: action.to_owned(), outcome: None });
        } else if let Some((succeeded, after)) =
            rest.strip_prefix("succeeded (after ").map(|a| (true, a)).or_else(|| rest.strip_prefix("failed (after ").map(|a| (false, a)))
        {
            let Some((secs, detail)) = after.split_once(" sec") else { continue };
            let (Some(&i), Ok(secs)) = (by_id.get(id), secs.parse::<f64>()) else { continue };
            let detail = detail.trim_start_matches([',', ':', ' ', ')']).to_owned();
            requests[i].outcome = Some(DispatcherOutcome { succeeded, took: Duration::from_secs_f64(secs), detail });
        }
    }
    requests
}

/// `t` in seconds since the epoch, as the logs and captures stamp their lines.
pub fn epoch_secs(t: SystemTime) -> f64 {
    t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs_f64()
}

/// The time a log line is stamped with, in seconds since the epoch: the
/// companion's `[1796560163.7259]  INFO ...`, NetworkManager's
/// `<info>  [1796560163.7259] ...` and the probe's `[1796560163.725912] 64 bytes ...`.
pub fn log_stamp(line: &str) -> Option<f64> {
    let rest = match line.strip_prefix('<') {
        Some(level) => level.split_once('>')?.1.trim_start(),
        None => line,
    };
    let stamp: f64 = rest.strip_prefix('[')?.split_once(']')?.0.trim().parse().ok()?;
    stamp.is_finite().then_some(stamp)
}

/// When a line containing `needle` was first logged.
pub fn logged_at(log: &str, needle: &str) -> Option<f64> {
    log.lines().filter(|l| l.contains(needle)).find_map(log_stamp)
}

/// `secs` between two log stamps as a duration; none for a clock that stepped back.
pub fn stamp_span(secs: f64) -> Duration {
    Duration::try_from_secs_f64(secs).unwrap_or_default()
}

/// How long wpa_supplicant scanned on `iface` after `since` (seconds since
/// the epoch), by NetworkManager's log of its interface states: an
/// association it cannot make from a scan younger than its 5 s
/// (`scan_res_valid_for_connect`) starts with a full scan of every channel.
pub fn supplicant_scanning_since(nm_log: &str, iface: &str, since: f64) -> Duration {
    let state_line = format!("device ({iface}): supplicant interface state: ");
    let mut total = Duration::ZERO;
    let mut scanning_from: Option<f64> = None;
    for line in nm_log.lines() {
        let (Some(stamp), Some((_, change))) = (log_stamp(line), line.split_once(&state_line)) else { continue };
        if stamp < since {
            continue;
        }
        let Some((from, to)) = change.split_once(" -> ") else { continue };
        if from.trim() == "scanning" {
            total += scanning_from.take().map_or(Duration::ZERO, |start| stamp_span(stamp - start));
        }
        if to.trim() == "scanning" {
            scanning_from = Some(stamp);
        }
    }
    total
}

/// Activations NetworkManager gave up on while associating (see
/// [`failed_associations_since`]).
#[derive(Debug, Default, PartialEq)]
pub struct FailedAssociations {
    pub count: usize,
    /// From each one's start until the next activation started (the
    /// supervisor waits for a scan first), or until it failed if none did.
    pub lasted: Duration,
    /// When the activation after the last one started (seconds since the epoch).
    pub retried_at: Option<f64>,
    /// Each one's failure as NetworkManager logged it.
    pub reasons: Vec<String>,
}

/// The activations of a profile on `iface` that NetworkManager started after
/// `since` (seconds since the epoch) and gave up on before IP configuration
/// (from `prepare`, `config` or `need-auth`: the device's association and key
/// handshake, where the companion does nothing), from NetworkManager's log.
/// A failure in IP configuration, where the companion's `link-up` and carried
/// lease act, is not one.
pub fn failed_associations_since(nm_log: &str, iface: &str, since: f64) -> FailedAssociations {
    let (starting, state) = (format!("device ({iface}): Activation: starting connection"), format!("device ({iface}): state change: "));
    let mut failed = FailedAssociations::default();
    // The activation under way, and the failed one (its start and failure)
    // no activation has followed yet.
    let (mut started, mut unanswered) = (None, None);
    for line in nm_log.lines() {
        let Some(stamp) = log_stamp(line).filter(|&s| s >= since) else { continue };
        if line.contains(&starting) {
            if let Some((start, _)) = unanswered.take() {
                failed.lasted += stamp_span(stamp - start);
                failed.retried_at = Some(stamp);
            }
            started = Some(stamp);
            continue;
        }
        let Some((_, change)) = line.split_once(&state) else { continue };
        let associating = ["prepare", "config", "need-auth"].iter().any(|from| change.starts_with(&format!("{from} -> failed ")));
        if let Some(start) = started.filter(|_| associating) {
            started = None;
            failed.count += 1;
            failed.reasons.push(change.to_owned());
            unanswered = Some((start, stamp));
        }
    }
    if let Some((start, failure)) = unanswered {
        failed.lasted += stamp_span(failure - start);
    }
    failed
}

/// The link of this network namespace with the MAC `mac`.
fn link_with_mac(mac: &str) -> Option<String> {
    let out = run(&["ip", "-o", "link", "show"]).ok()?;
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        let words: Vec<&str> = l.split_whitespace().collect();
        let at = words.iter().position(|w| *w == "link/ether")?;
        (words.get(at + 1)? == &mac).then(|| words.get(1)?.trim_end_matches(':').split('@').next().map(str::to_owned))?
    })
}

static CABLE_SEQ: AtomicU32 = AtomicU32::new(0);

/// Asks the VM's host for a NIC's cable (see `vm.rs`, `cable_agent`) and
/// waits until QEMU has done it.
fn set_vm_cable(dir: &Path, nic: &super::vm::VmNic, plugged: bool) {
    let request = format!("{} {} {}", CABLE_SEQ.fetch_add(1, Ordering::SeqCst), nic.qemu_id, if plugged { "on" } else { "off" });
    let tmp = dir.join("cable-request.tmp");
    fs::write(&tmp, &request).and_then(|()| fs::rename(&tmp, dir.join("cable-request"))).expect("ask the VM's host for the cable");
    let deadline = Instant::now() + Duration::from_secs(10);
    while fs::read_to_string(dir.join("cable-done")).unwrap_or_default().trim() != request {
        assert!(Instant::now() < deadline, "the VM's host did not set the cable ({request}) within 10 s");
        sleep(Duration::from_millis(10));
    }
}

/// The mac80211_hwsim radios in this network namespace, in order.
fn radios() -> Vec<String> {
    let mut phys: Vec<String> =
        fs::read_dir("/sys/class/ieee80211").map(|dir| dir.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()).unwrap_or_default();
    phys.sort();
    phys
}

fn which(tool: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/bin"].iter().map(|d| Path::new(d).join(tool)).find(|p| p.exists())
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut nm) = self.nm.take() {
            stop_child(&mut nm, Duration::from_secs(5));
        }
        self.stop_dhcp_server();
        for proc in self.procs.iter_mut().rev() {
            let _ = proc.what;
            stop_child(&mut proc.child, Duration::from_secs(2));
        }
        if let Some(mut anchor) = self.anchor.take() {
            stop_child(&mut anchor, Duration::from_secs(2));
        }
        // nm-dispatcher, dhclient and anything else started inside the lab.
        for ns in [&self.host, &self.lan] {
            if let Ok(out) = run(&["ip", "netns", "pids", ns]) {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    if let Ok(pid) = pid.parse::<i32>() {
                        // SAFETY: these processes live in our lab's namespace.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
            }
            let _ = run(&["ip", "netns", "del", ns]);
        }
        // The Wi-Fi VM's /tmp vanishes with it: its runner names a shared directory for the logs.
        if let Some(keep) = std::env::var_os("NM_HANDOVER_LAB_LOGS") {
            let to = Path::new(&keep).join(&self.name);
            if fs::create_dir_all(&to).is_ok() {
                for entry in fs::read_dir(&self.dir).into_iter().flatten().flatten() {
                    if entry.file_name().to_string_lossy().ends_with(".log") {
                        let _ = fs::copy(entry.path(), to.join(entry.file_name()));
                    }
                }
            }
        }
        if std::env::var_os("NM_HANDOVER_KEEP_LAB").is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dispatcher_requests_across_an_nm_restart() {
        let log = "\
<debug> [1.0] dispatcher: (1) (wired0) dispatching action 'down'
<debug> [1.1] dispatcher: (2) dispatching action 'connectivity-change'
<debug> [1.2] dispatcher: (1) succeeded (after 0.032 sec, 1 scripts invoked)
<debug> [1.3] dispatcher: (2) failed (after 1.500 sec): timed out
<info>  [2.0] NetworkManager (version 1.42.4) is starting...
<debug> [2.1] dispatcher: (1) (wired0) dispatching action 'link-up' (with callback)
<debug> [2.2] dispatcher: (1) succeeded (after 0.004 sec, 0 scripts invoked)
<debug> [2.3] dispatcher: (2) (backup0) dispatching action 'up'
";
        let r = parse_dispatcher_requests(log);
        assert_eq!(r.len(), 4);
        assert_eq!((r[0].iface.as_deref(), r[0].action.as_str()), (Some("wired0"), "down"));
        assert_eq!(r[0].outcome.as_ref().unwrap().took, Duration::from_millis(32));
        assert_eq!(r[1].iface, None);
        let failed = r[1].outcome.as_ref().unwrap();
        assert!(!failed.succeeded && failed.detail == "timed out", "{failed:?}");
        assert_eq!(r[2].action, "link-up");
        assert_eq!(r[2].outcome.as_ref().unwrap().detail, "0 scripts invoked)");
        assert_eq!(r[3].outcome, None);
    }

    #[test]
    fn counts_the_supplicants_scans_after_a_moment() {
        let log = "\
<info>  [10.0] device (wlan0): supplicant interface state: disconnected -> scanning
<info>  [12.0] device (wlan0): supplicant interface state: scanning -> disconnected
<info>  [20.0] device (wlan0): supplicant interface state: interface_disabled -> inactive
<info>  [21.0] device (wlan0): supplicant interface state: inactive -> scanning
<info>  [21.1] device (p2p-dev-wlan0): supplicant management interface state: inactive -> scanning
<info>  [24.5] device (wlan0): supplicant interface state: scanning -> authenticating
<info>  [24.6] device (wlan1): supplicant interface state: inactive -> scanning
<info>  [25.0] device (wlan0): supplicant interface state: authenticating -> associating
[26.0]  INFO wired carrier lost: hand over to the backup link
";
        assert_eq!(supplicant_scanning_since(log, "wlan0", 15.0), Duration::from_millis(3500));
        assert_eq!(supplicant_scanning_since(log, "wlan0", 5.0), Duration::from_millis(5500));
        assert_eq!(supplicant_scanning_since(log, "wlan0", 25.0), Duration::ZERO);
        assert_eq!(supplicant_scanning_since(log, "wlan1", 0.0), Duration::ZERO, "a scan that has not ended yet");
        assert_eq!(logged_at(log, "wired carrier lost"), Some(26.0));
        assert_eq!(logged_at(log, "authenticating"), Some(24.5));
    }

    #[test]
    fn counts_the_associations_given_up_on_after_a_moment() {
        let log = "\
<info>  [10.0] device (wlan0): Activation: starting connection 'Office Wi-Fi' (f109edd3)
<info>  [12.0] device (wlan0): state change: config -> failed (reason 'no-secrets', sys-iface-state: 'managed')
<info>  [20.0] device (wlan0): Activation: starting connection 'Office Wi-Fi' (f109edd3)
<info>  [20.5] device (wired0): state change: activated -> failed (reason 'carrier-changed', sys-iface-state: 'managed')
<info>  [29.0] device (wlan0): state change: need-auth -> failed (reason 'no-secrets', sys-iface-state: 'managed')
<info>  [29.1] device (wlan0): state change: failed -> disconnected (reason 'none', sys-iface-state: 'managed')
<info>  [30.0] device (wlan0): Activation: starting connection 'Office Wi-Fi' (f109edd3)
<info>  [34.0] device (wlan0): state change: ip-config -> failed (reason 'ip-config-unavailable', sys-iface-state: 'managed')
<info>  [40.0] device (wlan0): Activation: starting connection 'Office Wi-Fi' (f109edd3)
<info>  [42.0] device (wlan0): state change: ip-check -> secondaries (reason 'none', sys-iface-state: 'managed')
";
        let after_15 = failed_associations_since(log, "wlan0", 15.0);
        assert_eq!((after_15.count, after_15.lasted, after_15.retried_at), (1, Duration::from_secs(10), Some(30.0)), "until the next activation");
        assert!(after_15.reasons[0].contains("'no-secrets'"), "{after_15:?}");
        let all = failed_associations_since(log, "wlan0", 0.0);
        assert_eq!((all.count, all.lasted), (2, Duration::from_secs(20)));
        let cut = log.lines().take(5).collect::<Vec<_>>().join("\n");
        let until_failure = failed_associations_since(&cut, "wlan0", 15.0);
        assert_eq!((until_failure.count, until_failure.lasted, until_failure.retried_at), (1, Duration::from_secs(9), None), "no activation since");
        assert_eq!(failed_associations_since(log, "wlan0", 29.5), FailedAssociations::default(), "a failure in IP configuration is not one");
        assert_eq!(failed_associations_since(log, "wired0", 0.0), FailedAssociations::default());
    }

    #[test]
    fn reads_only_a_stamp_that_opens_the_line() {
        assert_eq!(log_stamp("<info>  [1796560686.6880] device (wlan0): x"), Some(1796560686.688));
        assert_eq!(log_stamp("[1796560163.7259]  INFO wired carrier lost"), Some(1796560163.7259));
        assert_eq!(log_stamp("<debug> [1.5] device[3f62c7cc29fd8188] (wlan0): y"), Some(1.5));
        assert_eq!(log_stamp("Error: [3] x"), None);
        assert_eq!(log_stamp("[nan] x"), None);
        assert_eq!(log_stamp("[inf] x"), None);
        assert_eq!(log_stamp("nm-handover: down: the supervisor"), None);
        assert_eq!(stamp_span(-1.0), Duration::ZERO, "a clock that stepped back");
    }
}
