//! Which pairs root may act on: only those an administrator recorded.
//!
//! nm-dispatcher runs the companion as root for every profile's events, and
//! a profile's `user` data is not an administrator's word: NetworkManager's
//! default polkit policy lets any active local user create private profiles
//! (`connection.permissions`) and Debian's lets users in `sudo` or `netdev`
//! edit system ones, without a password. So a pair is honoured only when a
//! record that only root can write, [`PairRecord`] in [`RECORD_DIR`]
//! (written by `nm-handover pair`, removed by `unpair`), names both profiles
//! and both devices exactly as their user data does, and neither profile is
//! private. And before the companion touches a link, NetworkManager itself
//! must bind that profile to it, manage it, and it must be a kind of link a
//! pair may hold ([`link_refusal`]).
//!
//! The decisions are pure functions; [`read_record`] is the one file read.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::names::{Iface, NameError, Uuid};
use crate::sys::paths::RECORD_DIR;

/// A record is a few lines; anything larger is not one.
const MAX_RECORD: u64 = 4096;

/// The file of the pair whose wired profile is `wired`.
pub fn record_path(dir: &Path, wired: &Uuid) -> PathBuf {
    dir.join(format!("{wired}.pair"))
}

/// [`record_path`] in [`RECORD_DIR`].
pub fn recorded_pair_path(wired: &Uuid) -> PathBuf {
    record_path(Path::new(RECORD_DIR), wired)
}

/// Whether root recorded any pair in `dir` (without judging the records).
pub fn any_pair_recorded(dir: &Path) -> bool {
    fs::read_dir(dir).is_ok_and(|entries| entries.flatten().any(|e| e.file_name().to_string_lossy().ends_with(".pair")))
}

/// What root recorded when it paired two profiles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairRecord {
    pub wired: Uuid,
    pub wired_device: Iface,
    pub backup: Uuid,
    pub backup_device: Iface,
    /// `pair --standby`: the warm standby, which has root change the two
    /// links' addresses and kernel settings, is root's word too, not the
    /// profiles' (see `crate::standby`). A record without the key has none.
    pub standby: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("line {0}: not key=value")]
    NotKeyValue(usize),
    #[error("line {0}: unknown key {1:?}")]
    UnknownKey(usize, String),
    #[error("line {0}: {1} given twice")]
    Repeated(usize, &'static str),
    #[error("{0} is missing")]
    Missing(&'static str),
    #[error("{0}: {1}")]
    BadName(&'static str, NameError),
    #[error("{0}={1:?}: yes or no")]
    BadValue(&'static str, String),
}

impl PairRecord {
    pub fn render(&self) -> String {
        format!(
            "# Written by `nm-handover pair` as root; removed by `nm-handover unpair`.\n\
             # nm-handover acts on a pair only while this file, owned by root, names\n\
             # both profiles and devices exactly as their nm-handover.* user data does.\n\
             wired={}\nwired-device={}\nbackup={}\nbackup-device={}\nstandby={}\n",
            self.wired,
            self.wired_device,
            self.backup,
            self.backup_device,
            if self.standby { "yes" } else { "no" }
        )
    }

    pub fn parse(text: &str) -> Result<PairRecord, RecordError> {
        let mut fields: [(&'static str, Option<&str>); 5] =
            [("wired", None), ("wired-device", None), ("backup", None), ("backup-device", None), ("standby", None)];
        for (number, line) in text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, value) = line.split_once('=').ok_or(RecordError::NotKeyValue(number))?;
            let (key, value) = (key.trim(), value.trim());
            let field = fields.iter_mut().find(|(name, _)| *name == key).ok_or_else(|| RecordError::UnknownKey(number, key.to_owned()))?;
            if field.1.replace(value).is_some() {
                return Err(RecordError::Repeated(number, field.0));
            }
        }
        let standby = match fields[4].1 {
            None | Some("no") => false,
            Some("yes") => true,
            Some(other) => return Err(RecordError::BadValue("standby", other.to_owned())),
        };
        let [wired, wired_device, backup, backup_device] =
            [fields[0], fields[1], fields[2], fields[3]].map(|(name, value)| value.ok_or(RecordError::Missing(name)).map(|v| (name, v)));
        let uuid = |(name, v): (&'static str, &str)| Uuid::parse(v).map_err(|e| RecordError::BadName(name, e));
        let iface = |(name, v): (&'static str, &str)| Iface::parse(v).map_err(|e| RecordError::BadName(name, e));
        Ok(PairRecord { wired: uuid(wired?)?, wired_device: iface(wired_device?)?, backup: uuid(backup?)?, backup_device: iface(backup_device?)?, standby })
    }
}

/// Why a pair's profiles are not an administrator's pair: the companion
/// logs it as a warning and does nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Distrust {
    /// `connection.permissions` is set: a user's own profile.
    Private {
        profile: String,
    },
    NoRecord {
        path: PathBuf,
    },
    /// The record exists but root did not write it alone, or cannot be read.
    BadRecord {
        path: PathBuf,
        why: String,
    },
    /// The profiles' user data says something the record does not.
    Differs {
        path: PathBuf,
        what: &'static str,
        recorded: String,
        user_data: String,
    },
}

impl fmt::Display for Distrust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Distrust::Private { profile } => write!(
                f,
                "'{profile}' is a private profile (connection.permissions is set), which its user may edit; \
                 pair two system profiles instead"
            ),
            Distrust::NoRecord { path } => write!(f, "no record of this pair written by root ({} is missing)", path.display()),
            Distrust::BadRecord { path, why } => write!(f, "{}: {why}", path.display()),
            Distrust::Differs { path, what, recorded, user_data } => {
                write!(f, "the profiles' user data names {what} {user_data}, root's record {} names {recorded} (edited after `pair`?)", path.display())
            }
        }
    }
}

/// What a pair's profiles claim, as the companion read them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim<'a> {
    pub wired: &'a Uuid,
    pub wired_id: &'a str,
    pub wired_private: bool,
    pub wired_device: &'a Iface,
    pub backup: &'a Uuid,
    pub backup_id: &'a str,
    pub backup_private: bool,
    pub backup_device: &'a Iface,
}

/// Whether root may act on the pair the profiles claim, given what
/// [`read_record`] found.
pub fn judge(claim: &Claim, record: &Result<Option<PairRecord>, Distrust>, path: &Path) -> Result<(), Distrust> {
    for (private, id) in [(claim.wired_private, claim.wired_id), (claim.backup_private, claim.backup_id)] {
        if private {
            return Err(Distrust::Private { profile: id.to_owned() });
        }
    }
    let record = match record {
        Ok(Some(record)) => record,
        Ok(None) => return Err(Distrust::NoRecord { path: path.to_owned() }),
        Err(distrust) => return Err(distrust.clone()),
    };
    let differs = |what, recorded: &dyn fmt::Display, user_data: &dyn fmt::Display| {
        Err(Distrust::Differs { path: path.to_owned(), what, recorded: recorded.to_string(), user_data: user_data.to_string() })
    };
    if &record.wired != claim.wired {
        differs("the wired profile", &record.wired, claim.wired)
    } else if &record.backup != claim.backup {
        differs("the backup profile", &record.backup, claim.backup)
    } else if &record.wired_device != claim.wired_device {
        differs("the wired device", &record.wired_device, claim.wired_device)
    } else if &record.backup_device != claim.backup_device {
        differs("the backup device", &record.backup_device, claim.backup_device)
    } else {
        Ok(())
    }
}

/// Why `meta` (of `path`) is not something only root could have written.
fn writable_by_others(path: &Path, meta: &fs::Metadata) -> Option<String> {
    if meta.uid() != 0 {
        Some(format!("{} is owned by uid {}, not root", path.display(), meta.uid()))
    } else if meta.mode() & 0o022 != 0 {
        Some(format!("{} is writable by group or others (mode {:o})", path.display(), meta.mode() & 0o7777))
    } else {
        None
    }
}

/// Reads the record of the pair whose wired profile is `wired`: `Ok(None)`
/// when there is none. A record counts only when root alone could have
/// written it: a regular file (not a link) owned by root and writable by
/// nobody else, in directories of which the same holds up to `/`.
pub fn read_record(dir: &Path, wired: &Uuid) -> Result<Option<PairRecord>, Distrust> {
    let path = record_path(dir, wired);
    let bad = |why: String| Distrust::BadRecord { path: path.clone(), why };
    let file = match OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK).open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(bad("a symbolic link; only a file root wrote counts".into())),
        Err(e) => return Err(bad(e.to_string())),
    };
    let meta = file.metadata().map_err(|e| bad(e.to_string()))?;
    if !meta.is_file() {
        return Err(bad("not a regular file".into()));
    }
    if let Some(why) = writable_by_others(&path, &meta) {
        return Err(bad(why));
    }
    for ancestor in dir.ancestors() {
        let meta = fs::metadata(ancestor).map_err(|e| bad(format!("{}: {e}", ancestor.display())))?;
        if let Some(why) = writable_by_others(ancestor, &meta) {
            return Err(bad(why));
        }
    }
    let mut text = String::new();
    (&file as &File).take(MAX_RECORD + 1).read_to_string(&mut text).map_err(|e| bad(e.to_string()))?;
    if text.len() as u64 > MAX_RECORD {
        return Err(bad(format!("larger than {MAX_RECORD} bytes")));
    }
    PairRecord::parse(&text).map(Some).map_err(|e| bad(e.to_string()))
}

/// The kinds of link a pair may hold, as NetworkManager types its devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkKind {
    /// `ethernet` (a NIC, a dock's or USB adapter's included).
    Ethernet,
    /// `veth`: the lab's stand-in for a cable (Ethernet to NM and the kernel).
    Veth,
    Wifi,
    /// Anything else (loopback, tun, bridge, bond, VLAN, WireGuard, ...), by NM's type name.
    Other(String),
}

/// What NetworkManager says about a link the companion is about to act on,
/// for the profile it acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkFacts {
    /// NM knows a device of that name.
    pub exists: bool,
    pub managed: bool,
    pub kind: LinkKind,
    /// The profile is active on this device.
    pub active_here: bool,
    /// NM lists the profile among the device's available connections.
    pub available: bool,
    /// libnm's `nm_device_connection_compatible()` accepts the profile on the
    /// device (NM's own interface-name and MAC checks): the binding of a
    /// device without carrier, whose available connections NM empties.
    pub compatible: bool,
}

/// Why the companion must not act on a link, if it must not.
pub fn link_refusal(facts: &LinkFacts) -> Option<String> {
    if !facts.exists {
        return Some("NetworkManager has no such device".into());
    }
    if !facts.managed {
        return Some("NetworkManager does not manage it".into());
    }
    if let LinkKind::Other(kind) = &facts.kind {
        return Some(format!("it is a {kind} device; a pair holds only Ethernet, veth or Wi-Fi devices"));
    }
    if !(facts.active_here || facts.available || facts.compatible) {
        return Some("NetworkManager does not bind the profile to it (not active there, not among its available connections)".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: &str = "11111111-1111-4111-8111-111111111111";
    const B: &str = "22222222-2222-4222-8222-222222222222";

    fn record() -> PairRecord {
        PairRecord {
            wired: Uuid::parse(W).unwrap(),
            wired_device: Iface::parse("wired0").unwrap(),
            backup: Uuid::parse(B).unwrap(),
            backup_device: Iface::parse("backup0").unwrap(),
            standby: false,
        }
    }

    #[test]
    fn a_record_reads_back_as_written() {
        assert_eq!(PairRecord::parse(&record().render()), Ok(record()));
        let standby = PairRecord { standby: true, ..record() };
        assert_eq!(PairRecord::parse(&standby.render()), Ok(standby));
        // A record written before the key existed: no standby.
        assert_eq!(PairRecord::parse(&record().render().replace("standby=no\n", "")), Ok(record()));
    }

    #[test]
    fn a_malformed_record_is_refused_with_the_line() {
        let text = record().render();
        assert_eq!(PairRecord::parse(&text.replace("backup-device=backup0\n", "")), Err(RecordError::Missing("backup-device")));
        assert_eq!(PairRecord::parse(&format!("{text}wired=x\n")), Err(RecordError::Repeated(9, "wired")));
        assert!(matches!(PairRecord::parse(&format!("{text}device=lo\n")), Err(RecordError::UnknownKey(9, _))));
        assert!(matches!(PairRecord::parse(&format!("{text}oops\n")), Err(RecordError::NotKeyValue(9))));
        assert_eq!(PairRecord::parse(&text.replace("standby=no", "standby=maybe")), Err(RecordError::BadValue("standby", "maybe".into())));
        assert!(matches!(PairRecord::parse(&text.replace("backup0", "../../x")), Err(RecordError::BadName("backup-device", _))));
        assert!(matches!(PairRecord::parse(&text.replace(B, "not-a-uuid")), Err(RecordError::BadName("backup", _))));
    }

    fn claim<'a>(w: &'a Uuid, wd: &'a Iface, b: &'a Uuid, bd: &'a Iface) -> Claim<'a> {
        Claim { wired: w, wired_id: "Wired", wired_private: false, wired_device: wd, backup: b, backup_id: "Backup", backup_private: false, backup_device: bd }
    }

    #[test]
    fn only_a_pair_root_recorded_exactly_is_trusted() {
        let r = record();
        let path = Path::new("/x.pair");
        let ok = Ok(Some(r.clone()));
        let base = claim(&r.wired, &r.wired_device, &r.backup, &r.backup_device);
        assert_eq!(judge(&base, &ok, path), Ok(()));
        assert_eq!(judge(&base, &Ok(None), path), Err(Distrust::NoRecord { path: path.into() }));
        let bad = Err(Distrust::BadRecord { path: path.into(), why: "x".into() });
        assert_eq!(judge(&base, &bad, path), bad.map(|_| ()));
        // Each field the user data could be edited in.
        let (other_uuid, lo) = (Uuid::parse("33333333-3333-4333-8333-333333333333").unwrap(), Iface::parse("lo").unwrap());
        for (c, what) in [
            (claim(&other_uuid, &r.wired_device, &r.backup, &r.backup_device), "the wired profile"),
            (claim(&r.wired, &r.wired_device, &other_uuid, &r.backup_device), "the backup profile"),
            (claim(&r.wired, &lo, &r.backup, &r.backup_device), "the wired device"),
            (claim(&r.wired, &r.wired_device, &r.backup, &lo), "the backup device"),
        ] {
            assert!(matches!(judge(&c, &ok, path), Err(Distrust::Differs { what: w, .. }) if w == what), "{what}");
        }
        // A private profile is refused even with a record.
        for (wired_private, backup_private, id) in [(true, false, "Wired"), (false, true, "Backup")] {
            let c = Claim { wired_private, backup_private, ..base.clone() };
            assert_eq!(judge(&c, &ok, path), Err(Distrust::Private { profile: id.into() }));
        }
    }

    #[test]
    fn link_checks() {
        let good = LinkFacts { exists: true, managed: true, kind: LinkKind::Ethernet, active_here: true, available: false, compatible: false };
        assert_eq!(link_refusal(&good), None);
        for kind in [LinkKind::Veth, LinkKind::Wifi] {
            assert_eq!(link_refusal(&LinkFacts { kind, ..good.clone() }), None);
        }
        for bound in [(false, true, false), (false, false, true)] {
            let (active_here, available, compatible) = bound;
            assert_eq!(link_refusal(&LinkFacts { active_here, available, compatible, ..good.clone() }), None, "{bound:?}");
        }
        let refused = |facts: LinkFacts, says: &str| {
            let why = link_refusal(&facts).unwrap_or_default();
            assert!(why.contains(says), "{facts:?}: {why:?}");
        };
        refused(LinkFacts { active_here: false, ..good.clone() }, "does not bind");
        refused(LinkFacts { managed: false, ..good.clone() }, "does not manage");
        refused(LinkFacts { exists: false, ..good.clone() }, "no such device");
        // Every combination: a refusal unless it exists, is managed, of an allowed kind and bound.
        for bits in 0..64u32 {
            let bit = |n: u32| bits & (1 << n) != 0;
            let kind = if bit(5) { LinkKind::Other("bridge".into()) } else { LinkKind::Veth };
            let facts = LinkFacts { exists: bit(0), managed: bit(1), active_here: bit(2), available: bit(3), compatible: bit(4), kind };
            let allowed = bit(0) && bit(1) && !bit(5) && (bit(2) || bit(3) || bit(4));
            assert_eq!(link_refusal(&facts).is_none(), allowed, "{facts:?}");
        }
        for kind in ["loopback", "tun", "bridge", "bond", "vlan", "wireguard", "macvlan"] {
            refused(LinkFacts { kind: LinkKind::Other(kind.into()), ..good.clone() }, kind);
        }
    }

    /// The process's effective uid (the owner of its /proc entry).
    fn euid() -> u32 {
        fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(u32::MAX)
    }

    fn scratch_dir(base: &Path, name: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let dir = base.join(format!("nmh-trust-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        dir
    }

    #[test]
    fn a_record_counts_only_when_root_alone_wrote_it() {
        use std::os::unix::fs::{symlink, PermissionsExt};
        let wired = Uuid::parse(W).unwrap();
        // Under the build tree: root-owned and not world-writable up to `/` where the tests run as root.
        let dir = scratch_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("target").as_path(), "record");
        let path = record_path(&dir, &wired);
        assert_eq!(read_record(&dir, &wired), Ok(None));
        fs::write(&path, record().render()).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let root_tree = dir.ancestors().all(|a| fs::metadata(a).is_ok_and(|m| m.uid() == 0 && m.mode() & 0o022 == 0));
        if root_tree {
            assert_eq!(read_record(&dir, &wired), Ok(Some(record())));
        } else {
            eprintln!("trust: {} is not root's alone (euid {}): the accepted case is not checked here", dir.display(), euid());
            assert!(matches!(read_record(&dir, &wired), Err(Distrust::BadRecord { .. })));
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o664)).unwrap();
        assert!(
            matches!(read_record(&dir, &wired), Err(Distrust::BadRecord { why, .. }) if why.contains("writable by group or others") || why.contains("not root"))
        );
        fs::remove_file(&path).unwrap();
        // A link planted where the record goes, to a file that would pass.
        let planted = dir.join("planted");
        fs::write(&planted, record().render()).unwrap();
        fs::set_permissions(&planted, fs::Permissions::from_mode(0o644)).unwrap();
        symlink(&planted, &path).unwrap();
        assert!(matches!(read_record(&dir, &wired), Err(Distrust::BadRecord { why, .. }) if why.contains("symbolic link")));
        let _ = fs::remove_dir_all(&dir);

        // A directory anyone may write to (/tmp, sticky or not) holds no record.
        let open = scratch_dir(&std::env::temp_dir(), "open");
        fs::write(record_path(&open, &wired), record().render()).unwrap();
        fs::set_permissions(record_path(&open, &wired), fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_record(&open, &wired).unwrap_err();
        assert!(matches!(&err, Distrust::BadRecord { why, .. } if why.contains("writable by group or others") || why.contains("not root")), "{err}");
        let _ = fs::remove_dir_all(&open);
    }
}
