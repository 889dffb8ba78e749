//! A pair as NetworkManager sees it now, and carrying out the policy's actions.

use std::os::unix::process::CommandExt;

use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::lease::{CarryOutcome, LeaseOwner, LeaseStore};
use crate::names::{Iface, Uuid};
use crate::pairing::{mac_bytes, mac_setting_of, membership, parse_mac, Membership};
use crate::policy::{Action, LinkState, Observed, Options, Role};
use crate::sys::libnm::{ActiveState, DeviceState, Nm, Profile};
use crate::sys::lock::{watcher_lock_path, WATCHER_PROGRAM};
use crate::offlan;
use crate::sys::netlink::if_index;
use crate::settings::PropertyValue;

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
/// did since boot (see [`crate::LINK_UP_SEEN_PATH`]). Before its first
/// `link-up` (boot with the cable out) a patched daemon counts as stock:
/// the carrier watcher then does what `link-up` would.
pub fn nm_has_link_up() -> bool {
    std::path::Path::new(crate::LINK_UP_SEEN_PATH).exists()
}

impl Pair {
    /// Loads the pair `profile` belongs to, checking that both profiles'
    /// records point at each other. `Ok(None)` when it is not paired.
    pub fn of_profile(nm: &Nm, profile: &Profile) -> Result<Option<Pair>> {
        let Some(this) = profile_membership(profile)? else {
            return Ok(None);
        };
        let this_id = profile.id().unwrap_or_default();
        let this_uuid = profile_uuid(profile)?;
        let inconsistent = |reason: String| Error::Inconsistent { profile: this_id.clone(), reason };
        let peer = nm
            .profile(this.peer.as_str())
            .ok_or_else(|| inconsistent(format!("its peer profile {} does not exist", this.peer)))?;
        let peer_id = peer.id().unwrap_or_default();
        let that = profile_membership(&peer)?
            .ok_or_else(|| inconsistent(format!("its peer '{peer_id}' is not paired")))?;
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
        let options = Options { lease_carry: record.lease_carry, carrier_watch: record.carrier_watch };
        Ok(Some(Pair { wired, backup, options }))
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

    /// The state of both sides now.
    pub fn observe(&self, nm: &Nm) -> Observed {
        let link_state = |uuid: &Uuid| match nm.active_connection_of(uuid.as_str()).map(|ac| ac.state()) {
            Some(ActiveState::Activating) => LinkState::Activating,
            Some(ActiveState::Activated) => LinkState::Active,
            Some(ActiveState::Deactivating) => LinkState::Deactivating,
            Some(ActiveState::Deactivated) | Some(ActiveState::Unknown) | None => LinkState::Inactive,
        };
        let wired_carrier = nm.device(self.wired.device.as_str()).is_some_and(|d| d.has_carrier());
        let backup_device_ready = match (nm.device(self.backup.device.as_str()), nm.profile(self.backup.uuid.as_str())) {
            (Some(device), Some(profile)) => {
                !matches!(device.state(), DeviceState::Unmanaged | DeviceState::Unavailable) && device.compatible_with(&profile)
            }
            _ => false,
        };
        Observed {
            wired_carrier,
            wired: link_state(&self.wired.uuid),
            backup: link_state(&self.backup.uuid),
            backup_device_ready,
            backup_may_release: nm.version().as_deref().is_some_and(sends_dhcp_release),
            link_up_dispatched: nm_has_link_up(),
            wired_down_chosen: nm.device(self.wired.device.as_str()).is_none_or(|d| d.last_change_was_chosen()),
            backup_taken_off_lan: nm.device(self.backup.device.as_str()).is_some_and(|d| d.state() != DeviceState::Unmanaged)
                && self.on_backup_link(|index| Ok(offlan::was_taken_off_lan(index))).unwrap_or(false),
        }
    }

    /// Sets the backup link down and gives it back its own MAC address, with
    /// netlink rather than through NM: NM may be waiting for us (`link-up`),
    /// and its deactivation would wait on the backup's `pre-down` dispatch,
    /// which nm-dispatcher queues behind our own request. Also done before a
    /// deactivation by a daemon that may send a DHCPRELEASE of the identity
    /// the backup shares with the wired link (see `policy::hand_back`).
    fn take_backup_off_lan(&self, nm: &Nm) -> Result<()> {
        let device = self.backup.device.as_str();
        let own_mac = self.backup_own_mac(nm).and_then(|mac| mac_bytes(&mac));
        if own_mac.is_none() {
            warn!("{device}: permanent MAC address unknown; NM restores it when it deactivates the profile");
        }
        self.on_backup_link(|index| offlan::take_off_lan(index, own_mac))?;
        info!("took {device} off the LAN (link down, own MAC restored)");
        Ok(())
    }

    /// Runs `op` on the backup device's interface index (rtnetlink and
    /// `crate::offlan` name links by index).
    fn on_backup_link<T>(&self, op: impl FnOnce(i32) -> std::io::Result<T>) -> Result<T> {
        let device = self.backup.device.as_str();
        if_index(device).and_then(op).map_err(|source| Error::Netlink { device: device.to_string(), source })
    }

    /// The backup device's own (permanent) MAC address, as `parse_mac` writes it.
    fn backup_own_mac(&self, nm: &Nm) -> Option<String> {
        nm.device(self.backup.device.as_str()).and_then(|d| d.permanent_hw_address()).and_then(|mac| parse_mac(&mac).ok())
    }

    /// Starts `nm-handover-watch` for this handover (see `crate::watch`):
    /// a process of its own, in its own process group, so that it outlives
    /// this dispatcher script. NM's NetworkManager-dispatcher.service has
    /// `KillMode=process` ("allow scripts to spawn long-running daemons"),
    /// so systemd leaves it running when nm-dispatcher exits while idle.
    fn start_carrier_watch(&self, nm: &Nm) -> Result<()> {
        let not_started = |reason: String| Error::WatcherNotStarted { pair: self.wired.id.clone(), reason };
        let backup = nm.profile(self.backup.uuid.as_str()).ok_or_else(|| not_started("the backup profile disappeared".into()))?;
        // The setting `pair` wrote the wired MAC into.
        let setting = mac_setting_of(&backup.connection_type().unwrap_or_default());
        let cloned = match backup.property(setting, "cloned-mac-address") {
            Some(PropertyValue::Str(Some(mac))) => parse_mac(&mac).ok(),
            _ => None,
        };
        let wired_mac = cloned.ok_or_else(|| not_started("the backup profile clones no MAC address".into()))?;
        // (A veth has no permanent MAC: NM puts its own back when it deactivates the profile.)
        let own_mac = self.backup_own_mac(nm);
        let program = std::env::current_exe()
            .map(|me| me.with_file_name(WATCHER_PROGRAM))
            .map_err(|e| not_started(format!("cannot find my own path: {e}")))?;
        let child = std::process::Command::new(&program)
            .args(["--pair", self.wired.uuid.as_str(), "--wired", self.wired.device.as_str(), "--backup", self.backup.device.as_str()])
            .args(["--wired-mac", &wired_mac])
            .args(own_mac.iter().flat_map(|mac| ["--backup-mac", mac.as_str()]))
            .stdin(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| not_started(format!("{}: {e}", program.display())))?;
        info!(
            pid = child.id(),
            lock = %watcher_lock_path(self.wired.uuid.as_str()).display(),
            "started the carrier watcher: {} goes off the LAN when {} has carrier again",
            self.backup.device,
            self.wired.device
        );
        Ok(())
    }

    /// Carries out `actions` in order; stops at the first failure.
    pub fn execute(&self, nm: &Nm, leases: &LeaseStore, actions: &[Action]) -> Result<()> {
        for action in actions {
            match *action {
                Action::CarryLease { from, to } => {
                    let (from, to) = (self.side(from), self.side(to));
                    match leases.carry(&from.lease_owner(), &to.lease_owner())? {
                        CarryOutcome::Written { path, address } => {
                            info!(%address, path = %path.display(), "carried lease from {} to {}", from.device, to.device)
                        }
                        CarryOutcome::AlreadyCurrent { address, .. } => {
                            info!(%address, "lease of {} already current", to.device)
                        }
                        CarryOutcome::NoSourceLease => warn!("no lease file of {} to carry", from.device),
                    }
                }
                Action::ActivateBackup => {
                    let profile = nm.profile(self.backup.uuid.as_str()).ok_or_else(|| Error::Inconsistent {
                        profile: self.backup.id.clone(),
                        reason: "the backup profile disappeared".into(),
                    })?;
                    let device = nm
                        .device(self.backup.device.as_str())
                        .ok_or_else(|| Error::NoDevice(self.backup.device.to_string()))?;
                    nm.activate(&profile, &device)?;
                    info!("asked NetworkManager to activate '{}' on {}", self.backup.id, self.backup.device);
                    // NM brings the link up itself now.
                    if let Err(e) = self.on_backup_link(offlan::forget) {
                        warn!("{e}");
                    }
                }
                Action::DeactivateBackup => match nm.active_connection_of(self.backup.uuid.as_str()) {
                    Some(active) => {
                        nm.deactivate(&active)?;
                        info!("asked NetworkManager to deactivate '{}'", self.backup.id);
                    }
                    None => info!("'{}' is no longer active", self.backup.id),
                },
                Action::TakeBackupOffLan => self.take_backup_off_lan(nm)?,
                Action::PutBackupLinkBack => {
                    self.on_backup_link(offlan::put_back)?;
                    info!("set {} up again, as it was before the hand-back took it down", self.backup.device);
                }
                // The handover itself is done; without the watcher the
                // hand-back still works, only the re-plug may be slower.
                Action::WatchWiredCarrier => {
                    if let Err(e) = self.start_carrier_watch(nm) {
                        warn!("{e}");
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::sends_dhcp_release;

    #[test]
    fn dhcp_release_exists_from_1_48() {
        for (version, expected) in [("1.42.4", false), ("1.46.0", false), ("1.48.0", true), ("1.58.1", true), ("2.0", true), ("1.5x", true), ("", true)] {
            assert_eq!(sends_dhcp_release(version), expected, "{version}");
        }
    }
}
