//! Everything that talks to C: libnm (through bindgen), rtnetlink, flock.
//!
//! This is the only module allowed to use `unsafe`. What it exports is a small
//! safe API; pointers never leave it.

pub mod libnm;
pub mod lock;
pub mod netlink;
