//! NM's DHCP lease files, and carrying a lease from one link's file to the
//! other's so that the next DHCP client started there asks for the same
//! address (INIT-REBOOT) instead of starting over with a DISCOVER.
//!
//! Two formats live in NM's state directory (`/var/lib/NetworkManager`):
//! - internal client (`internal-<uuid>-<iface>.lease`): a comment line and
//!   `ADDRESS=<ipv4>`;
//! - dhclient (`dhclient-<uuid>-<iface>.lease`): ISC `lease { ... }` blocks,
//!   the last one for the interface wins.
//!
//! Files are replaced atomically (a new file in the same directory, then
//! rename) keeping the old file's owner and mode, and never through a
//! symlink.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::names::{Iface, Uuid};
use crate::sys::paths::NM_STATE_DIR;

/// Lease files larger than this are not NM's and are refused.
const MAX_LEASE_FILE: u64 = 256 * 1024;

const INTERNAL_HEADER: &str = "# This is private data. Do not parse.";

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{0}: refusing to follow a symbolic link")]
    Symlink(PathBuf),
    #[error("{0}: not a regular file")]
    NotRegular(PathBuf),
    #[error("{0}: larger than any lease file NM writes")]
    TooLarge(PathBuf),
    #[error("{path}: malformed lease: {reason}")]
    Malformed { path: PathBuf, reason: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseFormat {
    Internal,
    Dhclient,
}

impl LeaseFormat {
    fn prefix(self) -> &'static str {
        match self {
            LeaseFormat::Internal => "internal",
            LeaseFormat::Dhclient => "dhclient",
        }
    }
}

/// One link's lease identity: the profile that holds it on which interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseOwner {
    pub uuid: Uuid,
    pub iface: Iface,
}

/// A parsed lease, reduced to what carrying needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lease {
    Internal {
        address: Ipv4Addr,
    },
    /// The body lines of the last `lease { }` block, verbatim, and its address.
    Dhclient {
        address: Ipv4Addr,
        body: Vec<String>,
    },
}

impl Lease {
    pub fn address(&self) -> Ipv4Addr {
        match self {
            Lease::Internal { address } | Lease::Dhclient { address, .. } => *address,
        }
    }

    pub fn format(&self) -> LeaseFormat {
        match self {
            Lease::Internal { .. } => LeaseFormat::Internal,
            Lease::Dhclient { .. } => LeaseFormat::Dhclient,
        }
    }

    /// The file content for `iface`. A dhclient lease names its interface,
    /// and dhclient ignores leases recorded for another one.
    pub fn render_for(&self, iface: &Iface) -> String {
        match self {
            Lease::Internal { address } => format!("{INTERNAL_HEADER}\nADDRESS={address}\n"),
            Lease::Dhclient { body, .. } => {
                let mut out = String::from("lease {\n");
                out.push_str(&format!("  interface \"{iface}\";\n"));
                for line in body.iter().filter(|l| !is_interface_line(l)) {
                    out.push_str("  ");
                    out.push_str(line);
                    out.push('\n');
                }
                out.push_str("}\n");
                out
            }
        }
    }
}

fn is_interface_line(line: &str) -> bool {
    line.split_whitespace().next() == Some("interface")
}

/// Parses an internal-client lease file.
pub fn parse_internal(text: &str) -> Result<Ipv4Addr, String> {
    let mut address = None;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!("unexpected line {line:?}"));
        };
        if key.trim() == "ADDRESS" {
            let parsed = value.trim().parse().map_err(|_| format!("bad address {value:?}"))?;
            address = Some(parsed);
        }
    }
    address.ok_or_else(|| "no ADDRESS".to_owned())
}

/// Parses a dhclient lease file: the last `lease { }` block with a
/// `fixed-address` counts. Returns its address and body lines.
pub fn parse_dhclient(text: &str) -> Result<(Ipv4Addr, Vec<String>), String> {
    let mut last = None;
    let mut current: Option<Vec<String>> = None;
    for raw in text.lines() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match &mut current {
            None if line == "lease {" || line == "lease{" => current = Some(Vec::new()),
            None if line.starts_with("default-duid") => {}
            None => return Err(format!("unexpected line outside a lease block: {line:?}")),
            Some(body) if line == "}" => {
                let body = std::mem::take(body);
                current = None;
                if let Some(address) = dhclient_fixed_address(&body)? {
                    last = Some((address, body));
                }
            }
            Some(body) => {
                if !line.ends_with(';') || line.contains('{') || line.contains('}') {
                    return Err(format!("unexpected line in a lease block: {line:?}"));
                }
                body.push(line.to_owned());
            }
        }
    }
    if current.is_some() {
        return Err("unterminated lease block".to_owned());
    }
    last.ok_or_else(|| "no lease with a fixed-address".to_owned())
}

fn dhclient_fixed_address(body: &[String]) -> Result<Option<Ipv4Addr>, String> {
    for line in body {
        let mut words = line.trim_end_matches(';').split_whitespace();
        if words.next() == Some("fixed-address") {
            let value = words.next().unwrap_or_default();
            return value.parse().map(Some).map_err(|_| format!("bad fixed-address {value:?}"));
        }
    }
    Ok(None)
}

/// What `LeaseStore::carry` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CarryOutcome {
    Written { path: PathBuf, address: Ipv4Addr },
    AlreadyCurrent { path: PathBuf, address: Ipv4Addr },
    NoSourceLease,
}

/// NM's lease directory.
#[derive(Debug, Clone)]
pub struct LeaseStore {
    dir: PathBuf,
}

impl Default for LeaseStore {
    fn default() -> Self {
        LeaseStore::new(NM_STATE_DIR)
    }
}

impl LeaseStore {
    pub fn new(dir: impl Into<PathBuf>) -> LeaseStore {
        LeaseStore { dir: dir.into() }
    }

    pub fn path(&self, format: LeaseFormat, owner: &LeaseOwner) -> PathBuf {
        self.dir.join(format!("{}-{}-{}.lease", format.prefix(), owner.uuid, owner.iface))
    }

    /// Reads `owner`'s lease in `format`; `Ok(None)` when there is no file.
    pub fn read(&self, format: LeaseFormat, owner: &LeaseOwner) -> Result<Option<Lease>, LeaseError> {
        let path = self.path(format, owner);
        let Some(text) = read_regular_file(&path)? else {
            return Ok(None);
        };
        let malformed = |reason| LeaseError::Malformed { path: path.clone(), reason };
        Ok(Some(match format {
            LeaseFormat::Internal => Lease::Internal { address: parse_internal(&text).map_err(malformed)? },
            LeaseFormat::Dhclient => {
                let (address, body) = parse_dhclient(&text).map_err(malformed)?;
                Lease::Dhclient { address, body }
            }
        }))
    }

    /// `owner`'s most recently written lease, in whichever format exists.
    pub fn newest(&self, owner: &LeaseOwner) -> Result<Option<Lease>, LeaseError> {
        let mut found: Option<(std::time::SystemTime, LeaseFormat)> = None;
        for format in [LeaseFormat::Internal, LeaseFormat::Dhclient] {
            if let Ok(meta) = fs::symlink_metadata(self.path(format, owner)) {
                let mtime = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
                if found.is_none_or(|(t, _)| mtime > t) {
                    found = Some((mtime, format));
                }
            }
        }
        match found {
            Some((_, format)) => self.read(format, owner),
            None => Ok(None),
        }
    }

    /// Writes `from`'s newest lease into `to`'s lease file of the same format.
    pub fn carry(&self, from: &LeaseOwner, to: &LeaseOwner) -> Result<CarryOutcome, LeaseError> {
        let Some(lease) = self.newest(from)? else {
            return Ok(CarryOutcome::NoSourceLease);
        };
        self.store(&lease, to)
    }

    /// Makes `to`'s lease file (in `lease`'s format) hold `lease`.
    pub fn store(&self, lease: &Lease, to: &LeaseOwner) -> Result<CarryOutcome, LeaseError> {
        let path = self.path(lease.format(), to);
        let content = lease.render_for(&to.iface);
        if read_regular_file(&path)?.as_deref() == Some(content.as_str()) {
            return Ok(CarryOutcome::AlreadyCurrent { path, address: lease.address() });
        }
        write_atomically(&path, content.as_bytes())?;
        Ok(CarryOutcome::Written { path, address: lease.address() })
    }
}

/// Reads a regular file that is not a symlink; `Ok(None)` if absent.
fn read_regular_file(path: &Path) -> Result<Option<String>, LeaseError> {
    let io_err = |source| LeaseError::Io { path: path.to_owned(), source };
    let file = match OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(LeaseError::Symlink(path.to_owned())),
        Err(e) => return Err(io_err(e)),
    };
    let meta = file.metadata().map_err(io_err)?;
    if !meta.is_file() {
        return Err(LeaseError::NotRegular(path.to_owned()));
    }
    if meta.len() > MAX_LEASE_FILE {
        return Err(LeaseError::TooLarge(path.to_owned()));
    }
    let mut bytes = Vec::new();
    file.take(MAX_LEASE_FILE + 1).read_to_end(&mut bytes).map_err(io_err)?;
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

/// Replaces `path` with `content` so that a reader (or a crash) sees either
/// the old or the new complete file. The new file gets the old one's owner
/// and mode (0644 root when there was none); a symlink at `path` is refused.
pub fn write_atomically(path: &Path, content: &[u8]) -> Result<(), LeaseError> {
    let io_err = |p: &Path, source| LeaseError::Io { path: p.to_owned(), source };
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| LeaseError::NotRegular(path.to_owned()))?;

    let previous = match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => return Err(LeaseError::Symlink(path.to_owned())),
        Ok(meta) if !meta.is_file() => return Err(LeaseError::NotRegular(path.to_owned())),
        Ok(meta) => Some(meta),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_err(path, e)),
    };
    let mode = previous.as_ref().map_or(0o644, |m| m.mode() & 0o7777);

    let tmp_prefix = format!(".{}.nm-handover-", name.to_string_lossy());
    remove_stale_temporaries(dir, &tmp_prefix);
    let tmp = dir.join(format!("{tmp_prefix}{}", std::process::id()));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
            .map_err(|e| io_err(&tmp, e))?;
        file.write_all(content).map_err(|e| io_err(&tmp, e))?;
        if let Some(meta) = &previous {
            std::os::unix::fs::fchown(&file, Some(meta.uid()), Some(meta.gid())).map_err(|e| io_err(&tmp, e))?;
        }
        file.set_permissions(fs::Permissions::from_mode(mode)).map_err(|e| io_err(&tmp, e))?;
        file.sync_all().map_err(|e| io_err(&tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| io_err(path, e))?;
        File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_err(dir, e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Temporary files of writers that were killed before their rename: the
/// process named in the file name no longer exists (or is us: a previous
/// process with our PID).
fn remove_stale_temporaries(dir: &Path, prefix: &str) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(prefix)).and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let alive = pid != std::process::id() && Path::new(&format!("/proc/{pid}")).exists();
        if !alive && entry.file_type().is_ok_and(|t| t.is_file()) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DHCLIENT: &str = r#"default-duid "\000\001\000\001";
lease {
  interface "wired0";
  fixed-address 198.18.0.150;
  option subnet-mask 255.255.255.0;
  option dhcp-lease-time 600;
  option dhcp-message-type 5;
  option dhcp-server-identifier 198.18.0.1;
  renew 3 2026/11/25 00:20:10;
  rebind 3 2026/11/25 00:24:35;
  expire 3 2026/11/25 00:25:50;
}
lease {
  interface "wired0";
  fixed-address 198.18.0.151;
  option dhcp-lease-time 600;
  expire 3 2026/11/25 00:35:50;
}
"#;

    fn owner(uuid: &str, iface: &str) -> LeaseOwner {
        LeaseOwner { uuid: Uuid::parse(uuid).unwrap(), iface: Iface::parse(iface).unwrap() }
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("nm-handover-lease-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    const W: &str = "11111111-1111-4111-8111-111111111111";
    const B: &str = "22222222-2222-4222-8222-222222222222";

    #[test]
    fn stale_temporaries_of_dead_writers_are_removed() {
        let dir = scratch("stale");
        let target = dir.join("internal-x-wired0.lease");
        // PID 0 is never a process; our own PID means a previous process with it.
        let dead = dir.join(".internal-x-wired0.lease.nm-handover-0");
        let ours = dir.join(format!(".internal-x-wired0.lease.nm-handover-{}", std::process::id()));
        let other = dir.join(".other.lease.nm-handover-0");
        for p in [&dead, &ours, &other] {
            fs::write(p, "half").unwrap();
        }
        write_atomically(&target, b"ADDRESS=198.18.0.100\n").unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "ADDRESS=198.18.0.100\n");
        assert!(!dead.exists() && !ours.exists(), "stale temporaries left behind");
        assert!(other.exists(), "another file's temporary was touched");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn internal_roundtrip() {
        let lease = Lease::Internal { address: "198.18.0.150".parse().unwrap() };
        let text = lease.render_for(&Iface::parse("backup0").unwrap());
        assert_eq!(text, "# This is private data. Do not parse.\nADDRESS=198.18.0.150\n");
        assert_eq!(parse_internal(&text).unwrap(), lease.address());
    }

    #[test]
    fn internal_rejects_garbage() {
        assert!(parse_internal("").is_err());
        assert!(parse_internal("ADDRESS=300.1.1.1\n").is_err());
        assert!(parse_internal("garbage\n").is_err());
    }

    #[test]
    fn dhclient_last_block_wins_and_interface_is_rewritten() {
        let (address, body) = parse_dhclient(DHCLIENT).unwrap();
        assert_eq!(address, "198.18.0.151".parse::<Ipv4Addr>().unwrap());
        let lease = Lease::Dhclient { address, body };
        let text = lease.render_for(&Iface::parse("backup0").unwrap());
        assert!(text.contains("interface \"backup0\";"));
        assert!(!text.contains("wired0"));
        assert_eq!(parse_dhclient(&text).unwrap().0, address);
    }

    #[test]
    fn dhclient_rejects_malformed() {
        assert!(parse_dhclient("lease {\n fixed-address 1.2.3.4;\n").is_err());
        assert!(parse_dhclient("lease {\n}\n").is_err());
        assert!(parse_dhclient("rm -rf /\n").is_err());
        assert!(parse_dhclient("lease {\n fixed-address 1.2.3;\n}\n").is_err());
    }

    #[test]
    fn carry_writes_target_and_keeps_mode() {
        let dir = scratch("carry");
        let store = LeaseStore::new(&dir);
        let (w, b) = (owner(W, "wired0"), owner(B, "backup0"));
        assert_eq!(store.carry(&w, &b).unwrap(), CarryOutcome::NoSourceLease);

        fs::write(store.path(LeaseFormat::Internal, &w), "# x\nADDRESS=198.18.0.150\n").unwrap();
        let target = store.path(LeaseFormat::Internal, &b);
        fs::write(&target, "# old\nADDRESS=198.18.0.99\n").unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(0o640)).unwrap();

        match store.carry(&w, &b).unwrap() {
            CarryOutcome::Written { path, address } => {
                assert_eq!(path, target);
                assert_eq!(address, "198.18.0.150".parse::<Ipv4Addr>().unwrap());
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(parse_internal(&fs::read_to_string(&target).unwrap()).unwrap().to_string(), "198.18.0.150");
        assert_eq!(fs::metadata(&target).unwrap().mode() & 0o777, 0o640);
        assert!(matches!(store.carry(&w, &b).unwrap(), CarryOutcome::AlreadyCurrent { .. }));
        // No temporary files are left behind.
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 2);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn carry_keeps_the_owner() {
        // SAFETY-free check of our own uid: only root can give a file to someone else.
        if fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(1) != 0 {
            assert!(std::env::var_os("CI").is_none(), "carry_keeps_the_owner needs root, and CI runs as root");
            eprintln!("SKIPPED carry_keeps_the_owner: needs root to chown the lease file");
            return;
        }
        let dir = scratch("owner");
        let store = LeaseStore::new(&dir);
        let (w, b) = (owner(W, "wired0"), owner(B, "backup0"));
        fs::write(store.path(LeaseFormat::Internal, &w), "ADDRESS=198.18.0.150\n").unwrap();
        let target = store.path(LeaseFormat::Internal, &b);
        fs::write(&target, "ADDRESS=198.18.0.99\n").unwrap();
        std::os::unix::fs::chown(&target, Some(4321), Some(4322)).unwrap();
        store.carry(&w, &b).unwrap();
        let meta = fs::metadata(&target).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (4321, 4322));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn carry_refuses_symlinked_target() {
        let dir = scratch("symlink");
        let store = LeaseStore::new(&dir);
        let (w, b) = (owner(W, "wired0"), owner(B, "backup0"));
        fs::write(store.path(LeaseFormat::Internal, &w), "ADDRESS=198.18.0.150\n").unwrap();
        let victim = dir.join("victim");
        fs::write(&victim, "precious").unwrap();
        std::os::unix::fs::symlink(&victim, store.path(LeaseFormat::Internal, &b)).unwrap();
        assert!(matches!(store.carry(&w, &b), Err(LeaseError::Symlink(_))));
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn newest_format_wins() {
        let dir = scratch("newest");
        let store = LeaseStore::new(&dir);
        let w = owner(W, "wired0");
        fs::write(store.path(LeaseFormat::Internal, &w), "ADDRESS=198.18.0.150\n").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(store.path(LeaseFormat::Dhclient, &w), DHCLIENT).unwrap();
        assert_eq!(store.newest(&w).unwrap().unwrap().format(), LeaseFormat::Dhclient);
        fs::remove_dir_all(&dir).unwrap();
    }
}
