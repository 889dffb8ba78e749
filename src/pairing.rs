//! How a pair is recorded in NetworkManager's own profiles (their `user`
//! setting), and the pure planning of `pair` / `unpair`.
//!
//! Wired profile: `nm-handover.role=wired`, `nm-handover.peer=<backup uuid>`,
//! `nm-handover.device=<wired iface>`. Backup profile: `role=backup`,
//! `peer=<wired uuid>`, `device=<backup iface>`, and the values `pair`
//! replaced (`nm-handover.saved-*`), so `unpair` can put them back.

use std::collections::BTreeMap;

use crate::names::{Iface, NameError, Uuid};
use crate::policy::{Options, Role};
use crate::sys::settings::{ProfileEdit, PropertyChange, PropertyValue};

pub const KEY_ROLE: &str = "nm-handover.role";
pub const KEY_PEER: &str = "nm-handover.peer";
pub const KEY_DEVICE: &str = "nm-handover.device";
/// On the wired profile: `no` turns lease carrying off for the pair.
pub const KEY_LEASE_CARRY: &str = "nm-handover.lease-carry";
/// On the wired profile: `no` starts no carrier watcher (stock NM) for the pair.
pub const KEY_CARRIER_WATCH: &str = "nm-handover.carrier-watch";
/// The pairing keys themselves, and the saved keys of [`MIRRORED`].
fn all_keys() -> impl Iterator<Item = &'static str> {
    [KEY_ROLE, KEY_PEER, KEY_DEVICE, KEY_LEASE_CARRY, KEY_CARRIER_WATCH].into_iter().chain(MIRRORED.iter().map(|m| m.saved_key))
}

/// How a mirrored setting's value before pairing is kept in user data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SavedAs {
    /// `unset`, or `value:` and the value as text.
    Value,
    /// `yes` or `no`.
    YesNo,
}

/// A backup setting `pair` replaces (with the wired link's identity, or a
/// value of its own) and `unpair` puts back, from the value it had before the
/// first pairing, kept under `saved_key` in the backup's user data. The one
/// list of them: reading a profile, `pair`'s and `unpair`'s plans, the
/// pairing keys and the unit tests all walk [`MIRRORED`]. (The hostname
/// settings, copied from the wired profile as they are, are
/// [`HOSTNAME_PROPERTIES`], saved under [`saved_key`].)
pub struct Mirrored {
    /// `None`: the MAC setting of the profile's type.
    setting: Option<&'static str>,
    pub property: &'static str,
    saved_key: &'static str,
    saved_as: SavedAs,
    /// The value in a snapshot, and setting it (`commands::snapshot` reads a profile so).
    pub get: fn(&ProfileSnapshot) -> PropertyValue,
    pub set: fn(&mut ProfileSnapshot, PropertyValue),
    show: fn(&PropertyValue) -> String,
}

impl Mirrored {
    /// The setting it lives in for a profile of this type.
    pub fn setting_for(&self, kind: &str) -> &'static str {
        self.setting.unwrap_or_else(|| mac_setting_of(kind))
    }

    fn encode(&self, v: &PropertyValue) -> String {
        match (self.saved_as, v) {
            (SavedAs::YesNo, PropertyValue::Bool(b)) => if *b { "yes" } else { "no" }.to_owned(),
            _ => encode_saved_value(v),
        }
    }

    /// A saved value read back; `None` when it is not one (someone edited the user data).
    fn decode(&self, like: &PropertyValue, saved: &str) -> Option<PropertyValue> {
        match self.saved_as {
            SavedAs::YesNo => Some(PropertyValue::Bool(saved == "yes")),
            SavedAs::Value => decode_saved_value(like, saved),
        }
    }
}

fn str_of(v: PropertyValue) -> Option<String> {
    match v {
        PropertyValue::Str(s) => s,
        _ => None,
    }
}

fn i32_of(v: PropertyValue) -> Option<i32> {
    match v {
        PropertyValue::I32(n) => n,
        _ => None,
    }
}

pub const MIRRORED: [Mirrored; 8] = [
    Mirrored {
        setting: None,
        property: "cloned-mac-address",
        saved_key: "nm-handover.saved-cloned-mac",
        saved_as: SavedAs::Value,
        get: |s| PropertyValue::Str(s.cloned_mac.clone()),
        set: |s, v| s.cloned_mac = str_of(v),
        show: show_value,
    },
    Mirrored {
        setting: Some(SETTING_IPV4),
        property: "dhcp-client-id",
        saved_key: "nm-handover.saved-dhcp-client-id",
        saved_as: SavedAs::Value,
        get: |s| PropertyValue::Str(s.dhcp_client_id.clone()),
        set: |s, v| s.dhcp_client_id = str_of(v),
        show: show_value,
    },
    Mirrored {
        setting: Some(SETTING_IPV6),
        property: "addr-gen-mode",
        saved_key: "nm-handover.saved-ipv6-addr-gen-mode",
        saved_as: SavedAs::Value,
        get: |s| PropertyValue::I32(s.ipv6.addr_gen_mode),
        set: |s, v| s.ipv6.addr_gen_mode = i32_of(v),
        show: |v| addr_gen_mode_name(i32_of(v.clone())),
    },
    Mirrored {
        setting: Some(SETTING_IPV6),
        property: "token",
        saved_key: "nm-handover.saved-ipv6-token",
        saved_as: SavedAs::Value,
        get: |s| PropertyValue::Str(s.ipv6.token.clone()),
        set: |s, v| s.ipv6.token = str_of(v),
        show: show_value,
    },
    Mirrored {
        setting: Some(SETTING_IPV6),
        property: "dhcp-duid",
        saved_key: "nm-handover.saved-ipv6-dhcp-duid",
        saved_as: SavedAs::Value,
        get: |s| PropertyValue::Str(s.ipv6.dhcp_duid.clone()),
        set: |s, v| s.ipv6.dhcp_duid = str_of(v),
        show: show_value,
    },
    Mirrored {
        setting: Some(SETTING_IPV6),
        property: "dhcp-iaid",
        saved_key: "nm-handover.saved-ipv6-dhcp-iaid",
        saved_as: SavedAs::Value,
        get: |s| PropertyValue::Str(s.ipv6.dhcp_iaid.clone()),
        set: |s, v| s.ipv6.dhcp_iaid = str_of(v),
        show: show_value,
    },
    Mirrored {
        setting: Some(SETTING_IPV4),
        property: "dad-timeout",
        saved_key: "nm-handover.saved-ipv4-dad-timeout",
        saved_as: SavedAs::Value,
        get: |s| PropertyValue::I32(s.dad_timeout),
        set: |s, v| s.dad_timeout = i32_of(v),
        show: |v| dad_timeout_name(i32_of(v.clone())),
    },
    Mirrored {
        setting: Some(SETTING_CONNECTION),
        property: "autoconnect",
        saved_key: "nm-handover.saved-autoconnect",
        saved_as: SavedAs::YesNo,
        get: |s| PropertyValue::Bool(s.autoconnect),
        // (NetworkManager's default is yes.)
        set: |s, v| s.autoconnect = !matches!(v, PropertyValue::Bool(false)),
        show: show_value,
    },
];

fn mirrored(property: &str) -> &'static Mirrored {
    MIRRORED.iter().find(|m| m.property == property).expect("a property of MIRRORED")
}

/// Carrier-loss deferral `pair` configures for the wired device. NM's
/// default is 6000 ms; the handover takes this plus ~0.1 s (measured in the
/// lab: 100 ms -> 0.20 s, 300 ms -> 0.41 s, 500 ms -> 0.61 s). Shorter
/// values hand over sooner on a carrier blip too; 300 ms keeps a pull under
/// half a second.
pub const DEFAULT_CARRIER_WAIT_MS: u32 = 300;

pub const SETTING_CONNECTION: &str = "connection";
pub const SETTING_WIRED: &str = "802-3-ethernet";
pub const SETTING_WIRELESS: &str = "802-11-wireless";
pub const SETTING_IPV4: &str = "ipv4";
pub const SETTING_IPV6: &str = "ipv6";

/// The settings behind the hostname each DHCP client sends (option 12 or
/// the FQDN option; the name DNS updates follow). None of them depends on
/// the interface, so the backup gets the wired profile's values as they
/// are. `dhcp-send-hostname-v2` (NM >= 1.52) is read and mirrored only
/// where the linked libnm knows it.
pub const HOSTNAME_PROPERTIES: [(&str, &str); 9] = [
    (SETTING_IPV4, "dhcp-send-hostname"),
    (SETTING_IPV4, "dhcp-send-hostname-v2"),
    (SETTING_IPV4, "dhcp-hostname"),
    (SETTING_IPV4, "dhcp-fqdn"),
    (SETTING_IPV4, "dhcp-hostname-flags"),
    (SETTING_IPV6, "dhcp-send-hostname"),
    (SETTING_IPV6, "dhcp-send-hostname-v2"),
    (SETTING_IPV6, "dhcp-hostname"),
    (SETTING_IPV6, "dhcp-hostname-flags"),
];

/// The backup's `ipv4.dad-timeout`: no address conflict detection wait.
/// The backup takes an address the wired link of the same host held a
/// moment ago and can no longer answer for (its cable is out), under a lease
/// the server has just confirmed; NetworkManager's probe (200 ms by default
/// on 1.58, 0 on 1.42) would only delay the handover by its length
/// (measured: `bench-results/handover.md`, the `dad` rows). The wired
/// profile is the user's and keeps its own setting.
pub const BACKUP_DAD_TIMEOUT_MS: i32 = 0;

/// Where `pair` keeps a backup value it replaced.
fn saved_key(setting: &str, property: &str) -> String {
    format!("nm-handover.saved-{setting}-{property}")
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PairingError {
    #[error("profile '{profile}': {KEY_ROLE} is {value:?}, expected \"wired\" or \"backup\"")]
    BadRole { profile: String, value: String },
    #[error("profile '{profile}': pairing data is incomplete ({missing} is missing)")]
    Incomplete { profile: String, missing: &'static str },
    #[error("profile '{profile}': user data {key}: {source}; run `nm-handover unpair` and pair again")]
    BadName {
        profile: String,
        key: &'static str,
        #[source]
        source: NameError,
    },
    #[error("'{0}' is a {1} profile; the wired side must be an Ethernet profile")]
    WiredNotEthernet(String, String),
    #[error("'{0}' is a {1} profile; the backup must be an Ethernet or Wi-Fi profile")]
    BackupUnsupported(String, String),
    #[error("'{0}' is a private profile (connection.permissions is set): its user may edit it, so nm-handover, which acts as root, does not pair it; pair two system profiles (nmcli connection modify '{0}' connection.permissions '' makes it one, as root)")]
    Private(String),
    #[error("a profile cannot be paired with itself")]
    SameProfile,
    #[error("'{profile}' is already paired with {peer}; run `nm-handover unpair` first")]
    AlreadyPaired { profile: String, peer: String },
    #[error("'{0}' is paired in the other role; run `nm-handover unpair '{0}'` first, then pair in the order you want")]
    PairedTheOtherWay(String),
    #[error("the wired profile '{0}' uses a generated MAC address ({1}); the backup cannot mirror it: {2}")]
    GeneratedMac(String, String, &'static str),
    #[error(
        "'{backup}' looks like the wired profile and '{wired}' like the backup ({why}); pairing them in this order \
         would turn '{backup}' into the backup (autoconnect off, another device's MAC). Did you mean \
         `nm-handover pair '{backup}' '{wired}'`? Add --force to pair them as given"
    )]
    LooksSwapped { wired: String, backup: String, why: &'static str },
    #[error(
        "the wired profile '{0}' has ipv4.dhcp-client-id={1}, which NetworkManager computes per interface; \
         connect the wired link first, so that the client-id it sends can be given to the backup"
    )]
    ClientIdNotKnown(String, String),
    #[error("cannot tell the wired device's MAC address")]
    UnknownMac,
    #[error("{0:?} is not a MAC address")]
    BadMac(String),
}

/// One profile's pairing record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub role: Role,
    pub peer: Uuid,
    pub device: Iface,
    /// Carry leases between the two links' lease files (see `lease`).
    pub lease_carry: bool,
    /// Start the carrier watcher on stock NM (see `watch`).
    pub carrier_watch: bool,
}

/// Reads the pairing record from a profile's user data; `Ok(None)` when the
/// profile is not paired.
pub fn membership(profile: &str, user_data: &BTreeMap<String, String>) -> Result<Option<Membership>, PairingError> {
    let Some(role) = user_data.get(KEY_ROLE) else {
        return Ok(None);
    };
    let role = match role.as_str() {
        "wired" => Role::Wired,
        "backup" => Role::Backup,
        other => return Err(PairingError::BadRole { profile: profile.to_owned(), value: other.to_owned() }),
    };
    let get = |key: &'static str| user_data.get(key).ok_or(PairingError::Incomplete { profile: profile.to_owned(), missing: key });
    let bad_name = |key: &'static str| move |source| PairingError::BadName { profile: profile.to_owned(), key, source };
    Ok(Some(Membership {
        role,
        peer: Uuid::parse(get(KEY_PEER)?).map_err(bad_name(KEY_PEER))?,
        device: Iface::parse(get(KEY_DEVICE)?).map_err(bad_name(KEY_DEVICE))?,
        lease_carry: user_data.get(KEY_LEASE_CARRY).is_none_or(|v| v != "no"),
        carrier_watch: user_data.get(KEY_CARRIER_WATCH).is_none_or(|v| v != "no"),
    }))
}

/// A user-data key as nm-dispatcher names its `CONNECTION_USER_*` variable
/// (libnm-glib-aux `nm_utils_env_var_encode_name()`): lower case letters
/// upper-cased, upper case ones prefixed with `_`, `.` as `__`, anything
/// else as `_` and three octal digits.
fn env_var_suffix(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 8);
    for b in key.bytes() {
        match b {
            b'0'..=b'9' => out.push(b as char),
            b'a'..=b'z' => out.push(b.to_ascii_uppercase() as char),
            b'.' => out.push_str("__"),
            b'A'..=b'Z' => {
                out.push('_');
                out.push(b as char);
            }
            _ => out.push_str(&format!("_{b:03o}")),
        }
    }
    out
}

/// The pairing keys found in `CONNECTION_USER_*` variables (NM >= 1.46),
/// as user data.
pub fn user_data_from_env(user_env: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    all_keys().filter_map(|key| user_env.get(&env_var_suffix(key)).map(|value| (key.to_owned(), value.clone()))).collect()
}

/// The `key=value` lines of one `[group]` of an NM keyfile.
pub fn keyfile_group<'a>(text: &'a str, group: &'a str) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
    let mut inside = false;
    text.lines().map(str::trim).filter_map(move |line| {
        if line.starts_with('[') {
            inside = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) == Some(group);
            return None;
        }
        let (key, value) = line.split_once('=').filter(|_| inside)?;
        Some((key.trim(), value.trim()))
    })
}

/// The `[user]` group of an NM keyfile, as user data. Used to decide
/// cheaply, without connecting to NM, whether a profile is paired at all.
pub fn user_data_from_keyfile(text: &str) -> BTreeMap<String, String> {
    keyfile_group(text, "user").map(|(key, value)| (key.to_owned(), value.to_owned())).collect()
}

/// The `connection.timestamp` a keyfile holds. `GetSettings` reports NM's
/// last-activation time instead, which an update would write to disk: this
/// is what to send back so the file keeps what it had.
pub fn keyfile_timestamp(text: &str) -> Option<u64> {
    keyfile_group(text, SETTING_CONNECTION).find(|(key, _)| *key == "timestamp").and_then(|(_, value)| value.parse().ok())
}

/// The edit that keeps `connection.timestamp` as the profile's keyfile
/// (`filename`) has it ([`keyfile_timestamp`]); none where the profile is not
/// a readable keyfile (NM's other storage), which then gets what
/// `GetSettings` reported, as with `nmcli connection modify`.
pub fn timestamp_on_disk(filename: Option<&str>) -> ProfileEdit {
    let Some(text) = filename
        .filter(|path| std::path::Path::new(path).parent().is_some_and(|dir| dir.ends_with("system-connections")))
        .and_then(|path| std::fs::read_to_string(path).ok())
    else {
        return ProfileEdit::default();
    };
    ProfileEdit {
        properties: vec![PropertyChange { setting: SETTING_CONNECTION, property: "timestamp", value: PropertyValue::U64(keyfile_timestamp(&text)) }],
        ..ProfileEdit::default()
    }
}

/// What `pair` needs to know about one profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileSnapshot {
    pub uuid: Uuid,
    pub id: String,
    /// `connection.type`.
    pub kind: String,
    pub cloned_mac: Option<String>,
    pub dhcp_client_id: Option<String>,
    pub autoconnect: bool,
    pub user_data: BTreeMap<String, String>,
    /// Active right now (on any device).
    pub active: bool,
    /// The file NetworkManager keeps it in, if any.
    pub filename: Option<String>,
    pub ipv6: Ipv6Settings,
    /// `ipv4.dad-timeout` in ms (-1: NetworkManager's default; see [`BACKUP_DAD_TIMEOUT_MS`]).
    pub dad_timeout: Option<i32>,
    /// The [`HOSTNAME_PROPERTIES`] the linked libnm knows, by (setting, property).
    pub hostname: BTreeMap<(&'static str, &'static str), PropertyValue>,
}

/// The `ipv6` settings that decide which addresses a link gets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ipv6Settings {
    pub method: Option<String>,
    /// `ipv6.addr-gen-mode` (see [`ADDR_GEN_EUI64`]).
    pub addr_gen_mode: Option<i32>,
    pub token: Option<String>,
    pub dhcp_duid: Option<String>,
    pub dhcp_iaid: Option<String>,
}

/// `ipv6.addr-gen-mode` values (NMSettingIP6ConfigAddrGenMode).
pub const ADDR_GEN_EUI64: i32 = 0;

fn addr_gen_mode_name(mode: Option<i32>) -> String {
    match mode {
        None => "(unset)".into(),
        Some(0) => "eui64".into(),
        Some(1) => "stable-privacy".into(),
        Some(2) => "default-or-eui64".into(),
        Some(3) => "default".into(),
        Some(other) => other.to_string(),
    }
}

impl ProfileSnapshot {
    fn mac_setting(&self) -> Option<&'static str> {
        match self.kind.as_str() {
            SETTING_WIRED => Some(SETTING_WIRED),
            SETTING_WIRELESS => Some(SETTING_WIRELESS),
            _ => None,
        }
    }
}

/// Both profiles' edits and a line per change, for the user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub wired: ProfileEdit,
    pub backup: ProfileEdit,
    pub summary: Vec<String>,
}

fn show(v: &Option<String>) -> String {
    v.as_deref().map_or_else(|| "(unset)".to_owned(), |s| format!("{s:?}"))
}

fn encode_saved(v: &Option<String>) -> String {
    v.as_deref().map_or_else(|| "unset".to_owned(), |s| format!("value:{s}"))
}

fn decode_saved(v: &str) -> Option<String> {
    v.strip_prefix("value:").map(str::to_owned)
}

fn dad_timeout_name(timeout: Option<i32>) -> String {
    match timeout {
        None | Some(-1) => "(NetworkManager's default)".to_owned(),
        Some(ms) => format!("{ms} ms"),
    }
}

fn show_value(v: &PropertyValue) -> String {
    match v {
        PropertyValue::Str(s) => show(s),
        PropertyValue::Bool(b) => if *b { "yes" } else { "no" }.to_owned(),
        PropertyValue::U64(n) => show(&n.map(|n| n.to_string())),
        PropertyValue::I32(n) => show(&n.map(|n| n.to_string())),
        PropertyValue::U32(n) => show(&n.map(|n| format!("0x{n:x}"))),
    }
}

fn encode_saved_value(v: &PropertyValue) -> String {
    encode_saved(&match v {
        PropertyValue::Str(s) => s.clone(),
        PropertyValue::Bool(b) => Some(b.to_string()),
        PropertyValue::U64(n) => n.map(|n| n.to_string()),
        PropertyValue::I32(n) => n.map(|n| n.to_string()),
        PropertyValue::U32(n) => n.map(|n| n.to_string()),
    })
}

/// A saved value read back as the type `like` has; `None` when it does not
/// parse as one (someone edited the user data), so nothing is restored.
fn decode_saved_value(like: &PropertyValue, saved: &str) -> Option<PropertyValue> {
    let text = decode_saved(saved);
    Some(match like {
        PropertyValue::Str(_) => PropertyValue::Str(text),
        PropertyValue::Bool(_) => PropertyValue::Bool(text?.parse().ok()?),
        PropertyValue::U64(_) => PropertyValue::U64(text.map(|t| t.parse()).transpose().ok()?),
        PropertyValue::I32(_) => PropertyValue::I32(text.map(|t| t.parse()).transpose().ok()?),
        PropertyValue::U32(_) => PropertyValue::U32(text.map(|t| t.parse()).transpose().ok()?),
    })
}

/// Normalises a MAC address to upper-case colon form.
pub fn parse_mac(s: &str) -> Result<String, PairingError> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() == 6 && parts.iter().all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit())) {
        Ok(s.to_ascii_uppercase())
    } else {
        Err(PairingError::BadMac(s.to_owned()))
    }
}

/// The setting of a profile of type `kind` that holds its `cloned-mac-address`.
pub fn mac_setting_of(kind: &str) -> &'static str {
    if kind == SETTING_WIRELESS {
        SETTING_WIRELESS
    } else {
        SETTING_WIRED
    }
}

/// The six bytes of a MAC address in the form `parse_mac` returns.
pub fn mac_bytes(mac: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = mac.split(':');
    for byte in &mut out {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// The MAC address the wired profile presents on the LAN, which the backup
/// must clone: an explicit cloned MAC, else the device's permanent address,
/// else its current one.
pub fn wired_lan_mac(wired: &ProfileSnapshot, permanent: Option<&str>, current: Option<&str>) -> Result<String, PairingError> {
    let generated = |mode: &str, why| Err(PairingError::GeneratedMac(wired.id.clone(), mode.to_owned(), why));
    match wired.cloned_mac.as_deref() {
        // `stable` is the same address at every activation of the profile on
        // this device (a hash of its stable-id and the interface name): the
        // one it has now is cloned.
        Some("stable") if wired.active => parse_mac(current.ok_or(PairingError::UnknownMac)?),
        Some("stable") => generated("stable", "it is generated at activation; connect the wired profile, then pair again"),
        Some(mode @ ("random" | "stable-ssid")) => generated(mode, "it is a new address at every activation"),
        Some(explicit) if explicit != "permanent" && explicit != "preserve" => parse_mac(explicit),
        _ => parse_mac(permanent.or(current).ok_or(PairingError::UnknownMac)?),
    }
}

/// A profile may be paired again only with the same peer in the same role:
/// re-pairing a pair in the other order would plan from values `pair` itself
/// set (the backup's cloned MAC as the wired MAC) and lose the saved ones.
fn check_free(profile: &ProfileSnapshot, expected_peer: &Uuid, role: Role) -> Result<(), PairingError> {
    match membership(&profile.id, &profile.user_data)? {
        Some(m) if &m.peer != expected_peer => Err(PairingError::AlreadyPaired { profile: profile.id.clone(), peer: m.peer.to_string() }),
        Some(m) if m.role != role => Err(PairingError::PairedTheOtherWay(profile.id.clone())),
        _ => Ok(()),
    }
}

/// Refuses an argument order that would make the user's wired profile the
/// backup, where that can be known: only between two Ethernet profiles (a
/// Wi-Fi backup is never the wired side), from what each is doing now.
pub fn check_order(wired: &ProfileSnapshot, backup: &ProfileSnapshot) -> Result<(), PairingError> {
    if wired.kind != SETTING_WIRED
        || backup.kind != SETTING_WIRED
        || membership(&backup.id, &backup.user_data).is_ok_and(|m| m.is_some_and(|m| m.role == Role::Backup))
    {
        return Ok(());
    }
    let why = if backup.active && !wired.active {
        "it is the active one"
    } else if backup.autoconnect && !wired.autoconnect {
        "it connects automatically, the other does not"
    } else {
        return Ok(());
    };
    Err(PairingError::LooksSwapped { wired: wired.id.clone(), backup: backup.id.clone(), why })
}

/// Whether nothing tells which of two Ethernet profiles is the wired one
/// (both active or neither, both connecting automatically or neither): `pair`
/// then takes them as given, and says so before it changes anything.
pub fn order_is_a_guess(wired: &ProfileSnapshot, backup: &ProfileSnapshot) -> bool {
    wired.kind == SETTING_WIRED
        && backup.kind == SETTING_WIRED
        && !membership(&backup.id, &backup.user_data).is_ok_and(|m| m.is_some_and(|m| m.role == Role::Backup))
        && wired.active == backup.active
        && wired.autoconnect == backup.autoconnect
}

/// A line for `pair`'s summary when a profile lives only in NetworkManager's
/// memory (`/run`, as the "Wired connection 1" it creates by itself): the
/// update stores it in /etc from now on.
pub fn storage_note(profile: &ProfileSnapshot) -> Option<String> {
    profile.filename.as_deref().filter(|path| path.starts_with("/run/")).map(|path| {
        format!("'{}': was kept only in NetworkManager's memory ({path}); from now on it is stored in /etc/NetworkManager/system-connections", profile.id)
    })
}

/// What the wired link presents to the DHCP server besides its MAC.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WiredIdentity {
    /// The device's permanent MAC address.
    pub permanent_mac: Option<String>,
    /// The client identifier of its current lease, as NM reports it (the
    /// internal client's `dhcp_client_identifier`); none while inactive, or
    /// when the client sends none.
    pub client_id_sent: Option<String>,
    /// The interface identifier (low 64 bits) of its global SLAAC address
    /// now, as an `ipv6.token` (`::a:b:c:d`).
    pub slaac_iid: Option<String>,
    /// The IAID and DUID of its current DHCPv6 lease, as NM reports them.
    pub dhcp6_iaid_sent: Option<String>,
    pub dhcp6_duid_sent: Option<String>,
}

/// The interface identifier of `address` as an `ipv6.token`.
pub fn token_of(address: std::net::Ipv6Addr) -> String {
    let s = address.segments();
    std::net::Ipv6Addr::new(0, 0, 0, 0, s[4], s[5], s[6], s[7]).to_string()
}

/// The backup's IPv6 settings that make it present the wired link's IPv6
/// identity, and why where they are not the wired values themselves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ipv6Mirror {
    /// (addr-gen-mode, token) for SLAAC, if they can be mirrored.
    pub slaac: Option<(Option<i32>, Option<String>)>,
    pub dhcp_duid: Option<Option<String>>,
    pub dhcp_iaid: Option<Option<String>>,
    /// One line per identity that is mirrored by value or cannot be.
    pub notes: Vec<String>,
}

/// How the backup gets the wired link's IPv6 addresses (none of this when
/// the wired profile does not autoconfigure IPv6):
/// - SLAAC: `eui64` derives the interface identifier from the MAC, which the
///   backup clones, so `eui64` (and the same `ipv6.token`) is copied. NM's
///   default `stable-privacy` hashes the interface name in (RFC 7217), so
///   the backup gets `eui64` with the identifier the wired link uses as its
///   token (one identifier for every prefix: on a LAN with several /64
///   prefixes only the one seen at `pair` keeps its address).
/// - DHCPv6 DUID: NM's default (`lease`: from /etc/machine-id), `ll` and
///   `llt` (the cloned MAC, the host's time) are equal on both links and
///   copied; the `stable-*` kinds hash the profile's stable-id in, so the
///   DUID the wired link sent is set as a literal.
/// - DHCPv6 IAID: `mac` and a literal are copied; NM's default `ifname`,
///   `stable` and `perm-mac` differ per interface, so the IAID the wired
///   link sent is set as a literal.
pub fn backup_ipv6(wired: &ProfileSnapshot, identity: &WiredIdentity) -> Ipv6Mirror {
    let mut mirror = Ipv6Mirror::default();
    if !matches!(wired.ipv6.method.as_deref(), Some("auto" | "dhcp")) {
        return mirror;
    }
    let w = &wired.ipv6;
    mirror.slaac = match (w.addr_gen_mode, &identity.slaac_iid) {
        (Some(ADDR_GEN_EUI64), _) => Some((Some(ADDR_GEN_EUI64), w.token.clone())),
        (_, Some(iid)) => {
            mirror.notes.push(format!(
                "ipv6.addr-gen-mode {} of '{}' depends on the interface name: the backup uses eui64 with the interface identifier the wired link has ({iid})",
                addr_gen_mode_name(w.addr_gen_mode),
                wired.id
            ));
            Some((Some(ADDR_GEN_EUI64), Some(iid.clone())))
        }
        (_, None) => {
            mirror.notes.push(format!(
                "IPv6 SLAAC address not mirrored: '{}' has no SLAAC address now (ipv6.addr-gen-mode {} depends on the interface name); pair again while it is connected",
                wired.id,
                addr_gen_mode_name(w.addr_gen_mode)
            ));
            None
        }
    };
    let by_value = |kind: &str, value: &Option<String>, sent: &Option<String>, notes: &mut Vec<String>| match sent {
        Some(sent) => {
            notes.push(format!(
                "ipv6.dhcp-{kind} {} of '{}' depends on the interface or profile: the backup sends the wired link's {kind} {sent}",
                show(value),
                wired.id
            ));
            Some(Some(sent.clone()))
        }
        None => {
            notes.push(format!(
                "DHCPv6 {kind} not mirrored: '{}' has no DHCPv6 lease now (ipv6.dhcp-{kind} {} depends on the interface or profile); pair again while it is connected",
                wired.id,
                show(value)
            ));
            None
        }
    };
    mirror.dhcp_duid = match w.dhcp_duid.as_deref() {
        None | Some("lease" | "ll" | "llt") => Some(w.dhcp_duid.clone()),
        Some("stable-ll" | "stable-llt" | "stable-uuid") => by_value("duid", &w.dhcp_duid, &identity.dhcp6_duid_sent, &mut mirror.notes),
        Some(_) => Some(w.dhcp_duid.clone()),
    };
    mirror.dhcp_iaid = match w.dhcp_iaid.as_deref() {
        Some("mac") => Some(w.dhcp_iaid.clone()),
        None | Some("ifname" | "stable" | "perm-mac") => by_value("iaid", &w.dhcp_iaid, &identity.dhcp6_iaid_sent, &mut mirror.notes),
        Some(_) => Some(w.dhcp_iaid.clone()),
    };
    mirror
}

/// The `ipv4.dhcp-client-id` the backup needs to be the same DHCP client as
/// the wired link, and why when it is not the wired value itself. NM computes
/// some modes per interface (`stable` hashes the interface name in, `duid`
/// and `ipv6-duid` use an IAID that defaults to one, `perm-mac` uses the
/// device's own permanent address), so copying the word would make the
/// backup a different client: the server hands it another address.
pub fn backup_client_id(wired: &ProfileSnapshot, identity: &WiredIdentity) -> Result<(Option<String>, Option<&'static str>), PairingError> {
    let mode = wired.dhcp_client_id.as_deref();
    match mode {
        // Equal on both links by construction: the backup clones the wired MAC.
        Some("mac" | "none") => Ok((wired.dhcp_client_id.clone(), None)),
        Some(dependent @ ("stable" | "duid" | "ipv6-duid" | "perm-mac")) => match (&identity.client_id_sent, dependent) {
            (Some(sent), _) => Ok((Some(sent.clone()), Some("computed per interface: the client-id the wired link sent"))),
            (None, "perm-mac") => match identity.permanent_mac.as_deref() {
                Some(mac) => Ok((Some(format!("01:{}", parse_mac(mac)?.to_ascii_lowercase())), Some("the wired device's permanent MAC"))),
                None => Err(PairingError::ClientIdNotKnown(wired.id.clone(), dependent.to_owned())),
            },
            (None, _) => Err(PairingError::ClientIdNotKnown(wired.id.clone(), dependent.to_owned())),
        },
        // Unset: NetworkManager.conf's default applies, which may be computed
        // per interface too; the client-id the wired link sent is the truth.
        None => Ok(match &identity.client_id_sent {
            Some(sent) => (Some(sent.clone()), Some("unset: the client-id the wired link sent under NetworkManager's default")),
            None => (None, Some("NetworkManager's default, the same on both links unless NetworkManager.conf makes it per interface; not confirmed: the wired link is not connected")),
        }),
        // A literal (hex bytes or a string) is the same on any interface.
        Some(_) => Ok((wired.dhcp_client_id.clone(), None)),
    }
}

/// Plans `nm-handover pair`. Pairing the same two profiles again refreshes
/// the backup's settings but keeps the originals saved the first time.
pub fn plan_pair(
    wired: &ProfileSnapshot,
    wired_device: &Iface,
    backup: &ProfileSnapshot,
    backup_device: &Iface,
    wired_mac: &str,
    identity: &WiredIdentity,
    options: Options,
) -> Result<Plan, PairingError> {
    if wired.uuid == backup.uuid {
        return Err(PairingError::SameProfile);
    }
    if wired.kind != SETTING_WIRED {
        return Err(PairingError::WiredNotEthernet(wired.id.clone(), wired.kind.clone()));
    }
    backup.mac_setting().ok_or_else(|| PairingError::BackupUnsupported(backup.id.clone(), backup.kind.clone()))?;
    check_free(wired, &backup.uuid, Role::Wired)?;
    check_free(backup, &wired.uuid, Role::Backup)?;
    let wired_mac = parse_mac(wired_mac)?;
    let (client_id, client_id_why) = backup_client_id(wired, identity)?;

    let mut plan = Plan::default();
    for (key, value) in [(KEY_ROLE, "wired"), (KEY_PEER, backup.uuid.as_str()), (KEY_DEVICE, wired_device.as_str())] {
        plan.wired.user_data.insert(key.to_owned(), Some(value.to_owned()));
    }
    let yes_no = |on: bool| if on { "yes" } else { "no" };
    plan.wired.user_data.insert(KEY_LEASE_CARRY.to_owned(), Some(yes_no(options.lease_carry).to_owned()));
    plan.wired.user_data.insert(KEY_CARRIER_WATCH.to_owned(), Some(yes_no(options.carrier_watch).to_owned()));
    plan.summary.push(format!(
        "'{}': user data {KEY_ROLE}=wired, {KEY_PEER}={}, {KEY_DEVICE}={wired_device}, {KEY_LEASE_CARRY}={}, {KEY_CARRIER_WATCH}={}",
        wired.id,
        backup.uuid,
        yes_no(options.lease_carry),
        yes_no(options.carrier_watch)
    ));
    for (key, value) in [(KEY_ROLE, "backup"), (KEY_PEER, wired.uuid.as_str()), (KEY_DEVICE, backup_device.as_str())] {
        plan.backup.user_data.insert(key.to_owned(), Some(value.to_owned()));
    }
    plan.summary.push(format!("'{}': user data {KEY_ROLE}=backup, {KEY_PEER}={}, {KEY_DEVICE}={backup_device}", backup.id, wired.uuid));

    // The value before the first pairing that changed it is kept; pairing
    // again does not overwrite it with a value `pair` set.
    let mut change = |setting: &'static str, property: &'static str, saved_key: &str, old: String, new: PropertyValue, shown_old: String, shown_new: String| {
        if !backup.user_data.contains_key(saved_key) {
            plan.backup.user_data.insert(saved_key.to_owned(), Some(old));
        }
        if shown_old != shown_new {
            plan.summary.push(format!("'{}': {setting}.{property}: {shown_old} -> {shown_new}", backup.id));
        }
        plan.backup.properties.push(PropertyChange { setting, property, value: new });
    };
    let mut mirror = |property: &str, new: PropertyValue, shown_new: Option<String>| {
        let m = mirrored(property);
        let old = (m.get)(backup);
        let shown_new = shown_new.unwrap_or_else(|| (m.show)(&new));
        change(m.setting_for(&backup.kind), m.property, m.saved_key, m.encode(&old), new, (m.show)(&old), shown_new);
    };
    mirror("cloned-mac-address", PropertyValue::Str(Some(wired_mac)), None);
    let client_id_shown = client_id_why.map(|why| format!("{} (wired: {}; {why})", show(&client_id), show(&wired.dhcp_client_id)));
    mirror("dhcp-client-id", PropertyValue::Str(client_id), client_id_shown);
    let ipv6 = backup_ipv6(wired, identity);
    if let Some((mode, token)) = &ipv6.slaac {
        mirror("addr-gen-mode", PropertyValue::I32(*mode), None);
        mirror("token", PropertyValue::Str(token.clone()), None);
    }
    if let Some(duid) = &ipv6.dhcp_duid {
        mirror("dhcp-duid", PropertyValue::Str(duid.clone()), None);
    }
    if let Some(iaid) = &ipv6.dhcp_iaid {
        mirror("dhcp-iaid", PropertyValue::Str(iaid.clone()), None);
    }
    mirror("dad-timeout", PropertyValue::I32(Some(BACKUP_DAD_TIMEOUT_MS)), None);
    mirror("autoconnect", PropertyValue::Bool(false), None);
    for (&(setting, property), value) in &wired.hostname {
        let key = saved_key(setting, property);
        let now = backup.hostname.get(&(setting, property));
        if now == Some(value) && !backup.user_data.contains_key(&key) {
            continue;
        }
        let Some(now) = now else { continue };
        change(setting, property, &key, encode_saved_value(now), value.clone(), show_value(now), show_value(value));
    }
    plan.summary.extend(ipv6.notes.into_iter().map(|note| format!("'{}': {note}", backup.id)));
    Ok(plan)
}

/// Plans `nm-handover unpair`: removes the pairing keys from both profiles
/// and puts back the backup values saved by `pair`.
pub fn plan_unpair(wired: Option<&ProfileSnapshot>, backup: Option<&ProfileSnapshot>) -> Plan {
    let mut plan = Plan::default();
    let removals = |snapshot: &ProfileSnapshot| -> BTreeMap<String, Option<String>> {
        snapshot.user_data.keys().filter(|k| k.starts_with("nm-handover.")).map(|k| (k.clone(), None)).collect()
    };
    if let Some(w) = wired {
        plan.wired.user_data = removals(w);
        plan.summary.push(format!("'{}': removed nm-handover user data", w.id));
    }
    if let Some(b) = backup {
        plan.backup.user_data = removals(b);
        plan.summary.push(format!("'{}': removed nm-handover user data", b.id));
        let saved = |key: &str| b.user_data.get(key).map(String::as_str);
        // (setting, property, shown now, shown restored, restored value)
        let mut restores = Vec::new();
        for m in &MIRRORED {
            // (A profile of a type without a MAC setting was never paired.)
            if m.setting.is_none() && b.mac_setting().is_none() {
                continue;
            }
            let now = (m.get)(b);
            if let Some(restored) = saved(m.saved_key).and_then(|v| m.decode(&now, v)) {
                restores.push((m.setting_for(&b.kind), m.property, (m.show)(&now), (m.show)(&restored), restored));
            }
        }
        for (&(setting, property), now) in &b.hostname {
            if let Some(restored) = saved(&saved_key(setting, property)).and_then(|v| decode_saved_value(now, v)) {
                restores.push((setting, property, show_value(now), show_value(&restored), restored));
            }
        }
        for (setting, property, now, restored, value) in restores {
            if now != restored {
                plan.summary.push(format!("'{}': {setting}.{property}: {now} -> {restored}", b.id));
            }
            plan.backup.properties.push(PropertyChange { setting, property, value });
        }
    }
    plan
}

/// The `conf.d` file name of the carrier-wait snippet for a pair.
pub fn carrier_wait_conf_name(wired: &Uuid) -> String {
    format!("90-nm-handover-{wired}.conf")
}

pub fn is_carrier_wait_conf_name(name: &str) -> bool {
    name.strip_prefix("90-nm-handover-").and_then(|rest| rest.strip_suffix(".conf")).is_some_and(|uuid| Uuid::parse(uuid).is_ok())
}

/// The NetworkManager.conf snippet that shortens the carrier-loss deferral
/// for the paired wired device.
pub fn carrier_wait_conf(wired: &Uuid, device: &Iface, wait_ms: u32) -> String {
    format!(
        "# Written by `nm-handover pair`, removed by `nm-handover unpair`.\n\
         # React to carrier loss on the paired wired device after {wait_ms} ms\n\
         # instead of NetworkManager's default 6000 ms, so the backup takes over fast.\n\
         [device-nm-handover-{wired}]\n\
         match-device=interface-name:{device}\n\
         carrier-wait-timeout={wait_ms}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOTH_ON: Options = Options { lease_carry: true, carrier_watch: true, standby: false };

    const W: &str = "11111111-1111-4111-8111-111111111111";
    const B: &str = "22222222-2222-4222-8222-222222222222";

    fn snapshot(uuid: &str, id: &str, kind: &str) -> ProfileSnapshot {
        ProfileSnapshot {
            uuid: Uuid::parse(uuid).unwrap(),
            id: id.to_owned(),
            kind: kind.to_owned(),
            cloned_mac: None,
            dhcp_client_id: None,
            autoconnect: true,
            user_data: BTreeMap::new(),
            active: false,
            filename: None,
            ipv6: Ipv6Settings::default(),
            dad_timeout: Some(-1),
            hostname: BTreeMap::new(),
        }
    }

    fn apply(snapshot: &mut ProfileSnapshot, edit: &ProfileEdit) {
        for (k, v) in &edit.user_data {
            match v {
                Some(v) => snapshot.user_data.insert(k.clone(), v.clone()),
                None => snapshot.user_data.remove(k),
            };
        }
        for c in &edit.properties {
            if let Some(&key) = HOSTNAME_PROPERTIES.iter().find(|k| **k == (c.setting, c.property)) {
                snapshot.hostname.insert(key, c.value.clone());
                continue;
            }
            let m = MIRRORED.iter().find(|m| m.property == c.property).unwrap_or_else(|| panic!("unexpected change {c:?}"));
            (m.set)(snapshot, c.value.clone());
        }
    }

    fn iface(s: &str) -> Iface {
        Iface::parse(s).unwrap()
    }

    #[test]
    fn the_backup_presents_the_client_id_the_wired_link_presents() {
        let mut wired = snapshot(W, "Office LAN", SETTING_WIRED);
        let sent = WiredIdentity {
            permanent_mac: Some("52:54:00:AA:BB:CC".into()),
            client_id_sent: Some("ff:00:11:22:33:00:01:00:01".into()),
            ..WiredIdentity::default()
        };
        let inactive = WiredIdentity { permanent_mac: Some("52:54:00:AA:BB:CC".into()), client_id_sent: None, ..WiredIdentity::default() };
        let mode = |wired: &mut ProfileSnapshot, m: Option<&str>| wired.dhcp_client_id = m.map(str::to_owned);
        // Equal by construction, or literal: copied as they are.
        for same in [Some("mac"), Some("none"), Some("01:02:03:04:05:06:07"), Some("office-laptop")] {
            mode(&mut wired, same);
            assert_eq!(backup_client_id(&wired, &inactive).unwrap(), (same.map(str::to_owned), None));
        }
        // Computed per interface: the value the wired link sent, or a refusal with the reason.
        for dependent in ["stable", "duid", "ipv6-duid"] {
            mode(&mut wired, Some(dependent));
            assert_eq!(backup_client_id(&wired, &sent).unwrap().0.as_deref(), Some("ff:00:11:22:33:00:01:00:01"));
            let err = backup_client_id(&wired, &inactive).unwrap_err().to_string();
            assert!(err.contains(dependent) && err.contains("connect the wired link first"), "{err}");
        }
        mode(&mut wired, Some("perm-mac"));
        assert_eq!(backup_client_id(&wired, &sent).unwrap().0.as_deref(), Some("ff:00:11:22:33:00:01:00:01"));
        assert_eq!(backup_client_id(&wired, &inactive).unwrap().0.as_deref(), Some("01:52:54:00:aa:bb:cc"));
        let no_permanent = WiredIdentity { permanent_mac: None, client_id_sent: None, ..WiredIdentity::default() };
        assert!(backup_client_id(&wired, &no_permanent).is_err());
        // Unset: whatever NetworkManager's default made the wired link send; nothing if it sent none (dhclient).
        mode(&mut wired, None);
        assert_eq!(backup_client_id(&wired, &sent).unwrap().0.as_deref(), Some("ff:00:11:22:33:00:01:00:01"));
        let (id, why) = backup_client_id(&wired, &inactive).unwrap();
        assert_eq!(id, None);
        assert!(why.is_some_and(|w| w.contains("not confirmed")));
    }

    #[test]
    fn a_pair_cannot_be_paired_again_the_other_way_round() {
        let mut wired = snapshot(W, "Office LAN", SETTING_WIRED);
        let mut backup = snapshot(B, "Dock LAN", SETTING_WIRED);
        let plan = plan_pair(&wired, &iface("e0"), &backup, &iface("e1"), "52:54:00:aa:bb:cc", &WiredIdentity::default(), BOTH_ON).unwrap();
        apply(&mut wired, &plan.wired);
        apply(&mut backup, &plan.backup);
        let err = plan_pair(&backup, &iface("e1"), &wired, &iface("e0"), "52:54:00:aa:bb:cc", &WiredIdentity::default(), BOTH_ON).unwrap_err();
        assert!(matches!(err, PairingError::PairedTheOtherWay(ref p) if p == "Dock LAN"), "{err}");
        // check_order does not wave it through either: the backup it sees is the paired wired profile.
        assert!(plan_pair(&wired, &iface("e0"), &backup, &iface("e1"), "52:54:00:aa:bb:cc", &WiredIdentity::default(), BOTH_ON).is_ok());
    }

    #[test]
    fn unpair_prints_only_what_changes() {
        let wired = snapshot(W, "Office LAN", SETTING_WIRED);
        let mut backup = snapshot(B, "Office Wi-Fi", SETTING_WIRELESS);
        let plan = plan_pair(&wired, &iface("wired0"), &backup, &iface("wlan0"), "52:54:00:aa:bb:cc", &WiredIdentity::default(), BOTH_ON).unwrap();
        apply(&mut backup, &plan.backup);
        let unpair = plan_unpair(None, Some(&backup));
        assert!(unpair.summary.iter().all(|line| !line.contains("(unset) -> (unset)")), "{:#?}", unpair.summary);
        assert!(unpair.summary.iter().any(|line| line.contains("cloned-mac-address: \"52:54:00:AA:BB:CC\" -> (unset)")), "{:#?}", unpair.summary);
        assert!(unpair.summary.iter().any(|line| line.contains("autoconnect: no -> yes")), "{:#?}", unpair.summary);
        assert!(unpair.summary.iter().any(|line| line.contains("dad-timeout: 0 ms -> (NetworkManager's default)")), "{:#?}", unpair.summary);
        // Still sent, so the profile ends exactly as before pair.
        assert_eq!(unpair.backup.properties.len(), 4);
    }

    #[test]
    fn a_swapped_order_of_two_ethernet_profiles_is_refused() {
        let mut wired = snapshot(W, "Office LAN", SETTING_WIRED);
        let mut backup = snapshot(B, "Dock LAN", SETTING_WIRED);
        // Nothing tells them apart: pair as given, saying so first.
        assert_eq!(check_order(&wired, &backup), Ok(()));
        assert!(order_is_a_guess(&wired, &backup));
        backup.active = true;
        assert!(!order_is_a_guess(&wired, &backup));
        let err = check_order(&wired, &backup).unwrap_err().to_string();
        assert!(err.contains("'Dock LAN' looks like the wired profile") && err.contains("active") && err.contains("--force"), "{err}");
        backup.active = false;
        wired.autoconnect = false;
        let err = check_order(&wired, &backup).unwrap_err().to_string();
        assert!(err.contains("connects automatically"), "{err}");
        wired.active = true;
        backup.active = true;
        assert!(check_order(&wired, &backup).is_err(), "autoconnect still tells");
        // A Wi-Fi backup is never the wired side, whatever it is doing.
        let mut wifi = snapshot(B, "Office Wi-Fi", SETTING_WIRELESS);
        wifi.active = true;
        assert_eq!(check_order(&snapshot(W, "Office LAN", SETTING_WIRED), &wifi), Ok(()));
        // Re-pairing: the backup's autoconnect is off because pair turned it off.
        let mut paired = snapshot(B, "Dock LAN", SETTING_WIRED);
        paired.user_data.insert(KEY_ROLE.into(), "backup".into());
        paired.user_data.insert(KEY_PEER.into(), W.into());
        paired.user_data.insert(KEY_DEVICE.into(), "eth1".into());
        paired.active = true;
        assert_eq!(check_order(&snapshot(W, "Office LAN", SETTING_WIRED), &paired), Ok(()));
        assert!(!order_is_a_guess(&snapshot(W, "Office LAN", SETTING_WIRED), &paired));
        assert!(!order_is_a_guess(&snapshot(W, "Office LAN", SETTING_WIRED), &snapshot(B, "Office Wi-Fi", SETTING_WIRELESS)));
        wired.active = false;
        wired.autoconnect = true;
        backup.active = false;
        backup.autoconnect = false;
        assert!(!order_is_a_guess(&wired, &backup), "only the wired one connects automatically");
    }

    #[test]
    fn a_profile_kept_in_memory_is_said_to_move_to_disk() {
        let mut auto = snapshot(W, "Wired connection 1", SETTING_WIRED);
        assert_eq!(storage_note(&auto), None);
        auto.filename = Some("/etc/NetworkManager/system-connections/Wired connection 1.nmconnection".into());
        assert_eq!(storage_note(&auto), None);
        auto.filename = Some("/run/NetworkManager/system-connections/Wired connection 1.nmconnection".into());
        let note = storage_note(&auto).unwrap();
        assert!(note.contains("/run/NetworkManager") && note.contains("/etc/NetworkManager/system-connections"), "{note}");
    }

    #[test]
    fn the_keyfile_timestamp_is_read_from_the_connection_group_only() {
        let text = "[connection]\nid=Office\ntimestamp=1764080000\n\n[user]\ntimestamp=5\n";
        assert_eq!(keyfile_timestamp(text), Some(1764080000));
        assert_eq!(keyfile_timestamp("[connection]\nid=Office\n\n[other]\ntimestamp=5\n"), None);
        assert_eq!(keyfile_timestamp("[connection]\ntimestamp=soon\n"), None);
    }

    #[test]
    fn pair_then_unpair_restores_everything() {
        let mut wired = snapshot(W, "Wired", SETTING_WIRED);
        wired.dhcp_client_id = Some("mac".into());
        let mut backup = snapshot(B, "Office Wi-Fi", SETTING_WIRELESS);
        backup.cloned_mac = Some("stable".into());
        let (wired0, backup0) = (wired.clone(), backup.clone());

        let plan = plan_pair(&wired, &iface("wired0"), &backup, &iface("wlan0"), "52:54:00:aa:bb:cc", &WiredIdentity::default(), BOTH_ON).unwrap();
        apply(&mut wired, &plan.wired);
        apply(&mut backup, &plan.backup);
        assert_eq!(backup.cloned_mac.as_deref(), Some("52:54:00:AA:BB:CC"));
        assert_eq!(backup.dhcp_client_id.as_deref(), Some("mac"));
        assert!(!backup.autoconnect);
        assert_eq!(backup.dad_timeout, Some(BACKUP_DAD_TIMEOUT_MS));
        assert!(plan.summary.iter().any(|l| l.ends_with("ipv4.dad-timeout: (NetworkManager's default) -> 0 ms")), "{:?}", plan.summary);
        assert!(plan.wired.properties.is_empty(), "the wired profile keeps its settings: {:?}", plan.wired);
        let m = membership(&wired.id, &wired.user_data).unwrap().unwrap();
        assert_eq!((m.role, m.peer.as_str(), m.device.as_str()), (Role::Wired, B, "wired0"));
        let m = membership(&backup.id, &backup.user_data).unwrap().unwrap();
        assert_eq!((m.role, m.peer.as_str(), m.device.as_str()), (Role::Backup, W, "wlan0"));
        assert!(plan.summary.iter().any(|l| l.contains("cloned-mac-address: \"stable\" -> \"52:54:00:AA:BB:CC\"")));

        // Pairing again keeps the originals saved the first time.
        let again = plan_pair(&wired, &iface("wired0"), &backup, &iface("wlan0"), "52:54:00:aa:bb:cc", &WiredIdentity::default(), BOTH_ON).unwrap();
        apply(&mut backup, &again.backup);

        let undo = plan_unpair(Some(&wired), Some(&backup));
        apply(&mut wired, &undo.wired);
        apply(&mut backup, &undo.backup);
        assert_eq!(wired, wired0);
        assert_eq!(backup, backup0);
    }

    #[test]
    fn the_backup_gets_the_ipv6_identity_the_wired_link_presents() {
        let mut wired = snapshot(W, "Office LAN", SETTING_WIRED);
        let seen = WiredIdentity {
            slaac_iid: Some("::1:2:3:4".into()),
            dhcp6_iaid_sent: Some("aa:bb:cc:dd".into()),
            dhcp6_duid_sent: Some("00:04:11:22".into()),
            ..WiredIdentity::default()
        };
        // No IPv6 autoconfiguration on the wired profile: nothing to mirror.
        assert_eq!(backup_ipv6(&wired, &seen), Ipv6Mirror::default());
        wired.ipv6.method = Some("auto".into());
        // NM's defaults: stable-privacy and the IAID `ifname` depend on the
        // interface; the DUID from /etc/machine-id does not.
        let m = backup_ipv6(&wired, &seen);
        assert_eq!(m.slaac, Some((Some(ADDR_GEN_EUI64), Some("::1:2:3:4".into()))));
        assert_eq!(m.dhcp_duid, Some(None));
        assert_eq!(m.dhcp_iaid, Some(Some("aa:bb:cc:dd".into())));
        assert_eq!(m.notes.len(), 2, "{m:?}");
        // Equal on both links by construction: copied.
        wired.ipv6.addr_gen_mode = Some(ADDR_GEN_EUI64);
        wired.ipv6.token = Some("::9".into());
        wired.ipv6.dhcp_iaid = Some("mac".into());
        wired.ipv6.dhcp_duid = Some("llt".into());
        let m = backup_ipv6(&wired, &seen);
        assert_eq!((m.slaac, m.dhcp_duid, m.dhcp_iaid), (Some((Some(0), Some("::9".into()))), Some(Some("llt".into())), Some(Some("mac".into()))));
        assert!(m.notes.is_empty());
        // A DUID hashed from the profile's stable-id: the one the wired link sent.
        wired.ipv6.dhcp_duid = Some("stable-uuid".into());
        assert_eq!(backup_ipv6(&wired, &seen).dhcp_duid, Some(Some("00:04:11:22".into())));
        // Not connected: what depends on the interface is left alone, and said.
        wired.ipv6 = Ipv6Settings { method: Some("auto".into()), ..Ipv6Settings::default() };
        let m = backup_ipv6(&wired, &WiredIdentity::default());
        assert_eq!((&m.slaac, &m.dhcp_iaid), (&None, &None));
        assert!(m.notes.iter().all(|n| n.contains("not mirrored") && n.contains("pair again")), "{m:?}");
    }

    #[test]
    fn pair_then_unpair_restores_ipv6_settings() {
        let mut wired = snapshot(W, "Wired", SETTING_WIRED);
        wired.ipv6.method = Some("auto".into());
        let mut backup = snapshot(B, "Office Wi-Fi", SETTING_WIRELESS);
        backup.ipv6 = Ipv6Settings { method: Some("auto".into()), addr_gen_mode: Some(1), token: None, dhcp_duid: Some("ll".into()), dhcp_iaid: None };
        let backup0 = backup.clone();
        let seen = WiredIdentity { slaac_iid: Some("::a".into()), dhcp6_iaid_sent: Some("01:02:03:04".into()), ..WiredIdentity::default() };
        let plan = plan_pair(&wired, &iface("wired0"), &backup, &iface("wlan0"), "52:54:00:aa:bb:cc", &seen, BOTH_ON).unwrap();
        apply(&mut wired, &plan.wired);
        apply(&mut backup, &plan.backup);
        assert_eq!(
            (backup.ipv6.addr_gen_mode, backup.ipv6.token.as_deref(), backup.ipv6.dhcp_duid.as_deref(), backup.ipv6.dhcp_iaid.as_deref()),
            (Some(ADDR_GEN_EUI64), Some("::a"), None, Some("01:02:03:04"))
        );
        assert!(plan.summary.iter().any(|l| l.contains("ipv6.addr-gen-mode: stable-privacy -> eui64")), "{:?}", plan.summary);
        let undo = plan_unpair(Some(&wired), Some(&backup));
        apply(&mut backup, &undo.backup);
        assert_eq!(backup, backup0);
    }

    /// Every mirrored setting, each with a value of the user's own: `pair`
    /// changes and saves each one, `unpair` puts each one back, and a
    /// profile read back through the table is the profile.
    #[test]
    fn every_mirrored_setting_is_changed_saved_and_put_back() {
        let mut wired = snapshot(W, "Wired", SETTING_WIRED);
        wired.ipv6.method = Some("auto".into());
        let mut backup = snapshot(B, "Office Wi-Fi", SETTING_WIRELESS);
        let own: [(&str, PropertyValue); 8] = [
            ("cloned-mac-address", PropertyValue::Str(Some("stable".into()))),
            ("dhcp-client-id", PropertyValue::Str(Some("duid".into()))),
            ("addr-gen-mode", PropertyValue::I32(Some(1))),
            ("token", PropertyValue::Str(Some("::77".into()))),
            ("dhcp-duid", PropertyValue::Str(Some("ll".into()))),
            ("dhcp-iaid", PropertyValue::Str(Some("mac".into()))),
            ("dad-timeout", PropertyValue::I32(Some(3000))),
            ("autoconnect", PropertyValue::Bool(true)),
        ];
        assert_eq!(own.len(), MIRRORED.len());
        for (property, value) in &own {
            (mirrored(property).set)(&mut backup, value.clone());
        }
        backup.ipv6.method = Some("auto".into());
        let backup0 = backup.clone();
        let seen = WiredIdentity {
            slaac_iid: Some("::a".into()),
            dhcp6_iaid_sent: Some("01:02:03:04".into()),
            dhcp6_duid_sent: Some("00:04:aa".into()),
            ..WiredIdentity::default()
        };
        let plan = plan_pair(&wired, &iface("wired0"), &backup, &iface("wlan0"), "52:54:00:aa:bb:cc", &seen, BOTH_ON).unwrap();
        apply(&mut backup, &plan.backup);
        for (m, (property, value)) in MIRRORED.iter().zip(&own) {
            assert_eq!(m.property, *property);
            assert_ne!((m.get)(&backup), *value, "{property}: not changed by pair");
            assert_eq!(backup.user_data.get(m.saved_key), Some(&m.encode(value)), "{property}: not saved");
            assert!(all_keys().any(|k| k == m.saved_key), "{property}: its saved key is not a pairing key");
            assert!(
                plan.summary.iter().any(|l| l.contains(&format!("{}.{property}:", m.setting_for(&backup.kind)))),
                "{property}: not said\n{:?}",
                plan.summary
            );
        }
        let undo = plan_unpair(Some(&wired), Some(&backup));
        apply(&mut backup, &undo.backup);
        assert_eq!(backup, backup0);
    }

    /// What libnm reports for a profile that sets none of the hostname settings.
    fn default_hostname_settings() -> BTreeMap<(&'static str, &'static str), PropertyValue> {
        HOSTNAME_PROPERTIES
            .iter()
            .map(|&(setting, property)| {
                let value = match property {
                    "dhcp-send-hostname" => PropertyValue::Bool(true),
                    "dhcp-send-hostname-v2" => PropertyValue::I32(Some(-1)),
                    "dhcp-hostname-flags" => PropertyValue::U32(Some(0)),
                    _ => PropertyValue::Str(None),
                };
                ((setting, property), value)
            })
            .collect()
    }

    #[test]
    fn the_backup_sends_the_hostname_the_wired_link_sends() {
        let mut wired = snapshot(W, "Office LAN", SETTING_WIRED);
        let mut backup = snapshot(B, "Office Wi-Fi", SETTING_WIRELESS);
        wired.hostname = default_hostname_settings();
        backup.hostname = default_hostname_settings();
        // The same settings on both: nothing to change, nothing saved.
        let plan = plan_pair(&wired, &iface("wired0"), &backup, &iface("wlan0"), "52:54:00:aa:bb:cc", &WiredIdentity::default(), BOTH_ON).unwrap();
        assert!(plan.backup.properties.iter().all(|c| !c.property.contains("hostname") && c.property != "dhcp-fqdn"), "{:?}", plan.backup);
        assert!(plan.backup.user_data.keys().all(|k| !k.contains("hostname")));

        wired.hostname.insert((SETTING_IPV4, "dhcp-fqdn"), PropertyValue::Str(Some("laptop.office.example".into())));
        wired.hostname.insert((SETTING_IPV4, "dhcp-hostname-flags"), PropertyValue::U32(Some(0x5)));
        wired.hostname.insert((SETTING_IPV6, "dhcp-hostname"), PropertyValue::Str(Some("laptop".into())));
        backup.hostname.insert((SETTING_IPV4, "dhcp-send-hostname"), PropertyValue::Bool(false));
        backup.hostname.insert((SETTING_IPV4, "dhcp-send-hostname-v2"), PropertyValue::I32(Some(0)));
        backup.hostname.insert((SETTING_IPV6, "dhcp-hostname"), PropertyValue::Str(Some("wifi-name".into())));
        let backup0 = backup.clone();
        let plan = plan_pair(&wired, &iface("wired0"), &backup, &iface("wlan0"), "52:54:00:aa:bb:cc", &WiredIdentity::default(), BOTH_ON).unwrap();
        apply(&mut backup, &plan.backup);
        assert_eq!(backup.hostname, wired.hostname);
        for line in [
            "ipv4.dhcp-send-hostname: no -> yes",
            "ipv4.dhcp-send-hostname-v2: \"0\" -> \"-1\"",
            "ipv4.dhcp-fqdn: (unset) -> \"laptop.office.example\"",
            "ipv4.dhcp-hostname-flags: \"0x0\" -> \"0x5\"",
            "ipv6.dhcp-hostname: \"wifi-name\" -> \"laptop\"",
        ] {
            assert!(plan.summary.iter().any(|l| l.ends_with(line)), "{line}: {:?}", plan.summary);
        }
        // Pairing again keeps the originals; unpair puts them back.
        let again = plan_pair(&wired, &iface("wired0"), &backup, &iface("wlan0"), "52:54:00:aa:bb:cc", &WiredIdentity::default(), BOTH_ON).unwrap();
        apply(&mut backup, &again.backup);
        let undo = plan_unpair(Some(&wired), Some(&backup));
        apply(&mut backup, &undo.backup);
        assert_eq!(backup, backup0);
        // A saved value that no longer parses as its type is not restored.
        let mut edited = backup0.clone();
        edited.user_data.insert(saved_key(SETTING_IPV4, "dhcp-send-hostname"), "value:perhaps".into());
        let undo = plan_unpair(None, Some(&edited));
        assert!(undo.backup.properties.iter().all(|c| c.property != "dhcp-send-hostname" || c.setting != SETTING_IPV4), "{:?}", undo.backup);
    }

    #[test]
    fn pair_refuses_wrong_kinds_and_foreign_pairs() {
        let wired = snapshot(W, "Wired", SETTING_WIRED);
        let vpn = snapshot(B, "VPN", "vpn");
        assert!(matches!(
            plan_pair(&wired, &iface("e0"), &vpn, &iface("v0"), "52:54:00:aa:bb:cc", &WiredIdentity::default(), BOTH_ON),
            Err(PairingError::BackupUnsupported(..))
        ));
        assert_eq!(
            plan_pair(&wired, &iface("e0"), &wired, &iface("e0"), "52:54:00:aa:bb:cc", &WiredIdentity::default(), BOTH_ON),
            Err(PairingError::SameProfile)
        );
        let mut backup = snapshot(B, "B", SETTING_WIRED);
        backup.user_data.insert(KEY_ROLE.into(), "backup".into());
        backup.user_data.insert(KEY_PEER.into(), "33333333-3333-4333-8333-333333333333".into());
        backup.user_data.insert(KEY_DEVICE.into(), "b0".into());
        assert!(matches!(
            plan_pair(&wired, &iface("e0"), &backup, &iface("b0"), "52:54:00:aa:bb:cc", &WiredIdentity::default(), BOTH_ON),
            Err(PairingError::AlreadyPaired { .. })
        ));
    }

    #[test]
    fn lan_mac_rules() {
        let mut wired = snapshot(W, "Wired", SETTING_WIRED);
        assert_eq!(wired_lan_mac(&wired, Some("aa:bb:cc:dd:ee:ff"), Some("11:22:33:44:55:66")).unwrap(), "AA:BB:CC:DD:EE:FF");
        assert_eq!(wired_lan_mac(&wired, None, Some("11:22:33:44:55:66")).unwrap(), "11:22:33:44:55:66");
        assert_eq!(wired_lan_mac(&wired, None, None), Err(PairingError::UnknownMac));
        wired.cloned_mac = Some("random".into());
        assert!(matches!(wired_lan_mac(&wired, Some("aa:bb:cc:dd:ee:ff"), None), Err(PairingError::GeneratedMac(..))));
        // `stable`: the address the active profile has now; refused, saying why, while inactive.
        wired.cloned_mac = Some("stable".into());
        let stable = wired_lan_mac(&wired, Some("aa:bb:cc:dd:ee:ff"), Some("12:34:56:78:9a:bc"));
        assert!(matches!(stable, Err(PairingError::GeneratedMac(_, _, why)) if why.contains("connect the wired profile")), "{stable:?}");
        wired.active = true;
        assert_eq!(wired_lan_mac(&wired, Some("aa:bb:cc:dd:ee:ff"), Some("12:34:56:78:9a:bc")).unwrap(), "12:34:56:78:9A:BC");
        wired.cloned_mac = Some("02:00:00:00:00:01".into());
        assert_eq!(wired_lan_mac(&wired, Some("aa:bb:cc:dd:ee:ff"), None).unwrap(), "02:00:00:00:00:01");
        assert!(parse_mac("aa:bb:cc:dd:ee").is_err());
        assert_eq!(mac_bytes("02:00:00:00:00:FF"), Some([2, 0, 0, 0, 0, 0xff]));
        assert_eq!(mac_bytes("02:00:00:00:00"), None);
    }

    #[test]
    fn membership_errors_are_reported() {
        let mut data = BTreeMap::new();
        assert_eq!(membership("p", &data), Ok(None));
        data.insert(KEY_ROLE.to_owned(), "sideways".to_owned());
        assert!(matches!(membership("p", &data), Err(PairingError::BadRole { .. })));
        data.insert(KEY_ROLE.to_owned(), "wired".to_owned());
        assert!(matches!(membership("p", &data), Err(PairingError::Incomplete { .. })));
        data.insert(KEY_PEER.to_owned(), "../../etc".to_owned());
        data.insert(KEY_DEVICE.to_owned(), "wired0".to_owned());
        assert!(matches!(membership("p", &data), Err(PairingError::BadName { .. })));
    }

    #[test]
    fn carrier_wait_conf_names() {
        let uuid = Uuid::parse(W).unwrap();
        assert!(is_carrier_wait_conf_name(&carrier_wait_conf_name(&uuid)));
        assert!(!is_carrier_wait_conf_name("90-nm-handover-x.conf"));
        assert!(!is_carrier_wait_conf_name("00-other.conf"));
        let text = carrier_wait_conf(&uuid, &iface("wired0"), 500);
        assert!(text.contains("match-device=interface-name:wired0\ncarrier-wait-timeout=500\n"));
    }

    #[test]
    fn env_and_keyfile_forms() {
        let mut env = BTreeMap::new();
        env.insert("NM_055HANDOVER__ROLE".to_owned(), "wired".to_owned());
        env.insert("NM_055HANDOVER__PEER".to_owned(), B.to_owned());
        env.insert("NM_055HANDOVER__LEASE_055CARRY".to_owned(), "no".to_owned());
        // Near misses of the encoding are other keys, not ours.
        env.insert("NM_HANDOVER__DEVICE".to_owned(), "wired0".to_owned());
        env.insert("SOMETHING_ELSE".to_owned(), "x".to_owned());
        let data = user_data_from_env(&env);
        assert_eq!(data.get(KEY_ROLE).map(String::as_str), Some("wired"));
        assert_eq!(data.get(KEY_PEER).map(String::as_str), Some(B));
        assert_eq!(data.get(KEY_LEASE_CARRY).map(String::as_str), Some("no"));
        assert_eq!(data.len(), 3);
        // The encoding itself, as nm_utils_env_var_encode_name() does it.
        assert_eq!(env_var_suffix("nm-handover.role"), "NM_055HANDOVER__ROLE");
        assert_eq!(env_var_suffix("a.B-c_9"), "A___B_055C_1379");

        let keyfile =
            "[connection]\nid=Wired\n\n[user]\nnm-handover.role=backup\nnm-handover.peer=11111111-1111-4111-8111-111111111111\n\n[ipv4]\nmethod=auto\n";
        let data = user_data_from_keyfile(keyfile);
        assert_eq!(data.get(KEY_ROLE).map(String::as_str), Some("backup"));
        assert!(!data.contains_key("method"));
    }
}
