//! The handover policy: what to do for one dispatcher event of a paired
//! profile, given what NetworkManager reports. Pure: no I/O, no clock.
//!
//! The wired link is preferred. When it loses carrier, the backup link is
//! activated (it clones the wired MAC, so the DHCP server sees the same
//! client); when the wired link comes back, the backup must leave the LAN
//! before the wired DHCP client asks for the address, or the server may see
//! the address in use and abandon it.

/// Which side of a pair a profile is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Wired,
    Backup,
}

/// The dispatcher actions the policy distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hook {
    /// `link-up` (patched NM): the link layer is ready, IP configuration has
    /// not started, and NM waits for us.
    LinkUp,
    /// `dhcp4-change`: the first lease of an activation (or a renewal).
    Dhcp4Change,
    /// `pre-up`: addresses are configured, NM waits for us.
    PreUp,
    /// `up`: the activation completed.
    Up,
    /// `pre-down`: a deactivation started.
    PreDown,
    /// `down`: the profile was deactivated (for the wired link, after carrier
    /// loss once NM's carrier-wait timeout expired).
    Down,
    /// Not a dispatcher event: bring the pair into its proper state (boot,
    /// NM start, explicit `nm-handover reconcile`).
    Reconcile,
}

impl Hook {
    #[cfg(test)]
    pub const ALL: [Hook; 7] = [Hook::LinkUp, Hook::Dhcp4Change, Hook::PreUp, Hook::Up, Hook::PreDown, Hook::Down, Hook::Reconcile];
}

/// Where a profile of the pair is in its life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkState {
    Inactive,
    Activating,
    Active,
    Deactivating,
}

impl LinkState {
    #[cfg(test)]
    pub const ALL: [LinkState; 4] = [LinkState::Inactive, LinkState::Activating, LinkState::Active, LinkState::Deactivating];

    /// Whether the link may hold (or is about to hold) the address on the LAN.
    pub fn on_lan(self) -> bool {
        self != LinkState::Inactive
    }
}

/// What NetworkManager reports about the pair at the time of the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Observed {
    pub wired_carrier: bool,
    pub wired: LinkState,
    pub backup: LinkState,
    /// A device the backup profile can be activated on exists and is managed.
    pub backup_device_ready: bool,
    /// The daemon can send a DHCPRELEASE when it deactivates the backup
    /// (`ipv4.dhcp-send-release`, NetworkManager >= 1.48).
    pub backup_may_release: bool,
    /// The daemon dispatches `link-up` (patched NM) and waits for it.
    pub link_up_dispatched: bool,
    /// The wired profile's last deactivation was someone's choice (a
    /// disconnect), not a failure (no lease on a port with carrier).
    pub wired_down_chosen: bool,
    /// nm-handover set the backup's link down (see `crate::offlan`) and it
    /// has not been set up since; its device is still managed by NM.
    pub backup_taken_off_lan: bool,
    /// The backup device was last left by someone's choice (disconnected by
    /// hand), or holds another profile now (a network the user picked):
    /// a reconcile leaves it so; only a pull hands over to the backup.
    pub backup_left_by_user: bool,
    /// A wired activation on this port found no DHCP since the cable went
    /// in (see `crate::marks`).
    pub wired_port_failed: bool,
    /// The carrier watcher (or the supervisor's fast path) took the backup off
    /// the LAN for a re-plug, and the wired link has had no address for
    /// longer than its DHCP timeout since, or NetworkManager activated nothing
    /// on it within seconds (see `crate::marks::replug_overdue_in`).
    pub replug_overdue: bool,
    /// The pair's carrier watcher runs.
    pub watcher_running: bool,
    /// The backup is active with a lease from another network than the one
    /// the wired link last had its lease from (see `crate::lan`): the
    /// address was not kept, and the wired lease file keeps the wired LAN's.
    pub backup_on_other_lan: bool,
    /// The pair's warm standby holds the address on the backup's device
    /// (then `backup` says `Active`): the supervisor moved it there at the
    /// pull and takes it back off the moment the wired carrier returns, so no
    /// carrier watcher is started for it (see `crate::standby`).
    pub standby_serving: bool,
}

impl Observed {
    /// The backup holds the address, or is about to: NM has it active or
    /// activating, and its link was not taken off the LAN.
    pub fn backup_holds_address(&self) -> bool {
        matches!(self.backup, LinkState::Active | LinkState::Activating) && !self.backup_taken_off_lan
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Options {
    /// Copy the DHCP lease between the two links' lease files, so that each
    /// DHCP client starts by asking for the address the other one held.
    pub lease_carry: bool,
    /// On stock NM (no `link-up`), start a watcher with the backup that
    /// takes it off the LAN the moment the wired carrier returns.
    pub carrier_watch: bool,
    /// Keep the backup associated ahead of time, silent, and move the
    /// address onto it the moment the wired carrier goes (see `crate::standby`).
    pub standby: bool,
}

/// What to do, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Write `from`'s lease into `to`'s lease file.
    CarryLease { from: Role, to: Role },
    /// Take the backup link off the LAN now (link down, MAC restored),
    /// without waiting for NM: used where NM waits for us.
    TakeBackupOffLan,
    /// Ask NM to activate the backup profile (without waiting for it).
    ActivateBackup,
    /// Ask NM to deactivate the backup profile (without waiting for it).
    DeactivateBackup,
    /// Start the carrier watcher for this handover (stock NM).
    WatchWiredCarrier,
    /// Set the backup's link up again, as it was before it was taken off
    /// the LAN (NM leaves a deactivated device's link down).
    PutBackupLinkBack,
    /// Remember that the wired link found no DHCP on this port, so that
    /// NM's retries on it leave the backup holding the address.
    RememberPortFailed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub actions: Vec<Action>,
    /// Why, for the log.
    pub reason: &'static str,
}

fn decision(reason: &'static str, actions: Vec<Action>) -> Decision {
    Decision { actions, reason }
}

/// Hands back from the backup link. The backup shares the wired link's DHCP
/// identity, so a DHCPRELEASE it sent on deactivation would free the lease
/// the wired link holds: where the daemon can send one, the backup leaves
/// the LAN first (link down), so the release never reaches the server.
/// Older daemons never release; there NM deactivates the backup as it
/// always did.
fn hand_back(seen: Observed) -> Vec<Action> {
    // A standby still serving here means its fast path did not take the
    // address off at the carrier's return (no supervisor): its link goes down.
    if seen.backup_may_release || seen.standby_serving {
        vec![Action::TakeBackupOffLan, Action::DeactivateBackup]
    } else {
        vec![Action::DeactivateBackup]
    }
}

fn carry(options: Options, from: Role, to: Role) -> Option<Action> {
    options.lease_carry.then_some(Action::CarryLease { from, to })
}

/// Whether `decide` can ask for anything at all for this role and hook.
/// Where it cannot, the event is dropped before NM is even asked for its
/// state: nm-dispatcher runs waiting scripts one at a time, and NM waits for
/// `link-up` itself (every activation of the backup would pay for a look).
pub fn may_act(role: Role, hook: Hook) -> bool {
    !matches!((role, hook), (_, Hook::PreDown) | (Role::Backup, Hook::LinkUp))
}

pub fn decide(role: Role, hook: Hook, seen: Observed, options: Options) -> Decision {
    let mut decision = match role {
        Role::Wired => decide_wired(hook, seen, options),
        Role::Backup => decide_backup(hook, seen, options),
    };
    // Once NM has deactivated the backup, its link is as it was before the
    // handover took it down. (An activation brings it up by itself.)
    let backup_down_event = role == Role::Backup && hook == Hook::Down;
    if (backup_down_event || hook == Hook::Reconcile)
        && seen.backup_taken_off_lan
        && seen.backup == LinkState::Inactive
        && !decision.actions.contains(&Action::ActivateBackup)
    {
        if decision.actions.is_empty() {
            decision.reason = "backup deactivated: its link, taken down for the hand-back, goes up again";
        }
        decision.actions.insert(0, Action::PutBackupLinkBack);
    }
    decision
}

fn decide_wired(hook: Hook, seen: Observed, options: Options) -> Decision {
    match hook {
        // nm-dispatcher runs events one after another: a `down` that comes
        // after the wired link was activated again (a pull and re-plug
        // shorter than the dispatcher's queue) is no failed activation.
        Hook::Down if seen.wired == LinkState::Active && seen.wired_carrier => {
            decision("a late down of a wired link NetworkManager has up again: nothing to do", vec![])
        }
        Hook::Down | Hook::Reconcile if !seen.wired_carrier => {
            if seen.wired.on_lan() && hook == Hook::Reconcile {
                decision("wired link is still up on its way out; its down event will hand over", vec![])
            } else if seen.backup_holds_address() {
                // (It came back with the carrier present, after a port that
                // never answered, where no watcher may run: the next plug needs one.)
                let watch = options.carrier_watch && !seen.link_up_dispatched && !seen.watcher_running && !seen.standby_serving;
                decision("backup link already holds the address", if watch { vec![Action::WatchWiredCarrier] } else { vec![] })
            } else if !seen.backup_device_ready {
                decision("wired carrier lost but no device is ready for the backup profile", vec![])
            } else if hook == Hook::Reconcile && seen.backup_left_by_user {
                decision("the backup device was left by hand (or holds another network): left so until the next pull", vec![])
            } else {
                let mut actions: Vec<Action> = carry(options, Role::Wired, Role::Backup).into_iter().collect();
                actions.push(Action::ActivateBackup);
                if options.carrier_watch && !seen.link_up_dispatched {
                    actions.push(Action::WatchWiredCarrier);
                }
                decision("wired carrier lost: hand over to the backup link", actions)
            }
        }
        // Patched NM dispatches `down` also when an activation fails after
        // `link-up` took the backup off the LAN: the laptop would stay offline.
        Hook::Down if !seen.wired_down_chosen => {
            back_to_the_backup_on_a_failed_port(hook, seen, options, "wired activation failed with carrier present: back to the backup link")
        }
        // Stock NM says nothing when a re-plug finds no DHCP: the supervisor sees it overdue.
        Hook::Reconcile if seen.replug_overdue && seen.wired != LinkState::Active => back_to_the_backup_on_a_failed_port(
            hook,
            seen,
            options,
            "no address on the wired link after the re-plug (its DHCP timeout passed, or NetworkManager activated nothing on it): back to the backup link",
        ),
        Hook::Down => decision("wired profile deactivated with carrier present: the user's choice, left alone", vec![]),
        // nm-dispatcher runs events one after another, and each run looks at
        // NM as it is now: an event of a wired link NM has taken down since it
        // was sent (the cable out again, the dock gone) must not take the
        // backup away, which the laptop needs until the cable is back. (The
        // carrier alone does not decide: a bounce shorter than the carrier-wait
        // leaves NM's activation up and sends no later event to hand back on.)
        Hook::LinkUp | Hook::Dhcp4Change | Hook::PreUp | Hook::Up if !matches!(seen.wired, LinkState::Activating | LinkState::Active) => {
            decision("a late event of a wired link NetworkManager no longer has up: the backup stays", vec![])
        }
        Hook::LinkUp if seen.wired_port_failed && seen.backup_holds_address() => {
            decision("a retry on a port where the wired link found no DHCP: the backup keeps the address until the wired link has it", vec![])
        }
        Hook::LinkUp => match seen.backup {
            LinkState::Inactive => decision("wired link up, backup not on the LAN", vec![]),
            LinkState::Deactivating => decision("wired link up while backup is being deactivated: take it off the LAN first", vec![Action::TakeBackupOffLan]),
            LinkState::Activating | LinkState::Active => {
                let mut actions: Vec<Action> = if seen.backup == LinkState::Active && !seen.backup_on_other_lan {
                    carry(options, Role::Backup, Role::Wired).into_iter().collect()
                } else {
                    Vec::new()
                };
                // NM waits for us: the backup leaves the LAN now, whatever the version.
                actions.extend([Action::TakeBackupOffLan, Action::DeactivateBackup]);
                decision("wired link up before DHCP: take the backup off the LAN, then hand back", actions)
            }
        },
        Hook::Dhcp4Change | Hook::PreUp | Hook::Up | Hook::Reconcile => {
            // (An event's wired link is up or coming up here: the late-event arm above took the rest.)
            let wired_has_address = hook != Hook::Reconcile || seen.wired == LinkState::Active;
            if wired_has_address && matches!(seen.backup, LinkState::Activating | LinkState::Active) {
                decision("wired link holds the address again: hand back from the backup link", hand_back(seen))
            } else {
                decision("nothing to hand back", vec![])
            }
        }
        Hook::PreDown => decision("wired pre-down: nothing to do before the down event", vec![]),
    }
}

/// The wired link found no DHCP with its cable in: the backup holds the
/// address again (no watcher: the carrier is already there, and a watcher
/// would take the backup off at once), and the port is remembered so that
/// NM's retries leave it so. A reconcile leaves a backup the user left.
fn back_to_the_backup_on_a_failed_port(hook: Hook, seen: Observed, options: Options, reason: &'static str) -> Decision {
    let mut actions = Vec::new();
    if !seen.wired_port_failed {
        actions.push(Action::RememberPortFailed);
    }
    let users_choice = hook == Hook::Reconcile && seen.backup_left_by_user;
    if !seen.backup_holds_address() && seen.backup_device_ready && !users_choice {
        actions.extend(carry(options, Role::Wired, Role::Backup));
        actions.push(Action::ActivateBackup);
        return decision(reason, actions);
    }
    decision("the wired link found no DHCP on this port; the backup holds the address (or cannot)", actions)
}

fn decide_backup(hook: Hook, seen: Observed, options: Options) -> Decision {
    let wired_holds_link = seen.wired_carrier && seen.wired == LinkState::Active;
    match hook {
        Hook::Dhcp4Change | Hook::PreUp | Hook::Up if wired_holds_link && seen.backup.on_lan() => {
            decision("backup came up while the wired link holds the address: hand back", hand_back(seen))
        }
        Hook::Dhcp4Change | Hook::Up if seen.backup_on_other_lan => {
            decision("backup holds an address of another LAN than the wired link's: the address was not kept; the wired lease file is left as it is", vec![])
        }
        Hook::Dhcp4Change | Hook::Up => match carry(options, Role::Backup, Role::Wired) {
            Some(action) => decision("backup holds the address: keep the wired lease file in step", vec![action]),
            None => decision("backup holds the address; lease carrying is off", vec![]),
        },
        Hook::Reconcile => decide_wired(Hook::Reconcile, seen, options),
        Hook::LinkUp | Hook::PreUp | Hook::PreDown | Hook::Down => decision("backup event needs no action", vec![]),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use Action::*;

    /// Every observation: both carriers, each state on each side, each flag.
    fn all_observations() -> impl Iterator<Item = Observed> {
        const FLAGS: u32 = 12;
        LinkState::ALL.into_iter().flat_map(|wired| {
            LinkState::ALL.into_iter().flat_map(move |backup| {
                (0..1u32 << FLAGS).map(move |bits| {
                    let flag = |n: u32| bits & (1 << n) != 0;
                    Observed {
                        wired_carrier: flag(0),
                        wired,
                        backup,
                        backup_device_ready: flag(1),
                        backup_may_release: flag(2),
                        link_up_dispatched: flag(3),
                        wired_down_chosen: flag(4),
                        backup_taken_off_lan: flag(5),
                        backup_left_by_user: flag(6),
                        wired_port_failed: flag(7),
                        replug_overdue: flag(8),
                        watcher_running: flag(9),
                        backup_on_other_lan: flag(10),
                        standby_serving: flag(11),
                    }
                })
            })
        })
    }

    fn every_case() -> impl Iterator<Item = (Role, Hook, Observed, Options)> {
        [Role::Wired, Role::Backup].into_iter().flat_map(|role| {
            Hook::ALL.into_iter().flat_map(move |hook| {
                all_observations().flat_map(move |seen| {
                    [false, true].into_iter().flat_map(move |lease_carry| {
                        [false, true].into_iter().map(move |carrier_watch| (role, hook, seen, Options { lease_carry, carrier_watch, standby: false }))
                    })
                })
            })
        })
    }

    const CARRY: Options = Options { lease_carry: true, carrier_watch: false, standby: false };

    /// An ordinary observation: the backup's device ready, nothing marked.
    pub(crate) fn seen(wired_carrier: bool, wired: LinkState, backup: LinkState) -> Observed {
        Observed {
            wired_carrier,
            wired,
            backup,
            backup_device_ready: true,
            backup_may_release: false,
            link_up_dispatched: false,
            wired_down_chosen: true,
            backup_taken_off_lan: false,
            backup_left_by_user: false,
            wired_port_failed: false,
            replug_overdue: false,
            watcher_running: false,
            backup_on_other_lan: false,
            standby_serving: false,
        }
    }

    /// Where each variant sits in `ALL`. The `match` is exhaustive: a new
    /// variant does not compile until it is placed here, and the test below
    /// then fails until `ALL` (and so the generator) has it too.
    fn hook_position(hook: Hook) -> usize {
        match hook {
            Hook::LinkUp => 0,
            Hook::Dhcp4Change => 1,
            Hook::PreUp => 2,
            Hook::Up => 3,
            Hook::PreDown => 4,
            Hook::Down => 5,
            Hook::Reconcile => 6,
        }
    }

    fn state_position(state: LinkState) -> usize {
        match state {
            LinkState::Inactive => 0,
            LinkState::Activating => 1,
            LinkState::Active => 2,
            LinkState::Deactivating => 3,
        }
    }

    #[test]
    fn covers_every_combination() {
        use std::collections::HashSet;
        let cases: Vec<_> = every_case().collect();
        let distinct: HashSet<_> = cases.iter().copied().collect();
        assert_eq!(distinct.len(), cases.len(), "the generator repeats cases");
        // Every value of every input appears: both roles, each hook, each state on each side.
        let hooks: HashSet<Hook> = cases.iter().map(|c| c.1).collect();
        let hook_positions: HashSet<usize> = hooks.iter().map(|h| hook_position(*h)).collect();
        assert_eq!(hook_positions, (0..Hook::ALL.len()).collect(), "a hook the generator never produces");
        assert!(Hook::ALL.iter().enumerate().all(|(i, h)| hook_position(*h) == i));
        for side in [|c: &(Role, Hook, Observed, Options)| c.2.wired, |c: &(Role, Hook, Observed, Options)| c.2.backup] {
            let states: HashSet<usize> = cases.iter().map(|c| state_position(side(c))).collect();
            assert_eq!(states, (0..LinkState::ALL.len()).collect(), "a link state the generator never produces");
        }
        assert!(LinkState::ALL.iter().enumerate().all(|(i, l)| state_position(*l) == i));
        type Flags = (bool, bool, bool, bool, bool, bool, bool, bool);
        let flags: HashSet<Flags> = cases
            .iter()
            .map(|c| {
                (
                    c.2.wired_carrier,
                    c.2.backup_device_ready,
                    c.2.backup_may_release,
                    c.2.backup_taken_off_lan,
                    c.2.backup_left_by_user,
                    c.2.wired_port_failed,
                    c.2.replug_overdue,
                    c.3.lease_carry,
                )
            })
            .collect();
        assert_eq!(flags.len(), 256);
        let roles: HashSet<Role> = cases.iter().map(|c| c.0).collect();
        assert_eq!(roles.len(), 2);
    }

    #[test]
    fn events_dropped_before_a_look_at_nm_never_need_an_action() {
        for (role, hook, seen, options) in every_case() {
            if !may_act(role, hook) {
                let d = decide(role, hook, seen, options);
                assert!(d.actions.is_empty(), "{role:?} {hook:?} {seen:?} {options:?} -> {d:?}");
            }
        }
        assert!(!may_act(Role::Backup, Hook::LinkUp) && may_act(Role::Wired, Hook::LinkUp));
    }

    #[test]
    fn invariants_hold_for_every_combination() {
        for (role, hook, seen, options) in every_case() {
            let d = decide(role, hook, seen, options);
            let ctx = format!("{role:?} {hook:?} {seen:?} {options:?} -> {d:?}");
            // A lease of another LAN never reaches the wired link's lease file.
            if seen.backup_on_other_lan {
                assert!(!d.actions.contains(&CarryLease { from: Role::Backup, to: Role::Wired }), "{ctx}");
            }
            // Never both bring the backup up and take it down.
            let activates = d.actions.contains(&ActivateBackup);
            assert!(!(activates && (d.actions.contains(&DeactivateBackup) || d.actions.contains(&TakeBackupOffLan))), "{ctx}");
            // Only activate the backup when the wired link has no carrier and a device is ready.
            if activates {
                // (A backup still deactivating is activated again: the cable went out again.)
                // With carrier, only after a wired activation that failed.
                let wired_failed = (role == Role::Wired && hook == Hook::Down && !seen.wired_down_chosen)
                    || (hook == Hook::Reconcile && seen.replug_overdue && seen.wired != LinkState::Active);
                assert!((!seen.wired_carrier || wired_failed) && seen.backup_device_ready, "{ctx}");
                // A backup NM still has active is activated again only when its link was taken off the LAN.
                assert!(matches!(seen.backup, LinkState::Inactive | LinkState::Deactivating) || seen.backup_taken_off_lan, "{ctx}");
                // A reconcile never overrides the user's own choice for the backup device.
                assert!(!(hook == Hook::Reconcile && seen.backup_left_by_user), "{ctx}");
                // The lease goes to the backup before it is activated.
                if options.lease_carry {
                    let i = d.actions.iter().position(|a| *a == ActivateBackup).unwrap();
                    assert!(i > 0 && d.actions[i - 1] == CarryLease { from: Role::Wired, to: Role::Backup }, "{ctx}");
                }
            }
            // The backup leaves only for a wired link NM has up or coming up now
            // (not for a late event of a link NM has taken down since).
            if d.actions.contains(&DeactivateBackup) || d.actions.contains(&TakeBackupOffLan) {
                assert!(matches!(seen.wired, LinkState::Activating | LinkState::Active), "{ctx}");
            }
            // Never touch the backup when it is off the LAN, except to activate it.
            if !seen.backup.on_lan() {
                assert!(!d.actions.contains(&DeactivateBackup) && !d.actions.contains(&TakeBackupOffLan), "{ctx}");
            }
            // Lease carrying only when enabled.
            if !options.lease_carry {
                assert!(!d.actions.iter().any(|a| matches!(a, CarryLease { .. })), "{ctx}");
            }
            // Blocking hooks (NM waits for us) never ask NM to activate anything.
            if matches!(hook, Hook::LinkUp | Hook::PreUp) {
                assert!(!activates, "{ctx}");
            }
            // Where NM may send a DHCPRELEASE, or waits for us (link-up), the
            // backup leaves the LAN before NM deactivates it.
            if let Some(i) = d.actions.iter().position(|a| *a == DeactivateBackup) {
                if seen.backup_may_release || hook == Hook::LinkUp {
                    assert!(i > 0 && d.actions[i - 1] == TakeBackupOffLan, "{ctx}");
                }
            }
            // Elsewhere NM takes the backup down itself.
            if d.actions.contains(&TakeBackupOffLan) {
                assert!(seen.backup_may_release || seen.standby_serving || (role, hook) == (Role::Wired, Hook::LinkUp), "{ctx}");
            }
            // The watcher goes with an activation of the backup on stock NM
            // when the pair wants it, right after it, and never otherwise.
            // With the carrier present (a failed port), never: a watcher would take the backup off at once.
            // Also at a pull the backup already holds the address for (it came back on a failed port).
            let watches = d.actions.iter().position(|a| *a == WatchWiredCarrier);
            let stock_watch = options.carrier_watch && !seen.link_up_dispatched && !seen.wired_carrier;
            let held_at_pull = matches!(hook, Hook::Down | Hook::Reconcile)
                && (role == Role::Wired || hook == Hook::Reconcile)
                && seen.backup_holds_address()
                && !(hook == Hook::Reconcile && seen.wired.on_lan())
                && !seen.watcher_running
                // (The warm standby's own fast path takes it off at the re-plug.)
                && !seen.standby_serving;
            let wants_watch = stock_watch && (activates || held_at_pull);
            assert_eq!(watches.is_some(), wants_watch, "{ctx}");
            if let Some(i) = watches {
                assert!(d.actions.get(i.wrapping_sub(1)).is_none_or(|a| *a == ActivateBackup), "{ctx}");
            }
            // A retry's link-up on a port that failed leaves a backup that holds the address.
            if hook == Hook::LinkUp && seen.wired_port_failed && seen.backup_holds_address() {
                assert!(d.actions.is_empty(), "{ctx}");
            }
            // The failed port is remembered exactly when a wired activation failed with the carrier in.
            let remembers = d.actions.contains(&RememberPortFailed);
            if remembers {
                assert!((role == Role::Wired || hook == Hook::Reconcile) && seen.wired_carrier && !seen.wired_port_failed, "{ctx}");
            }
            // A lease carried to the wired link comes before the backup leaves.
            if let Some(i) = d.actions.iter().position(|a| *a == CarryLease { from: Role::Backup, to: Role::Wired }) {
                assert!(d.actions[i + 1..].iter().all(|a| *a != ActivateBackup), "{ctx}");
                assert!(d.actions[..i].iter().all(|a| !matches!(a, TakeBackupOffLan | DeactivateBackup)), "{ctx}");
            }
            // A link nm-handover took down goes up again exactly when NM has
            // deactivated the backup and is not asked to activate it; a link
            // it did not take down is never set up.
            let puts_back = d.actions.contains(&PutBackupLinkBack);
            let deactivated = seen.backup == LinkState::Inactive && ((role, hook) == (Role::Backup, Hook::Down) || hook == Hook::Reconcile);
            assert_eq!(puts_back, seen.backup_taken_off_lan && deactivated && !activates, "{ctx}");
        }
    }

    #[test]
    fn a_backup_link_taken_down_goes_up_again_once_nm_deactivated_it() {
        let mut s = seen(true, LinkState::Active, LinkState::Inactive);
        s.backup_taken_off_lan = true;
        let d = decide(Role::Backup, Hook::Down, s, CARRY);
        assert_eq!(d.actions, vec![PutBackupLinkBack]);
        assert!(d.reason.contains("goes up again"));
        // Activated again meanwhile (another pull): NM brings it up itself.
        s.backup = LinkState::Activating;
        assert!(decide(Role::Backup, Hook::Down, s, CARRY).actions.is_empty());
        // A link nm-handover did not take down is left as it is.
        let s = seen(true, LinkState::Active, LinkState::Inactive);
        assert!(decide(Role::Backup, Hook::Down, s, CARRY).actions.is_empty());
    }

    #[test]
    fn cable_pull_hands_over_with_lease() {
        let d = decide(Role::Wired, Hook::Down, seen(false, LinkState::Inactive, LinkState::Inactive), CARRY);
        assert_eq!(d.actions, vec![CarryLease { from: Role::Wired, to: Role::Backup }, ActivateBackup]);
    }

    #[test]
    fn user_disconnect_with_cable_in_is_left_alone() {
        let d = decide(Role::Wired, Hook::Down, seen(true, LinkState::Inactive, LinkState::Inactive), CARRY);
        assert!(d.actions.is_empty());
    }

    #[test]
    fn a_failed_wired_activation_with_carrier_brings_the_backup_back() {
        let mut s = seen(true, LinkState::Inactive, LinkState::Inactive);
        s.wired_down_chosen = false;
        let watching = Options { lease_carry: true, carrier_watch: true, standby: false };
        let d = decide(Role::Wired, Hook::Down, s, watching);
        // No watcher: the carrier is in, it would take the backup off at once.
        assert_eq!(d.actions, vec![RememberPortFailed, CarryLease { from: Role::Wired, to: Role::Backup }, ActivateBackup]);
        // A backup already coming up is left to it.
        s.backup = LinkState::Activating;
        assert_eq!(decide(Role::Wired, Hook::Down, s, CARRY).actions, vec![RememberPortFailed]);
        s.wired_port_failed = true;
        assert!(decide(Role::Wired, Hook::Down, s, CARRY).actions.is_empty());
    }

    #[test]
    fn a_dead_port_on_stock_nm_brings_the_backup_back_once_the_replug_is_overdue() {
        let mut s = seen(true, LinkState::Activating, LinkState::Inactive);
        assert!(decide(Role::Wired, Hook::Reconcile, s, CARRY).actions.is_empty(), "not yet overdue");
        s.replug_overdue = true;
        let d = decide(Role::Wired, Hook::Reconcile, s, CARRY);
        assert_eq!(d.actions, vec![RememberPortFailed, CarryLease { from: Role::Wired, to: Role::Backup }, ActivateBackup]);
        // Once the wired link holds the address it is no re-plug any more.
        s.wired = LinkState::Active;
        assert!(!decide(Role::Wired, Hook::Reconcile, s, CARRY).actions.contains(&ActivateBackup));
    }

    #[test]
    fn retries_on_a_failed_port_leave_the_backup_holding_the_address() {
        let mut s = seen(true, LinkState::Activating, LinkState::Active);
        s.wired_port_failed = true;
        s.link_up_dispatched = true;
        assert!(decide(Role::Wired, Hook::LinkUp, s, CARRY).actions.is_empty());
        // The port came alive: the wired link has the address, the backup goes as at any re-plug.
        s.wired = LinkState::Active;
        s.backup_may_release = true;
        assert_eq!(decide(Role::Wired, Hook::Up, s, CARRY).actions, vec![TakeBackupOffLan, DeactivateBackup]);
        // The next plug into a good port (the mark dropped at the pull) is a normal re-plug.
        s.wired_port_failed = false;
        s.wired = LinkState::Activating;
        assert_eq!(
            decide(Role::Wired, Hook::LinkUp, s, CARRY).actions,
            vec![CarryLease { from: Role::Backup, to: Role::Wired }, TakeBackupOffLan, DeactivateBackup]
        );
    }

    #[test]
    fn a_cable_out_while_the_backup_already_holds_the_address_has_a_watcher_on_stock_nm() {
        let watching = Options { lease_carry: false, carrier_watch: true, standby: false };
        let mut s = seen(false, LinkState::Inactive, LinkState::Active);
        assert_eq!(decide(Role::Wired, Hook::Down, s, watching).actions, vec![WatchWiredCarrier]);
        // Also where stock NM sent no `down` (the wired link never came up on a dead port).
        assert_eq!(decide(Role::Wired, Hook::Reconcile, s, watching).actions, vec![WatchWiredCarrier]);
        s.watcher_running = true;
        assert!(decide(Role::Wired, Hook::Reconcile, s, watching).actions.is_empty());
    }

    #[test]
    fn pull_without_backup_device_does_nothing() {
        let mut s = seen(false, LinkState::Inactive, LinkState::Inactive);
        s.backup_device_ready = false;
        assert!(decide(Role::Wired, Hook::Down, s, CARRY).actions.is_empty());
    }

    #[test]
    fn backup_up_keeps_wired_lease_in_step() {
        for hook in [Hook::Up, Hook::Dhcp4Change] {
            let d = decide(Role::Backup, hook, seen(false, LinkState::Inactive, LinkState::Active), CARRY);
            assert_eq!(d.actions, vec![CarryLease { from: Role::Backup, to: Role::Wired }]);
        }
    }

    #[test]
    fn stock_replug_hands_back_on_first_wired_address_event() {
        for hook in [Hook::Dhcp4Change, Hook::PreUp, Hook::Up] {
            let d = decide(Role::Wired, hook, seen(true, LinkState::Activating, LinkState::Active), CARRY);
            assert_eq!(d.actions, vec![DeactivateBackup], "{hook:?}");
            let mut releasing = seen(true, LinkState::Activating, LinkState::Active);
            releasing.backup_may_release = true;
            let d = decide(Role::Wired, hook, releasing, CARRY);
            assert_eq!(d.actions, vec![TakeBackupOffLan, DeactivateBackup], "{hook:?}");
        }
    }

    #[test]
    fn a_late_wired_event_after_the_cable_went_out_again_leaves_the_backup() {
        // The undock came while nm-dispatcher still ran the activation's events.
        for hook in [Hook::LinkUp, Hook::Dhcp4Change, Hook::PreUp, Hook::Up] {
            for wired in [LinkState::Inactive, LinkState::Deactivating] {
                for backup in [LinkState::Activating, LinkState::Active, LinkState::Deactivating] {
                    for carrier in [false, true] {
                        let d = decide(Role::Wired, hook, seen(carrier, wired, backup), CARRY);
                        assert!(d.actions.is_empty(), "{hook:?} {wired:?} {backup:?} carrier {carrier}: {d:?}");
                    }
                }
            }
        }
        // A carrier bounce shorter than the carrier-wait: NM keeps the wired
        // link up and sends nothing later, so the hand-back happens now.
        let d = decide(Role::Wired, Hook::Up, seen(false, LinkState::Active, LinkState::Active), CARRY);
        assert_eq!(d.actions, vec![DeactivateBackup]);
        let d = decide(Role::Wired, Hook::LinkUp, seen(false, LinkState::Activating, LinkState::Active), CARRY);
        assert!(d.actions.contains(&TakeBackupOffLan), "{d:?}");
    }

    #[test]
    fn patched_replug_clears_the_lan_before_dhcp() {
        let d = decide(Role::Wired, Hook::LinkUp, seen(true, LinkState::Activating, LinkState::Active), CARRY);
        assert_eq!(d.actions, vec![CarryLease { from: Role::Backup, to: Role::Wired }, TakeBackupOffLan, DeactivateBackup]);
        let d = decide(
            Role::Wired,
            Hook::LinkUp,
            seen(true, LinkState::Activating, LinkState::Active),
            Options { lease_carry: false, carrier_watch: true, standby: false },
        );
        assert_eq!(d.actions, vec![TakeBackupOffLan, DeactivateBackup]);
    }

    #[test]
    fn stock_pull_starts_the_carrier_watcher_and_patched_pull_does_not() {
        let watching = Options { lease_carry: false, carrier_watch: true, standby: false };
        let mut s = seen(false, LinkState::Inactive, LinkState::Inactive);
        assert_eq!(decide(Role::Wired, Hook::Down, s, watching).actions, vec![ActivateBackup, WatchWiredCarrier]);
        s.link_up_dispatched = true;
        assert_eq!(decide(Role::Wired, Hook::Down, s, watching).actions, vec![ActivateBackup]);
    }

    #[test]
    fn reconcile_at_boot() {
        // Cable out: the backup comes up.
        let d = decide(Role::Wired, Hook::Reconcile, seen(false, LinkState::Inactive, LinkState::Inactive), CARRY);
        assert_eq!(d.actions, vec![CarryLease { from: Role::Wired, to: Role::Backup }, ActivateBackup]);
        // Cable in, wired up, backup up too: the backup goes.
        let d = decide(Role::Wired, Hook::Reconcile, seen(true, LinkState::Active, LinkState::Active), CARRY);
        assert_eq!(d.actions, vec![DeactivateBackup]);
        // Cable in, wired still activating: wait for its own events.
        let d = decide(Role::Wired, Hook::Reconcile, seen(true, LinkState::Activating, LinkState::Inactive), CARRY);
        assert!(d.actions.is_empty());
    }

    #[test]
    fn a_backup_nm_has_active_but_off_the_lan_does_not_hold_the_address() {
        // The watcher took it off at a re-plug into a port that never answered; now the cable is out again.
        let mut s = seen(false, LinkState::Inactive, LinkState::Active);
        s.backup_taken_off_lan = true;
        assert_eq!(decide(Role::Wired, Hook::Down, s, CARRY).actions, vec![CarryLease { from: Role::Wired, to: Role::Backup }, ActivateBackup]);
    }

    #[test]
    fn the_users_disconnect_of_the_backup_holds_until_the_next_pull() {
        let mut s = seen(false, LinkState::Inactive, LinkState::Inactive);
        s.backup_left_by_user = true;
        assert!(decide(Role::Wired, Hook::Reconcile, s, CARRY).actions.is_empty());
        assert!(decide(Role::Backup, Hook::Reconcile, s, CARRY).actions.is_empty());
        assert!(decide(Role::Wired, Hook::Down, s, CARRY).actions.contains(&ActivateBackup));
    }

    #[test]
    fn a_down_that_comes_after_the_wired_link_is_up_again_brings_nothing_up() {
        // A pull and re-plug shorter than nm-dispatcher's queue: the pull's
        // `down` is run once NM has the wired link activated again.
        let late = Observed { wired_down_chosen: false, ..seen(true, LinkState::Active, LinkState::Inactive) };
        for options in [Options { lease_carry: true, carrier_watch: true, standby: false }, Options { lease_carry: true, carrier_watch: true, standby: true }] {
            let d = decide(Role::Wired, Hook::Down, late, options);
            assert!(d.actions.is_empty(), "{d:?}");
        }
        // A failed activation's `down` (patched NM) still brings the backup back.
        let failed = Observed { wired_down_chosen: false, ..seen(true, LinkState::Inactive, LinkState::Inactive) };
        assert!(decide(Role::Wired, Hook::Down, failed, Options { lease_carry: false, carrier_watch: true, standby: false }).actions.contains(&ActivateBackup));
    }

    #[test]
    fn backup_up_while_wired_holds_link_is_handed_back() {
        let d = decide(Role::Backup, Hook::Up, seen(true, LinkState::Active, LinkState::Active), CARRY);
        assert_eq!(d.actions, vec![DeactivateBackup]);
    }
}
