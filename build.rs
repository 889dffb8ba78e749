//! Generates Rust bindings for the small part of libnm the companion uses.
//!
//! libnm is found with pkg-config (which also emits the link flags for libnm,
//! GIO, GObject and GLib); bindgen reads `<NetworkManager.h>` and keeps only
//! the allowlisted functions, so the bindings stay small and a libnm symbol
//! we start to use has to be named here on purpose.

use std::env;
use std::path::PathBuf;

/// libnm functions called from `src/sys/libnm.rs`.
const LIBNM_FUNCTIONS: &[&str] = &[
    "nm_client_new",
    "nm_client_get_nm_running",
    "nm_client_get_state",
    "nm_client_get_version",
    "nm_client_get_devices",
    "nm_client_get_device_by_iface",
    "nm_client_get_connections",
    "nm_client_get_connection_by_uuid",
    "nm_client_get_active_connections",
    "nm_client_activate_connection_async",
    "nm_client_activate_connection_finish",
    "nm_client_deactivate_connection_async",
    "nm_client_deactivate_connection_finish",
    "nm_client_reload",
    "nm_client_reload_finish",
    "nm_client_get_dbus_connection",
    "nm_object_get_path",
    "nm_device_get_iface",
    "nm_device_get_device_type",
    "nm_device_get_state",
    "nm_device_get_state_reason",
    "nm_device_get_interface_flags",
    "nm_device_get_hw_address",
    "nm_device_ethernet_get_permanent_hw_address",
    "nm_device_wifi_get_permanent_hw_address",
    "nm_device_get_active_connection",
    "nm_device_get_autoconnect",
    "nm_device_get_ip4_config",
    "nm_device_get_dhcp4_config",
    "nm_device_get_ip6_config",
    "nm_device_get_dhcp6_config",
    "nm_dhcp_config_get_one_option",
    "nm_device_connection_compatible",
    "nm_device_get_available_connections",
    "nm_device_wifi_get_last_scan",
    "nm_device_get_type_description",
    "nm_ip_config_get_addresses",
    "nm_ip_config_get_gateway",
    "nm_ip_address_get_address",
    "nm_ip_address_get_prefix",
    "nm_active_connection_get_uuid",
    "nm_active_connection_get_state",
    "nm_active_connection_get_devices",
    "nm_connection_get_uuid",
    "nm_connection_get_id",
    "nm_connection_get_interface_name",
    "nm_connection_get_connection_type",
    "nm_connection_get_setting_by_name",
    "nm_connection_get_setting_connection",
    "nm_setting_connection_get_num_permissions",
    "nm_remote_connection_get_filename",
    "nm_setting_user_get_keys",
    "nm_setting_user_get_data",
];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");

    // The floor that is built and tested (Debian 12); older releases are
    // not tested here, so they are refused rather than half-supported.
    let libnm = match pkg_config::Config::new().atleast_version("1.42").probe("libnm") {
        Ok(lib) => lib,
        Err(err) => {
            // A plain message beats a bindgen failure about a missing header.
            panic!("libnm >= 1.42 not found by pkg-config ({err}); on Debian: apt-get install libnm-dev");
        }
    };

    let mut builder = bindgen::Builder::default()
        .header_contents("nm-handover-libnm.h", "#include <NetworkManager.h>\n")
        .clang_args(libnm.include_paths.iter().map(|p| format!("-I{}", p.display())))
        .allowlist_type("NMDeviceState|NMDeviceStateReason|NMDeviceType|NMActiveConnectionState|NMDeviceInterfaceFlags")
        .allowlist_type("NMSettingsUpdate2Flags|NMManagerReloadFlags")
        // GLib, GObject and GIO types come from the glib/gio crates' -sys
        // modules, so values pass between libnm and those crates unconverted.
        .blocklist_type("_?G[A-Z].*")
        .prepend_enum_name(false)
        .raw_line("use glib::ffi::*;")
        .raw_line("use glib::gobject_ffi::*;")
        .raw_line("use gio::ffi::*;")
        .layout_tests(false)
        .generate_comments(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()));
    for function in LIBNM_FUNCTIONS {
        builder = builder.allowlist_function(function);
    }
    let bindings = builder.generate().expect("bindgen failed to read <NetworkManager.h>");

    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    bindings.write_to_file(out.join("libnm.rs")).expect("cannot write libnm bindings");
}
