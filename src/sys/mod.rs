//! Everything that talks to C: libnm (through bindgen) and, later, netlink.
//!
//! This is the only module allowed to use `unsafe`. What it exports is a small
//! safe API; pointers never leave it.

pub mod libnm;
pub mod netlink;
