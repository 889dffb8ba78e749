//! A profile's keyfile `[user]` group and the pairing record read from it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use nm_handover::pairing::{membership, user_data_from_keyfile};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let user_data = user_data_from_keyfile(&text);
    if let Ok(Some(m)) = membership("fuzz", &user_data) {
        // A pairing record names a valid peer UUID and device, never a path.
        assert!(!m.peer.as_str().contains('/') && !m.device.as_str().contains('/'));
    }
});
