//! nm-handover: keep one IPv4 address across a wired <-> backup (Wi-Fi)
//! handover with NetworkManager.
//!
//! Two binaries share this library: `nm-handover-dispatch`, the small entry
//! nm-dispatcher runs for every event (std only: it decides from the
//! environment whether the event concerns a pair), and `nm-handover`, which
//! talks to NetworkManager through libnm (the commands, and the events that
//! concern a pair).

#![deny(unsafe_code)]

pub mod check;
pub mod commands;
pub mod dispatch;
pub mod error;
pub mod event;
pub mod handover;
pub mod lan;
pub mod lease;
pub mod marks;
pub mod names;
pub mod offlan;
pub mod pairing;
pub mod policy;
pub mod prefilter;
pub mod standby;
pub mod supervise;
#[allow(unsafe_code)]
pub mod sys;
pub mod trust;
pub mod watch;

/// The dispatcher action patched NetworkManager sends when a device's link is
/// ready and before IP configuration starts (see nm-patch/).
pub const LINK_UP_ACTION: &str = "link-up";
