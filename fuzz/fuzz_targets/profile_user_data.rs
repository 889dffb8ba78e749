//! A profile's keyfile `[user]` group and the pairing record read from it;
//! the same bytes as root's record of a pair (`crate::trust`).
#![no_main]
use libfuzzer_sys::fuzz_target;
use nm_handover::pairing::{membership, user_data_from_keyfile};
use nm_handover::trust::PairRecord;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let user_data = user_data_from_keyfile(&text);
    if let Ok(Some(m)) = membership("fuzz", &user_data) {
        // A pairing record names a valid peer UUID and device, never a path.
        assert!(!m.peer.as_str().contains('/') && !m.device.as_str().contains('/'));
    }
    if let Ok(record) = PairRecord::parse(&text) {
        // What parses renders back to itself.
        assert_eq!(PairRecord::parse(&record.render()), Ok(record));
    }
});
