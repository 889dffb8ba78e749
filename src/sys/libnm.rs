//! A small safe wrapper over libnm's `NMClient`.
//!
//! The client gets its own GLib main context, so nothing here depends on a
//! main loop run elsewhere. Async libnm calls are driven to completion by
//! iterating that context, bounded by a timeout after which the call is
//! cancelled. Objects handed out hold a GObject reference, so they stay valid
//! even when iterating the context makes libnm drop them from its cache.

#![allow(non_camel_case_types, non_upper_case_globals, non_snake_case, dead_code)]

use std::cell::Cell;
use std::collections::BTreeMap;
use std::ffi::{c_void, CStr, CString};
use std::net::Ipv4Addr;
use std::ptr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gio::prelude::*;
use glib::translate::{from_glib_full, from_glib_none, ToGlibPtr};

use crate::sys::settings::{self, ProfileEdit, PropertyValue};

mod ffi {
    #![allow(clippy::all, unused_imports)]
    include!(concat!(env!("OUT_DIR"), "/libnm.rs"));
}

const NM_BUS_NAME: &str = "org.freedesktop.NetworkManager";
const SETTINGS_CONNECTION_INTERFACE: &str = "org.freedesktop.NetworkManager.Settings.Connection";
/// `GetSecrets` of a setting for which NM stores none and no agent answers.
const NO_SECRETS_ERROR: &str = "org.freedesktop.NetworkManager.AgentManager.NoSecrets";

/// How long one request to NetworkManager may take before it is cancelled.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, thiserror::Error)]
pub enum NmError {
    #[error(
        "cannot connect to NetworkManager: the system D-Bus ({bus}) is not reachable: {message}. \
         Is dbus running (and DBUS_SYSTEM_BUS_ADDRESS right, if set)?"
    )]
    Connect { bus: String, message: String },
    #[error("NetworkManager is not running")]
    NotRunning,
    #[error("{what}: {message}")]
    Call { what: String, message: String },
    #[error("{what}: no answer from NetworkManager within {secs} s")]
    Timeout { what: String, secs: u64 },
    #[error(transparent)]
    Settings(#[from] settings::SettingsError),
}

impl NmError {
    fn connect(message: String) -> NmError {
        let bus = std::env::var("DBUS_SYSTEM_BUS_ADDRESS").unwrap_or_else(|_| "unix:path=/run/dbus/system_bus_socket".to_owned());
        NmError::Connect { bus, message }
    }
}

/// What [`Nm::watch_changes`] does after a call of its callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchNext {
    Stop,
    /// Sleep until NetworkManager reports a change.
    OnChange,
    /// Sleep until a change, or until this much time has passed.
    OnChangeOrAfter(Duration),
}

/// A profile that reached the activated state on a device (see [`Nm::watch_changes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activated {
    pub device: String,
    pub profile: String,
}

/// What NetworkManager reported since the last call of
/// [`Nm::watch_changes`]'s `on_settled`.
#[derive(Debug, Default)]
pub struct Changes {
    /// The profiles that reached the activated state, with their devices,
    /// whether or not they still are.
    pub came_up: Vec<Activated>,
    /// The devices that went unavailable or disconnected, each with the
    /// CLOCK_BOOTTIME ms of the last time it did.
    pub went_down: Vec<(String, i64)>,
}

/// A connection to the running NetworkManager.
pub struct Nm {
    client: glib::Object,
    context: glib::MainContext,
}

/// Device kinds the companion distinguishes; everything else is `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    Ethernet,
    Wifi,
    Other,
}

/// A coarse view of `NMDeviceState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceState {
    Unmanaged,
    Unavailable,
    Disconnected,
    Activating,
    Activated,
    Deactivating,
    Failed,
    Unknown,
}

/// A coarse view of `NMActiveConnectionState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActiveState {
    Activating,
    Activated,
    Deactivating,
    Deactivated,
    Unknown,
}

pub struct Device {
    obj: glib::Object,
}

pub struct Profile {
    obj: glib::Object,
}

/// A whole stored profile, secrets included, as it was before an update.
#[derive(Debug, Clone)]
pub struct SavedProfile(glib::Variant);

pub struct ActiveConnection {
    obj: glib::Object,
}

fn cstr_opt(p: *const libc::c_char) -> Option<String> {
    if p.is_null() {
        None
    } else {
        // SAFETY: libnm returns NUL-terminated strings that live as long as the object.
        Some(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
    }
}

fn gerror_message(err: *mut glib::ffi::GError) -> String {
    if err.is_null() {
        return "unknown error".to_owned();
    }
    // SAFETY: `err` is an owned GError set by a libnm call.
    let err: glib::Error = unsafe { from_glib_full(err) };
    err.message().to_owned()
}

/// Wraps a transfer-none GObject pointer, taking a reference.
fn object_from_none<T>(p: *mut T) -> Option<glib::Object> {
    if p.is_null() {
        None
    } else {
        // SAFETY: `p` points to a live GObject; from_glib_none takes a new reference.
        Some(unsafe { from_glib_none(p as *mut glib::gobject_ffi::GObject) })
    }
}

fn ptr_array_objects(arr: *const glib::ffi::GPtrArray) -> Vec<glib::Object> {
    if arr.is_null() {
        return Vec::new();
    }
    // SAFETY: libnm's arrays hold `len` valid GObject pointers.
    unsafe {
        let arr = &*arr;
        (0..arr.len as usize).filter_map(|i| object_from_none(*arr.pdata.add(i))).collect()
    }
}

/// Result slot shared with a GAsyncReadyCallback.
struct AsyncSlot {
    result: Cell<*mut gio::ffi::GAsyncResult>,
}

unsafe extern "C" fn async_ready(_source: *mut glib::gobject_ffi::GObject, result: *mut gio::ffi::GAsyncResult, data: glib::ffi::gpointer) {
    // SAFETY: `data` is the `Rc<AsyncSlot>` leaked by `Nm::call_async`, reclaimed here once.
    let slot: Rc<AsyncSlot> = Rc::from_raw(data as *const AsyncSlot);
    glib::gobject_ffi::g_object_ref(result as *mut _);
    slot.result.set(result);
}

impl Nm {
    /// Connects to NetworkManager on the system bus.
    pub fn connect() -> Result<Nm, NmError> {
        let context = glib::MainContext::new();
        let client = context
            .with_thread_default(|| {
                let mut err = ptr::null_mut();
                // SAFETY: plain constructor; on failure it sets `err`.
                let client = unsafe { ffi::nm_client_new(ptr::null_mut(), &mut err) };
                if client.is_null() {
                    Err(NmError::connect(gerror_message(err)))
                } else {
                    // SAFETY: nm_client_new returns a new reference.
                    Ok(unsafe { from_glib_full::<_, glib::Object>(client as *mut glib::gobject_ffi::GObject) })
                }
            })
            .map_err(|e| NmError::connect(e.to_string()))??;
        let nm = Nm { client, context };
        if !nm.running() {
            return Err(NmError::NotRunning);
        }
        Ok(nm)
    }

    fn raw(&self) -> *mut ffi::NMClient {
        self.client.as_ptr() as *mut ffi::NMClient
    }

    pub fn running(&self) -> bool {
        // SAFETY: valid client.
        unsafe { ffi::nm_client_get_nm_running(self.raw()) != 0 }
    }

    /// NetworkManager is asleep (a suspend, through its `Sleep` method).
    pub fn asleep(&self) -> bool {
        // SAFETY: valid client.
        unsafe { ffi::nm_client_get_state(self.raw()) == ffi::NM_STATE_ASLEEP }
    }

    /// How long ago NetworkManager's process started (the bus tells its PID,
    /// `/proc` its start), if that can be read.
    pub fn daemon_age(&self) -> Option<std::time::Duration> {
        let reply = self
            .context
            .with_thread_default(|| {
                self.bus()
                    .call_sync(
                        Some("org.freedesktop.DBus"),
                        "/org/freedesktop/DBus",
                        "org.freedesktop.DBus",
                        "GetConnectionUnixProcessID",
                        Some(&(NM_BUS_NAME,).to_variant()),
                        Some(glib::VariantTy::new("(u)").ok()?),
                        gio::DBusCallFlags::NONE,
                        2000,
                        gio::Cancellable::NONE,
                    )
                    .ok()
            })
            .ok()??;
        let (pid,) = reply.get::<(u32,)>()?;
        let started_ms = super::process_started_boottime_ms(pid)?;
        u64::try_from(super::boottime_ms() - started_ms).ok().map(std::time::Duration::from_millis)
    }

    pub fn version(&self) -> Option<String> {
        // SAFETY: valid client; transfer-none string.
        cstr_opt(unsafe { ffi::nm_client_get_version(self.raw()) })
    }

    pub fn devices(&self) -> Vec<Device> {
        // SAFETY: valid client.
        ptr_array_objects(unsafe { ffi::nm_client_get_devices(self.raw()) }).into_iter().map(|obj| Device { obj }).collect()
    }

    pub fn device(&self, iface: &str) -> Option<Device> {
        let iface = CString::new(iface).ok()?;
        // SAFETY: valid client and C string.
        object_from_none(unsafe { ffi::nm_client_get_device_by_iface(self.raw(), iface.as_ptr()) }).map(|obj| Device { obj })
    }

    pub fn profiles(&self) -> Vec<Profile> {
        // SAFETY: valid client.
        ptr_array_objects(unsafe { ffi::nm_client_get_connections(self.raw()) }).into_iter().map(|obj| Profile { obj }).collect()
    }

    pub fn profile(&self, uuid: &str) -> Option<Profile> {
        let uuid = CString::new(uuid).ok()?;
        // SAFETY: valid client and C string.
        object_from_none(unsafe { ffi::nm_client_get_connection_by_uuid(self.raw(), uuid.as_ptr()) }).map(|obj| Profile { obj })
    }

    pub fn active_connections(&self) -> Vec<ActiveConnection> {
        // SAFETY: valid client.
        ptr_array_objects(unsafe { ffi::nm_client_get_active_connections(self.raw()) }).into_iter().map(|obj| ActiveConnection { obj }).collect()
    }

    /// The active connection of the profile with `uuid`, if any.
    pub fn active_connection_of(&self, uuid: &str) -> Option<ActiveConnection> {
        self.active_connections().into_iter().find(|ac| ac.uuid().as_deref() == Some(uuid))
    }

    /// Starts a libnm async call and iterates the client's context until it
    /// completes; after `CALL_TIMEOUT` the call is cancelled and its
    /// (cancelled) completion awaited, so the callback never outlives us.
    ///
    /// Why not gio's futures (`GioFuture` on `MainContext::block_on` with a
    /// timeout future): libnm has no gio-rs bindings, so each call would
    /// still need this C trampoline and its `_finish`; and a timed-out
    /// future is dropped without its completion, which then runs (and
    /// releases what `_finish` returns) only if someone iterates the context
    /// again. Awaiting the cancelled completion here releases it on every path.
    fn call_async<R>(
        &self,
        what: &str,
        start: impl FnOnce(*mut gio::ffi::GCancellable, gio::ffi::GAsyncReadyCallback, glib::ffi::gpointer),
        finish: impl FnOnce(*mut gio::ffi::GAsyncResult, *mut *mut glib::ffi::GError) -> R,
        succeeded: impl Fn(&R) -> bool,
    ) -> Result<R, NmError> {
        let outcome = self.context.with_thread_default(|| {
            let cancellable = gio::Cancellable::new();
            let slot = Rc::new(AsyncSlot { result: Cell::new(ptr::null_mut()) });
            let timed_out = Arc::new(AtomicBool::new(false));
            let timer = {
                let timed_out = timed_out.clone();
                let cancellable = cancellable.clone();
                let source = glib::timeout_source_new(CALL_TIMEOUT, None, glib::Priority::DEFAULT, move || {
                    timed_out.store(true, Ordering::SeqCst);
                    cancellable.cancel();
                    glib::ControlFlow::Break
                });
                source.attach(Some(&self.context));
                source
            };
            start(cancellable.to_glib_none().0, Some(async_ready), Rc::into_raw(slot.clone()) as glib::ffi::gpointer);
            while slot.result.get().is_null() {
                self.context.iteration(true);
            }
            timer.destroy();
            let result = slot.result.get();
            let mut err = ptr::null_mut();
            let value = finish(result, &mut err);
            // SAFETY: we took a reference in `async_ready`.
            unsafe { glib::gobject_ffi::g_object_unref(result as *mut _) };
            if timed_out.load(Ordering::SeqCst) {
                if !err.is_null() {
                    // SAFETY: owned GError from finish().
                    unsafe { glib::ffi::g_error_free(err) };
                }
                return Err(NmError::Timeout { what: what.to_owned(), secs: CALL_TIMEOUT.as_secs() });
            }
            if succeeded(&value) {
                if !err.is_null() {
                    // SAFETY: owned GError from finish().
                    unsafe { glib::ffi::g_error_free(err) };
                }
                Ok(value)
            } else {
                Err(NmError::Call { what: what.to_owned(), message: gerror_message(err) })
            }
        });
        outcome.map_err(|e| NmError::Call { what: what.to_owned(), message: e.to_string() })?
    }

    /// Processes what NetworkManager already sent, so that the cache shows
    /// what other processes' requests changed (after waiting for a lock).
    ///
    /// A round trip to NetworkManager first: what it sent before its answer
    /// (the signals of the activation another process just asked for) is in
    /// this process's queue by then, in the order the bus keeps per sender.
    /// Processes what NetworkManager's messages already queued here.
    pub fn drain(&self) {
        let _ = self.context.with_thread_default(|| while self.context.iteration(false) {});
    }

    pub fn catch_up(&self) {
        let _ = self.context.with_thread_default(|| {
            let _ = self.bus().call_sync(
                Some(NM_BUS_NAME),
                "/org/freedesktop/NetworkManager",
                "org.freedesktop.DBus.Peer",
                "Ping",
                None,
                None,
                gio::DBusCallFlags::NONE,
                2000,
                gio::Cancellable::NONE,
            );
            while self.context.iteration(false) {}
        });
    }

    /// Waits for NetworkManager's state to change, and calls `on_settled`
    /// once it has been quiet for `settle` after a change: NM's own state,
    /// its device list, or any property of any device (state, carrier,
    /// available connections, active connection). Nothing runs in between:
    /// the thread sleeps in the GLib context until a D-Bus message arrives,
    /// or until the time `on_settled` asked to be called again after.
    ///
    /// `on_settled` also gets the devices that went down since its last
    /// call, and when, and the profiles that reached the activated state
    /// since its last call, with their devices, whether or not they still are:
    /// a connection that comes up and goes again between two calls (the
    /// radio switched off a moment after it connected) counts as having come
    /// up.
    ///
    /// Two moments are called no later than `soon` after them, quiet or not.
    /// The end of a Wi-Fi scan (a device's `last-scan`): NM reports the access
    /// points and the available connections a scan found before its end,
    /// autoconnects at that end, and starts its next periodic scan 200 ms
    /// later if it did not; an activation asked for after that waits until
    /// that scan is over (seconds: a whole scan). And a device that went
    /// unavailable or disconnected (a cable pulled, after NM's carrier-wait):
    /// NM goes on reporting the deactivation's steps for a second or more (in
    /// the Wi-Fi VM), and the backup must come up now, while the last scan's
    /// results are fresh enough for wpa_supplicant to associate without
    /// scanning again (5 s: a whole scan otherwise).
    ///
    /// `first`: when the first call comes (the caller's own look before the
    /// watch may have asked to look again after a time, which must pass
    /// though nothing changes).
    pub fn watch_changes(
        &self,
        settle: Duration,
        soon: Duration,
        first: WatchNext,
        mut on_settled: impl FnMut(&Nm, &Changes) -> WatchNext,
    ) -> Result<(), NmError> {
        let changed_at: Rc<Cell<Option<std::time::Instant>>> = Rc::new(Cell::new(None));
        let changes: Rc<std::cell::RefCell<Changes>> = Rc::default();
        let look_soon_from: Rc<Cell<Option<std::time::Instant>>> = Rc::new(Cell::new(None));
        let mark = {
            let changed_at = changed_at.clone();
            let look_soon_from = look_soon_from.clone();
            move |property: &str, went_down: bool| {
                let now = std::time::Instant::now();
                changed_at.set(Some(now));
                if (property == "last-scan" || went_down) && look_soon_from.get().is_none() {
                    look_soon_from.set(Some(now));
                }
            }
        };
        // Devices are watched as they appear; a removed one's handler goes with it.
        let mut watched: Vec<glib::Object> = Vec::new();
        let watch_devices = |nm: &Nm, watched: &mut Vec<glib::Object>| {
            let current = nm.devices();
            watched.retain(|w| current.iter().any(|d| &d.obj == w));
            for device in current {
                if !watched.iter().any(|w| w == &device.obj) {
                    let mark = mark.clone();
                    let changes = changes.clone();
                    device.obj.connect_notify_local(None, move |obj, property| {
                        let mut went_down = false;
                        if property.name() == "state" {
                            let device = Device { obj: obj.clone() };
                            match device.state() {
                                DeviceState::Activated => {
                                    if let Some(profile) = device.active_connection().and_then(|ac| ac.uuid()) {
                                        changes.borrow_mut().came_up.push(Activated { device: device.iface(), profile });
                                    }
                                }
                                DeviceState::Unavailable | DeviceState::Disconnected => {
                                    went_down = true;
                                    changes.borrow_mut().went_down.push((device.iface(), super::boottime_ms()));
                                }
                                _ => {}
                            }
                        }
                        mark(property.name(), went_down);
                    });
                    watched.push(device.obj);
                }
            }
        };
        let outcome = self.context.with_thread_default(|| {
            {
                let mark = mark.clone();
                self.client.connect_notify_local(None, move |_, property| mark(property.name(), false));
            }
            watch_devices(self, &mut watched);
            let mut wake_at = match first {
                WatchNext::Stop => return,
                WatchNext::OnChange => None,
                WatchNext::OnChangeOrAfter(after) => Some(std::time::Instant::now() + after),
            };
            loop {
                let wake = wake_at.map(|at| {
                    let source = glib::timeout_source_new(at.saturating_duration_since(std::time::Instant::now()), None, glib::Priority::DEFAULT, || {
                        glib::ControlFlow::Break
                    });
                    source.attach(Some(&self.context));
                    source
                });
                // (A change that came while `on_settled` ran is not waited for again.)
                if changed_at.get().is_none() {
                    self.context.iteration(true);
                }
                if let Some(source) = wake {
                    source.destroy();
                }
                let woken = wake_at.is_some_and(|at| std::time::Instant::now() >= at);
                let Some(mut last) = changed_at.get().or(woken.then(std::time::Instant::now)) else { continue };
                // Quiet for `settle` since the last change.
                while changed_at.get().is_some() {
                    let quiet_until = match look_soon_from.get() {
                        Some(from) => (last + settle).min(from + soon),
                        None => last + settle,
                    };
                    let now = std::time::Instant::now();
                    if now >= quiet_until {
                        break;
                    }
                    let pause = glib::timeout_source_new(quiet_until - now, None, glib::Priority::DEFAULT, || glib::ControlFlow::Break);
                    pause.attach(Some(&self.context));
                    self.context.iteration(true);
                    pause.destroy();
                    last = changed_at.get().unwrap_or(last);
                }
                changed_at.set(None);
                look_soon_from.set(None);
                watch_devices(self, &mut watched);
                let since_last_call = changes.take();
                wake_at = match on_settled(self, &since_last_call) {
                    WatchNext::Stop => return,
                    WatchNext::OnChange => None,
                    WatchNext::OnChangeOrAfter(after) => Some(std::time::Instant::now() + after),
                };
            }
        });
        outcome.map_err(|e| NmError::Call { what: "watching NetworkManager".into(), message: e.to_string() })
    }

    /// Asks NM to activate `profile` on `device`. Returns as soon as NM has
    /// accepted the request: it never waits for the activation itself, which
    /// would wait on dispatcher events queued behind the caller's own.
    pub fn activate(&self, profile: &Profile, device: &Device) -> Result<(), NmError> {
        let client = self.raw();
        let what = format!("activating {} on {}", profile.id().unwrap_or_default(), device.iface());
        self.call_async(
            &what,
            |cancellable, cb, data| unsafe {
                // SAFETY: valid objects; the callback gets `data` exactly once.
                ffi::nm_client_activate_connection_async(
                    client,
                    profile.obj.as_ptr() as *mut ffi::NMConnection,
                    device.obj.as_ptr() as *mut ffi::NMDevice,
                    ptr::null(),
                    cancellable,
                    cb,
                    data,
                )
            },
            |result, err| unsafe {
                // SAFETY: result from this call's callback. Owned at once, so
                // the reference is released on every path, a timeout included.
                let active = ffi::nm_client_activate_connection_finish(client, result, err);
                (!active.is_null()).then(|| from_glib_full::<_, glib::Object>(active as *mut glib::gobject_ffi::GObject))
            },
            |active| active.is_some(),
        )?;
        Ok(())
    }

    /// Asks NM to deactivate `active`; returns once NM accepted the request.
    pub fn deactivate(&self, active: &ActiveConnection) -> Result<(), NmError> {
        let client = self.raw();
        let what = format!("deactivating {}", active.uuid().unwrap_or_default());
        self.call_async(
            &what,
            |cancellable, cb, data| unsafe {
                // SAFETY: valid objects; the callback gets `data` exactly once.
                ffi::nm_client_deactivate_connection_async(client, active.obj.as_ptr() as *mut ffi::NMActiveConnection, cancellable, cb, data)
            },
            |result, err| unsafe {
                // SAFETY: result from this call's callback.
                ffi::nm_client_deactivate_connection_finish(client, result, err)
            },
            |ok| *ok != 0,
        )?;
        Ok(())
    }

    /// Makes NM re-read NetworkManager.conf and conf.d.
    pub fn reload_config(&self) -> Result<(), NmError> {
        let client = self.raw();
        self.call_async(
            "reloading NetworkManager configuration",
            |cancellable, cb, data| unsafe {
                // SAFETY: valid client; the callback gets `data` exactly once.
                ffi::nm_client_reload(client, ffi::NM_MANAGER_RELOAD_FLAG_CONF, cancellable, cb, data)
            },
            |result, err| unsafe {
                // SAFETY: result from this call's callback.
                ffi::nm_client_reload_finish(client, result, err)
            },
            |ok| *ok != 0,
        )?;
        Ok(())
    }

    /// Applies `edit` to the stored profile and writes it to disk. The edit
    /// goes to the daemon's own settings dict (see [`crate::sys::settings`]),
    /// so properties this libnm does not know are kept, and carries the
    /// stored secrets, so none is lost. `kept` is applied first, also to what
    /// is returned: what the file holds that `GetSettings` reports otherwise.
    /// Returns the profile as it was, for [`Nm::restore_profile`].
    pub fn update_profile(&self, profile: &Profile, kept: &ProfileEdit, edit: &ProfileEdit) -> Result<SavedProfile, NmError> {
        let what = format!("updating profile {}", profile.id().unwrap_or_default());
        let saved = settings::apply_edit(&self.settings_with_secrets(profile, &what)?, kept)?;
        self.write_settings(profile, &what, settings::apply_edit(&saved, edit)?)?;
        Ok(SavedProfile(saved))
    }

    /// The stored profile's settings dict with the secrets the daemon stores.
    pub fn settings_with_secrets(&self, profile: &Profile, what: &str) -> Result<glib::Variant, NmError> {
        let current = self.settings_call(profile, what, "GetSettings", None)?.child_value(0);
        // Asked per setting: the daemon returns the secrets it stores (system-owned),
        // and never prompts; with no agent it answers NoSecrets where it stores none.
        let mut secrets = Vec::new();
        for name in settings::setting_names(&current)? {
            match self.settings_call_raw(profile, "GetSecrets", Some((name.as_str(),).to_variant())) {
                Ok(reply) => secrets.push(reply.child_value(0)),
                Err(e) if gio::DBusError::remote_error(&e).as_deref() == Some(NO_SECRETS_ERROR) => {}
                Err(e) => return Err(NmError::Call { what: format!("{what}: reading its {name} secrets"), message: e.message().to_owned() }),
            }
        }
        Ok(settings::with_secrets(&current, &secrets)?)
    }

    /// Adds `settings` as a volatile profile (kept in memory only, and
    /// removed by NetworkManager once it is no longer active) and activates
    /// it on `device`; returns once NM accepted the request.
    pub fn add_and_activate_volatile(&self, settings: glib::Variant, device: &Device) -> Result<(), NmError> {
        let what = format!("activating a volatile profile on {}", device.iface());
        let device_path = device.dbus_path().ok_or_else(|| NmError::Call { what: what.clone(), message: "the device has no D-Bus object path".into() })?;
        let options = glib::VariantDict::new(None);
        options.insert("persist", "volatile");
        let path = |p: &str| glib::variant::ObjectPath::try_from(p.to_owned()).map(|p| p.to_variant());
        let (device_path, no_object) = match (path(&device_path), path("/")) {
            (Ok(d), Ok(n)) => (d, n),
            _ => return Err(NmError::Call { what, message: "invalid object path".into() }),
        };
        let args = glib::Variant::tuple_from_iter([settings, device_path, no_object, options.end()]);
        self.bus()
            .call_sync(
                Some(NM_BUS_NAME),
                "/org/freedesktop/NetworkManager",
                "org.freedesktop.NetworkManager",
                "AddAndActivateConnection2",
                Some(&args),
                None,
                gio::DBusCallFlags::NONE,
                CALL_TIMEOUT.as_millis() as i32,
                gio::Cancellable::NONE,
            )
            .map(drop)
            .map_err(|e| NmError::Call { what, message: e.message().to_owned() })
    }

    /// The settings NM applied to `device`'s activation now, and their version.
    pub fn applied_settings(&self, device: &Device) -> Result<(glib::Variant, u64), NmError> {
        let what = format!("reading the applied settings of {}", device.iface());
        let reply = self.device_call(device, &what, "GetAppliedConnection", Some((0u32,).to_variant()))?;
        let version = reply.child_value(1).get::<u64>().unwrap_or(0);
        Ok((reply.child_value(0), version))
    }

    /// Applies `settings` to `device`'s activation without taking it down
    /// (NetworkManager's Reapply); `version` from [`Nm::applied_settings`], so
    /// that an activation changed in between is not overwritten.
    pub fn reapply(&self, device: &Device, settings: glib::Variant, version: u64) -> Result<(), NmError> {
        let what = format!("reapplying settings to {}", device.iface());
        let args = glib::Variant::tuple_from_iter([settings, version.to_variant(), 0u32.to_variant()]);
        self.device_call(device, &what, "Reapply", Some(args)).map(drop)
    }

    fn device_call(&self, device: &Device, what: &str, method: &str, args: Option<glib::Variant>) -> Result<glib::Variant, NmError> {
        let path = device.dbus_path().ok_or_else(|| NmError::Call { what: what.to_owned(), message: "the device has no D-Bus object path".into() })?;
        self.bus()
            .call_sync(
                Some(NM_BUS_NAME),
                &path,
                "org.freedesktop.NetworkManager.Device",
                method,
                args.as_ref(),
                None,
                gio::DBusCallFlags::NONE,
                CALL_TIMEOUT.as_millis() as i32,
                gio::Cancellable::NONE,
            )
            .map_err(|e| NmError::Call { what: what.to_owned(), message: e.message().to_owned() })
    }

    /// Writes a profile back exactly as [`Nm::update_profile`] found it.
    pub fn restore_profile(&self, profile: &Profile, saved: &SavedProfile) -> Result<(), NmError> {
        self.write_settings(profile, &format!("restoring profile {}", profile.id().unwrap_or_default()), saved.0.clone())
    }

    fn write_settings(&self, profile: &Profile, what: &str, settings: glib::Variant) -> Result<(), NmError> {
        let args = glib::Variant::tuple_from_iter([settings, ffi::NM_SETTINGS_UPDATE2_FLAG_TO_DISK.to_variant(), glib::VariantDict::new(None).end()]);
        self.settings_call(profile, what, "Update2", Some(args)).map(drop)
    }

    /// A method of the profile's `Settings.Connection` object, answered with
    /// one value (`GetSettings`, `GetSecrets`: the settings dict; `Update2`: a dict).
    fn settings_call(&self, profile: &Profile, what: &str, method: &str, args: Option<glib::Variant>) -> Result<glib::Variant, NmError> {
        self.settings_call_raw(profile, method, args).map_err(|e| NmError::Call { what: what.to_owned(), message: e.message().to_owned() })
    }

    fn settings_call_raw(&self, profile: &Profile, method: &str, args: Option<glib::Variant>) -> Result<glib::Variant, glib::Error> {
        let path = profile.dbus_path().ok_or_else(|| glib::Error::new(gio::IOErrorEnum::NotFound, "the profile has no D-Bus object path"))?;
        let reply = if method == "Update2" { "(a{sv})" } else { "(a{sa{sv}})" };
        self.bus().call_sync(
            Some(NM_BUS_NAME),
            &path,
            SETTINGS_CONNECTION_INTERFACE,
            method,
            args.as_ref(),
            Some(glib::VariantTy::new(reply).expect("valid type string")),
            gio::DBusCallFlags::NONE,
            CALL_TIMEOUT.as_millis() as i32,
            gio::Cancellable::NONE,
        )
    }

    /// libnm's own D-Bus connection (the system bus, or the one
    /// `DBUS_SYSTEM_BUS_ADDRESS` names).
    fn bus(&self) -> gio::DBusConnection {
        // SAFETY: valid client; transfer-none connection that lives with it.
        unsafe { from_glib_none(ffi::nm_client_get_dbus_connection(self.raw())) }
    }
}

fn setting_object(conn: *mut ffi::NMConnection, name: &str) -> Option<glib::Object> {
    let cname = CString::new(name).ok()?;
    // SAFETY: valid connection; transfer-none setting.
    object_from_none(unsafe { ffi::nm_connection_get_setting_by_name(conn, cname.as_ptr()) })
}

fn get_property(setting: &glib::Object, property: &str) -> Option<PropertyValue> {
    let pspec = setting.find_property(property)?;
    let value = setting.property_value(property);
    if pspec.value_type() == glib::Type::BOOL {
        value.get::<bool>().ok().map(PropertyValue::Bool)
    } else if pspec.value_type() == glib::Type::STRING {
        value.get::<Option<String>>().ok().map(PropertyValue::Str)
    } else if pspec.value_type() == glib::Type::I32 {
        value.get::<i32>().ok().map(|n| PropertyValue::I32(Some(n)))
    } else if pspec.value_type() == glib::Type::U32 {
        value.get::<u32>().ok().map(|n| PropertyValue::U32(Some(n)))
    } else {
        None
    }
}

/// Which IP version a device's configuration or DHCP lease is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpFamily {
    V4,
    V6,
}

impl Device {
    fn raw(&self) -> *mut ffi::NMDevice {
        self.obj.as_ptr() as *mut ffi::NMDevice
    }

    /// The device's object path on NetworkManager's D-Bus API.
    fn dbus_path(&self) -> Option<String> {
        // SAFETY: a device from NMClient is an NMObject.
        cstr_opt(unsafe { ffi::nm_object_get_path(self.obj.as_ptr() as *mut ffi::NMObject) })
    }

    /// The gateway of NM's IPv4 configuration of the device, if it has one.
    pub fn ipv4_gateway(&self) -> Option<Ipv4Addr> {
        // SAFETY: valid device; the config and its gateway string are transfer-none.
        unsafe {
            let config = ffi::nm_device_get_ip4_config(self.raw());
            if config.is_null() {
                return None;
            }
            cstr_opt(ffi::nm_ip_config_get_gateway(config))?.parse().ok()
        }
    }

    /// The IPv4 addresses NM configured, with their prefix lengths.
    pub fn ipv4_addresses_with_prefix(&self) -> Vec<(Ipv4Addr, u32)> {
        self.addresses(IpFamily::V4)
    }

    pub fn iface(&self) -> String {
        // SAFETY: valid device.
        cstr_opt(unsafe { ffi::nm_device_get_iface(self.raw()) }).unwrap_or_default()
    }

    pub fn kind(&self) -> DeviceKind {
        // SAFETY: valid device.
        match unsafe { ffi::nm_device_get_device_type(self.raw()) } {
            ffi::NM_DEVICE_TYPE_ETHERNET | ffi::NM_DEVICE_TYPE_VETH => DeviceKind::Ethernet,
            ffi::NM_DEVICE_TYPE_WIFI => DeviceKind::Wifi,
            _ => DeviceKind::Other,
        }
    }

    /// Whether the device's last state change was someone's choice (a
    /// disconnect, another profile, sleep, removal) rather than a failure.
    pub fn last_change_was_chosen(&self) -> bool {
        // SAFETY: valid device.
        let reason = unsafe { ffi::nm_device_get_state_reason(self.raw()) };
        matches!(
            reason,
            ffi::NM_DEVICE_STATE_REASON_USER_REQUESTED
                | ffi::NM_DEVICE_STATE_REASON_NEW_ACTIVATION
                | ffi::NM_DEVICE_STATE_REASON_SLEEPING
                | ffi::NM_DEVICE_STATE_REASON_REMOVED
                | ffi::NM_DEVICE_STATE_REASON_NOW_UNMANAGED
                | ffi::NM_DEVICE_STATE_REASON_CONNECTION_REMOVED
        )
    }

    /// Whether the device's last state change was a user's disconnect.
    pub fn last_left_by_hand(&self) -> bool {
        // SAFETY: valid device.
        unsafe { ffi::nm_device_get_state_reason(self.raw()) == ffi::NM_DEVICE_STATE_REASON_USER_REQUESTED }
    }

    pub fn state(&self) -> DeviceState {
        // SAFETY: valid device.
        match unsafe { ffi::nm_device_get_state(self.raw()) } {
            ffi::NM_DEVICE_STATE_UNMANAGED => DeviceState::Unmanaged,
            ffi::NM_DEVICE_STATE_UNAVAILABLE => DeviceState::Unavailable,
            ffi::NM_DEVICE_STATE_DISCONNECTED => DeviceState::Disconnected,
            ffi::NM_DEVICE_STATE_PREPARE
            | ffi::NM_DEVICE_STATE_CONFIG
            | ffi::NM_DEVICE_STATE_NEED_AUTH
            | ffi::NM_DEVICE_STATE_IP_CONFIG
            | ffi::NM_DEVICE_STATE_IP_CHECK
            | ffi::NM_DEVICE_STATE_SECONDARIES => DeviceState::Activating,
            ffi::NM_DEVICE_STATE_ACTIVATED => DeviceState::Activated,
            ffi::NM_DEVICE_STATE_DEACTIVATING => DeviceState::Deactivating,
            ffi::NM_DEVICE_STATE_FAILED => DeviceState::Failed,
            _ => DeviceState::Unknown,
        }
    }

    pub fn has_carrier(&self) -> bool {
        // SAFETY: valid device.
        let flags = unsafe { ffi::nm_device_get_interface_flags(self.raw()) };
        flags & ffi::NM_DEVICE_INTERFACE_FLAG_CARRIER != 0
    }

    pub fn hw_address(&self) -> Option<String> {
        // SAFETY: valid device.
        cstr_opt(unsafe { ffi::nm_device_get_hw_address(self.raw()) })
    }

    /// The permanent MAC address, when the device type has one and NM knows it.
    pub fn permanent_hw_address(&self) -> Option<String> {
        // SAFETY: the type check picks the right subclass for the cast.
        let p = unsafe {
            match self.kind() {
                DeviceKind::Ethernet => ffi::nm_device_ethernet_get_permanent_hw_address(self.raw() as *mut ffi::NMDeviceEthernet),
                DeviceKind::Wifi => ffi::nm_device_wifi_get_permanent_hw_address(self.raw() as *mut ffi::NMDeviceWifi),
                _ => ptr::null(),
            }
        };
        cstr_opt(p).filter(|s| !s.is_empty())
    }

    /// Whether NetworkManager may connect the device by itself (`nmcli
    /// device set IFACE autoconnect no` turns it off until the user connects
    /// a profile on it).
    pub fn autoconnects(&self) -> bool {
        // SAFETY: valid device.
        unsafe { ffi::nm_device_get_autoconnect(self.raw()) != 0 }
    }

    pub fn active_connection(&self) -> Option<ActiveConnection> {
        // SAFETY: valid device.
        object_from_none(unsafe { ffi::nm_device_get_active_connection(self.raw()) }).map(|obj| ActiveConnection { obj })
    }

    /// The addresses NM configured on the device, with their prefix lengths.
    fn addresses<A: std::str::FromStr>(&self, family: IpFamily) -> Vec<(A, u32)> {
        // SAFETY: valid device; the config and its address array are transfer-none.
        unsafe {
            let config = match family {
                IpFamily::V4 => ffi::nm_device_get_ip4_config(self.raw()),
                IpFamily::V6 => ffi::nm_device_get_ip6_config(self.raw()),
            };
            if config.is_null() {
                return Vec::new();
            }
            let arr = ffi::nm_ip_config_get_addresses(config);
            if arr.is_null() {
                return Vec::new();
            }
            let arr = &*arr;
            (0..arr.len as usize)
                .map(|i| *arr.pdata.add(i) as *mut ffi::NMIPAddress)
                .filter_map(|address| Some((cstr_opt(ffi::nm_ip_address_get_address(address))?.parse().ok()?, ffi::nm_ip_address_get_prefix(address))))
                .collect()
        }
    }

    pub fn ipv4_addresses(&self) -> Vec<Ipv4Addr> {
        self.addresses(IpFamily::V4).into_iter().map(|(address, _)| address).collect()
    }

    /// The IPv6 addresses NM configured (link-local ones included), with their prefix lengths.
    pub fn ipv6_addresses(&self) -> Vec<(std::net::Ipv6Addr, u32)> {
        self.addresses(IpFamily::V6)
    }

    /// One option of the device's current DHCP lease as NM reports it (e.g.
    /// `dhcp_client_identifier`, the client-id the internal client sent;
    /// for DHCPv6 `iaid` and `dhcp6_client_id`, the DUID).
    pub fn dhcp_option(&self, family: IpFamily, option: &str) -> Option<String> {
        let option = CString::new(option).ok()?;
        // SAFETY: valid device; the config is transfer-none and the option
        // string lives as long as it.
        unsafe {
            let config = match family {
                IpFamily::V4 => ffi::nm_device_get_dhcp4_config(self.raw()),
                IpFamily::V6 => ffi::nm_device_get_dhcp6_config(self.raw()),
            };
            if config.is_null() {
                return None;
            }
            cstr_opt(ffi::nm_dhcp_config_get_one_option(config, option.as_ptr()))
        }
    }

    /// NM's name for the device's type (`ethernet`, `veth`, `wifi`, `bridge`, `loopback`, ...).
    pub fn type_description(&self) -> String {
        // SAFETY: valid device; the string lives as long as it.
        cstr_opt(unsafe { ffi::nm_device_get_type_description(self.raw()) }).unwrap_or_else(|| "unknown".into())
    }

    /// Whether NM types the device as a veth (an Ethernet link to NM and the kernel).
    pub fn is_veth(&self) -> bool {
        // SAFETY: valid device.
        unsafe { ffi::nm_device_get_device_type(self.raw()) == ffi::NM_DEVICE_TYPE_VETH }
    }

    /// The UUIDs of the profiles NM could activate on this device now.
    pub fn available_profiles(&self) -> Vec<String> {
        // SAFETY: valid device; the array and its connections are transfer-none.
        ptr_array_objects(unsafe { ffi::nm_device_get_available_connections(self.raw()) }).into_iter().filter_map(|obj| Profile { obj }.uuid()).collect()
    }

    /// When a Wi-Fi device's last scan finished, in ms of CLOCK_BOOTTIME
    /// (see [`crate::sys::boottime_ms`]); none for other devices and before a first scan.
    pub fn last_scan_ms(&self) -> Option<i64> {
        if self.kind() != DeviceKind::Wifi {
            return None;
        }
        // SAFETY: a Wi-Fi device (its kind checked above); -1 before any scan.
        let ms = unsafe { ffi::nm_device_wifi_get_last_scan(self.raw() as *mut ffi::NMDeviceWifi) };
        (ms >= 0).then_some(ms)
    }

    /// Whether NM could activate `profile` on this device.
    pub fn compatible_with(&self, profile: &Profile) -> bool {
        // SAFETY: valid objects; errors are not needed.
        unsafe { ffi::nm_device_connection_compatible(self.raw(), profile.obj.as_ptr() as *mut ffi::NMConnection, ptr::null_mut()) != 0 }
    }
}

impl Profile {
    fn raw(&self) -> *mut ffi::NMConnection {
        self.obj.as_ptr() as *mut ffi::NMConnection
    }

    pub fn uuid(&self) -> Option<String> {
        // SAFETY: valid connection.
        cstr_opt(unsafe { ffi::nm_connection_get_uuid(self.raw()) })
    }

    pub fn id(&self) -> Option<String> {
        // SAFETY: valid connection.
        cstr_opt(unsafe { ffi::nm_connection_get_id(self.raw()) })
    }

    pub fn interface_name(&self) -> Option<String> {
        // SAFETY: valid connection.
        cstr_opt(unsafe { ffi::nm_connection_get_interface_name(self.raw()) })
    }

    /// `connection.type`, e.g. `802-3-ethernet` or `802-11-wireless`.
    pub fn connection_type(&self) -> Option<String> {
        // SAFETY: valid connection.
        cstr_opt(unsafe { ffi::nm_connection_get_connection_type(self.raw()) })
    }

    /// The profile's object path on NetworkManager's D-Bus API.
    fn dbus_path(&self) -> Option<String> {
        // SAFETY: a profile from NMClient is an NMObject.
        cstr_opt(unsafe { ffi::nm_object_get_path(self.obj.as_ptr() as *mut ffi::NMObject) })
    }

    pub fn filename(&self) -> Option<String> {
        // SAFETY: a profile from NMClient is an NMRemoteConnection.
        cstr_opt(unsafe { ffi::nm_remote_connection_get_filename(self.raw() as *mut ffi::NMRemoteConnection) })
    }

    pub fn property(&self, setting: &str, property: &str) -> Option<PropertyValue> {
        get_property(&setting_object(self.raw(), setting)?, property)
    }

    /// Whether `connection.permissions` is set: a profile its users may edit
    /// (NM's `settings.modify.own`), not an administrator's.
    pub fn is_private(&self) -> bool {
        // SAFETY: valid connection; the setting is transfer-none, null when absent.
        unsafe {
            let s_con = ffi::nm_connection_get_setting_connection(self.raw());
            !s_con.is_null() && ffi::nm_setting_connection_get_num_permissions(s_con) > 0
        }
    }

    pub fn has_setting(&self, setting: &str) -> bool {
        setting_object(self.raw(), setting).is_some()
    }

    pub fn user_data(&self) -> BTreeMap<String, String> {
        let Some(user) = setting_object(self.raw(), "user") else {
            return BTreeMap::new();
        };
        let user = user.as_ptr() as *mut ffi::NMSettingUser;
        let mut out = BTreeMap::new();
        let mut len: u32 = 0;
        // SAFETY: valid setting; `keys` has `len` entries owned by the setting.
        unsafe {
            let keys = ffi::nm_setting_user_get_keys(user, &mut len);
            for i in 0..len as usize {
                let key = *keys.add(i);
                if let (Some(k), Some(v)) = (cstr_opt(key), cstr_opt(ffi::nm_setting_user_get_data(user, key))) {
                    out.insert(k, v);
                }
            }
        }
        out
    }
}

impl ActiveConnection {
    fn raw(&self) -> *mut ffi::NMActiveConnection {
        self.obj.as_ptr() as *mut ffi::NMActiveConnection
    }

    pub fn uuid(&self) -> Option<String> {
        // SAFETY: valid active connection.
        cstr_opt(unsafe { ffi::nm_active_connection_get_uuid(self.raw()) })
    }

    pub fn state(&self) -> ActiveState {
        // SAFETY: valid active connection.
        match unsafe { ffi::nm_active_connection_get_state(self.raw()) } {
            ffi::NM_ACTIVE_CONNECTION_STATE_ACTIVATING => ActiveState::Activating,
            ffi::NM_ACTIVE_CONNECTION_STATE_ACTIVATED => ActiveState::Activated,
            ffi::NM_ACTIVE_CONNECTION_STATE_DEACTIVATING => ActiveState::Deactivating,
            ffi::NM_ACTIVE_CONNECTION_STATE_DEACTIVATED => ActiveState::Deactivated,
            _ => ActiveState::Unknown,
        }
    }

    pub fn device_ifaces(&self) -> Vec<String> {
        // SAFETY: valid active connection.
        ptr_array_objects(unsafe { ffi::nm_active_connection_get_devices(self.raw()) }).into_iter().map(|obj| Device { obj }.iface()).collect()
    }
}

// Keep c_void referenced for bindgen-generated code paths on all targets.
const _: Option<*const c_void> = None;
