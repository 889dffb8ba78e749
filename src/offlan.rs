//! Backup links nm-handover took off the LAN itself (set down by the carrier
//! watcher at a re-plug, or by the hand-back where NM waits for us or could
//! send a DHCPRELEASE), and that are set up again once NM has deactivated
//! the backup.
//!
//! NetworkManager leaves a deactivated device's link as it finds it. Left
//! down, an Ethernet backup reports no carrier, turns `unavailable` after
//! NM's carrier-wait and cannot take the next handover; until then, its next
//! activation brings the link up and starts DHCP at once, before the switch
//! port forwards (measured on the lab's veth: the first REQUEST lost, the
//! pull 2.4 s instead of 0.4 s in 7 of 60 second cycles). So each link taken
//! down is recorded in a file named by its interface index (tmpfs: gone at
//! boot; an index is never reused for another link while the system runs),
//! and only a link recorded here is ever set up again: a link someone else
//! set down stays down.

use std::fs;
use std::io;

use crate::sys::lock::touch;
use crate::sys::netlink::{set_index_up, take_index_down};
use crate::sys::paths::off_lan_path;

/// Records the link, then sets it down (and gives it `mac`, if given). The
/// record comes first, so that a link down is never left unrecorded.
pub fn take_off_lan(index: i32, mac: Option<[u8; 6]>) -> io::Result<()> {
    touch(&off_lan_path(index))?;
    take_index_down(index, mac)
}

/// Whether nm-handover set this link down and has not set it up since.
pub fn was_taken_off_lan(index: i32) -> bool {
    off_lan_path(index).exists()
}

/// Sets a link [`take_off_lan`] took down up again, and forgets it.
pub fn put_back(index: i32) -> io::Result<()> {
    set_index_up(index)?;
    forget(index)
}

/// Forgets the link: NM brings it up itself when it activates the backup.
pub fn forget(index: i32) -> io::Result<()> {
    match fs::remove_file(off_lan_path(index)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
