//! nm-dispatcher's arguments and environment, as raw bytes: NUL separates
//! fields, the first two are the arguments, the rest KEY=VALUE pairs.
#![no_main]
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use libfuzzer_sys::fuzz_target;
use nm_handover::event::DispatcherEvent;
use nm_handover::pairing::{membership, user_data_from_env};

fuzz_target!(|data: &[u8]| {
    let mut fields = data.split(|b| *b == 0).map(|f| OsString::from_vec(f.to_vec()));
    let args: Vec<OsString> = fields.by_ref().take(2).collect();
    let env: Vec<(OsString, OsString)> = fields
        .map(|f| {
            let bytes = f.into_vec();
            match bytes.iter().position(|b| *b == b'=') {
                Some(i) => (OsString::from_vec(bytes[..i].to_vec()), OsString::from_vec(bytes[i + 1..].to_vec())),
                None => (OsString::from_vec(bytes), OsString::new()),
            }
        })
        .collect();
    if let Ok(event) = DispatcherEvent::from_parts(args, env) {
        let _ = event.action.hook();
        if let Some(iface) = &event.iface {
            assert!(!iface.as_str().contains('/') && iface.as_str() != ".." && iface.as_str() != ".");
        }
        let data = user_data_from_env(&event.user_env);
        let _ = membership("fuzz", &data);
    }
});
