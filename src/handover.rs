//! A pair as NetworkManager sees it now, and carrying out the policy's actions.
//!
//! The orchestration reaches the system through two traits: [`Daemon`]
//! (NetworkManager, through libnm) and [`Host`] (the backup's link in the
//! kernel, and the carrier watcher). The tests below drive whole handovers
//! through a model of both, so the order of the steps and what a failure
//! leaves behind are checked without a daemon.

use std::os::unix::process::CommandExt;

use std::time::Instant;

use tracing::{debug, error, info, warn};

use crate::error::{Error, Result};
use crate::lan::{other_lan, Lan};
use crate::lease::{CarryOutcome, LeaseOwner, LeaseStore};
use crate::marks::{dhcp_timeout, replug_overdue_in, Mark};
use crate::names::{Iface, Uuid};
use crate::offlan;
use crate::pairing::{mac_bytes, mac_setting_of, membership, parse_mac, Membership};
use crate::policy::{decide, Action, Decision, Hook, LinkState, Observed, Options, Role};
use crate::sys::libnm::{ActiveState, DeviceKind, DeviceState, IpFamily, Nm, Profile};
use crate::sys::lock::WATCHER_PROGRAM;
use crate::sys::netlink::if_index;
use crate::sys::paths::{watcher_lock_path, watcher_started_path, wired_lan_path, RECORD_DIR};
use crate::sys::settings::PropertyValue;
use crate::trust::{self, link_refusal, LinkFacts, LinkKind};
use std::time::{Duration, SystemTime};

/// One side of a pair: its profile and the device it runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Side {
    pub uuid: Uuid,
    pub id: String,
    pub device: Iface,
}

impl Side {
    fn lease_owner(&self) -> LeaseOwner {
        LeaseOwner { uuid: self.uuid.clone(), iface: self.device.clone() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    pub wired: Side,
    pub backup: Side,
    pub options: Options,
}

/// What a handover reads from NetworkManager and asks of it.
pub trait Daemon {
    fn link_state(&self, profile: &Uuid) -> LinkState;
    fn has_carrier(&self, device: &Iface) -> bool;
    /// The device exists, is available, and NM could activate the profile on it.
    fn ready_for(&self, device: &Iface, profile: &Uuid) -> bool;
    fn manages(&self, device: &Iface) -> bool;
    /// What NM says about `device` and `profile`'s binding to it (see
    /// [`crate::trust::link_refusal`]).
    fn link_facts(&self, device: &Iface, profile: &Uuid) -> LinkFacts;
    /// Whether the device's last deactivation was someone's choice; true
    /// when there is no such device.
    fn last_change_was_chosen(&self, device: &Iface) -> bool;
    /// The profile's `ipv4.dhcp-timeout` in seconds, as stored (0: NM's default).
    fn dhcp_timeout(&self, profile: &Uuid) -> Option<i32>;
    /// Whether `device` holds another profile than `profile` now, and
    /// whether its last state change was a request to deactivate it (by the
    /// user, or by nm-handover's hand-back: NM does not tell them apart).
    fn deactivation_facts(&self, device: &Iface, profile: &Uuid) -> (bool, bool);
    /// The UUID of the profile active (or activating) on `device`, if any.
    fn active_profile(&self, device: &Iface) -> Option<String>;
    fn version(&self) -> Option<String>;
    /// The device's own MAC address, as `parse_mac` writes it.
    fn permanent_mac(&self, device: &Iface) -> Option<String>;
    /// The MAC address the profile clones, as `parse_mac` writes it.
    fn cloned_mac(&self, profile: &Uuid) -> Option<String>;
    /// The network the device's current DHCPv4 lease came from (see [`crate::lan`]).
    fn dhcp4_lan(&self, device: &Iface) -> Option<Lan>;
    /// Asks NM to activate the side's profile on its device, without waiting.
    fn activate(&self, side: &Side) -> Result<()>;
    /// Asks NM to deactivate the profile, without waiting; `Ok(false)` when
    /// it was not active.
    fn deactivate(&self, profile: &Uuid) -> Result<bool>;
}

/// What a handover does on this machine outside NetworkManager.
pub trait Host {
    /// Whether the running daemon dispatches the blocking `link-up` action.
    fn link_up_seen(&self) -> bool;
    /// Whether the kernel reports carrier on the link now (NetworkManager
    /// learns of it later, by much under load).
    fn kernel_carrier(&self, device: &Iface) -> bool;
    /// Whether nm-handover set the link down itself (see [`crate::offlan`]).
    fn taken_off_lan(&self, device: &Iface) -> Result<bool>;
    fn take_off_lan(&self, device: &Iface, mac: Option<[u8; 6]>) -> Result<()>;
    fn put_back(&self, device: &Iface) -> Result<()>;
    /// Forgets that the link was taken off the LAN (NM brings it up itself).
    fn forget_taken_off_lan(&self, device: &Iface) -> Result<()>;
    /// Starts the carrier watcher; returns its process id.
    fn start_watcher(&self, watch: &WatcherArgs) -> Result<u32>;
    /// Whether the carrier watcher of the pair whose wired profile is `pair` runs.
    fn watcher_running(&self, pair: &Uuid) -> bool;
    /// When `mark` was set for the link `device`, if it is (see [`crate::marks`]).
    fn link_mark(&self, device: &Iface, mark: Mark) -> Option<SystemTime>;
    fn set_link_mark(&self, device: &Iface, mark: Mark) -> Result<()>;
    fn clear_link_mark(&self, device: &Iface, mark: Mark) -> Result<()>;
    /// The network the pair's wired link last had its DHCPv4 lease from, as recorded.
    fn wired_lan(&self, pair: &Uuid) -> Option<Lan>;
    fn record_wired_lan(&self, pair: &Uuid, lan: Lan) -> Result<()>;
}

/// What the carrier watcher of one handover is told (see `crate::watch`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatcherArgs {
    /// The wired profile's name, for messages.
    pub pair_name: String,
    pub pair: Uuid,
    pub wired: Iface,
    pub backup: Iface,
    /// The MAC address the backup carries while it holds the address.
    pub wired_mac: String,
    /// The MAC address the backup gets back when it leaves the LAN.
    pub backup_mac: Option<String>,
}

/// A profile's `cloned-mac-address` as stored (a MAC address, or a mode
/// such as `stable`), from the setting its type keeps it in.
pub fn profile_cloned_mac(profile: &Profile) -> Option<String> {
    match profile.property(mac_setting_of(&profile.connection_type().unwrap_or_default()), "cloned-mac-address") {
        Some(PropertyValue::Str(mac)) => mac,
        _ => None,
    }
}

/// The pairing record of a profile NM knows, if it is paired.
pub fn profile_membership(profile: &Profile) -> Result<Option<Membership>> {
    let id = profile.id().unwrap_or_default();
    Ok(membership(&id, &profile.user_data())?)
}

fn profile_uuid(profile: &Profile) -> Result<Uuid> {
    Ok(Uuid::parse(&profile.uuid().unwrap_or_default())?)
}

/// Whether NetworkManager `version` has `ipv4.dhcp-send-release` (1.48 and
/// later), and so can release a lease when it deactivates a profile.
pub fn sends_dhcp_release(version: &str) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= (1, 48),
        // An unreadable version: assume the newer behaviour; taking the
        // backup off the LAN first is safe either way.
        _ => true,
    }
}

/// Whether the running daemon dispatches the blocking `link-up` action: it
/// did since boot (see [`crate::sys::paths::LINK_UP_SEEN_PATH`]). Before its first
/// `link-up` (boot with the cable out) a patched daemon counts as stock:
/// the carrier watcher then does what `link-up` would.
pub fn nm_has_link_up() -> bool {
    std::fs::symlink_metadata(crate::sys::paths::LINK_UP_SEEN_PATH).is_ok_and(|meta| meta.is_file())
}

impl Pair {
    /// Loads the pair `profile` belongs to, checking that both profiles'
    /// records point at each other and that root recorded this pair
    /// ([`crate::trust`]; [`Error::Untrusted`] otherwise). `Ok(None)` when
    /// it is not paired.
    pub fn of_profile(nm: &Nm, profile: &Profile) -> Result<Option<Pair>> {
        let Some((pair, peer)) = Pair::claimed_by(nm, profile)? else {
            return Ok(None);
        };
        let (wired_private, backup_private) = match profile_membership(profile)?.map(|m| m.role) {
            Some(Role::Wired) => (profile.is_private(), peer.is_private()),
            _ => (peer.is_private(), profile.is_private()),
        };
        let standby = pair.trusted(wired_private, backup_private, std::path::Path::new(RECORD_DIR))?;
        let mut pair = pair;
        pair.options.standby = standby;
        pair.follow_renamed_devices(nm);
        Ok(Some(pair))
    }

    /// Where a side's recorded device is gone and NetworkManager binds its
    /// profile to another device now (a dock's NIC created again under
    /// another name, its profile bound by MAC), the handover goes where the
    /// profile goes. Acting on that link still needs NM's binding of it
    /// ([`crate::trust::link_refusal`]).
    fn follow_renamed_devices(&mut self, nm: &Nm) {
        for side in [&mut self.wired, &mut self.backup] {
            if nm.device(side.device.as_str()).is_some() {
                continue;
            }
            let holds = |d: &crate::sys::libnm::Device| d.active_connection().and_then(|ac| ac.uuid()).as_deref() == Some(side.uuid.as_str());
            let offers = |d: &crate::sys::libnm::Device| d.available_profiles().iter().any(|uuid| uuid == side.uuid.as_str());
            let devices = nm.devices();
            let bound = devices.iter().find(|d| holds(d)).or_else(|| devices.iter().find(|d| offers(d)));
            if let Some(now) = bound.and_then(|d| Iface::parse(&d.iface()).ok()) {
                debug!(profile = %side.id, recorded = %side.device, %now, "the recorded device is gone; NetworkManager binds the profile to another");
                side.device = now;
            }
        }
    }

    /// Whether root may act on this pair, from its record in `record_dir`;
    /// `Ok` says whether root asked for the warm standby.
    fn trusted(&self, wired_private: bool, backup_private: bool, record_dir: &std::path::Path) -> Result<bool> {
        let claim = trust::Claim {
            wired: &self.wired.uuid,
            wired_id: &self.wired.id,
            wired_private,
            wired_device: &self.wired.device,
            backup: &self.backup.uuid,
            backup_id: &self.backup.id,
            backup_private,
            backup_device: &self.backup.device,
        };
        let record = trust::read_record(record_dir, &self.wired.uuid);
        trust::judge(&claim, &record, &trust::record_path(record_dir, &self.wired.uuid)).map_err(|why| Error::Untrusted {
            wired: self.wired.id.clone(),
            backup: self.backup.id.clone(),
            why: Box::new(why),
        })?;
        Ok(record.ok().flatten().is_some_and(|r| r.standby))
    }

    /// The pair `profile`'s user data describes, with the peer profile, as
    /// the two profiles claim it (nothing here says root agreed).
    pub fn claimed_by(nm: &Nm, profile: &Profile) -> Result<Option<(Pair, Profile)>> {
        let Some(this) = profile_membership(profile)? else {
            return Ok(None);
        };
        let this_id = profile.id().unwrap_or_default();
        let this_uuid = profile_uuid(profile)?;
        let inconsistent = |reason: String| Error::Inconsistent { profile: this_id.clone(), reason };
        let peer = nm.profile(this.peer.as_str()).ok_or_else(|| inconsistent(format!("its peer profile {} does not exist", this.peer)))?;
        let peer_id = peer.id().unwrap_or_default();
        let that = profile_membership(&peer)?.ok_or_else(|| inconsistent(format!("its peer '{peer_id}' is not paired")))?;
        if that.peer != this_uuid || that.role == this.role {
            return Err(inconsistent(format!("its peer '{peer_id}' is paired with {} as {:?}", that.peer, that.role)));
        }
        let this_side = Side { uuid: this_uuid, id: this_id, device: this.device.clone() };
        let peer_side = Side { uuid: this.peer.clone(), id: peer_id, device: that.device.clone() };
        // The pair's options live on the wired profile.
        let (wired, backup, record) = match this.role {
            Role::Wired => (this_side, peer_side, &this),
            Role::Backup => (peer_side, this_side, &that),
        };
        // (The warm standby is root's record's word: set once the record is judged.)
        let options = Options { lease_carry: record.lease_carry, carrier_watch: record.carrier_watch, standby: false };
        Ok(Some((Pair { wired, backup, options }, peer)))
    }

    /// Every pair NM knows, found through the wired profiles.
    pub fn all(nm: &Nm) -> Vec<Result<Pair>> {
        nm.profiles()
            .iter()
            .filter_map(|p| match profile_membership(p) {
                Ok(Some(m)) if m.role == Role::Wired => Pair::of_profile(nm, p).transpose(),
                Ok(_) => None,
                Err(e) => Some(Err(e)),
            })
            .collect()
    }

    pub fn side(&self, role: Role) -> &Side {
        match role {
            Role::Wired => &self.wired,
            Role::Backup => &self.backup,
        }
    }

    /// The pair's warm standby is active on the backup's device (see
    /// `crate::standby`): it holds the address for the backup, or is silent.
    pub fn standby_up(&self, nm: &impl Daemon) -> bool {
        self.options.standby && nm.active_profile(&self.backup.device).as_deref() == Some(crate::standby::standby_uuid(&self.backup.uuid).as_str())
    }

    /// The state of both sides now.
    pub fn observe(&self, nm: &impl Daemon, host: &impl Host) -> Observed {
        let backup_taken_off_lan = nm.manages(&self.backup.device)
            && host.taken_off_lan(&self.backup.device).unwrap_or_else(|e| {
                // (The link is gone or unreadable: nothing to put back.)
                debug!("{e}");
                false
            });
        let standby_up = self.standby_up(nm);
        let standby_serving = standby_up && host.link_mark(&self.backup.device, Mark::StandbyServing).is_some();
        Observed {
            // Either one's word: a re-plug the watcher already acted on must
            // not read as a pull to a look that NM has not told yet.
            wired_carrier: nm.has_carrier(&self.wired.device) || host.kernel_carrier(&self.wired.device),
            wired: nm.link_state(&self.wired.uuid),
            backup: if standby_serving { LinkState::Active } else { nm.link_state(&self.backup.uuid) },
            backup_device_ready: nm.ready_for(&self.backup.device, &self.backup.uuid),
            backup_may_release: nm.version().as_deref().is_some_and(sends_dhcp_release),
            link_up_dispatched: host.link_up_seen(),
            wired_down_chosen: nm.last_change_was_chosen(&self.wired.device),
            backup_taken_off_lan,
            backup_left_by_user: {
                let (other_profile, deactivated_on_request) = nm.deactivation_facts(&self.backup.device, &self.backup.uuid);
                // (The pair's own standby is no network the user picked.)
                left_by_user(other_profile && !standby_up, deactivated_on_request, host.link_mark(&self.backup.device, Mark::HandedBack).is_some())
            },
            wired_port_failed: host.link_mark(&self.wired.device, Mark::PortFailed).is_some(),
            replug_overdue: self.replug_overdue_in(nm, host) == Some(Duration::ZERO),
            watcher_running: host.watcher_running(&self.wired.uuid),
            backup_on_other_lan: self.backup_on_other_lan(nm, host).is_some(),
            standby_serving,
        }
    }

    /// The wired link's LAN and the backup's, where the backup holds a lease
    /// from another network than the wired link last did (see [`crate::lan`]).
    pub fn backup_on_other_lan(&self, nm: &impl Daemon, host: &impl Host) -> Option<(Lan, Lan)> {
        if nm.link_state(&self.backup.uuid) != LinkState::Active {
            return None;
        }
        other_lan(host.wired_lan(&self.wired.uuid), nm.dhcp4_lan(&self.backup.device))
    }

    /// Records the wired link's LAN while it holds a lease (the reference a
    /// backup's lease is compared with once the cable is out).
    fn record_wired_lan(&self, nm: &impl Daemon, host: &impl Host) {
        if nm.link_state(&self.wired.uuid) != LinkState::Active {
            return;
        }
        if let Some(lan) = nm.dhcp4_lan(&self.wired.device).filter(|lan| host.wired_lan(&self.wired.uuid) != Some(*lan)) {
            match host.record_wired_lan(&self.wired.uuid, lan) {
                Ok(()) => debug!(%lan, "the wired link's LAN"),
                Err(e) => warn!("{e}"),
            }
        }
    }

    /// How long until the re-plug under way (the watcher or the supervisor's
    /// fast path took the backup off the LAN for it) counts as failed, if one
    /// is under way: the wired link has carrier and no address yet. A wired
    /// device NetworkManager activates nothing on (its autoconnect off, a
    /// wired profile connected by hand only) counts as failed within seconds
    /// (see [`crate::marks::ACTIVATION_START_WITHIN`]); one it activates
    /// another profile on is not this pair's re-plug to judge.
    pub fn replug_overdue_in(&self, nm: &impl Daemon, host: &impl Host) -> Option<Duration> {
        let since = host.link_mark(&self.wired.device, Mark::ReplugPending)?;
        // Judged already: the port is known to have failed.
        if host.link_mark(&self.wired.device, Mark::PortFailed).is_some() {
            return None;
        }
        if !nm.has_carrier(&self.wired.device) || nm.link_state(&self.wired.uuid) == LinkState::Active {
            return None;
        }
        let activating = match nm.active_profile(&self.wired.device) {
            Some(uuid) if uuid != self.wired.uuid.as_str() => return None,
            Some(_) => true,
            None => false,
        };
        Some(replug_overdue_in(since, SystemTime::now(), activating, dhcp_timeout(nm.dhcp_timeout(&self.wired.uuid))))
    }

    /// One event of the pair handled: what NM reports now, what the policy
    /// makes of it, carried out. The decision is logged; a handover (to the
    /// backup, or back to the wired link) once more, with its outcome and
    /// how long carrying it out took (`journalctl -u NetworkManager-dispatcher
    /// -g 'nm-handover.*handover (done|failed)'`). Keeping a lease file in
    /// step or putting a link back is logged, but is no handover.
    pub fn handle(&self, role: Role, hook: Hook, nm: &impl Daemon, host: &impl Host, leases: &LeaseStore) -> Result<Decision> {
        self.record_wired_lan(nm, host);
        let mut observed = self.observe(nm, host);
        if hook != Hook::Reconcile {
            // An event is decided on NetworkManager's word for the carrier,
            // which it was sent on: a pull's `down` that runs after the cable
            // is back in is still that pull (its watcher takes the backup off
            // the LAN at once), not a failed activation on a port with
            // carrier, which would leave the backup on the LAN beside the
            // wired DHCP client. A reconcile, which no event orders, also
            // takes the kernel's (see [`Pair::observe`]).
            observed.wired_carrier = nm.has_carrier(&self.wired.device);
        }
        // A backup active again is no longer one nm-handover handed back from.
        if observed.backup == LinkState::Active && host.link_mark(&self.backup.device, Mark::HandedBack).is_some() {
            if let Err(e) = host.clear_link_mark(&self.backup.device, Mark::HandedBack) {
                warn!("{e}");
            }
        }
        // What was known about the wired port holds until the wired link
        // has the address or loses carrier (a new plug).
        if (!observed.wired_carrier || observed.wired == LinkState::Active)
            && (observed.wired_port_failed || host.link_mark(&self.wired.device, Mark::ReplugPending).is_some())
        {
            for mark in [Mark::PortFailed, Mark::ReplugPending] {
                if let Err(e) = host.clear_link_mark(&self.wired.device, mark) {
                    warn!("{e}");
                }
            }
        }
        let decision = decide(role, hook, observed, self.options);
        self.refuse_an_unbound_backup(nm, &observed, &decision)?;
        if decision.actions.is_empty() {
            // (The supervisor looks at every change NM reports: a look that
            // needs nothing is no news.)
            if hook == Hook::Reconcile {
                debug!(?role, ?hook, ?observed, "{}", decision.reason);
            } else {
                info!(?role, ?hook, ?observed, actions = ?decision.actions, "{}", decision.reason);
            }
            return Ok(decision);
        }
        info!(?role, ?hook, ?observed, actions = ?decision.actions, "{}", decision.reason);
        let started = Instant::now();
        let result = self.execute(nm, host, leases, &decision.actions);
        let took_ms = started.elapsed().as_millis() as u64;
        let (pair, backup, actions) = (&self.wired.id, &self.backup.id, &decision.actions);
        // (A failure's error itself is logged once, by the caller.)
        match (&result, handover_direction(actions)) {
            (Ok(true), Some(direction)) => info!(%pair, %backup, took_ms, "handover done, {direction}: {actions:?}"),
            (Ok(_), _) => info!(%pair, %backup, took_ms, "done: {actions:?}"),
            (Err(_), Some(direction)) => error!(%pair, %backup, took_ms, "handover failed, {direction}: {actions:?}"),
            (Err(_), None) => error!(%pair, %backup, took_ms, "failed: {actions:?}"),
        }
        result.map(|_| decision)
    }

    /// Sets the backup link down and gives it back its own MAC address, with
    /// netlink rather than through NM: NM may be waiting for us (`link-up`),
    /// and its deactivation would wait on the backup's `pre-down` dispatch,
    /// which nm-dispatcher queues behind our own request. Also done before a
    /// deactivation by a daemon that may send a DHCPRELEASE of the identity
    /// the backup shares with the wired link (see `policy::hand_back`).
    fn take_backup_off_lan(&self, nm: &impl Daemon, host: &impl Host) -> Result<()> {
        self.may_act_on(nm, &self.backup)?;
        let device = &self.backup.device;
        let own_mac = nm.permanent_mac(device).and_then(|mac| mac_bytes(&mac));
        if own_mac.is_none() {
            warn!("{device}: permanent MAC address unknown; NM restores it when it deactivates the profile");
        }
        host.take_off_lan(device, own_mac)?;
        info!("took {device} off the LAN (link down, own MAC restored)");
        Ok(())
    }

    /// Where the backup is needed (the wired link out) and its device is not
    /// ready for it because NM no longer binds the profile to the recorded
    /// device at all (someone bound it to another), [`Error::LinkRefused`]
    /// says so, rather than the handover waiting in silence for a device
    /// that never becomes ready. Only a device NM manages can say that: one
    /// that is gone (an unplugged USB adapter), not managed for the moment
    /// (NM asleep, a device udev still sets up), or a Wi-Fi out of range or
    /// with its radio off, is no refusal.
    pub fn refuse_an_unbound_backup(&self, nm: &impl Daemon, seen: &Observed, decision: &Decision) -> Result<()> {
        if !decision.actions.is_empty() || seen.wired_carrier || seen.backup_device_ready || seen.backup_holds_address() {
            return Ok(());
        }
        let facts = nm.link_facts(&self.backup.device, &self.backup.uuid);
        if facts.exists && facts.managed {
            return Self::refused(&self.backup, &facts);
        }
        Ok(())
    }

    /// Refuses a link NM does not bind to the side's profile now, does not
    /// manage, or that no pair may hold (see [`crate::trust::link_refusal`]).
    pub fn may_act_on(&self, nm: &impl Daemon, side: &Side) -> Result<()> {
        Self::refused(side, &nm.link_facts(&side.device, &side.uuid))
    }

    fn refused(side: &Side, facts: &LinkFacts) -> Result<()> {
        match link_refusal(facts) {
            None => Ok(()),
            Some(why) => Err(Error::LinkRefused { device: side.device.to_string(), profile: side.id.clone(), why }),
        }
    }

    fn start_carrier_watch(&self, nm: &impl Daemon, host: &impl Host) -> Result<()> {
        // It sets the backup link down; the wired one it only reads (and it
        // may be gone: an undock is a pull).
        self.may_act_on(nm, &self.backup)?;
        let wired_mac = nm
            .cloned_mac(&self.backup.uuid)
            .ok_or_else(|| Error::WatcherNotStarted { pair: self.wired.id.clone(), reason: "the backup profile is gone or clones no MAC address".into() })?;
        let watch = WatcherArgs {
            pair_name: self.wired.id.clone(),
            pair: self.wired.uuid.clone(),
            wired: self.wired.device.clone(),
            backup: self.backup.device.clone(),
            wired_mac,
            // (A veth has no permanent MAC: NM puts its own back when it
            // deactivates the profile.)
            backup_mac: nm.permanent_mac(&self.backup.device),
        };
        let pid = host.start_watcher(&watch)?;
        info!(
            pid,
            lock = %watcher_lock_path(self.wired.uuid.as_str()).display(),
            "started the carrier watcher: {} goes off the LAN when {} has carrier again",
            self.backup.device,
            self.wired.device
        );
        Ok(())
    }

    /// Carries out `actions` in order; stops at the first failure. Says
    /// whether NM was asked to move the address (to activate the backup, or
    /// to deactivate it while it was still active).
    fn execute(&self, nm: &impl Daemon, host: &impl Host, leases: &LeaseStore, actions: &[Action]) -> Result<bool> {
        let mut moved = false;
        let mut took_off_lan = false;
        for action in actions {
            match *action {
                Action::CarryLease { from, to } => {
                    let (from, to) = (self.side(from), self.side(to));
                    // A lease that cannot be carried costs the next DHCP exchange a
                    // DISCOVER at worst: the handover itself goes on.
                    match leases.carry(&from.lease_owner(), &to.lease_owner()) {
                        Ok(CarryOutcome::Written { path, address }) => {
                            info!(%address, path = %path.display(), "carried lease from {} to {}", from.device, to.device)
                        }
                        Ok(CarryOutcome::AlreadyCurrent { address, .. }) => {
                            info!(%address, "lease of {} already current", to.device)
                        }
                        Ok(CarryOutcome::NoSourceLease) => warn!("no lease file of {} to carry", from.device),
                        Err(e) => warn!("lease not carried from {} to {}: {e}; handing over all the same", from.device, to.device),
                    }
                }
                Action::ActivateBackup => {
                    nm.activate(&self.backup)?;
                    moved = true;
                    info!("asked NetworkManager to activate '{}' on {}", self.backup.id, self.backup.device);
                    // NM brings the link up itself now.
                    if let Err(e) = host.forget_taken_off_lan(&self.backup.device) {
                        warn!("{e}");
                    }
                }
                Action::DeactivateBackup => {
                    // (Before the request: NM reports its reason as soon as it acts.)
                    if let Err(e) = host.set_link_mark(&self.backup.device, Mark::HandedBack) {
                        warn!("{e}");
                    }
                    if nm.deactivate(&self.backup.uuid)? {
                        moved = true;
                        info!("asked NetworkManager to deactivate '{}'", self.backup.id);
                    } else if self.options.standby && nm.deactivate(&crate::standby::standby_uuid(&self.backup.uuid))? {
                        // A standby still holding the address at a hand-back: its fast
                        // path did not take it off (no supervisor). It goes, as the backup would.
                        moved = true;
                        info!("asked NetworkManager to deactivate the warm standby of '{}', which still held the address", self.backup.id);
                    } else {
                        info!("'{}' is no longer active", self.backup.id);
                        // Its `down` event, which would have set the link up
                        // again, came before the link was taken down.
                        if took_off_lan {
                            self.may_act_on(nm, &self.backup)?;
                            host.put_back(&self.backup.device)?;
                            info!("set {} up again: its profile was already deactivated", self.backup.device);
                        }
                    }
                }
                // (Without the mark, NM's retries only cost more time offline.)
                // The re-plug is judged: it is no longer under way.
                Action::RememberPortFailed => match host.set_link_mark(&self.wired.device, Mark::PortFailed) {
                    Ok(()) => info!("{}: no DHCP on this port; NetworkManager's retries on it leave the backup holding the address", self.wired.device),
                    Err(e) => warn!("{e}"),
                },
                Action::TakeBackupOffLan => {
                    self.take_backup_off_lan(nm, host)?;
                    took_off_lan = true;
                }
                Action::PutBackupLinkBack => {
                    self.may_act_on(nm, &self.backup)?;
                    host.put_back(&self.backup.device)?;
                    info!("set {} up again, as it was before the hand-back took it down", self.backup.device);
                }
                // The handover itself is done; without the watcher the
                // hand-back still works, only the re-plug may be slower.
                Action::WatchWiredCarrier => {
                    if let Err(e) = self.start_carrier_watch(nm, host) {
                        warn!("{e}");
                    }
                }
            }
        }
        Ok(moved)
    }
}

/// Whether the user left the backup device: it holds another profile, or its
/// last deactivation was requested by someone other than nm-handover's own
/// hand-back (marked, see [`crate::marks`]).
fn left_by_user(other_profile: bool, deactivated_on_request: bool, handed_back_by_us: bool) -> bool {
    other_profile || (deactivated_on_request && !handed_back_by_us)
}

/// Which way `actions` hand the address over, if they do.
fn handover_direction(actions: &[Action]) -> Option<&'static str> {
    if actions.contains(&Action::ActivateBackup) {
        Some("to the backup")
    } else if actions.contains(&Action::DeactivateBackup) {
        Some("back to the wired link")
    } else {
        None
    }
}

impl Daemon for Nm {
    fn link_state(&self, profile: &Uuid) -> LinkState {
        match self.active_connection_of(profile.as_str()).map(|ac| ac.state()) {
            Some(ActiveState::Activating) => LinkState::Activating,
            Some(ActiveState::Activated) => LinkState::Active,
            Some(ActiveState::Deactivating) => LinkState::Deactivating,
            Some(ActiveState::Deactivated) | Some(ActiveState::Unknown) | None => LinkState::Inactive,
        }
    }

    fn has_carrier(&self, device: &Iface) -> bool {
        self.device(device.as_str()).is_some_and(|d| d.has_carrier())
    }

    fn ready_for(&self, device: &Iface, profile: &Uuid) -> bool {
        match (self.device(device.as_str()), self.profile(profile.as_str())) {
            // NM's own list: for Wi-Fi it holds the profile only while its
            // network is in the scan results.
            (Some(device), Some(found)) => {
                !matches!(device.state(), DeviceState::Unmanaged | DeviceState::Unavailable)
                    && device.compatible_with(&found)
                    && (device.available_profiles().iter().any(|uuid| uuid == profile.as_str())
                        || device.active_connection().and_then(|ac| ac.uuid()).as_deref() == Some(profile.as_str()))
            }
            _ => false,
        }
    }

    fn manages(&self, device: &Iface) -> bool {
        self.device(device.as_str()).is_some_and(|d| d.state() != DeviceState::Unmanaged)
    }

    fn last_change_was_chosen(&self, device: &Iface) -> bool {
        self.device(device.as_str()).is_none_or(|d| d.last_change_was_chosen())
    }

    fn dhcp_timeout(&self, profile: &Uuid) -> Option<i32> {
        match self.profile(profile.as_str())?.property(crate::pairing::SETTING_IPV4, "dhcp-timeout") {
            Some(PropertyValue::I32(seconds)) => seconds,
            _ => None,
        }
    }

    fn deactivation_facts(&self, device: &Iface, profile: &Uuid) -> (bool, bool) {
        self.device(device.as_str()).map_or((false, false), |d| {
            let other = d.active_connection().and_then(|ac| ac.uuid()).is_some_and(|uuid| uuid != profile.as_str());
            (other, d.last_left_by_hand())
        })
    }

    fn active_profile(&self, device: &Iface) -> Option<String> {
        self.device(device.as_str())?.active_connection()?.uuid()
    }

    fn link_facts(&self, device: &Iface, profile: &Uuid) -> LinkFacts {
        let Some(dev) = self.device(device.as_str()) else {
            return LinkFacts {
                exists: false,
                managed: false,
                kind: LinkKind::Other("missing".into()),
                active_here: false,
                available: false,
                compatible: false,
            };
        };
        let kind = match dev.kind() {
            DeviceKind::Wifi => LinkKind::Wifi,
            DeviceKind::Ethernet if dev.is_veth() => LinkKind::Veth,
            DeviceKind::Ethernet => LinkKind::Ethernet,
            DeviceKind::Other => LinkKind::Other(dev.type_description()),
        };
        LinkFacts {
            exists: true,
            managed: dev.state() != DeviceState::Unmanaged,
            kind,
            active_here: dev.active_connection().and_then(|ac| ac.uuid()).as_deref() == Some(profile.as_str()),
            available: dev.available_profiles().iter().any(|uuid| uuid == profile.as_str()),
            compatible: self.profile(profile.as_str()).is_some_and(|p| dev.compatible_with(&p)),
        }
    }

    fn version(&self) -> Option<String> {
        Nm::version(self)
    }

    fn permanent_mac(&self, device: &Iface) -> Option<String> {
        self.device(device.as_str()).and_then(|d| d.permanent_hw_address()).and_then(|mac| parse_mac(&mac).ok())
    }

    fn cloned_mac(&self, profile: &Uuid) -> Option<String> {
        // (A mode such as `stable` is no address: `pair` wrote the wired MAC.)
        profile_cloned_mac(&self.profile(profile.as_str())?).and_then(|mac| parse_mac(&mac).ok())
    }

    fn dhcp4_lan(&self, device: &Iface) -> Option<Lan> {
        let device = self.device(device.as_str())?;
        let option = |name: &str| device.dhcp_option(IpFamily::V4, name);
        Lan::from_lease(&option("dhcp_server_identifier")?, &option("ip_address")?, &option("subnet_mask")?)
    }

    fn activate(&self, side: &Side) -> Result<()> {
        let profile = self
            .profile(side.uuid.as_str())
            .ok_or_else(|| Error::Inconsistent { profile: side.id.clone(), reason: "the profile to activate disappeared".into() })?;
        let device = self.device(side.device.as_str()).ok_or_else(|| Error::NoDevice(side.device.to_string()))?;
        Ok(Nm::activate(self, &profile, &device)?)
    }

    fn deactivate(&self, profile: &Uuid) -> Result<bool> {
        match self.active_connection_of(profile.as_str()) {
            // NM refuses to deactivate what is no longer active.
            Some(active) if !matches!(active.state(), ActiveState::Deactivated | ActiveState::Unknown) => Ok(Nm::deactivate(self, &active).map(|()| true)?),
            _ => Ok(false),
        }
    }
}

/// This machine: links changed with rtnetlink, the watcher a process.
pub struct System;

impl System {
    /// Runs `op` on the device's interface index (rtnetlink and
    /// `crate::offlan` name links by index).
    fn on_link<T>(device: &Iface, op: impl FnOnce(i32) -> std::io::Result<T>) -> Result<T> {
        if_index(device.as_str()).and_then(op).map_err(|source| Error::Netlink { device: device.to_string(), source })
    }
}

impl Host for System {
    fn link_up_seen(&self) -> bool {
        nm_has_link_up()
    }

    fn kernel_carrier(&self, device: &Iface) -> bool {
        crate::sys::netlink::carrier(device.as_str()) == Some(true)
    }

    fn taken_off_lan(&self, device: &Iface) -> Result<bool> {
        System::on_link(device, |index| Ok(offlan::was_taken_off_lan(index)))
    }

    fn take_off_lan(&self, device: &Iface, mac: Option<[u8; 6]>) -> Result<()> {
        System::on_link(device, |index| offlan::take_off_lan(index, mac))
    }

    fn put_back(&self, device: &Iface) -> Result<()> {
        System::on_link(device, offlan::put_back)
    }

    fn forget_taken_off_lan(&self, device: &Iface) -> Result<()> {
        System::on_link(device, offlan::forget)
    }

    fn watcher_running(&self, pair: &Uuid) -> bool {
        crate::sys::lock::running_watcher(&watcher_lock_path(pair.as_str())).is_ok_and(|pid| pid.is_some())
            || crate::sys::lock::started_watcher(&watcher_started_path(pair.as_str()), pair.as_str())
    }

    fn link_mark(&self, device: &Iface, mark: Mark) -> Option<SystemTime> {
        if_index(device.as_str()).ok().and_then(|index| mark.since(index))
    }

    fn set_link_mark(&self, device: &Iface, mark: Mark) -> Result<()> {
        System::on_link(device, |index| mark.set(index))
    }

    fn clear_link_mark(&self, device: &Iface, mark: Mark) -> Result<()> {
        System::on_link(device, |index| mark.clear(index))
    }

    fn wired_lan(&self, pair: &Uuid) -> Option<Lan> {
        std::fs::read_to_string(wired_lan_path(pair.as_str())).ok().as_deref().and_then(Lan::parse)
    }

    fn record_wired_lan(&self, pair: &Uuid, lan: Lan) -> Result<()> {
        let path = wired_lan_path(pair.as_str());
        crate::lease::write_atomically(&path, lan.render().as_bytes()).map_err(Error::from)
    }

    /// Starts `nm-handover-watch`: a process of its own, in its own process
    /// group, so that it outlives this dispatcher script. NM's
    /// NetworkManager-dispatcher.service has `KillMode=process` ("allow
    /// scripts to spawn long-running daemons"), so systemd leaves it running
    /// when nm-dispatcher exits while idle.
    fn start_watcher(&self, watch: &WatcherArgs) -> Result<u32> {
        let not_started = |reason: String| Error::WatcherNotStarted { pair: watch.pair_name.clone(), reason };
        let program = std::env::current_exe().map(|me| me.with_file_name(WATCHER_PROGRAM)).map_err(|e| not_started(format!("cannot find my own path: {e}")))?;
        let child = std::process::Command::new(&program)
            .args(["--pair", watch.pair.as_str(), "--wired", watch.wired.as_str(), "--backup", watch.backup.as_str()])
            .args(["--wired-mac", &watch.wired_mac])
            .args(watch.backup_mac.iter().flat_map(|mac| ["--backup-mac", mac.as_str()]))
            .stdin(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| not_started(format!("{}: {e}", program.display())))?;
        let pid = child.id();
        // A look that comes before the watcher holds its lock (the
        // supervisor's, 1 s later) must see it running, or it starts a
        // second one (seen in the Wi-Fi VM, where a watcher took 2.3 s).
        if let Err(e) = crate::lease::write_atomically(&watcher_started_path(watch.pair.as_str()), format!("{pid}\n").as_bytes()) {
            warn!("{e}: a look before the watcher runs may start another one");
        }
        // Reaped when it exits (the supervisor lives long); a dispatcher
        // process that exits first leaves it to init.
        std::thread::spawn(move || {
            let mut child = child;
            let _ = child.wait();
        });
        Ok(pid)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    const WIRED: &str = "11111111-1111-4111-8111-111111111111";
    const BACKUP: &str = "22222222-2222-4222-8222-222222222222";
    const WIRED_MAC: &str = "02:00:00:00:00:01";
    const BACKUP_OWN_MAC: &str = "02:00:00:00:00:02";

    /// What the orchestration can ask of NM and of the kernel.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Request {
        Activate,
        Deactivate,
        TakeOffLan,
        PutBack,
        Forget,
        StartWatcher,
    }

    /// What it asked, in order, with what it asked for.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Step {
        Activate(String),
        Deactivate(String),
        TakeOffLan(String, Option<[u8; 6]>),
        PutBack(String),
        Forget(String),
        StartWatcher(WatcherArgs),
    }

    /// NetworkManager and the kernel as a handover sees them. A request
    /// moves a profile to the state NM reports right after accepting it;
    /// the tests move it on, as NM would later.
    struct Model {
        version: &'static str,
        link_up_seen: bool,
        wired_carrier: bool,
        /// The kernel reports the wired carrier back, NM not yet.
        kernel_carrier_first: bool,
        states: RefCell<BTreeMap<&'static str, LinkState>>,
        backup_clones: Option<&'static str>,
        off_lan: RefCell<BTreeSet<String>>,
        /// The request that fails.
        fails: Option<Request>,
        /// A device NM does not bind to the pair's profile (another profile holds it).
        unbound: Option<&'static str>,
        /// A device NM does not manage for the moment (NM asleep).
        unmanaged: Option<&'static str>,
        /// Each device's current lease's LAN, and the wired LAN recorded (`recorded`).
        lans: RefCell<BTreeMap<&'static str, Lan>>,
        steps: RefCell<Vec<Step>>,
    }

    impl Model {
        /// Stock NM 1.42, the cable just pulled, the backup not active.
        fn cable_pulled() -> Model {
            Model {
                version: "1.42.4",
                link_up_seen: false,
                wired_carrier: false,
                kernel_carrier_first: false,
                states: RefCell::new([(WIRED, LinkState::Inactive), (BACKUP, LinkState::Inactive)].into()),
                backup_clones: Some(WIRED_MAC),
                off_lan: RefCell::default(),
                fails: None,
                unbound: None,
                unmanaged: None,
                lans: RefCell::default(),
                steps: RefCell::default(),
            }
        }

        /// The cable back in and the wired link holding the address, the backup still active.
        fn cable_back(version: &'static str) -> Model {
            let model = Model { version, wired_carrier: true, ..Model::cable_pulled() };
            model.set(WIRED, LinkState::Active);
            model.set(BACKUP, LinkState::Active);
            model
        }

        fn set(&self, uuid: &'static str, state: LinkState) {
            self.states.borrow_mut().insert(uuid, state);
        }

        fn request(&self, request: Request, step: Step) -> Result<()> {
            if self.fails == Some(request) {
                return Err(Error::Netlink { device: format!("{step:?}"), source: std::io::Error::other("injected") });
            }
            self.steps.borrow_mut().push(step);
            Ok(())
        }

        fn steps(&self) -> Vec<Step> {
            self.steps.borrow().clone()
        }
    }

    impl Daemon for Model {
        fn link_state(&self, profile: &Uuid) -> LinkState {
            self.states.borrow()[profile.as_str()]
        }

        fn has_carrier(&self, device: &Iface) -> bool {
            device.as_str() == "eth0" && self.wired_carrier
        }

        fn ready_for(&self, device: &Iface, profile: &Uuid) -> bool {
            (device.as_str(), profile.as_str()) == ("wlan0", BACKUP) && ![self.unbound, self.unmanaged].contains(&Some("wlan0"))
        }

        fn deactivation_facts(&self, _: &Iface, _: &Uuid) -> (bool, bool) {
            (false, false)
        }

        fn active_profile(&self, _: &Iface) -> Option<String> {
            None
        }

        fn dhcp_timeout(&self, _: &Uuid) -> Option<i32> {
            None
        }

        fn link_facts(&self, device: &Iface, _: &Uuid) -> LinkFacts {
            let bound = self.unbound != Some(device.as_str());
            let managed = self.unmanaged != Some(device.as_str());
            LinkFacts { exists: true, managed, kind: LinkKind::Wifi, active_here: bound, available: bound, compatible: bound }
        }

        fn manages(&self, _: &Iface) -> bool {
            true
        }

        fn last_change_was_chosen(&self, _: &Iface) -> bool {
            true
        }

        fn version(&self) -> Option<String> {
            Some(self.version.into())
        }

        fn permanent_mac(&self, device: &Iface) -> Option<String> {
            (device.as_str() == "wlan0").then(|| BACKUP_OWN_MAC.into())
        }

        fn cloned_mac(&self, profile: &Uuid) -> Option<String> {
            self.backup_clones.filter(|_| profile.as_str() == BACKUP).map(str::to_owned)
        }

        fn dhcp4_lan(&self, device: &Iface) -> Option<Lan> {
            self.lans.borrow().get(device.as_str()).copied()
        }

        fn activate(&self, side: &Side) -> Result<()> {
            self.request(Request::Activate, Step::Activate(side.id.clone()))?;
            self.states.borrow_mut().insert(if side.uuid.as_str() == WIRED { WIRED } else { BACKUP }, LinkState::Activating);
            Ok(())
        }

        fn deactivate(&self, profile: &Uuid) -> Result<bool> {
            let uuid = if profile.as_str() == WIRED { WIRED } else { BACKUP };
            if !self.link_state(profile).on_lan() {
                return Ok(false);
            }
            self.request(Request::Deactivate, Step::Deactivate(uuid.into()))?;
            self.set(uuid, LinkState::Deactivating);
            Ok(true)
        }
    }

    impl Host for Model {
        fn link_up_seen(&self) -> bool {
            self.link_up_seen
        }

        fn kernel_carrier(&self, device: &Iface) -> bool {
            self.has_carrier(device) || (device.as_str() == "eth0" && self.kernel_carrier_first)
        }

        fn taken_off_lan(&self, device: &Iface) -> Result<bool> {
            Ok(self.off_lan.borrow().contains(device.as_str()))
        }

        fn take_off_lan(&self, device: &Iface, mac: Option<[u8; 6]>) -> Result<()> {
            self.request(Request::TakeOffLan, Step::TakeOffLan(device.to_string(), mac))?;
            self.off_lan.borrow_mut().insert(device.to_string());
            Ok(())
        }

        fn put_back(&self, device: &Iface) -> Result<()> {
            self.request(Request::PutBack, Step::PutBack(device.to_string()))?;
            self.off_lan.borrow_mut().remove(device.as_str());
            Ok(())
        }

        fn forget_taken_off_lan(&self, device: &Iface) -> Result<()> {
            self.request(Request::Forget, Step::Forget(device.to_string()))?;
            self.off_lan.borrow_mut().remove(device.as_str());
            Ok(())
        }

        fn start_watcher(&self, watch: &WatcherArgs) -> Result<u32> {
            self.request(Request::StartWatcher, Step::StartWatcher(watch.clone())).map(|()| 4242)
        }

        fn link_mark(&self, _: &Iface, _: Mark) -> Option<SystemTime> {
            None
        }

        fn watcher_running(&self, _: &Uuid) -> bool {
            false
        }

        fn set_link_mark(&self, _: &Iface, _: Mark) -> Result<()> {
            Ok(())
        }

        fn clear_link_mark(&self, _: &Iface, _: Mark) -> Result<()> {
            Ok(())
        }

        fn wired_lan(&self, _: &Uuid) -> Option<Lan> {
            self.lans.borrow().get("recorded").copied()
        }

        fn record_wired_lan(&self, _: &Uuid, lan: Lan) -> Result<()> {
            self.lans.borrow_mut().insert("recorded", lan);
            Ok(())
        }
    }

    fn pair(carrier_watch: bool) -> Pair {
        let side = |uuid: &str, id: &str, device: &str| Side { uuid: Uuid::parse(uuid).unwrap(), id: id.into(), device: Iface::parse(device).unwrap() };
        Pair {
            wired: side(WIRED, "Wired", "eth0"),
            backup: side(BACKUP, "Backup", "wlan0"),
            options: Options { lease_carry: false, carrier_watch, standby: false },
        }
    }

    fn handle(pair: &Pair, model: &Model, role: Role, hook: Hook) -> Result<Decision> {
        // Lease carrying is off in these pairs: the store is never read.
        pair.handle(role, hook, model, model, &LeaseStore::new("/nonexistent/nm-handover-test"))
    }

    fn deactivate() -> Step {
        Step::Deactivate(BACKUP.into())
    }

    fn take_off_lan() -> Step {
        Step::TakeOffLan("wlan0".into(), mac_bytes(BACKUP_OWN_MAC))
    }

    #[test]
    fn a_pull_activates_the_backup_and_gives_the_watcher_both_macs() {
        let model = Model::cable_pulled();
        handle(&pair(true), &model, Role::Wired, Hook::Down).unwrap();
        let watch = WatcherArgs {
            pair_name: "Wired".into(),
            pair: Uuid::parse(WIRED).unwrap(),
            wired: Iface::parse("eth0").unwrap(),
            backup: Iface::parse("wlan0").unwrap(),
            wired_mac: WIRED_MAC.into(),
            backup_mac: Some(BACKUP_OWN_MAC.into()),
        };
        assert_eq!(model.steps(), [Step::Activate("Backup".into()), Step::Forget("wlan0".into()), Step::StartWatcher(watch)]);
    }

    #[test]
    fn on_patched_nm_a_pull_starts_no_watcher() {
        let model = Model { link_up_seen: true, ..Model::cable_pulled() };
        handle(&pair(true), &model, Role::Wired, Hook::Down).unwrap();
        assert_eq!(model.steps(), [Step::Activate("Backup".into()), Step::Forget("wlan0".into())]);
    }

    #[test]
    fn a_watcher_that_cannot_start_leaves_the_handover_done() {
        for model in [Model { backup_clones: None, ..Model::cable_pulled() }, Model { fails: Some(Request::StartWatcher), ..Model::cable_pulled() }] {
            handle(&pair(true), &model, Role::Wired, Hook::Down).unwrap();
            assert_eq!(model.steps(), [Step::Activate("Backup".into()), Step::Forget("wlan0".into())]);
            assert_eq!(model.link_state(&Uuid::parse(BACKUP).unwrap()), LinkState::Activating);
        }
    }

    #[test]
    fn a_link_nm_does_not_bind_to_the_pair_is_never_touched() {
        // A pull: the backup's device is not ready for a profile NM binds to
        // another device; that is reported (once per event), nothing is done.
        let model = Model { unbound: Some("wlan0"), ..Model::cable_pulled() };
        let err = handle(&pair(true), &model, Role::Wired, Hook::Down).unwrap_err();
        assert!(matches!(&err, Error::LinkRefused { device, .. } if device == "wlan0"), "{err}");
        assert_eq!(model.steps(), []);
        let err = handle(&pair(true), &model, Role::Wired, Hook::Reconcile).unwrap_err();
        assert!(matches!(&err, Error::LinkRefused { .. }), "{err}");
        // A device NM does not manage for the moment (asleep, udev still at
        // it) is not ready, and no refusal: the events of a suspend do not fail.
        let model = Model { unmanaged: Some("wlan0"), ..Model::cable_pulled() };
        for (role, hook) in [(Role::Wired, Hook::Down), (Role::Backup, Hook::Down), (Role::Wired, Hook::Reconcile)] {
            handle(&pair(true), &model, role, hook).unwrap_or_else(|e| panic!("{role:?} {hook:?}: {e}"));
        }
        assert_eq!(model.steps(), []);
        // The wired link, which the watcher only reads, may be gone (an undock is a pull).
        let model = Model { unbound: Some("eth0"), ..Model::cable_pulled() };
        handle(&pair(true), &model, Role::Wired, Hook::Down).unwrap();
        assert!(matches!(model.steps().last(), Some(Step::StartWatcher(_))));
        // A hand-back where NM may release: the link is not set down, and nothing else happens.
        let model = Model { unbound: Some("wlan0"), ..Model::cable_back("1.58.1") };
        let err = handle(&pair(true), &model, Role::Wired, Hook::Up).unwrap_err();
        assert!(matches!(&err, Error::LinkRefused { device, .. } if device == "wlan0"), "{err}");
        assert_eq!(model.steps(), []);
        // A link taken off the LAN is not put back up once NM no longer binds it.
        let model = Model { unbound: Some("wlan0"), ..Model::cable_back("1.42.4") };
        model.off_lan.borrow_mut().insert("wlan0".into());
        model.set(BACKUP, LinkState::Inactive);
        assert!(handle(&pair(true), &model, Role::Backup, Hook::Down).is_err());
        assert_eq!(model.steps(), []);
    }

    #[test]
    fn a_lease_that_cannot_be_carried_still_hands_over() {
        let dir = std::env::temp_dir().join(format!("nmh-carry-fails-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let leases = LeaseStore::new(&dir);
        let carrying = Pair { options: Options { lease_carry: true, carrier_watch: false, standby: false }, ..pair(false) };
        std::fs::write(dir.join(format!("internal-{WIRED}-eth0.lease")), "# lease\nADDRESS=198.18.0.100\n").unwrap();
        // The backup's lease file cannot be written: a directory stands where it goes.
        std::fs::create_dir(dir.join(format!("internal-{BACKUP}-wlan0.lease"))).unwrap();
        assert!(leases.carry(&carrying.wired.lease_owner(), &carrying.backup.lease_owner()).is_err());
        let model = Model::cable_pulled();
        carrying.handle(Role::Wired, Hook::Down, &model, &model, &leases).unwrap();
        assert_eq!(model.steps(), [Step::Activate("Backup".into()), Step::Forget("wlan0".into())]);
        // The hand-back on patched NM: the backup still leaves the LAN before DHCP.
        std::fs::remove_dir(dir.join(format!("internal-{BACKUP}-wlan0.lease"))).unwrap();
        std::fs::write(dir.join(format!("internal-{BACKUP}-wlan0.lease")), "# lease\nADDRESS=198.18.0.100\n").unwrap();
        std::fs::create_dir(dir.join(format!("dhclient-{WIRED}-eth0.lease"))).ok();
        std::fs::remove_file(dir.join(format!("internal-{WIRED}-eth0.lease"))).unwrap();
        std::fs::create_dir(dir.join(format!("internal-{WIRED}-eth0.lease"))).unwrap();
        let model = Model { link_up_seen: true, ..Model::cable_back("1.58.1") };
        model.set(WIRED, LinkState::Activating);
        carrying.handle(Role::Wired, Hook::LinkUp, &model, &model, &leases).unwrap();
        assert_eq!(model.steps(), [take_off_lan(), deactivate()]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn only_a_deactivation_nm_handover_did_not_ask_for_is_the_users_choice() {
        assert!(!left_by_user(false, false, false));
        assert!(left_by_user(false, true, false), "the user's own disconnect");
        assert!(!left_by_user(false, true, true), "nm-handover's hand-back");
        assert!(left_by_user(true, false, false) && left_by_user(true, true, true), "another network the user picked");
    }

    #[test]
    fn a_refused_activation_stops_the_handover() {
        let model = Model { fails: Some(Request::Activate), ..Model::cable_pulled() };
        let err = handle(&pair(true), &model, Role::Wired, Hook::Down).unwrap_err();
        assert!(err.to_string().contains("injected"), "{err}");
        assert_eq!(model.steps(), []);
    }

    #[test]
    fn where_nm_may_release_the_backup_leaves_the_lan_before_nm_deactivates_it() {
        for (version, expected) in [("1.58.1", vec![take_off_lan(), deactivate()]), ("1.42.4", vec![deactivate()])] {
            let model = Model::cable_back(version);
            handle(&pair(true), &model, Role::Wired, Hook::Up).unwrap();
            assert_eq!(model.steps(), expected, "NM {version}");
        }
    }

    #[test]
    fn link_up_takes_the_backup_off_the_lan_on_every_version() {
        for version in ["1.42.4", "1.58.1"] {
            let model = Model { link_up_seen: true, ..Model::cable_back(version) };
            model.set(WIRED, LinkState::Activating);
            handle(&pair(true), &model, Role::Wired, Hook::LinkUp).unwrap();
            assert_eq!(model.steps(), [take_off_lan(), deactivate()], "NM {version}");
        }
    }

    /// The backup deactivated between the look and the request (its `down`,
    /// which sets a link taken down up again, already came): the hand-back
    /// sets the link up itself, and asked NM for nothing, so moved nothing.
    #[test]
    fn a_backup_gone_before_its_hand_back_gets_its_link_back_at_once() {
        let model = Model::cable_back("1.58.1");
        let pair = pair(true);
        let decision = decide(Role::Wired, Hook::Up, pair.observe(&model, &model), pair.options);
        model.set(BACKUP, LinkState::Inactive);
        let moved = pair.execute(&model, &model, &LeaseStore::new("/nonexistent"), &decision.actions).unwrap();
        assert!(!moved);
        assert_eq!(model.steps(), [take_off_lan(), Step::PutBack("wlan0".into())]);
        assert!(model.off_lan.borrow().is_empty());
    }

    /// The watcher took the backup off the LAN at the re-plug; a look
    /// before NetworkManager has seen the carrier return is no pull.
    #[test]
    fn a_replug_the_kernel_reported_before_nm_is_no_pull() {
        for (kernel_first, activates) in [(true, false), (false, true)] {
            let model = Model { kernel_carrier_first: kernel_first, ..Model::cable_pulled() };
            model.set(BACKUP, LinkState::Active);
            model.off_lan.borrow_mut().insert("wlan0".into());
            handle(&pair(true), &model, Role::Wired, Hook::Reconcile).unwrap();
            assert_eq!(model.steps().contains(&Step::Activate("Backup".into())), activates, "kernel carrier first: {kernel_first}");
        }
    }

    /// A pull's `down` that runs after the cable is back in (NM not told
    /// yet) is still the pull: the backup comes up with its watcher, which
    /// takes it off the LAN at once; never a failed port, which starts none.
    #[test]
    fn a_pulls_late_down_is_the_pull_whatever_the_kernel_says_since() {
        let model = Model { kernel_carrier_first: true, ..Model::cable_pulled() };
        handle(&pair(true), &model, Role::Wired, Hook::Down).unwrap();
        assert!(model.steps().iter().any(|s| matches!(s, Step::StartWatcher(_))), "{:?}", model.steps());
    }

    #[test]
    fn a_backup_that_could_not_leave_the_lan_is_not_deactivated() {
        // NM would release the lease the wired link shares.
        let model = Model { fails: Some(Request::TakeOffLan), ..Model::cable_back("1.58.1") };
        assert!(handle(&pair(true), &model, Role::Wired, Hook::Up).is_err());
        assert_eq!(model.steps(), []);
        assert_eq!(model.link_state(&Uuid::parse(BACKUP).unwrap()), LinkState::Active);
    }

    #[test]
    fn the_link_taken_down_goes_up_once_nm_has_deactivated_the_backup_and_only_then() {
        let model = Model::cable_back("1.58.1");
        let pair = pair(true);
        handle(&pair, &model, Role::Wired, Hook::Up).unwrap();
        // A `down` of the backup seen while NM still deactivates it changes nothing.
        handle(&pair, &model, Role::Backup, Hook::Down).unwrap();
        assert_eq!(model.steps(), [take_off_lan(), deactivate()]);
        model.set(BACKUP, LinkState::Inactive);
        handle(&pair, &model, Role::Backup, Hook::Down).unwrap();
        assert_eq!(model.steps()[2..], [Step::PutBack("wlan0".into())]);
        // A link nm-handover did not take down (or already put back) stays as it is.
        handle(&pair, &model, Role::Backup, Hook::Down).unwrap();
        handle(&pair, &model, Role::Wired, Hook::Reconcile).unwrap();
        assert_eq!(model.steps().len(), 3);
    }

    /// Events of one handover arrive in a row (nm-dispatcher's `down`, then a
    /// `reconcile`; `dhcp4-change`, `up`). Each one looked at after the one
    /// before has acted (which dispatch ensures by taking the handover lock
    /// before it connects; tests/faults.rs checks that in the lab) acts once.
    #[test]
    fn events_in_a_row_each_see_what_the_one_before_did() {
        let model = Model::cable_pulled();
        let pair = pair(false);
        handle(&pair, &model, Role::Wired, Hook::Down).unwrap();
        handle(&pair, &model, Role::Wired, Hook::Reconcile).unwrap();
        assert_eq!(model.steps(), [Step::Activate("Backup".into()), Step::Forget("wlan0".into())]);

        let model = Model::cable_back("1.58.1");
        handle(&pair, &model, Role::Wired, Hook::Dhcp4Change).unwrap();
        handle(&pair, &model, Role::Wired, Hook::Up).unwrap();
        assert_eq!(model.steps(), [take_off_lan(), deactivate()]);
    }

    /// The same two events decided on one look taken before either acted
    /// (the stale cache dispatch had when it connected before waiting for
    /// the lock): the hand-back runs twice. Shows the test above can fail.
    #[test]
    fn decisions_on_a_look_from_before_the_previous_handover_repeat_it() {
        let model = Model::cable_back("1.58.1");
        let pair = pair(false);
        let stale = pair.observe(&model, &model);
        for hook in [Hook::Dhcp4Change, Hook::Up] {
            let decision = decide(Role::Wired, hook, stale, pair.options);
            pair.execute(&model, &model, &LeaseStore::new("/nonexistent"), &decision.actions).unwrap();
        }
        assert_eq!(model.steps(), [take_off_lan(), deactivate(), take_off_lan(), deactivate()]);
    }

    #[test]
    fn only_moving_the_address_is_logged_as_a_handover() {
        use Action::*;
        let carry = CarryLease { from: Role::Wired, to: Role::Backup };
        assert_eq!(handover_direction(&[carry, ActivateBackup, WatchWiredCarrier]), Some("to the backup"));
        assert_eq!(handover_direction(&[TakeBackupOffLan, DeactivateBackup]), Some("back to the wired link"));
        for not_a_handover in [&[carry][..], &[PutBackupLinkBack], &[TakeBackupOffLan]] {
            assert_eq!(handover_direction(not_a_handover), None, "{not_a_handover:?}");
        }
    }

    #[test]
    fn dhcp_release_exists_from_1_48() {
        for (version, expected) in [("1.42.4", false), ("1.46.0", false), ("1.48.0", true), ("1.58.1", true), ("2.0", true), ("1.5x", true), ("", true)] {
            assert_eq!(sends_dhcp_release(version), expected, "{version}");
        }
    }
}
