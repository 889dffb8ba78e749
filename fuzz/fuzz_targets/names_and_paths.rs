//! Interface names and UUIDs from the outside world, and the files they
//! name: a lease path always stays in the lease directory, a configuration
//! snippet name is recognised only for a valid UUID.
#![no_main]
use std::path::{Component, Path};

use libfuzzer_sys::fuzz_target;
use nm_handover::lease::{LeaseFormat, LeaseOwner, LeaseStore};
use nm_handover::names::{Iface, Uuid};
use nm_handover::pairing::{carrier_wait_conf_name, is_carrier_wait_conf_name};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (a, b) = text.split_at(text.char_indices().nth(text.chars().count() / 2).map_or(text.len(), |(i, _)| i));
    let (Ok(uuid), Ok(iface)) = (Uuid::parse(a), Iface::parse(b)) else {
        let _ = is_carrier_wait_conf_name(&text);
        return;
    };
    let dir = Path::new("/var/lib/NetworkManager");
    let store = LeaseStore::new(dir);
    for format in [LeaseFormat::Internal, LeaseFormat::Dhclient] {
        let path = store.path(format, &LeaseOwner { uuid: uuid.clone(), iface: iface.clone() });
        assert_eq!(path.parent(), Some(dir), "{path:?} escapes the lease directory");
        assert!(path.components().all(|c| matches!(c, Component::RootDir | Component::Normal(_))), "{path:?}");
    }
    assert!(is_carrier_wait_conf_name(&carrier_wait_conf_name(&uuid)));
});
