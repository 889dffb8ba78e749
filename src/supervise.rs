//! What runs between dispatcher events: `nm-handover supervise`.
//!
//! nm-dispatcher sees no event for much of a laptop's day: the backup's
//! network coming back into range (or its carrier returning), the backup
//! device appearing late at boot or after a resume, a device that becomes
//! ready while the cable is out. Plain NetworkManager reconnects an
//! autoconnecting profile then; a paired backup has `autoconnect=no`, so
//! without this the laptop stays offline. The supervisor is one process per
//! machine, started at NetworkManager's start (the dispatcher's start-up
//! events) and by `pair`. It sleeps until NetworkManager reports a change
//! (its D-Bus signals, through libnm: no polling), waits until things have
//! been quiet for [`SETTLE`], and reconciles every pair under the handover
//! lock, as `nm-handover reconcile` does. It exits when NetworkManager
//! stops (the next start starts a new one) or when no pair is left (`unpair`
//! of the last pair also stops it).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::error::{Error, Result};
use crate::handover::{Daemon, Pair, System};
use crate::lease::LeaseStore;
use crate::names::Uuid;
use crate::policy::{decide, Action, Decision, Hook, LinkState, Observed, Role};
use crate::standby::{FastPath, Standbys};
use crate::sys::libnm::{Changes, Nm, WatchNext};
use crate::sys::lock::{running_holder, FileLock, LockError, SUPERVISOR_PROGRAM};
use crate::sys::paths::{supervisor_lock_path, supervisor_ready_path, LOCK_PATH, RECORD_DIR};
use crate::trust::any_pair_recorded;

/// Quiet time after a change before the supervisor looks: NetworkManager
/// reports one transition as several property changes.
pub const SETTLE: Duration = Duration::from_millis(200);

/// How soon the supervisor looks, changes or not, after a Wi-Fi scan's end
/// (the moment NetworkManager autoconnects, and the backup's network may
/// have just come into range: NM starts its next periodic scan 200 ms after
/// the end where it connected nothing, and an activation asked for after that
/// start waits for the whole scan) and after a device went down (a pull it
/// hands over: see [`crate::sys::libnm::Nm::watch_changes`]).
pub const LOOK_SOON: Duration = Duration::from_millis(20);

/// How long a new supervisor waits for the one of a NetworkManager that just
/// stopped to exit (it does once libnm reports NM gone).
const TAKEOVER_WAIT: Duration = Duration::from_secs(2);

/// How long one reconcile waits for a handover in progress.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// Activations the supervisor asks for a pair in a row without the backup
/// ever holding the address (a wrong Wi-Fi password, a network that
/// vanishes again): like NetworkManager's own `autoconnect-retries` (4),
/// then a pause of [`RETRY_PAUSE`], as NM blocks autoconnect for 300 s.
/// Between them it waits [`FIRST_RETRY`], doubled each time: a network that
/// just failed is often still in the scan list for a while.
pub const MAX_ATTEMPTS: u32 = 4;
pub const RETRY_PAUSE: Duration = Duration::from_secs(300);
pub const FIRST_RETRY: Duration = Duration::from_secs(15);

/// How long after the `count`th attempt in a row the next one may come.
fn wait_after(count: u32) -> Duration {
    if count >= MAX_ATTEMPTS {
        RETRY_PAUSE
    } else {
        (FIRST_RETRY * 2u32.pow(count.saturating_sub(1))).min(RETRY_PAUSE)
    }
}

/// The supervisor's activation attempts per pair. Pure: the caller passes
/// the time.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Attempts {
    per_pair: BTreeMap<Uuid, (u32, Option<Instant>)>,
}

impl Attempts {
    /// Whether the supervisor may ask NM to activate `pair`'s backup now.
    pub fn allowed(&self, pair: &Uuid, now: Instant) -> bool {
        match self.per_pair.get(pair) {
            Some(&(count, Some(last))) if count > 0 => now.duration_since(last) >= wait_after(count),
            _ => true,
        }
    }

    pub fn record_attempt(&mut self, pair: &Uuid, now: Instant) {
        let entry = self.per_pair.entry(pair.clone()).or_default();
        if entry.0 >= MAX_ATTEMPTS {
            // After the pause: a new round.
            entry.0 = 0;
        }
        entry.0 += 1;
        entry.1 = Some(now);
    }

    /// How long until a pair held back now may be tried again, if one is.
    pub fn next_try_in(&self, now: Instant) -> Option<Duration> {
        self.per_pair
            .values()
            .filter_map(|&(count, last)| Some(last? + wait_after(count)))
            .map(|at| at.saturating_duration_since(now))
            .filter(|d| !d.is_zero())
            .min()
    }

    /// The backup holds the address (or the wired link does again): the count starts over.
    pub fn succeeded(&mut self, pair: &Uuid) {
        self.per_pair.remove(pair);
    }
}

/// How long the supervisor lets a wired link it sees without carrier (or
/// without a device) come up before it counts as pulled: at a resume while
/// docked, or at boot, a dock's NIC is enumerated again and its PHY
/// negotiates for a second or more, while the Wi-Fi may already be ready.
/// A real pull is the dispatcher's `down`, which does not wait for this; the
/// supervisor does nothing for a pair in the grace (it raced the `down`'s
/// activation and watcher; a supervisor that starts just after a pull, as
/// `pair` starts it, cannot tell that pull from a boot without the cable).
/// At a boot the Wi-Fi's first scan takes longer than the grace.
pub const WIRED_GRACE: Duration = Duration::from_secs(3);

/// What the supervisor remembers from one reconcile to the next.
#[derive(Debug, Default)]
pub struct Supervision {
    pub attempts: Attempts,
    /// After its first reconcile (at NetworkManager's start), the supervisor
    /// only brings the backup up (or puts its link back, or starts a
    /// watcher): taking it off the LAN at a re-plug is the dispatcher's
    /// events' work, which the supervisor must not race.
    pub bring_up_only: bool,
    /// Since when each pair's wired link was seen without carrier.
    wired_out_since: BTreeMap<Uuid, Instant>,
    /// The pairs whose wired link this supervisor last saw holding the
    /// address with carrier, and those it then saw lose the carrier: a pull
    /// it watched happen, which needs no grace (see [`WIRED_GRACE`]).
    wired_held: std::collections::BTreeSet<Uuid>,
    pulled_while_watched: std::collections::BTreeSet<Uuid>,
    /// Those pulls it has handed over (or found handed over): from then on
    /// the cable-out looks are reconciles again, which leave what the user
    /// does with the backup alone.
    pulls_handled: std::collections::BTreeSet<Uuid>,
    /// Each pair's backup state at the last look, and when (CLOCK_BOOTTIME
    /// ms) the supervisor saw it drop out of use since it was last active.
    backup_seen: BTreeMap<Uuid, LinkState>,
    backup_dropped_at: BTreeMap<Uuid, i64>,
    /// When (CLOCK_BOOTTIME ms) each device last went unavailable or
    /// disconnected since it was last activated, as NetworkManager reported it.
    devices_down_at: BTreeMap<String, i64>,
    /// Problems already logged (a broken or unrecorded pair stays so across
    /// many changes; each is logged once per supervisor).
    reported: std::collections::BTreeSet<String>,
    /// When NetworkManager started, where that was just before this
    /// supervisor (a boot, NetworkManager restarted) and it knew every
    /// pair's wired device then: a wired link the first look sees without
    /// carrier has been so since then at most, and its grace counts from there. From the first look instead, it ended 3 s
    /// after the supervisor's start (4 s after NetworkManager's in the Wi-Fi
    /// VM), after the Wi-Fi's first scan: a boot without the cable reached
    /// the Wi-Fi 2.7 s after plain NetworkManager.
    pub daemon_started: Option<Instant>,
}

/// How recently NetworkManager must have started for the supervisor's start
/// to count as its boot (see [`Supervision::daemon_started`]).
const DAEMON_START_WINDOW: Duration = Duration::from_secs(60);

impl Supervision {
    /// Notes whether the pair's wired link has carrier now; says whether it
    /// has been without it for [`WIRED_GRACE`].
    pub fn wired_out_long_enough(&mut self, pair: &Uuid, carrier: bool, now: Instant) -> bool {
        if carrier {
            self.wired_out_since.remove(pair);
            return false;
        }
        let since = *self.wired_out_since.entry(pair.clone()).or_insert(self.daemon_started.filter(|&t| t <= now).unwrap_or(now));
        now.duration_since(since) >= WIRED_GRACE
    }

    /// Notes the wired link at this look; says whether this supervisor saw
    /// it lose its carrier while it held the address (a pull, not a boot or
    /// a resume without the cable, which the grace is for). The dispatcher's
    /// `down` then comes later by the time nm-dispatcher takes to start the
    /// companion and its NetworkManager client (1.5 s in the Wi-Fi VM): the
    /// supervisor, connected already, hands over as soon as NetworkManager
    /// has taken the wired link down; whichever of the two comes second
    /// finds the backup activating and does nothing.
    pub fn pulled_while_watched(&mut self, pair: &Uuid, seen: &Observed) -> bool {
        if seen.wired_carrier {
            self.pulled_while_watched.remove(pair);
            self.pulls_handled.remove(pair);
            if seen.wired == LinkState::Active {
                self.wired_held.insert(pair.clone());
            }
            return false;
        }
        if self.wired_held.remove(pair) {
            self.pulled_while_watched.insert(pair.clone());
        }
        self.pulled_while_watched.contains(pair)
    }

    /// Whether this supervisor has seen the pair's wired link hold the
    /// address with carrier (and no pull since): it will see the next pull.
    pub fn watching(&self, pair: &Uuid) -> bool {
        self.wired_held.contains(pair)
    }

    /// The hook the supervisor decides with for the pair: for a pull it
    /// watched, once NetworkManager has taken the wired link down, the
    /// dispatcher's `down`, whose handling it takes over (it hands over
    /// whatever the user did with the backup before; see
    /// `Mark::PullWatched`); otherwise a reconcile. Notes the wired link
    /// first (see [`Supervision::pulled_while_watched`]).
    pub fn hook_for(&mut self, pair: &Uuid, seen: &Observed) -> Hook {
        if self.pulled_while_watched(pair, seen) && seen.wired == LinkState::Inactive && !self.pulls_handled.contains(pair) {
            Hook::Down
        } else {
            Hook::Reconcile
        }
    }

    /// Notes that the pull of the pair's wired link was handed over (see [`Supervision::hook_for`]).
    pub fn pull_handled(&mut self, pair: &Uuid) {
        self.pulls_handled.insert(pair.clone());
    }

    /// Forgets the pulls seen: NetworkManager went to sleep (its devices go
    /// down without a pull).
    pub fn forget_pulls(&mut self) {
        self.wired_held.clear();
        self.pulled_while_watched.clear();
        self.pulls_handled.clear();
    }

    /// How long until a wired link seen without carrier has been so for
    /// [`WIRED_GRACE`], for the soonest one not there yet.
    pub fn next_grace_end_in(&self, now: Instant) -> Option<Duration> {
        self.wired_out_since.values().map(|since| (*since + WIRED_GRACE).saturating_duration_since(now)).filter(|d| !d.is_zero()).min()
    }

    /// Notes the pair's links at this look: the backup's state (see
    /// [`Supervision::scanned_since_backup_dropped`]), and whether the pair
    /// is connected, which ends a row of activations (see [`Attempts`]).
    /// `came_up`: the backup reached the activated state since the last
    /// look, even if it is gone again (it connected, then the radio went
    /// off); `by_itself`: no one asked for its deactivation (neither the
    /// user nor nm-handover, whose hand-back is followed by no scan in
    /// particular), its network went away. `dropped_ms`: CLOCK_BOOTTIME ms
    /// at which the backup's device went down, as NetworkManager reported it
    /// (see [`Supervision::went_down_at`]).
    pub fn note_links(&mut self, pair: &Uuid, seen: &Observed, came_up: bool, by_itself: bool, dropped_ms: i64) {
        // (Activating is no success: a failing activation passes through it every round.)
        if came_up || (seen.backup == LinkState::Active && !seen.backup_taken_off_lan) || seen.wired == LinkState::Active {
            self.attempts.succeeded(pair);
        }
        let state = seen.backup;
        let mut before = self.backup_seen.insert(pair.clone(), state);
        if came_up {
            before = Some(LinkState::Active);
            self.backup_dropped_at.remove(pair);
        }
        match state {
            LinkState::Active => {
                self.backup_dropped_at.remove(pair);
            }
            LinkState::Inactive if by_itself && before.is_some_and(|b| b != LinkState::Inactive) => {
                self.backup_dropped_at.insert(pair.clone(), dropped_ms);
            }
            _ => {}
        }
    }

    /// Notes the devices NetworkManager reported activated (forgetting when
    /// they last went down) and gone down since the last look, in that
    /// order: one that came up and went again between two looks is down.
    pub fn note_devices(&mut self, changes: &Changes) {
        for up in &changes.came_up {
            self.devices_down_at.remove(&up.device);
        }
        for (device, at) in &changes.went_down {
            self.devices_down_at.insert(device.clone(), *at);
        }
    }

    /// When `device` last went down since it was last activated, as
    /// NetworkManager reported it: the time a backup seen dropped out of use
    /// at a look dropped (a scan that ended after it shows whether its
    /// network is still there). Not the last change before the look, which
    /// may be a scan's end after the drop where the look came [`LOOK_SOON`]
    /// after it, nor that look's batch alone: the drop may have been reported
    /// a look before the profile was seen inactive. Without a report (the
    /// device went away) the caller takes the look's own time, the safe side:
    /// one more scan to wait for at most.
    pub fn went_down_at(&self, device: &str) -> Option<i64> {
        self.devices_down_at.get(device).copied()
    }

    /// Whether the backup's device (Wi-Fi: `last_scan_ms`) has finished a
    /// scan since the backup dropped out of use, if it did. NetworkManager
    /// never autoconnects while a device scans: a network that just went
    /// away is still listed until the next scan ends, and an activation
    /// started before it waited on wpa_supplicant's slower scanning when the
    /// network came back (Wi-Fi VM: 8.4 s from the access point's return to
    /// the address, against 5.1 s for plain NetworkManager).
    pub fn scanned_since_backup_dropped(&self, pair: &Uuid, last_scan_ms: Option<i64>) -> bool {
        match (self.backup_dropped_at.get(pair), last_scan_ms) {
            (Some(dropped), Some(scan)) => scan > *dropped,
            _ => true,
        }
    }

    /// Why the supervisor leaves `pair` alone at this look, where it does,
    /// though `decision` (the reconcile's) asks for something: its own
    /// limits, which the look without the handover lock and the reconcile
    /// under it both apply. Notes the wired link's carrier for the grace.
    /// `backup_last_scan_ms`: see [`backup_last_scan_ms`].
    pub fn holds_back(&mut self, pair: &Uuid, seen: &Observed, decision: &Decision, backup_last_scan_ms: Option<i64>, now: Instant) -> Option<&'static str> {
        // (Since when the wired link is out is noted at every look.)
        let wired_out = self.wired_out_long_enough(pair, seen.wired_carrier, now) || self.pulled_while_watched(pair, seen);
        if !self.would_act(decision) {
            return Some("left to the dispatcher's events");
        }
        // A pull is the dispatcher's `down` (the activation and its
        // watcher): the supervisor steps in only once the wired link has
        // been out for the grace.
        if !seen.wired_carrier && !wired_out {
            return Some("the wired link may still come up");
        }
        if decision.actions.contains(&Action::ActivateBackup) {
            if !self.scanned_since_backup_dropped(pair, backup_last_scan_ms) {
                return Some("waiting for a scan after the backup's network went away");
            }
            if !self.attempts.allowed(pair, now) {
                return Some("paused after the backup did not come up in a row of tries");
            }
        }
        None
    }

    /// Whether the supervisor carries out `decision` (see [`Supervision::bring_up_only`]).
    pub fn would_act(&self, decision: &Decision) -> bool {
        let takes_down = decision.actions.iter().any(|a| matches!(a, Action::DeactivateBackup | Action::TakeBackupOffLan));
        !decision.actions.is_empty() && (!self.bring_up_only || !takes_down)
    }

    /// Whether `problem` is reported for the first time (and remembers it).
    pub fn first_report(&mut self, problem: &str) -> bool {
        self.reported.insert(problem.to_owned())
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// Another supervisor runs.
    AlreadyRunning,
    NetworkManagerStopped,
    NoPairLeft,
}

/// Takes the supervisor lock, with this process's PID in it; `None` where
/// another supervisor runs. Taken before connecting to NetworkManager:
/// NetworkManager dispatches several start-up events, each of which may start
/// a supervisor, and a second one must not load a libnm client (seconds of
/// CPU in the Wi-Fi VM, while NetworkManager and wpa_supplicant start) only
/// to find the first.
pub fn take_lock() -> Result<Option<FileLock>> {
    match FileLock::acquire_naming_this_process(&supervisor_lock_path(), TAKEOVER_WAIT) {
        Ok(lock) => Ok(Some(lock)),
        Err(LockError::Busy { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Takes the ready lock ([`supervisor_ready_path`]), with this process's
/// PID in it, held until the supervisor exits. Where it cannot, the
/// supervisor still runs; `pair` only waits its bounded time.
fn announce_ready() -> Option<FileLock> {
    FileLock::acquire_naming_this_process(&supervisor_ready_path(), Duration::ZERO).inspect_err(|e| warn!("supervisor: cannot say it is ready: {e}")).ok()
}

/// The PID of the supervisor that runs and watches NetworkManager, if one does.
pub fn ready_supervisor() -> Option<u32> {
    running_holder(&supervisor_ready_path(), SUPERVISOR_PROGRAM).ok().flatten()
}

/// Runs the supervisor, holding `_lock` ([`take_lock`]), until NetworkManager stops or no pair is left.
pub fn supervise(nm: &Nm, _lock: FileLock) -> Result<Ended> {
    info!(pid = std::process::id(), "supervising the pairs between dispatcher events");
    // (A wired device NetworkManager does not know yet, a dock's NIC still
    // enumerating, has its grace from the first look, as before.)
    let wired_known = Pair::all(nm).into_iter().flatten().all(|pair| nm.device(pair.wired.device.as_str()).is_some());
    let daemon_started = nm.daemon_age().filter(|age| wired_known && *age <= DAEMON_START_WINDOW).and_then(|age| Instant::now().checked_sub(age));
    let mut supervision = Supervision { daemon_started, ..Supervision::default() };
    // The warm standbys' fast path (see `crate::standby`): a thread, started once a pair asks for one.
    let mut fast_path: Option<(FastPath, std::thread::JoinHandle<()>)> = None;
    let mut standbys = Standbys::default();
    reconcile_now(nm, &mut supervision, &Changes::default());
    // (Only the links the first look saw out may have been so since NetworkManager's start.)
    supervision.daemon_started = None;
    tend_standbys(nm, &mut fast_path, &mut standbys);
    let _ready = announce_ready();
    // Started: from here on it waits for NetworkManager's changes, and a pull
    // it watches is the dispatcher's `down` done by it; at nice 10, behind
    // NetworkManager and wpa_supplicant, which a pull keeps busy, the Wi-Fi
    // VM's backup was asked for 1.5-2.4 s after the wired link went down
    // (0.7-1.2 s at nice 0). Its start, the costly part (a libnm client
    // loaded while NetworkManager and wpa_supplicant start), stays behind them.
    if let Err(e) = crate::sys::normal_priority() {
        warn!("supervisor: cannot take back its CPU priority: {e}");
    }
    let first = next_look(nm, &supervision, &standbys);
    let mut ended = Ended::NetworkManagerStopped;
    nm.watch_changes(SETTLE, LOOK_SOON, first, |nm, changes| {
        if !nm.running() {
            ended = Ended::NetworkManagerStopped;
            return WatchNext::Stop;
        }
        if !any_pair_recorded(Path::new(RECORD_DIR)) {
            ended = Ended::NoPairLeft;
            return WatchNext::Stop;
        }
        if nm.asleep() {
            // Where the laptop wakes is not known yet (see `crate::lan`).
            forget_wired_lans();
            supervision.forget_pulls();
        }
        reconcile_now(nm, &mut supervision, changes);
        tend_standbys(nm, &mut fast_path, &mut standbys);
        next_look(nm, &supervision, &standbys)
    })?;
    info!("supervisor exits: {ended:?}");
    Ok(ended)
}

/// When the supervisor looks next, change or not: a re-plug under way once
/// it is overdue, a backup held back after failed activations
/// once its pause is over, a wired link seen without carrier once its grace
/// has passed (nothing else may change on a quiet LAN), a standby's next look.
fn next_look(nm: &Nm, supervision: &Supervision, standbys: &Standbys) -> WatchNext {
    let now = Instant::now();
    match [next_replug_check(nm), supervision.attempts.next_try_in(now), supervision.next_grace_end_in(now), standbys.next_look_in(now)]
        .into_iter()
        .flatten()
        .min()
    {
        Some(after) => WatchNext::OnChangeOrAfter(after),
        None => WatchNext::OnChange,
    }
}

/// Looks after the pairs' warm standbys, and the re-plugs of the pairs
/// without one whose backup holds the address (see
/// `crate::standby::Guard`), starting the fast path's thread the first time
/// one needs it.
fn tend_standbys(nm: &Nm, fast_path: &mut Option<(FastPath, std::thread::JoinHandle<()>)>, standbys: &mut Standbys) {
    let (pairs, others): (Vec<Pair>, Vec<Pair>) = Pair::all(nm).into_iter().flatten().partition(|p| p.options.standby);
    // (A re-plug to guard is one NetworkManager sends `link-up` for; elsewhere the carrier watcher guards it.)
    let guarded: Vec<&Pair> = if crate::handover::nm_has_link_up() { others.iter().collect() } else { Vec::new() };
    // (Unpaired, no longer trusted, the standby turned off on stock NM: never acted on again.)
    if let Some((fast, _)) = fast_path {
        fast.keep_only(&pairs.iter().chain(guarded.iter().copied()).map(|p| p.wired.uuid.clone()).collect::<Vec<_>>());
    }
    if pairs.is_empty() && guarded.is_empty() {
        return;
    }
    let fast = fast_path.as_ref().map(|(fast, _)| fast.clone()).unwrap_or_default();
    if fast_path.as_ref().is_none_or(|(_, thread)| thread.is_finished()) {
        match fast.spawn_watcher() {
            Ok(thread) => *fast_path = Some((fast.clone(), thread)),
            Err(e) => {
                warn!("standby: cannot watch the links: {e}; the pairs hand over without it");
                return;
            }
        }
    }
    crate::standby::tend(nm, &pairs, &fast, standbys);
    for pair in guarded {
        crate::standby::guard_replug(nm, pair, &fast);
    }
}

/// When the backup's device (Wi-Fi) last finished a scan (see [`crate::sys::libnm::Device::last_scan_ms`]).
pub fn backup_last_scan_ms(nm: &Nm, pair: &Pair) -> Option<i64> {
    nm.device(pair.backup.device.as_str()).and_then(|device| device.last_scan_ms())
}

/// Forgets every pair's record of its wired link's LAN (see `crate::lan`).
fn forget_wired_lans() {
    let Ok(dir) = std::fs::read_dir(crate::sys::paths::RUN_DIR) else { return };
    for entry in dir.flatten().filter(|e| e.file_name().to_string_lossy().starts_with(crate::sys::paths::WIRED_LAN_PREFIX)) {
        if let Err(e) = std::fs::remove_file(entry.path()) {
            warn!("{}: {e}", entry.path().display());
        }
    }
}

/// The soonest time a re-plug under way becomes overdue (see `crate::marks`).
fn next_replug_check(nm: &Nm) -> Option<Duration> {
    // (One already overdue was acted on in this round: it is no reason to wake.)
    Pair::all(nm).into_iter().flatten().filter_map(|pair| pair.replug_overdue_in(nm, &System)).filter(|d| !d.is_zero()).min()
}

/// Reconciles the pairs; takes the handover lock only where a look without
/// it finds something to do, so that the dispatcher's handovers (a `link-up`
/// NM waits for) never wait behind a look that changes nothing.
/// `changes`: what NetworkManager reported since the last look.
fn reconcile_now(nm: &Nm, supervision: &mut Supervision, changes: &Changes) {
    let now = Instant::now();
    let mut something_to_do = !supervision.bring_up_only;
    supervision.note_devices(changes);
    for pair in Pair::all(nm).into_iter().flatten() {
        let seen_at = std::time::SystemTime::now();
        let seen = pair.observe(nm, &System);
        let on_request = nm.deactivation_facts(&pair.backup.device, &pair.backup.uuid).1;
        let backup_came_up = changes.came_up.iter().any(|a| a.device == pair.backup.device.as_str() && a.profile == pair.backup.uuid.as_str());
        let dropped_ms = supervision.went_down_at(pair.backup.device.as_str()).unwrap_or_else(crate::sys::boottime_ms);
        // A standby that left the address at a re-plug, still associated, is
        // no backup whose network went away (whose return a scan shows).
        let by_itself = !on_request && !seen.backup_taken_off_lan && !pair.standby_up(nm);
        supervision.note_links(&pair.wired.uuid, &seen, backup_came_up, by_itself, dropped_ms);
        if !seen.wired_carrier {
            // A re-plug's mark its `link-up` never took (the cable out again
            // first) answers no later one; one the fast path set since this
            // look saw the cable out is the next re-plug's (file times lag
            // the clock by up to a tick: 20 ms of margin; the fast path's
            // thread clears the mark itself at each carrier loss).
            if let Ok(index) = crate::sys::netlink::if_index(pair.wired.device.as_str()) {
                let mark = crate::marks::Mark::ReplugHandled;
                if mark.since(index).is_some_and(|set| set + Duration::from_millis(20) < seen_at) {
                    let _ = mark.clear(index);
                }
            }
        }
        let hook = supervision.hook_for(&pair.wired.uuid, &seen);
        let decision = decide(Role::Wired, hook, seen, pair.options);
        // (A look that would do nothing still says why the backup it needs can never come up; once.)
        if let Err(e) = pair.refuse_an_unbound_backup(nm, &seen, &decision) {
            if supervision.first_report(&e.to_string()) {
                warn!("supervisor: {e}");
            }
        }
        if hook == Hook::Down && decision.actions.is_empty() {
            // Nothing to hand over (the standby holds the address, or no
            // device can take the backup): handled, and said why, as the
            // dispatcher's `down` it stands in for would have.
            info!(?hook, observed = ?seen, "'{}': {}", pair.wired.id, decision.reason);
            supervision.pull_handled(&pair.wired.uuid);
        }
        something_to_do |= supervision.holds_back(&pair.wired.uuid, &seen, &decision, backup_last_scan_ms(nm, &pair), now).is_none();
        // While it watches the wired link docked, a pull's `down` is this
        // supervisor's to hand over (see `Mark::PullWatched`).
        let mark = crate::marks::Mark::PullWatched;
        if supervision.watching(&pair.wired.uuid) {
            let unmarked = crate::sys::netlink::if_index(pair.wired.device.as_str()).ok().filter(|&i| mark.setter(i) != Some(std::process::id()));
            if let Some(index) = unmarked {
                if let Err(e) = mark.set_as_this_process(index) {
                    debug!("{}: {e}", pair.wired.device);
                }
            }
        }
    }
    if !something_to_do {
        return;
    }
    let _lock = match FileLock::acquire(Path::new(LOCK_PATH), LOCK_WAIT) {
        Ok(lock) => lock,
        Err(e) => {
            warn!("supervisor: {e}; the next change tries again");
            return;
        }
    };
    // What a handover that held the lock until now changed (the dispatcher's
    // `down` activating the backup), seen before deciding: a round trip to
    // NetworkManager after the lock, so that its signals are in.
    nm.catch_up();
    nm.drain();
    if let Err(e) = reconcile_pairs(nm, Some(supervision)) {
        warn!("supervisor: {e}");
    }
    supervision.bring_up_only = true;
}

/// Brings every pair into the state the policy wants (for boot, or after NM
/// was restarted): cable out -> backup up; cable in and wired up -> backup down.
/// A pair that cannot be read or handled is reported and the others are
/// still reconciled; pairs root did not record are named in one warning.
pub fn reconcile(nm: &Nm) -> Result<usize> {
    reconcile_pairs(nm, None)
}

/// [`reconcile`], with what the supervisor remembers between its runs (see
/// [`Supervision`]), if it is the caller: its count of the
/// activations it asked for, and the problems it already reported (it runs
/// at every change NetworkManager reports; each is logged once).
pub fn reconcile_pairs(nm: &Nm, mut supervision: Option<&mut Supervision>) -> Result<usize> {
    let mut acted = 0;
    let mut ignored = Vec::new();
    let mut first_failure = None;
    let now = std::time::Instant::now();
    for pair in Pair::all(nm) {
        let handled = pair.and_then(|pair| {
            if let Some(supervision) = supervision.as_deref_mut() {
                // (The look before the lock noted what ends a row of attempts.)
                let seen = pair.observe(nm, &System);
                let hook = supervision.hook_for(&pair.wired.uuid, &seen);
                let decision = decide(Role::Wired, hook, seen, pair.options);
                // (An unbound backup was reported by the look before the lock.)
                if let Some(reason) = supervision.holds_back(&pair.wired.uuid, &seen, &decision, backup_last_scan_ms(nm, &pair), now) {
                    tracing::debug!("'{}': {reason}", pair.wired.id);
                    return Ok(Decision { actions: Vec::new(), reason });
                }
                // (A pull's handover is no retry: only reconciles count, as the dispatcher's down never did.)
                if hook == Hook::Reconcile && decision.actions.contains(&Action::ActivateBackup) {
                    supervision.attempts.record_attempt(&pair.wired.uuid, now);
                }
                let handled = pair.handle(Role::Wired, hook, nm, &System, &LeaseStore::default());
                if hook == Hook::Down && handled.is_ok() {
                    supervision.pull_handled(&pair.wired.uuid);
                }
                return handled;
            }
            pair.handle(Role::Wired, Hook::Reconcile, nm, &System, &LeaseStore::default())
        });
        match handled {
            Ok(decision) if !decision.actions.is_empty() => acted += 1,
            Ok(_) => {}
            Err(err) if supervision.as_deref_mut().is_some_and(|s| !s.first_report(&err.to_string())) => {}
            Err(err @ Error::Untrusted { .. }) => ignored.push(err.to_string()),
            // (The first is returned, and logged by the caller.)
            Err(err) if first_failure.is_some() => tracing::error!("reconcile: {err}"),
            Err(err) => first_failure = Some(err),
        }
    }
    if !ignored.is_empty() {
        warn!("reconcile: {}", ignored.join("; "));
    }
    first_failure.map_or(Ok(acted), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wired_link_without_carrier_counts_as_pulled_after_the_grace() {
        let pair = Uuid::parse("11111111-1111-4111-8111-111111111111").unwrap();
        let t0 = Instant::now();
        let mut s = Supervision::default();
        assert!(!s.wired_out_long_enough(&pair, false, t0));
        assert_eq!(s.next_grace_end_in(t0), Some(WIRED_GRACE));
        assert!(!s.wired_out_long_enough(&pair, false, t0 + WIRED_GRACE - Duration::from_millis(1)));
        assert!(s.wired_out_long_enough(&pair, false, t0 + WIRED_GRACE));
        // The carrier came back (a resume while docked): the next loss starts over.
        assert!(!s.wired_out_long_enough(&pair, true, t0 + WIRED_GRACE));
        assert_eq!(s.next_grace_end_in(t0), None);
        assert!(!s.wired_out_long_enough(&pair, false, t0 + 2 * WIRED_GRACE));
    }

    #[test]
    fn at_networkmanagers_start_the_grace_counts_from_it() {
        let pair = Uuid::parse("11111111-1111-4111-8111-111111111111").unwrap();
        let t0 = Instant::now();
        let mut s = Supervision { daemon_started: Some(t0), ..Supervision::default() };
        // The first look, 2.5 s after NetworkManager started: 0.5 s of the grace left.
        assert!(!s.wired_out_long_enough(&pair, false, t0 + Duration::from_millis(2500)));
        assert_eq!(s.next_grace_end_in(t0 + Duration::from_millis(2500)), Some(Duration::from_millis(500)));
        assert!(s.wired_out_long_enough(&pair, false, t0 + WIRED_GRACE));
        // Seen later (the cable in, then out without the supervisor watching): from then.
        s.daemon_started = None;
        assert!(!s.wired_out_long_enough(&pair, true, t0 + 2 * WIRED_GRACE));
        assert!(!s.wired_out_long_enough(&pair, false, t0 + 2 * WIRED_GRACE));
        assert!(s.wired_out_long_enough(&pair, false, t0 + 3 * WIRED_GRACE));
        // A start said to be after the look (clocks): from the look.
        let mut s = Supervision { daemon_started: Some(t0 + WIRED_GRACE), ..Supervision::default() };
        assert!(!s.wired_out_long_enough(&pair, false, t0));
        assert!(s.wired_out_long_enough(&pair, false, t0 + WIRED_GRACE));
    }

    #[test]
    fn a_pull_the_supervisor_watched_needs_no_grace() {
        let pair = Uuid::parse("11111111-1111-4111-8111-111111111111").unwrap();
        let t0 = Instant::now();
        let activate = Decision { actions: vec![Action::ActivateBackup], reason: "" };
        let docked = crate::policy::tests::seen(true, LinkState::Active, LinkState::Inactive);
        let pulled = crate::policy::tests::seen(false, LinkState::Inactive, LinkState::Inactive);
        // Never seen docked (a boot or a resume without the cable): the grace.
        let mut s = Supervision::default();
        assert_eq!(s.holds_back(&pair, &pulled, &activate, None, t0), Some("the wired link may still come up"));
        // Seen docked, then the carrier gone: at once, and until the carrier is back.
        let mut s = Supervision::default();
        assert_eq!(s.holds_back(&pair, &docked, &Decision { actions: vec![], reason: "" }, None, t0), Some("left to the dispatcher's events"));
        assert_eq!(s.holds_back(&pair, &pulled, &activate, None, t0), None);
        assert_eq!(s.holds_back(&pair, &pulled, &activate, None, t0), None, "still the same pull");
        // Handed over once, the next looks are reconciles: the user's disconnect of the backup stays.
        s.pull_handled(&pair);
        assert_eq!(s.hook_for(&pair, &pulled), Hook::Reconcile);
        // Asleep: NetworkManager took the wired link down, no pull.
        s.holds_back(&pair, &docked, &Decision { actions: vec![], reason: "" }, None, t0);
        s.forget_pulls();
        assert_eq!(s.holds_back(&pair, &pulled, &activate, None, t0), Some("the wired link may still come up"));
    }

    #[test]
    fn after_its_first_look_the_supervisor_never_takes_the_backup_down() {
        let decision = |actions: Vec<Action>| Decision { actions, reason: "" };
        let mut s = Supervision::default();
        assert!(s.would_act(&decision(vec![Action::DeactivateBackup])), "at NetworkManager's start it hands back");
        s.bring_up_only = true;
        for down in [vec![Action::DeactivateBackup], vec![Action::TakeBackupOffLan, Action::DeactivateBackup]] {
            assert!(!s.would_act(&decision(down)));
        }
        for up in [vec![Action::ActivateBackup], vec![Action::PutBackupLinkBack], vec![Action::WatchWiredCarrier], vec![Action::RememberPortFailed]] {
            assert!(s.would_act(&decision(up)));
        }
        assert!(!s.would_act(&decision(vec![])));
    }

    /// What a look sees with the cable out and the backup in `state`.
    fn backup(state: LinkState) -> Observed {
        crate::policy::tests::seen(false, LinkState::Inactive, state)
    }

    #[test]
    fn after_the_backup_drops_out_a_scan_must_end_before_it_is_tried_again() {
        let pair = Uuid::parse("11111111-1111-4111-8111-111111111111").unwrap();
        let mut s = Supervision::default();
        let now = 100_000;
        s.note_links(&pair, &backup(LinkState::Inactive), false, true, now);
        assert!(s.scanned_since_backup_dropped(&pair, Some(0)), "never active: nothing to wait for");
        s.note_links(&pair, &backup(LinkState::Active), false, true, now);
        s.note_links(&pair, &backup(LinkState::Inactive), false, true, now);
        assert!(!s.scanned_since_backup_dropped(&pair, Some(now - 1000)), "a scan from before the drop");
        assert!(!s.scanned_since_backup_dropped(&pair, Some(now)), "a scan that ended as the backup dropped");
        assert!(s.scanned_since_backup_dropped(&pair, Some(now + 1)), "a scan that ended after the drop, before the look");
        assert!(s.scanned_since_backup_dropped(&pair, None), "a backup that does not scan");
        s.note_links(&pair, &backup(LinkState::Active), false, true, now);
        assert!(s.scanned_since_backup_dropped(&pair, Some(0)), "active again: the drop is forgotten");
        // Deactivated on request (a hand-back, the user): no wait.
        s.note_links(&pair, &backup(LinkState::Inactive), false, false, now);
        assert!(s.scanned_since_backup_dropped(&pair, Some(0)));
        // Up and gone again between two looks: a drop all the same.
        s.note_links(&pair, &backup(LinkState::Inactive), true, true, now);
        assert!(!s.scanned_since_backup_dropped(&pair, Some(now - 1000)));
    }

    #[test]
    fn a_device_going_down_is_dated_by_its_report_until_it_comes_up_again() {
        use crate::sys::libnm::Activated;
        let up = |device: &str| Activated { device: device.into(), profile: "11111111-1111-4111-8111-111111111111".into() };
        let mut s = Supervision::default();
        assert_eq!(s.went_down_at("wlan0"), None, "never reported: the caller takes the look's time");
        s.note_devices(&Changes { came_up: vec![], went_down: vec![("wlan0".into(), 1_000), ("wired0".into(), 1_100)] });
        // A later look whose batch says nothing of it (the profile seen inactive only now).
        s.note_devices(&Changes { came_up: vec![], went_down: vec![("wired0".into(), 2_000)] });
        assert_eq!(s.went_down_at("wlan0"), Some(1_000));
        assert_eq!(s.went_down_at("wired0"), Some(2_000), "the last report");
        s.note_devices(&Changes { came_up: vec![up("wlan0")], went_down: vec![] });
        assert_eq!(s.went_down_at("wlan0"), None, "activated again: the old drop is no date for the next");
        s.note_devices(&Changes { came_up: vec![up("wlan0")], went_down: vec![("wlan0".into(), 3_000)] });
        assert_eq!(s.went_down_at("wlan0"), Some(3_000), "up and gone again between two looks");
    }

    #[test]
    fn a_connected_pair_ends_the_row_of_activations_even_between_two_looks() {
        let pair = Uuid::parse("11111111-1111-4111-8111-111111111111").unwrap();
        let t0 = Instant::now();
        let soon = t0 + Duration::from_secs(1);
        for (what, seen, came_up) in [
            ("seen active at a look", backup(LinkState::Active), false),
            ("up and gone again between two looks", backup(LinkState::Inactive), true),
            ("the wired link active", crate::policy::tests::seen(true, LinkState::Active, LinkState::Inactive), false),
        ] {
            let mut s = Supervision::default();
            s.attempts.record_attempt(&pair, t0);
            assert!(!s.attempts.allowed(&pair, soon));
            s.note_links(&pair, &seen, came_up, true, 100_000);
            assert!(s.attempts.allowed(&pair, soon), "{what}");
        }
        let mut s = Supervision::default();
        s.attempts.record_attempt(&pair, t0);
        for state in [LinkState::Activating, LinkState::Inactive] {
            s.note_links(&pair, &backup(state), false, true, 100_000);
        }
        assert!(!s.attempts.allowed(&pair, soon), "an activation that never came up is a failed attempt");
    }

    #[test]
    fn the_supervisor_holds_back_for_the_grace_a_scan_and_a_pause() {
        let pair = Uuid::parse("11111111-1111-4111-8111-111111111111").unwrap();
        let t0 = Instant::now();
        let activate = Decision { actions: vec![Action::ActivateBackup], reason: "" };
        let out = crate::policy::tests::seen(false, LinkState::Inactive, LinkState::Inactive);
        let mut s = Supervision::default();
        assert_eq!(s.holds_back(&pair, &out, &Decision { actions: vec![], reason: "" }, None, t0), Some("left to the dispatcher's events"));
        assert_eq!(s.holds_back(&pair, &out, &activate, None, t0), Some("the wired link may still come up"));
        assert_eq!(s.holds_back(&pair, &out, &activate, None, t0 + WIRED_GRACE), None);
        s.note_links(&pair, &backup(LinkState::Active), false, true, 100_000);
        s.note_links(&pair, &backup(LinkState::Inactive), false, true, 100_000);
        assert_eq!(s.holds_back(&pair, &out, &activate, Some(0), t0 + WIRED_GRACE), Some("waiting for a scan after the backup's network went away"));
        assert_eq!(s.holds_back(&pair, &out, &activate, Some(200_000), t0 + WIRED_GRACE), None);
        s.attempts.record_attempt(&pair, t0 + WIRED_GRACE);
        assert!(s.holds_back(&pair, &out, &activate, Some(200_000), t0 + WIRED_GRACE).is_some_and(|why| why.starts_with("paused")));
    }

    #[test]
    fn each_problem_is_reported_once() {
        let mut s = Supervision::default();
        assert!(s.first_report("pair 'A' ignored"));
        assert!(!s.first_report("pair 'A' ignored"));
        assert!(s.first_report("pair 'B' ignored"));
    }

    #[test]
    fn activations_back_off_then_pause_after_four_in_a_row() {
        let pair = Uuid::parse("11111111-1111-4111-8111-111111111111").unwrap();
        let other = Uuid::parse("22222222-2222-4222-8222-222222222222").unwrap();
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        let mut a = Attempts::default();
        // 15 s, 30 s, 60 s between the first four, then the pause.
        let mut t = 0;
        for (i, wait) in [15u64, 30, 60].into_iter().enumerate() {
            assert!(a.allowed(&pair, at(t)), "attempt {i}");
            a.record_attempt(&pair, at(t));
            assert!(!a.allowed(&pair, at(t + wait - 1)), "attempt {i} + {wait} s");
            assert_eq!(a.next_try_in(at(t)), Some(Duration::from_secs(wait)));
            t += wait;
        }
        assert!(a.allowed(&pair, at(t)));
        a.record_attempt(&pair, at(t));
        assert!(!a.allowed(&pair, at(t) + RETRY_PAUSE - Duration::from_secs(1)));
        assert_eq!(a.next_try_in(at(t) + RETRY_PAUSE - Duration::from_secs(1)), Some(Duration::from_secs(1)));
        assert!(a.allowed(&other, at(t)), "another pair is not held back");
        assert!(a.allowed(&pair, at(t) + RETRY_PAUSE));
        a.record_attempt(&pair, at(t) + RETRY_PAUSE);
        assert!(!a.allowed(&pair, at(t) + RETRY_PAUSE + Duration::from_secs(1)), "a new round starts with the first wait");
        // Success starts the count over.
        a.succeeded(&pair);
        assert!(a.allowed(&pair, at(t) + RETRY_PAUSE));
        assert_eq!(a.next_try_in(at(t)), None);
    }
}
