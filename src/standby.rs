//! The warm standby (`pair --standby`): while the cable is in, the backup
//! Wi-Fi is associated with the wired MAC address but silent on the LAN, so
//! that a pull needs no scan, association, key handshake or DHCP exchange.
//!
//! The standby is a volatile profile (NetworkManager keeps it in memory and
//! removes it once it is no longer active) made from the backup profile: the
//! same network, secrets and cloned MAC, with IPv4 and IPv6 disabled (no
//! address, no IPv6 link-local address, DAD or MLD), `autoconnect=no` and no
//! pairing keys. The supervisor brings it up on the backup's device while the
//! wired link holds the address and the backup's network is in range, and
//! sets `arp_ignore=1` on that link (Linux answers ARP for any local address
//! on any link otherwise) and `ignore_routes_with_linkdown=1` on the wired
//! one (its routes stay in the table for NetworkManager's carrier-wait and
//! would still be used).
//!
//! At a pull, a thread of the supervisor sees the wired carrier go (rtnetlink)
//! and puts the wired link's address and routes on the standby's link at
//! once: the LAN's switch floods to the access point as soon as the wired
//! port is down, and the peers' ARP entries stay right (same MAC). The
//! supervisor then reapplies the standby with the backup's IP settings and
//! that address (NetworkManager adopts the address; its DHCP client renews the
//! lease carried from the wired link). At the re-plug the thread takes the
//! address off the standby's link the moment the carrier is back, before the
//! wired DHCP client speaks (unless the standby's own DHCP client has yet to
//! take the lease it asked for at the pull: see `hold_for_lease_until`), and
//! the supervisor reapplies it silent.
//!
//! The decisions are pure ([`next_step`], the settings transformations); the
//! supervisor carries them out ([`tend`]) and runs the thread ([`FastPath`]).

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use glib::prelude::*;
use glib::Variant;
use tracing::{debug, info, warn};

use crate::handover::{Pair, Side};
use crate::lease::{LeaseFormat, LeaseOwner, LeaseStore};
use crate::marks::Mark;
use crate::names::{Iface, Uuid};
use crate::sys::libnm::{DeviceState, Nm};
use crate::sys::netlink::{self, LinkMonitor, LinkReport};
use crate::sys::settings::{self, ProfileEdit, PropertyChange, PropertyValue, SettingsError};

/// The standby profile's UUID for the backup profile `backup`: derived, so
/// that every supervisor (and `status`, `unpair`) finds the same one.
pub fn standby_uuid(backup: &Uuid) -> Uuid {
    let text = backup.as_str();
    let first = u32::from_str_radix(&text[..8], 16).unwrap_or(0) ^ 0x5354_4e42;
    Uuid::parse(&format!("{first:08x}{}", &text[8..])).unwrap_or_else(|_| backup.clone())
}

/// The standby profile's name, as `nmcli connection` shows it.
pub fn standby_name(backup_id: &str) -> String {
    format!("{backup_id} (nm-handover standby)")
}

fn ip_setting_disabled() -> Option<Vec<(String, Variant)>> {
    Some(vec![("method".to_owned(), "disabled".to_variant())])
}

/// The standby profile made from the backup's stored settings (secrets
/// included): the same network and MAC address, silent.
pub fn standby_settings(backup: &Variant, uuid: &Uuid, name: &str) -> Result<Variant, SettingsError> {
    // Brought up by root with no one to ask: a secret NetworkManager does
    // not store (agent-owned, or asked for every time) would make it ask the
    // user's agent, a password prompt at every try.
    if let Some(security) = settings::setting(backup, "802-11-wireless-security")? {
        let get = |key: &str| security.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        let key_mgmt = get("key-mgmt").and_then(|v| v.str().map(str::to_owned)).unwrap_or_default();
        let refuse = |message: &str| Err(SettingsError { what: "802-11-wireless-security".into(), message: message.into() });
        match key_mgmt.as_str() {
            "wpa-psk" | "sae" if get("psk").is_none() => {
                return refuse("NetworkManager stores no password for this network (an agent holds it, or it is asked for): no standby")
            }
            "wpa-psk" | "sae" | "owe" => {}
            other => return refuse(&format!("the warm standby supports open, OWE, WPA-PSK and SAE networks, not key-mgmt {other:?}")),
        }
    }
    let edit = ProfileEdit {
        properties: [
            ("id", PropertyValue::Str(Some(name.to_owned()))),
            ("uuid", PropertyValue::Str(Some(uuid.to_string()))),
            ("autoconnect", PropertyValue::Bool(false)),
        ]
        .into_iter()
        .map(|(property, value)| PropertyChange { setting: "connection", property, value })
        .collect(),
        ..Default::default()
    };
    let standby = settings::apply_edit(backup, &edit)?;
    // No pairing keys: the dispatcher's events of the standby concern no pair.
    let standby = settings::replace_setting(&standby, "user", None)?;
    let standby = settings::replace_setting(&standby, "ipv4", ip_setting_disabled())?;
    settings::replace_setting(&standby, "ipv6", ip_setting_disabled())
}

/// The wired link's IPv4 configuration the standby takes over at a pull.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WiredAddress {
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
}

impl WiredAddress {
    fn network(&self) -> Ipv4Addr {
        let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
        Ipv4Addr::from(u32::from(self.address) & mask)
    }
}

/// The standby's applied settings with the backup's IP settings and the
/// wired link's address (and gateway) as static ones beside its DHCP, so
/// that NetworkManager adopts the address the fast path put on the link
/// while its DHCP client renews the lease.
pub fn serving_settings(applied: &Variant, backup: &Variant, wired: &WiredAddress) -> Result<Variant, SettingsError> {
    let mut ipv4 = settings::setting(backup, "ipv4")?.unwrap_or_else(|| vec![("method".to_owned(), "auto".to_variant())]);
    // The legacy forms would contradict the new ones.
    ipv4.retain(|(key, _)| !matches!(key.as_str(), "addresses" | "address-data" | "gateway"));
    let address = glib::VariantDict::new(None);
    address.insert("address", wired.address.to_string());
    address.insert("prefix", u32::from(wired.prefix));
    ipv4.push(("address-data".to_owned(), Variant::array_from_iter_with_type(glib::VariantTy::VARDICT, [address.end()])));
    if let Some(gateway) = wired.gateway {
        ipv4.push(("gateway".to_owned(), gateway.to_string().to_variant()));
    }
    let ipv6 = settings::setting(backup, "ipv6")?;
    let serving = settings::replace_setting(applied, "ipv4", Some(ipv4))?;
    settings::replace_setting(&serving, "ipv6", ipv6)
}

/// The standby's applied settings silent again.
pub fn silent_settings(applied: &Variant) -> Result<Variant, SettingsError> {
    let silent = settings::replace_setting(applied, "ipv4", ip_setting_disabled())?;
    settings::replace_setting(&silent, "ipv6", ip_setting_disabled())
}

/// Whether applied settings are the silent ones.
pub fn is_silent(applied: &Variant) -> bool {
    settings::setting(applied, "ipv4").ok().flatten().is_some_and(|ipv4| ipv4.iter().any(|(k, v)| k == "method" && v.str() == Some("disabled")))
}

/// What the supervisor sees of one pair with a standby, at one look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StandbyView {
    /// The wired link has carrier and holds its address (NM has it activated).
    pub wired_holds_address: bool,
    pub wired_carrier: bool,
    /// The standby profile is activated on the backup's device.
    pub standby_active: bool,
    /// Its applied IP settings are the silent ones.
    pub standby_silent: bool,
    /// The fast path put the address on the standby's link ([`Mark::StandbyServing`]).
    pub serving_mark: bool,
    /// The backup's device is idle (disconnected) and NM lists the backup
    /// profile as available on it (its network is in range).
    pub backup_device_free: bool,
    /// The backup profile itself is active or activating somewhere.
    pub backup_active: bool,
    /// The user disconnected the backup's device by hand (or the standby):
    /// left so until the next pull.
    pub left_by_user: bool,
    /// The standby was asked for recently and may still be on its way.
    pub recently_asked: bool,
    /// The backup's device has been free for less than [`FREE_FOR`]:
    /// NetworkManager's own autoconnect (another network the user chose to
    /// connect to automatically, such as the home Wi-Fi) goes first.
    pub freed_just_now: bool,
    /// The standby dropped out by itself (its network went away) and the
    /// device has finished no scan since: the network is still listed.
    pub lost_before_last_scan: bool,
}

/// What the supervisor does for a pair's standby at a look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StandbyStep {
    Nothing,
    /// Create and activate the standby profile.
    BringUp,
    /// Reapply the standby with the backup's IP settings and the address.
    Serve,
    /// Reapply the standby silent.
    Silence,
}

/// Pure: the next step for one pair's standby.
pub fn next_step(view: &StandbyView) -> StandbyStep {
    if view.standby_active {
        if view.serving_mark && view.standby_silent && !view.wired_carrier {
            return StandbyStep::Serve;
        }
        if !view.serving_mark && !view.standby_silent && view.wired_carrier {
            return StandbyStep::Silence;
        }
        return StandbyStep::Nothing;
    }
    if view.wired_holds_address
        && view.backup_device_free
        && !view.backup_active
        && !view.left_by_user
        && !view.recently_asked
        && !view.freed_just_now
        && !view.lost_before_last_scan
    {
        return StandbyStep::BringUp;
    }
    StandbyStep::Nothing
}

/// How long a standby asked for is given to come up before it is asked
/// again, doubled for each try in a row that did not, up to [`BRING_UP_PAUSE`].
const BRING_UP_WAIT: Duration = Duration::from_secs(30);
const BRING_UP_PAUSE: Duration = Duration::from_secs(300);

fn bring_up_wait(tries: u32) -> Duration {
    (BRING_UP_WAIT * 2u32.saturating_pow(tries.saturating_sub(1))).min(BRING_UP_PAUSE)
}

/// How long the backup's device must have been free before the standby is
/// brought up on it (see [`StandbyView::freed_just_now`]).
pub const FREE_FOR: Duration = Duration::from_secs(3);

/// What the fast path guards a pair's address with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// The warm standby: it takes the address at a pull and leaves it at the re-plug.
    Standby,
    /// The backup profile itself, which holds the address since a pull, on a
    /// NetworkManager that dispatches `link-up`: at the re-plug its link is
    /// taken off the LAN (down, with its own MAC `own_mac`) at once, what the
    /// re-plug's `link-up` would do, which then has nothing left to do (see
    /// [`Mark::ReplugHandled`]). Started by nm-dispatcher, the companion took
    /// 2.6-4.8 s to do it in the Wi-Fi VM (a libnm client loaded while the
    /// backup's own events loaded theirs), of the 5 s NetworkManager waits.
    /// Nothing at a pull: the supervisor hands over.
    Backup {
        own_mac: Option<[u8; 6]>,
        /// The MAC the backup's link had when armed (the wired one, cloned):
        /// a link that no longer has it holds another profile since (the
        /// user's, NetworkManager's), and is left alone.
        serving_mac: [u8; 6],
    },
}

/// One pair the fast path watches: the wired link (its index, and its name,
/// which a dock's NIC created again keeps under another index) and its
/// address, the link that serves the address while the cable is out (the
/// standby's, or the backup's: see [`Guard`]), and whether it serves now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Armed {
    pub wired: i32,
    pub wired_name: [u8; 16],
    pub standby_link: i32,
    pub standby_iface: Iface,
    pub address: WiredAddress,
    /// The route metric NM gives the backup's device (its routes take over).
    pub metric: u32,
    pub serving: bool,
    pub guard: Guard,
    /// When the supervisor asked NetworkManager's internal DHCP client on
    /// the standby for the lease (the reapply that serves), if it did since
    /// the pull: see `hold_for_lease_until`.
    pub lease_asked: Option<Instant>,
}

/// How long after the supervisor asked for it the standby's lease may still
/// be on its way (NetworkManager's DHCP client asks again after 4 s or so;
/// past this, a re-plug does not wait for it).
const LEASE_ON_ITS_WAY: Duration = Duration::from_secs(10);

/// The longest a re-plug keeps the address on the standby's link for
/// NetworkManager's DHCP client to take the lease it was given (in the
/// Wi-Fi VM, a re-plug just after the serving reapply waited 1.1 s for it:
/// its exchange had not started).
const LEASE_HOLD: Duration = Duration::from_secs(3);

/// Pure: until when a re-plug at `now` keeps the address on the standby's
/// link, the lease having been asked for at `lease_asked`, unless the
/// standby's DHCP client takes it first. NetworkManager's internal client,
/// having committed a lease, binds a socket to its address to take it
/// (`n_dhcp4_client_lease_accept`); on 1.42, an address gone from the link
/// at that moment makes the bind fail and NetworkManager fail the standby
/// (`ip-config-unavailable`), whose association the supervisor then starts
/// again: the shared MAC on the access point's port while docked. Held
/// meanwhile, the address and its routes stay on the standby's link (the
/// client connects its socket to the server through them; the host's
/// traffic goes on through the access point until the wired link has the
/// address), and the wired client asks for the lease it holds, which a
/// server confirms without a ping (ISC dhcpd pings only an address it
/// offers), within seconds of a pull.
fn hold_for_lease_until(lease_asked: Option<Instant>, now: Instant) -> Option<Instant> {
    lease_asked.filter(|asked| now.saturating_duration_since(*asked) < LEASE_ON_ITS_WAY).map(|_| now + LEASE_HOLD)
}

/// What the fast path does at a change of an armed pair's wired carrier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reaction {
    /// The pull: the standby takes the address.
    Serve,
    /// The re-plug: the standby leaves the address.
    Silence,
    /// The re-plug: the backup's link leaves the LAN.
    TakeBackupOff {
        own_mac: Option<[u8; 6]>,
        serving_mac: [u8; 6],
    },
    Nothing,
}

/// Pure: the fast path's reaction to the wired carrier (`None`: a change of
/// another link) of an entry serving or not, of a pair root still records.
/// An unpaired pair's links are no longer nm-handover's to act on, but an
/// address its standby serves is taken back all the same.
fn reaction(carrier: Option<bool>, serving: bool, guard: Guard, recorded: bool) -> Reaction {
    match (carrier, serving, guard) {
        (Some(false), false, Guard::Standby) if recorded => Reaction::Serve,
        (Some(true), true, Guard::Standby) => Reaction::Silence,
        (Some(true), true, Guard::Backup { own_mac, serving_mac }) if recorded => Reaction::TakeBackupOff { own_mac, serving_mac },
        _ => Reaction::Nothing,
    }
}

impl Armed {
    /// Whether a link report is about this entry's wired link: its index, or
    /// its name under a new index (re-docked), which the entry then follows.
    fn follows(&mut self, report: &LinkReport) -> Option<bool> {
        match *report {
            LinkReport::Present { index, carrier, name, .. } if index == self.wired || name == self.wired_name => {
                self.wired = index;
                Some(carrier)
            }
            // An undock is a pull.
            LinkReport::Removed { index } if index == self.wired => Some(false),
            _ => None,
        }
    }
}

/// The pairs the fast path watches (by wired profile), shared between the
/// supervisor, which arms and disarms them at each look, and the thread.
#[derive(Debug, Clone, Default)]
pub struct FastPath {
    armed: Arc<Mutex<Vec<(Uuid, Armed)>>>,
}

impl FastPath {
    /// Starts a thread that watches the armed wired links' carrier; the
    /// supervisor starts another if it ends.
    pub fn spawn_watcher(&self) -> std::io::Result<std::thread::JoinHandle<()>> {
        let monitor = LinkMonitor::open()?;
        let armed = self.armed.clone();
        std::thread::Builder::new().name("standby".into()).spawn(move || watch(monitor, armed))
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Vec<(Uuid, Armed)>> {
        self.armed.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Arms `pair` with `entry`, unless its entry serves now (the thread
    /// moved the address since the caller looked): that one stays.
    fn arm(&self, pair: &Uuid, entry: Armed) {
        let mut table = self.table();
        if table.iter().any(|(p, a)| p == pair && a.serving) {
            return;
        }
        table.retain(|(p, _)| p != pair);
        table.push((pair.clone(), entry));
    }

    fn disarm(&self, pair: &Uuid) {
        self.table().retain(|(p, _)| p != pair);
    }

    /// Disarms every pair but `pairs` (unpaired, no longer trusted, the standby turned off).
    pub fn keep_only(&self, pairs: &[Uuid]) {
        self.table().retain(|(p, _)| pairs.contains(p));
    }

    /// Records that the supervisor asks the serving standby's DHCP client
    /// for the lease now (`None`: it did not, after all); says whether the
    /// standby still serves (the thread may have taken the address off since
    /// the supervisor looked).
    fn note_lease_asked(&self, pair: &Uuid, at: Option<Instant>) -> bool {
        match self.table().iter_mut().find(|(p, a)| p == pair && a.serving) {
            Some((_, entry)) => {
                entry.lease_asked = at;
                true
            }
            None => false,
        }
    }

    fn get(&self, pair: &Uuid) -> Option<Armed> {
        self.table().iter().find(|(p, _)| p == pair).map(|(_, a)| a.clone())
    }

    /// Takes the address off `pair`'s standby now if it still serves: the
    /// thread missed the carrier's return (a dock's NIC back under another
    /// name, lost link messages).
    fn silence_if_serving(&self, pair: &Uuid) {
        if let Some((_, entry)) = self.table().iter_mut().find(|(p, a)| p == pair && a.serving && a.guard == Guard::Standby) {
            silence_now(entry);
        }
    }

    /// Disarms `pair`, first taking back the address its standby serves, if
    /// it does: its link was refused since (see `crate::trust`), and the
    /// address nm-handover put there must not meet the wired link's at the
    /// next re-plug with no fast path left to take it off.
    fn withdraw(&self, pair: &Uuid) {
        if let Some((_, entry)) = self.table().iter_mut().find(|(p, a)| p == pair && a.serving && a.guard == Guard::Standby) {
            silence_ipv6(entry);
            take_address_off(entry);
            warn!("standby: {} may no longer be touched: the address it served taken back", entry.standby_iface);
        }
        self.disarm(pair);
    }
}

/// The thread: acts on the armed pairs' carrier changes as they happen.
fn watch(monitor: LinkMonitor, armed: Arc<Mutex<Vec<(Uuid, Armed)>>>) {
    // The supervisor runs at a lower priority; this thread races NetworkManager's DHCP client.
    if let Err(e) = crate::sys::racing_priority() {
        warn!("standby: {e}");
    }
    let table = || armed.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    loop {
        let reports = match monitor.next(Duration::from_secs(60)) {
            Ok(reports) => reports,
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                // Changes were lost: the armed links' state is asked for again.
                for (_, entry) in table().iter() {
                    if let Err(e) = monitor.request(entry.wired) {
                        warn!("standby: asking for link {}: {e}", entry.wired);
                    }
                }
                continue;
            }
            Err(e) => {
                warn!("standby: link monitor: {e}");
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        for report in reports {
            for (pair, entry) in table().iter_mut() {
                let carrier = entry.follows(&report);
                if carrier == Some(false) {
                    // A re-plug's mark the `link-up` did not take (it came too late)
                    // must not answer the next re-plug's.
                    let _ = Mark::ReplugHandled.clear(entry.wired);
                }
                // (Unpaired since the supervisor's last look, which disarms it: root's record is the trust anchor.)
                let recorded = carrier.is_some() && crate::trust::recorded_pair_path(pair).is_file();
                match reaction(carrier, entry.serving, entry.guard, recorded) {
                    Reaction::Serve => serve_now(entry),
                    Reaction::Silence => silence_now(entry),
                    Reaction::TakeBackupOff { own_mac, serving_mac } => take_backup_off_now(entry, own_mac, serving_mac),
                    Reaction::Nothing => {}
                }
            }
        }
    }
}

/// The pull: the address and its routes onto the standby's link.
fn serve_now(entry: &mut Armed) {
    let started = Instant::now();
    let a = entry.address;
    // (Before the address: a `down` that comes meanwhile must see the standby serving.)
    if let Err(e) = Mark::StandbyServing.set(entry.standby_link) {
        warn!("standby: {e}");
    }
    let outcome = netlink::add_ipv4_address(entry.standby_link, a.address, a.prefix)
        .and_then(|()| netlink::add_ipv4_route(entry.standby_link, a.network(), a.prefix, None, a.address, entry.metric))
        .and_then(|()| match a.gateway {
            Some(gateway) => netlink::add_ipv4_route(entry.standby_link, Ipv4Addr::UNSPECIFIED, 0, Some(gateway), a.address, entry.metric),
            None => Ok(()),
        });
    match outcome {
        Ok(()) => {
            entry.serving = true;
            info!(address = %a.address, took_us = started.elapsed().as_micros() as u64, "wired carrier lost: {} holds the address (warm standby)", entry.standby_iface);
        }
        Err(e) => {
            warn!("standby: putting {} on {}: {e}; the dispatcher's down hands over instead", a.address, entry.standby_iface);
            let _ = netlink::del_ipv4_address(entry.standby_link, a.address, a.prefix);
            let _ = Mark::StandbyServing.clear(entry.standby_link);
        }
    }
}

/// The re-plug: the address off the standby's link, before the wired DHCP
/// client speaks (or, in a hold for the standby's lease, once its client has
/// taken it: see [`hold_for_lease_until`]). The re-plug is recorded as under way, as the carrier
/// watcher records it: where NetworkManager activates nothing on the wired
/// link (a wired profile connected by hand), the supervisor brings the
/// backup up (see `crate::marks::replug_overdue_in`).
fn silence_now(entry: &mut Armed) {
    let started = Instant::now();
    // (Marked first: a `link-up` that comes during a hold for the lease must
    // leave the standby to this thread, not take its link down.)
    for mark in [Mark::ReplugHandled, Mark::ReplugPending] {
        if let Err(e) = mark.set(entry.wired) {
            warn!("standby: {e}");
        }
    }
    silence_ipv6(entry);
    if let Some(until) = hold_for_lease_until(entry.lease_asked, started) {
        hold_for_lease(entry, until);
    }
    if take_address_off(entry) {
        info!(took_us = started.elapsed().as_micros() as u64, "wired carrier back: {} left the LAN's address (warm standby)", entry.standby_iface);
    }
}

/// Waits until NetworkManager's DHCP client on the standby has taken the
/// lease it was asked for, or `until` (see [`hold_for_lease_until`]): its
/// socket bound to the leased address and connected to the server (the
/// connection needs the standby's route to the server too, which stays).
/// The wired client's own such socket ends the wait too: the address is
/// then on the wired link, still the host's, which is all the standby's
/// client needs to bind to it. (Sockets say nothing of their link in
/// `/proc/net/udp`.)
fn hold_for_lease(entry: &Armed, until: Instant) {
    let started = Instant::now();
    let address = entry.address.address;
    loop {
        match crate::sys::udp_socket_connected(address, DHCP_PORTS.0, DHCP_PORTS.1) {
            Ok(true) => break,
            // (Not faster: this thread runs ahead of NetworkManager, which has the lease to take.)
            Ok(false) if Instant::now() < until => std::thread::sleep(Duration::from_millis(10)),
            Ok(false) => {
                warn!(
                    held_us = started.elapsed().as_micros() as u64,
                    "wired carrier back: NetworkManager's DHCP client on {} has not taken the lease for {address}: the address leaves it all the same",
                    entry.standby_iface
                );
                return;
            }
            Err(e) => {
                warn!("standby: /proc/net/udp: {e}");
                return;
            }
        }
    }
    let held = started.elapsed();
    if held >= Duration::from_millis(1) {
        info!(
            held_us = held.as_micros() as u64,
            "wired carrier back: {} kept {address} until NetworkManager's DHCP client took its lease", entry.standby_iface
        );
    }
}

/// The ports of a DHCP client's socket and of the server it is connected to.
const DHCP_PORTS: (u16, u16) = (68, 67);

/// The re-plug of a pair whose backup profile holds the address
/// ([`Guard::Backup`]): its link off the LAN before the wired DHCP client
/// speaks, recorded so that it is set up again once NetworkManager has
/// deactivated the backup (see `crate::offlan`); the hand-back follows the
/// wired link's address (its `up`). The re-plug is recorded as under way,
/// as the carrier watcher records it: where the wired link gets no address
/// (a dead port, a wired profile NetworkManager does not activate, so no
/// `link-up` and no `down`), the supervisor brings the backup back (see
/// `crate::marks::replug_overdue_in`).
fn take_backup_off_now(entry: &mut Armed, own_mac: Option<[u8; 6]>, serving_mac: [u8; 6]) {
    let started = Instant::now();
    entry.serving = false;
    let mac_now = std::fs::read_to_string(format!("/sys/class/net/{}/address", entry.standby_iface)).ok().and_then(|mac| crate::pairing::mac_bytes(mac.trim()));
    if mac_now != Some(serving_mac) || netlink::if_index(entry.standby_iface.as_str()).ok() != Some(entry.standby_link) {
        warn!("re-plug: {} no longer carries the pair's address and MAC: left alone (the link-up decides)", entry.standby_iface);
        return;
    }
    if let Err(e) = Mark::ReplugPending.set(entry.wired) {
        warn!("re-plug: {e}");
    }
    match crate::offlan::take_off_lan(entry.standby_link, own_mac) {
        Ok(()) => {
            info!(took_us = started.elapsed().as_micros() as u64, "wired carrier back: took {} off the LAN (link down, own MAC restored)", entry.standby_iface);
            if let Err(e) = Mark::ReplugHandled.set(entry.wired) {
                warn!("re-plug: {e}");
            }
        }
        Err(e) => warn!("re-plug: taking {} off the LAN: {e}; the link-up does it", entry.standby_iface),
    }
}

/// Takes the IPv4 address the standby serves off its link (its callers
/// first take its IPv6 addresses off with [`silence_ipv6`]). Says whether the
/// address came off (otherwise the link was set down, what the carrier
/// watcher does).
fn take_address_off(entry: &mut Armed) -> bool {
    let off = match netlink::del_ipv4_address(entry.standby_link, entry.address.address, entry.address.prefix) {
        Ok(()) => true,
        Err(e) => {
            warn!("standby: taking the address off {}: {e}; setting the link down", entry.standby_iface);
            if let Err(e) = netlink::take_index_down(entry.standby_link, None) {
                warn!("standby: {e}");
            }
            false
        }
    };
    entry.serving = false;
    entry.lease_asked = None;
    if let Err(e) = Mark::StandbyServing.clear(entry.standby_link) {
        warn!("standby: {e}");
    }
    off
}

/// The standby's IPv6 off: its addresses (the wired link's own, with the
/// pair's IPv6 identity) gone before the wired link's duplicate address
/// detection asks for them; the silent reapply that follows keeps it off.
fn silence_ipv6(entry: &Armed) {
    let ipv6_off = crate::sys::paths::link_sysctl_path("ipv6", entry.standby_iface.as_str(), "disable_ipv6");
    if let Err(e) = std::fs::write(&ipv6_off, "1") {
        warn!("standby: {}: {e}", ipv6_off.display());
    }
}

/// What the supervisor remembers of the standbys between looks.
#[derive(Debug, Default)]
pub struct Standbys {
    /// When each pair's standby was last asked for, and how many times in a
    /// row without it coming up.
    asked: std::collections::BTreeMap<Uuid, (Instant, u32)>,
    /// Problems already logged (each once per supervisor).
    reported: std::collections::BTreeSet<String>,
    /// Since when each pair's backup device has been free.
    free_since: std::collections::BTreeMap<Uuid, Instant>,
    /// Whether each pair's standby was up at the last look, and when
    /// (CLOCK_BOOTTIME ms) it was last seen gone after being up.
    was_up: std::collections::BTreeSet<Uuid>,
    lost_at_ms: std::collections::BTreeMap<Uuid, i64>,
    /// When to look again after a step found the handover lock busy.
    retry_at: Option<Instant>,
}

impl Standbys {
    /// Notes whether the pair's backup device is free now; says whether it
    /// became so less than [`FREE_FOR`] ago.
    pub fn freed_just_now(&mut self, pair: &Uuid, free: bool, now: Instant) -> bool {
        if !free {
            self.free_since.remove(pair);
            return false;
        }
        now.duration_since(*self.free_since.entry(pair.clone()).or_insert(now)) < FREE_FOR
    }

    /// Notes whether the pair's standby is up; says whether it went away
    /// before the device's last finished scan (`last_scan_ms`), if it did.
    pub fn lost_before_scan(&mut self, pair: &Uuid, up: bool, now_ms: i64, last_scan_ms: Option<i64>) -> bool {
        if up {
            self.was_up.insert(pair.clone());
            self.lost_at_ms.remove(pair);
            return false;
        }
        if self.was_up.remove(pair) {
            self.lost_at_ms.insert(pair.clone(), now_ms);
        }
        match (self.lost_at_ms.get(pair), last_scan_ms) {
            (Some(lost), Some(scan)) => scan <= *lost,
            (Some(_), None) => false,
            (None, _) => false,
        }
    }

    /// When the supervisor must look again, changes or not: a device free
    /// for [`FREE_FOR`] by then.
    pub fn next_look_in(&self, now: Instant) -> Option<Duration> {
        let retry = self.retry_at.map(|at| at.saturating_duration_since(now).max(Duration::from_millis(1)));
        self.free_since.values().map(|since| (*since + FREE_FOR).saturating_duration_since(now)).filter(|d| !d.is_zero()).chain(retry).min()
    }
}

/// The per-link kernel settings the standby sets to 1: (family, key, on the wired link).
const SYSCTLS: [(&str, &str, bool); 3] =
    [("ipv4", "arp_ignore", false), ("ipv4", "ignore_routes_with_linkdown", true), ("ipv6", "ignore_routes_with_linkdown", true)];

/// Sets the standby's kernel settings on the backup's link (`on_wired`
/// false) or the wired one, keeping each one's value from before in
/// /run/nm-handover the first time, for [`restore_sysctls`].
fn write_sysctls(iface: &Iface, on_wired: bool) {
    for (family, key, _) in SYSCTLS.into_iter().filter(|(_, _, wired)| *wired == on_wired) {
        let path = crate::sys::paths::link_sysctl_path(family, iface.as_str(), key);
        let saved = crate::sys::paths::saved_sysctl_path(family, iface.as_str(), key);
        // (A link planted there is no saved value: write_atomically refuses to replace it.)
        if std::fs::symlink_metadata(&saved).is_err() {
            if let Ok(before) = std::fs::read_to_string(&path) {
                if let Err(e) = crate::lease::write_atomically(&saved, before.as_bytes()) {
                    warn!("standby: {}: {e}", saved.display());
                }
            }
        }
        if let Err(e) = std::fs::write(&path, "1") {
            warn!("standby: {}: {e}", path.display());
        }
    }
}

/// Puts back the kernel settings [`write_sysctls`] changed on the pair's links (`unpair`).
pub fn restore_sysctls(wired: &Iface, backup: &Iface) {
    for (family, key, on_wired) in SYSCTLS {
        let iface = if on_wired { wired } else { backup };
        let saved = crate::sys::paths::saved_sysctl_path(family, iface.as_str(), key);
        let before = match crate::sys::lock::read_no_follow(&saved) {
            Ok(before) => before,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                warn!("standby: {}: {e}; {} left as it is", saved.display(), key);
                continue;
            }
        };
        let path = crate::sys::paths::link_sysctl_path(family, iface.as_str(), key);
        match std::fs::write(&path, before.trim()) {
            Ok(()) => {
                let _ = std::fs::remove_file(&saved);
            }
            Err(e) => warn!("standby: {}: {e}", path.display()),
        }
    }
}

/// NetworkManager's default route metric for a device type without a
/// profile value (`nm_device_get_route_metric_default()`).
fn default_metric(wifi: bool) -> u32 {
    if wifi {
        600
    } else {
        100
    }
}

/// One look at every pair with a standby: arms the fast path and carries
/// out [`next_step`].
pub fn tend(nm: &Nm, pairs: &[Pair], fast: &FastPath, standbys: &mut Standbys) {
    standbys.retry_at = None;
    for pair in pairs.iter().filter(|p| p.options.standby) {
        if let Err(e) = tend_pair(nm, pair, fast, standbys) {
            let problem = format!("standby of '{}': {e}", pair.wired.id);
            if standbys.reported.insert(problem.clone()) {
                warn!("{problem}");
            }
        }
    }
}

/// How long a standby step waits for a handover in progress (it holds a
/// `link-up` NetworkManager waits for; the next look tries again).
const STEP_LOCK_WAIT: Duration = Duration::from_millis(500);

fn tend_pair(nm: &Nm, pair: &Pair, fast: &FastPath, standbys: &mut Standbys) -> crate::error::Result<()> {
    let uuid = standby_uuid(&pair.backup.uuid);
    let Some(backup_dev) = nm.device(pair.backup.device.as_str()) else {
        fast.disarm(&pair.wired.uuid);
        return Ok(());
    };
    // (Undocked, the wired device is gone: that is a pull.)
    let wired_dev = nm.device(pair.wired.device.as_str());
    // Root changes these links' addresses and settings: only where
    // NetworkManager binds the pair's profiles to them (see `crate::trust`),
    // and the fast path no longer acts on a link refused since it was armed.
    // (A refused wired link leaves the fast path armed: it only reads that
    // link's carrier, and takes the standby's address off at its return.)
    if let Err(e) = pair.may_act_on(nm, &pair.backup) {
        fast.withdraw(&pair.wired.uuid);
        return Err(e);
    }
    if wired_dev.is_some() {
        pair.may_act_on(nm, &pair.wired)?;
    }
    let wired_index = netlink::if_index(pair.wired.device.as_str()).ok();
    let standby_index = netlink::if_index(pair.backup.device.as_str()).ok();
    let active_here = backup_dev.active_connection().and_then(|ac| ac.uuid());
    let standby_active = active_here.as_deref() == Some(uuid.as_str()) && backup_dev.state() == DeviceState::Activated;
    let applied = if standby_active { Some(nm.applied_settings(&backup_dev)?) } else { None };
    let wired_carrier = wired_dev.as_ref().is_some_and(|d| d.has_carrier());
    let wired_address = wired_dev
        .as_ref()
        .filter(|d| d.active_connection().and_then(|ac| ac.uuid()).as_deref() == Some(pair.wired.uuid.as_str()) && d.state() == DeviceState::Activated)
        .and_then(|d| {
            let &(address, prefix) = d.ipv4_addresses_with_prefix().first()?;
            Some(WiredAddress { address, prefix: prefix as u8, gateway: d.ipv4_gateway() })
        });
    let mut serving_mark = standby_index.is_some_and(|i| Mark::StandbyServing.since(i).is_some());
    if serving_mark && !standby_active && fast.get(&pair.wired.uuid).is_none_or(|e| !e.serving) {
        // The standby it was set for is gone (out of range, NetworkManager restarted).
        if let Some(index) = standby_index {
            let _ = Mark::StandbyServing.clear(index);
        }
        serving_mark = false;
    }
    let available = backup_dev.available_profiles();
    // Another profile NetworkManager would connect by itself there (the home
    // Wi-Fi) goes first: the standby never competes with NM's own autoconnect.
    let other_autoconnects = available
        .iter()
        .filter(|u| *u != pair.backup.uuid.as_str() && *u != uuid.as_str())
        .any(|u| nm.profile(u).is_some_and(|p| !matches!(p.property("connection", "autoconnect"), Some(crate::sys::settings::PropertyValue::Bool(false)))));
    let backup_device_free = backup_dev.state() == DeviceState::Disconnected && available.iter().any(|u| u == pair.backup.uuid.as_str()) && !other_autoconnects;
    let freed_just_now = standbys.freed_just_now(&pair.wired.uuid, backup_device_free, Instant::now());
    let lost_before_last_scan = standbys.lost_before_scan(&pair.wired.uuid, standby_active, crate::sys::boottime_ms(), backup_dev.last_scan_ms());
    let view = StandbyView {
        wired_holds_address: wired_address.is_some() && wired_carrier,
        wired_carrier,
        standby_active,
        standby_silent: applied.as_ref().is_some_and(|(a, _)| is_silent(a)),
        serving_mark,
        backup_device_free,
        backup_active: nm.active_connection_of(pair.backup.uuid.as_str()).is_some(),
        // (nm-handover's own hand-back is marked; NM gives it the reason of a user's disconnect.)
        left_by_user: backup_dev.state() == DeviceState::Disconnected
            && backup_dev.last_left_by_hand()
            && standby_index.is_some_and(|i| Mark::HandedBack.since(i).is_none()),
        recently_asked: standbys.asked.get(&pair.wired.uuid).is_some_and(|(at, tries)| at.elapsed() < bring_up_wait(*tries)),
        freed_just_now,
        lost_before_last_scan,
    };
    arm(nm, pair, fast, &view, &backup_dev, wired_index, standby_index, wired_address);
    if standby_active {
        standbys.asked.remove(&pair.wired.uuid);
    }
    let step = next_step(&view);
    debug!(pair = %pair.wired.id, ?view, ?step, "standby");
    // A step runs under the handover lock, with root's record still there:
    // `unpair` withdraws the record under that lock, then takes the standby
    // down, so no step starts from a record read before it was withdrawn.
    let _lock = match step {
        StandbyStep::Nothing => None,
        _ => match crate::sys::lock::FileLock::acquire(std::path::Path::new(crate::sys::paths::LOCK_PATH), STEP_LOCK_WAIT) {
            Ok(lock) if crate::trust::recorded_pair_path(&pair.wired.uuid).is_file() => Some(lock),
            Ok(_) => return Ok(()),
            Err(e) => {
                debug!("standby: {e}; looks again in {STEP_LOCK_WAIT:?}");
                standbys.retry_at = Some(Instant::now() + STEP_LOCK_WAIT);
                return Ok(());
            }
        },
    };
    match step {
        StandbyStep::Nothing => {}
        StandbyStep::BringUp => {
            let tries = standbys.asked.get(&pair.wired.uuid).map_or(0, |(_, tries)| *tries) + 1;
            standbys.asked.insert(pair.wired.uuid.clone(), (Instant::now(), tries));
            let backup = nm.settings_with_secrets(&backup_profile(nm, pair)?, "reading the backup profile for its standby")?;
            let settings = standby_settings(&backup, &uuid, &standby_name(&pair.backup.id))?;
            // The device may have been taken since the look (NM's own autoconnect): asked again.
            nm.catch_up();
            if nm.device(pair.backup.device.as_str()).is_none_or(|d| d.state() != DeviceState::Disconnected) {
                return Ok(());
            }
            write_sysctls(&pair.backup.device, false);
            write_sysctls(&pair.wired.device, true);
            nm.add_and_activate_volatile(settings, &backup_dev)?;
            info!("asked NetworkManager to bring up the warm standby of '{}' on {}", pair.backup.id, pair.backup.device);
        }
        StandbyStep::Serve => {
            let Some(address) = fast.get(&pair.wired.uuid).map(|e| e.address) else {
                return Ok(());
            };
            // The standby's DHCP client asks for the wired link's lease.
            let standby_owner = LeaseOwner { uuid: uuid.clone(), iface: pair.backup.device.clone() };
            let wired_owner = LeaseOwner { uuid: pair.wired.uuid.clone(), iface: pair.wired.device.clone() };
            if let Err(e) = LeaseStore::default().carry(&wired_owner, &standby_owner) {
                warn!("standby: lease not carried: {e}");
            }
            // Only NetworkManager's internal client takes a lease by binding
            // to its address (see `hold_for_lease_until`); its lease files
            // say which client NetworkManager runs.
            let internal_client = matches!(LeaseStore::default().newest(&wired_owner), Ok(Some(lease)) if lease.format() == LeaseFormat::Internal);
            let backup = nm.settings_with_secrets(&backup_profile(nm, pair)?, "reading the backup profile's IP settings")?;
            if let Some((applied, version)) = applied {
                let serving = serving_settings(&applied, &backup, &address)?;
                // (Noted before: NetworkManager may have the lease before it answers.)
                if !fast.note_lease_asked(&pair.wired.uuid, internal_client.then(Instant::now)) {
                    return Ok(()); // (The cable back since the look.)
                }
                if let Err(e) = nm.reapply(&backup_dev, serving, version) {
                    fast.note_lease_asked(&pair.wired.uuid, None);
                    return Err(e.into());
                }
                info!(address = %address.address, "reapplied the standby of '{}' with the backup's IP settings", pair.backup.id);
            }
        }
        StandbyStep::Silence => {
            if let Some((applied, version)) = applied {
                nm.reapply(&backup_dev, silent_settings(&applied)?, version)?;
                info!("reapplied the standby of '{}' silent", pair.backup.id);
            }
        }
    }
    Ok(())
}

fn backup_profile(nm: &Nm, pair: &Pair) -> crate::error::Result<crate::sys::libnm::Profile> {
    nm.profile(pair.backup.uuid.as_str())
        .ok_or_else(|| crate::error::Error::Inconsistent { profile: pair.backup.id.clone(), reason: "the backup profile is gone".into() })
}

/// Arms the fast path while the standby is up and silent beside a wired
/// link holding its address, keeps it armed while it serves (the re-plug
/// takes the address off), arms a serving standby this supervisor did not
/// arm (it started since the pull), and disarms it once the standby is gone.
#[allow(clippy::too_many_arguments)]
fn arm(
    nm: &Nm,
    pair: &Pair,
    fast: &FastPath,
    view: &StandbyView,
    backup_dev: &crate::sys::libnm::Device,
    wired_index: Option<i32>,
    standby_index: Option<i32>,
    wired_address: Option<WiredAddress>,
) {
    let Some(link) = standby_index else { return };
    if !view.standby_active {
        fast.disarm(&pair.wired.uuid);
        return;
    }
    let metric = profile_metric(nm, &pair.backup).unwrap_or(default_metric(true));
    let entry = |wired: i32, address: WiredAddress, serving: bool| Armed {
        wired,
        wired_name: LinkReport::name_bytes(pair.wired.device.as_str()),
        standby_link: link,
        standby_iface: pair.backup.device.clone(),
        address,
        metric,
        serving,
        guard: Guard::Standby,
        lease_asked: None,
    };
    match (fast.get(&pair.wired.uuid), wired_index, wired_address) {
        (Some(armed), _, _) if armed.serving && view.wired_carrier => {
            warn!("standby: the wired link has carrier again and {} still held the address: taken off now", armed.standby_iface);
            fast.silence_if_serving(&pair.wired.uuid);
        }
        (Some(armed), _, _) if armed.serving => {}
        (_, Some(wired), Some(address)) if view.standby_silent && view.wired_holds_address => fast.arm(&pair.wired.uuid, entry(wired, address, false)),
        (None, _, _) if view.serving_mark => {
            if let Some(&(address, prefix)) = backup_dev.ipv4_addresses_with_prefix().first() {
                let address = WiredAddress { address, prefix: prefix as u8, gateway: backup_dev.ipv4_gateway() };
                fast.arm(&pair.wired.uuid, entry(wired_index.unwrap_or(-1), address, true));
            }
        }
        _ => {}
    }
}

/// Arms the fast path for a pair without a standby whose backup profile
/// holds the address since a pull, on a NetworkManager that dispatches
/// `link-up` ([`Guard::Backup`]; on stock NetworkManager the carrier watcher
/// the pull started does it); disarms it otherwise. A carrier back that the
/// thread missed is left to the `link-up`, which NetworkManager waits for.
pub fn guard_replug(nm: &Nm, pair: &Pair, fast: &FastPath) {
    let seen = pair.observe(nm, &crate::handover::System);
    let holds = !seen.wired_carrier && seen.link_up_dispatched && seen.backup == crate::policy::LinkState::Active && seen.backup_holds_address();
    // A wired profile the user connects by hand, or a wired device set not
    // to autoconnect: NetworkManager starts nothing at the re-plug, and the
    // backup keeps the address until they connect it (its `link-up` then
    // takes the backup off, as plain NM would leave it up). (A device gone,
    // an undock, keeps it armed: its re-dock is a re-plug.) Where another
    // reason keeps NetworkManager from activating the wired profile, the
    // supervisor brings the backup back (`crate::marks::ACTIVATION_START_WITHIN`).
    let wired_autoconnects = nm.profile(pair.wired.uuid.as_str()).and_then(|p| p.property("connection", "autoconnect")) != Some(PropertyValue::Bool(false))
        && nm.device(pair.wired.device.as_str()).is_none_or(|device| device.autoconnects());
    if !holds || !wired_autoconnects || pair.may_act_on(nm, &pair.backup).is_err() {
        fast.disarm(&pair.wired.uuid);
        return;
    }
    match fast.get(&pair.wired.uuid) {
        Some(armed) if armed.guard == Guard::Standby => fast.disarm(&pair.wired.uuid), // (the standby turned off)
        Some(armed) if armed.serving => return,
        _ => {}
    }
    let Some(backup_dev) = nm.device(pair.backup.device.as_str()) else { return };
    let (Ok(link), Some(&(address, prefix))) = (netlink::if_index(pair.backup.device.as_str()), backup_dev.ipv4_addresses_with_prefix().first()) else {
        return;
    };
    let own_mac = backup_dev.permanent_hw_address().and_then(|mac| crate::pairing::mac_bytes(&mac));
    let Some(serving_mac) = backup_dev.hw_address().and_then(|mac| crate::pairing::mac_bytes(&mac)) else { return };
    let entry = Armed {
        // (The wired link gone, an undock: followed by its name when it is back.)
        wired: netlink::if_index(pair.wired.device.as_str()).unwrap_or(-1),
        wired_name: LinkReport::name_bytes(pair.wired.device.as_str()),
        standby_link: link,
        standby_iface: pair.backup.device.clone(),
        address: WiredAddress { address, prefix: prefix as u8, gateway: backup_dev.ipv4_gateway() },
        metric: 0,
        serving: true,
        guard: Guard::Backup { own_mac, serving_mac },
        lease_asked: None,
    };
    fast.arm(&pair.wired.uuid, entry);
}

/// The backup profile's `ipv4.route-metric`, where it sets one.
fn profile_metric(nm: &Nm, side: &Side) -> Option<u32> {
    match nm.profile(side.uuid.as_str())?.property("ipv4", "route-metric")? {
        crate::sys::settings::PropertyValue::I32(Some(m)) if m >= 0 => Some(m as u32),
        crate::sys::settings::PropertyValue::U64(Some(m)) => u32::try_from(m).ok(),
        _ => None,
    }
}

/// Deactivates the pair's standby, if it runs (`unpair`).
pub fn take_down(nm: &Nm, backup: &Uuid) -> crate::error::Result<bool> {
    match nm.active_connection_of(standby_uuid(backup).as_str()) {
        Some(active) => {
            nm.deactivate(&active)?;
            Ok(true)
        }
        None => Ok(false),
    }
}

/// The standby's state for `status`.
pub fn describe(nm: &Nm, pair: &Pair) -> &'static str {
    if !pair.options.standby {
        return "off";
    }
    let uuid = standby_uuid(&pair.backup.uuid);
    match nm.active_connection_of(uuid.as_str()) {
        None => "on, not up (the backup's network out of range, the device busy, or the wired link without its address)",
        Some(_) => match netlink::if_index(pair.backup.device.as_str()).ok().and_then(|i| Mark::StandbyServing.since(i)) {
            Some(_) => "on, holding the address",
            None => "on, associated and silent",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BACKUP: &str = "{'connection': {'id': <'Office Wi-Fi'>, 'uuid': <'28cf38b3-340d-4598-867a-363ce08037d3'>, 'type': <'802-11-wireless'>, \
        'autoconnect': <false>}, '802-11-wireless': {'ssid': <[byte 0x6f, 0x66]>, 'assigned-mac-address': <'02:00:00:00:00:01'>}, \
        '802-11-wireless-security': {'key-mgmt': <'wpa-psk'>, 'psk': <'correct horse'>}, \
        'ipv4': {'method': <'auto'>, 'dhcp-client-id': <'01:02:00:00:00:00:01'>, 'dad-timeout': <int32 0>, 'addresses': <@aau []>}, \
        'ipv6': {'method': <'auto'>, 'addr-gen-mode': <int32 0>}, \
        'user': {'data': <{'nm-handover.role': 'backup'}>}}";

    fn backup() -> Variant {
        Variant::parse(Some(glib::VariantTy::new(settings::SETTINGS_TYPE).unwrap()), BACKUP).unwrap()
    }

    fn get(v: &Variant, setting: &str, key: &str) -> Option<Variant> {
        settings::setting(v, setting).unwrap()?.into_iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    #[test]
    fn no_standby_without_a_stored_password_or_on_an_enterprise_network() {
        let uuid = standby_uuid(&Uuid::parse("28cf38b3-340d-4598-867a-363ce08037d3").unwrap());
        let agent_owned = BACKUP.replace(", 'psk': <'correct horse'>", "");
        let parsed = |text: &str| Variant::parse(Some(glib::VariantTy::new(settings::SETTINGS_TYPE).unwrap()), text).unwrap();
        assert!(standby_settings(&parsed(&agent_owned), &uuid, "s").is_err(), "the user's agent would be asked for the password");
        let eap = BACKUP.replace("'wpa-psk'", "'wpa-eap'");
        assert!(standby_settings(&parsed(&eap), &uuid, "s").is_err());
        let open = BACKUP.replace("'802-11-wireless-security': {'key-mgmt': <'wpa-psk'>, 'psk': <'correct horse'>}, ", "");
        assert!(standby_settings(&parsed(&open), &uuid, "s").is_ok(), "an open network needs no secret");
    }

    #[test]
    fn a_standby_that_does_not_come_up_is_asked_for_less_often() {
        assert_eq!(bring_up_wait(1), BRING_UP_WAIT);
        assert_eq!(bring_up_wait(2), BRING_UP_WAIT * 2);
        assert_eq!(bring_up_wait(10), BRING_UP_PAUSE);
        assert_eq!(bring_up_wait(u32::MAX), BRING_UP_PAUSE);
    }

    fn armed() -> Armed {
        Armed {
            wired: 4,
            wired_name: LinkReport::name_bytes("wired0"),
            standby_link: 5,
            standby_iface: Iface::parse("wlan0").unwrap(),
            address: WiredAddress { address: "198.18.0.100".parse().unwrap(), prefix: 24, gateway: None },
            metric: 600,
            serving: false,
            guard: Guard::Standby,
            lease_asked: None,
        }
    }

    #[test]
    fn a_replug_waits_for_the_standbys_lease_only_while_it_may_be_on_its_way() {
        let now = Instant::now();
        let ago = |d: Duration| now.checked_sub(d).expect("a monotonic clock older than the test");
        assert_eq!(hold_for_lease_until(None, now), None, "never asked for (a re-plug before the supervisor served)");
        assert_eq!(hold_for_lease_until(Some(ago(Duration::from_millis(300))), now), Some(now + LEASE_HOLD));
        assert_eq!(hold_for_lease_until(Some(now + Duration::from_millis(5)), now), Some(now + LEASE_HOLD), "noted a moment after the carrier's report");
        assert_eq!(hold_for_lease_until(Some(ago(LEASE_ON_ITS_WAY)), now), None, "asked for long ago: taken, or not coming");
        assert!(LEASE_HOLD <= Duration::from_secs(3), "a re-plug's hold stays bounded");
    }

    #[test]
    fn the_fast_path_reacts_to_the_wired_carrier_by_what_guards_the_address() {
        let backup = Guard::Backup { own_mac: Some([2, 0, 0, 0, 0, 1]), serving_mac: [2, 0, 0, 0, 0, 9] };
        let take_off = Reaction::TakeBackupOff { own_mac: Some([2, 0, 0, 0, 0, 1]), serving_mac: [2, 0, 0, 0, 0, 9] };
        // Every case that does something (carrier, serving, guard, recorded): the rest do nothing.
        let acting = [
            ((Some(false), false, Guard::Standby, true), Reaction::Serve),
            ((Some(true), true, Guard::Standby, true), Reaction::Silence),
            // Unpaired: the address nm-handover put on the standby's link goes all the same.
            ((Some(true), true, Guard::Standby, false), Reaction::Silence),
            // The backup leaves the LAN at the re-plug; at a pull the supervisor hands over.
            ((Some(true), true, backup, true), take_off),
        ];
        for guard in [Guard::Standby, backup] {
            for serving in [false, true] {
                for recorded in [false, true] {
                    for carrier in [None, Some(false), Some(true)] {
                        let case = (carrier, serving, guard, recorded);
                        let expected = acting.iter().find(|(c, _)| *c == case).map_or(Reaction::Nothing, |(_, r)| *r);
                        assert_eq!(reaction(carrier, serving, guard, recorded), expected, "{case:?}");
                    }
                }
            }
        }
    }

    fn link(index: i32, name: &str, carrier: bool) -> LinkReport {
        LinkReport::Present { index, carrier, mac: None, name: LinkReport::name_bytes(name), ethernet: true }
    }

    #[test]
    fn the_fast_path_follows_the_wired_link_by_index_and_by_name() {
        let mut entry = armed();
        assert_eq!(entry.follows(&link(4, "wired0", false)), Some(false));
        assert_eq!(entry.follows(&link(7, "other", false)), None, "another link");
        assert_eq!(entry.follows(&LinkReport::Removed { index: 4 }), Some(false), "an undock is a pull");
        assert_eq!(entry.follows(&LinkReport::Removed { index: 7 }), None);
        // Re-docked: the NIC is back under its name with a new index, which the entry follows.
        assert_eq!(entry.follows(&link(9, "wired0", true)), Some(true));
        assert_eq!(entry.wired, 9);
        assert_eq!(entry.follows(&LinkReport::Removed { index: 4 }), None, "the old index is gone for good");
    }

    #[test]
    fn arming_never_undoes_what_the_thread_did_since() {
        let fast = FastPath::default();
        let pair = Uuid::parse("11111111-1111-4111-8111-111111111111").unwrap();
        fast.arm(&pair, armed());
        // The thread served meanwhile.
        fast.table().iter_mut().for_each(|(_, a)| a.serving = true);
        fast.arm(&pair, Armed { metric: 700, ..armed() });
        assert!(fast.get(&pair).unwrap().serving, "a serving entry stays");
        assert_eq!(fast.get(&pair).unwrap().metric, 600);
        let other = Uuid::parse("22222222-2222-4222-8222-222222222222").unwrap();
        fast.arm(&other, armed());
        fast.keep_only(std::slice::from_ref(&other));
        assert!(fast.get(&pair).is_none(), "a pair no longer standing by is disarmed");
        assert!(fast.get(&other).is_some());
    }

    #[test]
    fn the_standby_uuid_is_derived_and_differs() {
        let backup = Uuid::parse("28cf38b3-340d-4598-867a-363ce08037d3").unwrap();
        let standby = standby_uuid(&backup);
        assert_ne!(standby, backup);
        assert_eq!(standby, standby_uuid(&backup));
        assert_eq!(&standby.as_str()[8..], &backup.as_str()[8..]);
        assert_eq!(standby_uuid(&standby), backup, "the derivation is its own inverse");
    }

    #[test]
    fn the_standby_is_the_backup_network_silent_and_unpaired() {
        let uuid = standby_uuid(&Uuid::parse("28cf38b3-340d-4598-867a-363ce08037d3").unwrap());
        let standby = standby_settings(&backup(), &uuid, "Office Wi-Fi (nm-handover standby)").unwrap();
        assert_eq!(get(&standby, "connection", "uuid").unwrap().str(), Some(uuid.as_str()));
        assert_eq!(get(&standby, "connection", "id").unwrap().str(), Some("Office Wi-Fi (nm-handover standby)"));
        assert_eq!(get(&standby, "connection", "autoconnect"), Some(false.to_variant()));
        assert_eq!(get(&standby, "802-11-wireless", "assigned-mac-address").unwrap().str(), Some("02:00:00:00:00:01"));
        assert_eq!(get(&standby, "802-11-wireless-security", "psk").unwrap().str(), Some("correct horse"));
        assert_eq!(settings::setting(&standby, "ipv4").unwrap().unwrap(), vec![("method".to_owned(), "disabled".to_variant())]);
        assert_eq!(settings::setting(&standby, "ipv6").unwrap().unwrap(), vec![("method".to_owned(), "disabled".to_variant())]);
        assert!(settings::setting(&standby, "user").unwrap().is_none(), "no pairing keys");
        assert!(is_silent(&standby));
    }

    #[test]
    fn serving_takes_the_backup_ip_settings_with_the_wired_address_and_silence_undoes_it() {
        let standby = standby_settings(&backup(), &standby_uuid(&Uuid::parse("28cf38b3-340d-4598-867a-363ce08037d3").unwrap()), "s").unwrap();
        let wired = WiredAddress { address: "198.18.0.100".parse().unwrap(), prefix: 24, gateway: Some("198.18.0.1".parse().unwrap()) };
        let serving = serving_settings(&standby, &backup(), &wired).unwrap();
        assert!(!is_silent(&serving));
        assert_eq!(get(&serving, "ipv4", "method").unwrap().str(), Some("auto"));
        assert_eq!(get(&serving, "ipv4", "dhcp-client-id").unwrap().str(), Some("01:02:00:00:00:00:01"));
        assert_eq!(get(&serving, "ipv4", "gateway").unwrap().str(), Some("198.18.0.1"));
        assert!(get(&serving, "ipv4", "addresses").is_none(), "the legacy form goes");
        let data = get(&serving, "ipv4", "address-data").unwrap();
        assert_eq!(data.n_children(), 1);
        let entry = glib::VariantDict::new(Some(&data.child_value(0)));
        assert_eq!(entry.lookup::<String>("address").unwrap().as_deref(), Some("198.18.0.100"));
        assert_eq!(entry.lookup::<u32>("prefix").unwrap(), Some(24));
        assert_eq!(get(&serving, "ipv6", "method").unwrap().str(), Some("auto"));
        assert_eq!(get(&serving, "802-11-wireless-security", "psk").unwrap().str(), Some("correct horse"), "nothing else changes");
        assert!(is_silent(&silent_settings(&serving).unwrap()));
        assert_eq!(wired.network(), "198.18.0.0".parse::<Ipv4Addr>().unwrap());
    }

    fn view() -> StandbyView {
        StandbyView {
            wired_holds_address: true,
            wired_carrier: true,
            standby_active: false,
            standby_silent: false,
            serving_mark: false,
            backup_device_free: true,
            backup_active: false,
            left_by_user: false,
            recently_asked: false,
            freed_just_now: false,
            lost_before_last_scan: false,
        }
    }

    #[test]
    fn the_standby_comes_up_only_beside_a_wired_link_with_its_address_on_a_free_device() {
        assert_eq!(next_step(&view()), StandbyStep::BringUp);
        for (what, v) in [
            ("the cable out", StandbyView { wired_holds_address: false, wired_carrier: false, ..view() }),
            ("the network out of range or the device busy", StandbyView { backup_device_free: false, ..view() }),
            ("the backup itself up", StandbyView { backup_active: true, ..view() }),
            ("the user's disconnect", StandbyView { left_by_user: true, ..view() }),
            ("asked already", StandbyView { recently_asked: true, ..view() }),
            ("NetworkManager's own autoconnect first", StandbyView { freed_just_now: true, ..view() }),
            ("its network just went away", StandbyView { lost_before_last_scan: true, ..view() }),
        ] {
            assert_eq!(next_step(&v), StandbyStep::Nothing, "{what}");
        }
    }

    #[test]
    fn a_device_just_freed_is_left_to_networkmanager_for_a_while() {
        let pair = Uuid::parse("11111111-1111-4111-8111-111111111111").unwrap();
        let t0 = Instant::now();
        let mut s = Standbys::default();
        assert!(s.freed_just_now(&pair, true, t0));
        assert_eq!(s.next_look_in(t0), Some(FREE_FOR));
        assert!(s.freed_just_now(&pair, true, t0 + FREE_FOR - Duration::from_millis(1)));
        assert!(!s.freed_just_now(&pair, true, t0 + FREE_FOR));
        assert!(!s.freed_just_now(&pair, false, t0 + FREE_FOR), "busy: not free at all");
        assert!(s.freed_just_now(&pair, true, t0 + 2 * FREE_FOR), "free again: the wait starts over");
    }

    #[test]
    fn a_step_that_found_the_handover_lock_busy_is_tried_again_soon() {
        let t0 = Instant::now();
        let mut s = Standbys::default();
        assert_eq!(s.next_look_in(t0), None);
        s.retry_at = Some(t0 + STEP_LOCK_WAIT);
        assert_eq!(s.next_look_in(t0), Some(STEP_LOCK_WAIT));
        assert!(s.next_look_in(t0 + STEP_LOCK_WAIT).is_some_and(|d| !d.is_zero()), "due: at once, never waiting for a change");
    }

    #[test]
    fn a_standby_that_lost_its_network_waits_for_a_scan() {
        let pair = Uuid::parse("11111111-1111-4111-8111-111111111111").unwrap();
        let mut s = Standbys::default();
        assert!(!s.lost_before_scan(&pair, false, 1000, Some(0)), "never up: nothing lost");
        assert!(!s.lost_before_scan(&pair, true, 2000, Some(0)));
        assert!(s.lost_before_scan(&pair, false, 3000, Some(2500)), "gone: the scan before does not count");
        assert!(s.lost_before_scan(&pair, false, 3500, Some(3000)));
        assert!(!s.lost_before_scan(&pair, false, 4000, Some(3600)), "a scan since");
        assert!(!s.lost_before_scan(&pair, true, 5000, Some(3600)));
    }

    #[test]
    fn an_active_standby_follows_the_fast_path() {
        let up = StandbyView { standby_active: true, standby_silent: true, backup_device_free: false, ..view() };
        assert_eq!(next_step(&up), StandbyStep::Nothing, "silent and docked: stays so");
        let pulled = StandbyView { serving_mark: true, wired_carrier: false, wired_holds_address: false, ..up };
        assert_eq!(next_step(&pulled), StandbyStep::Serve);
        let serving = StandbyView { standby_silent: false, ..pulled };
        assert_eq!(next_step(&serving), StandbyStep::Nothing);
        let replugged = StandbyView { serving_mark: false, wired_carrier: true, ..serving };
        assert_eq!(next_step(&replugged), StandbyStep::Silence);
        let mark_lost_while_out = StandbyView { serving_mark: false, wired_carrier: false, ..serving };
        assert_eq!(next_step(&mark_lost_while_out), StandbyStep::Nothing, "never silenced while the cable is out");
    }
}
