//! NM's internal-client lease file: parse, render for a link, parse again.
#![no_main]
use libfuzzer_sys::fuzz_target;
use nm_handover::lease::{parse_internal, Lease};
use nm_handover::names::Iface;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(address) = parse_internal(&text) {
        let rendered = Lease::Internal { address }.render_for(&Iface::parse("wired0").unwrap());
        assert_eq!(parse_internal(&rendered), Ok(address), "round trip changed the lease:\n{rendered}");
    }
});
