//! dhclient's lease file: parse, render for another link, parse again; the
//! rendered file must keep the address and name the new interface.
#![no_main]
use libfuzzer_sys::fuzz_target;
use nm_handover::lease::{parse_dhclient, Lease};
use nm_handover::names::Iface;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok((address, body)) = parse_dhclient(&text) {
        let iface = Iface::parse("backup0").unwrap();
        let rendered = Lease::Dhclient { address, body }.render_for(&iface);
        let (again, body) = parse_dhclient(&rendered).unwrap_or_else(|e| panic!("rendered lease does not parse: {e}\n{rendered}"));
        assert_eq!(again, address, "{rendered}");
        assert!(body.iter().any(|l| l == "interface \"backup0\";"), "{rendered}");
    }
});
