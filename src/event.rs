//! A dispatcher invocation (`nm-handover IFACE ACTION` plus NM's environment)
//! as a typed event.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use crate::names::{Iface, NameError, Uuid};
use crate::policy::Hook;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("expected two arguments (interface and action) from nm-dispatcher, got {0}")]
    ArgCount(usize),
    #[error("{what} is not valid UTF-8")]
    NotUtf8 { what: &'static str },
    #[error("{0}")]
    Name(#[from] NameError),
}

/// nm-dispatcher's action argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DispatcherAction {
    PreUp,
    Up,
    PreDown,
    Down,
    Dhcp4Change,
    LinkUp,
    /// Any action without a device profile: hostname, connectivity-change, ...
    Other(String),
}

impl DispatcherAction {
    pub fn parse(s: &str) -> DispatcherAction {
        match s {
            "pre-up" => DispatcherAction::PreUp,
            "up" => DispatcherAction::Up,
            "pre-down" => DispatcherAction::PreDown,
            "down" => DispatcherAction::Down,
            "dhcp4-change" => DispatcherAction::Dhcp4Change,
            crate::LINK_UP_ACTION => DispatcherAction::LinkUp,
            other => DispatcherAction::Other(other.to_owned()),
        }
    }

    /// The policy hook for this action; `None` for actions the companion ignores.
    pub fn hook(&self) -> Option<Hook> {
        match self {
            DispatcherAction::PreUp => Some(Hook::PreUp),
            DispatcherAction::Up => Some(Hook::Up),
            DispatcherAction::PreDown => Some(Hook::PreDown),
            DispatcherAction::Down => Some(Hook::Down),
            DispatcherAction::Dhcp4Change => Some(Hook::Dhcp4Change),
            DispatcherAction::LinkUp => Some(Hook::LinkUp),
            DispatcherAction::Other(_) => None,
        }
    }
}

/// One dispatcher call, with the environment variables the companion reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DispatcherEvent {
    pub action: DispatcherAction,
    /// The device's interface (`DEVICE_IFACE`, else the first argument).
    pub iface: Option<Iface>,
    pub connection_uuid: Option<Uuid>,
    pub connection_id: Option<String>,
    pub connection_filename: Option<PathBuf>,
    /// `CONNECTION_USER_*` (NM >= 1.46): the profile's user data, by the
    /// variable's suffix.
    pub user_env: BTreeMap<String, String>,
    pub dhcp4_address: Option<Ipv4Addr>,
}

fn utf8(value: OsString, what: &'static str) -> Result<String, EventError> {
    value.into_string().map_err(|_| EventError::NotUtf8 { what })
}

impl DispatcherEvent {
    /// Builds the event from the arguments after the program name and the
    /// process environment. Variables the companion does not use are ignored;
    /// a malformed one it uses is an error.
    pub fn from_parts(args: impl IntoIterator<Item = OsString>, env: impl IntoIterator<Item = (OsString, OsString)>) -> Result<DispatcherEvent, EventError> {
        let args: Vec<OsString> = args.into_iter().collect();
        let [iface_arg, action] = <[OsString; 2]>::try_from(args).map_err(|v| EventError::ArgCount(v.len()))?;
        let iface_arg = utf8(iface_arg, "the interface argument")?;
        let action = DispatcherAction::parse(&utf8(action, "the action argument")?);

        let mut event = DispatcherEvent {
            action,
            iface: None,
            connection_uuid: None,
            connection_id: None,
            connection_filename: None,
            user_env: BTreeMap::new(),
            dhcp4_address: None,
        };
        let mut device_iface = None;
        for (key, value) in env {
            let Some(key) = key.to_str() else { continue };
            match key {
                "DEVICE_IFACE" => device_iface = Some(utf8(value, "DEVICE_IFACE")?),
                "CONNECTION_UUID" => {
                    event.connection_uuid = Some(Uuid::parse(&utf8(value, "CONNECTION_UUID")?)?);
                }
                "CONNECTION_ID" => event.connection_id = Some(utf8(value, "CONNECTION_ID")?),
                "CONNECTION_FILENAME" => event.connection_filename = Some(PathBuf::from(value)),
                "DHCP4_IP_ADDRESS" => {
                    event.dhcp4_address = utf8(value, "DHCP4_IP_ADDRESS")?.parse().ok();
                }
                _ => {
                    if let Some(suffix) = key.strip_prefix("CONNECTION_USER_") {
                        if let Ok(value) = value.into_string() {
                            event.user_env.insert(suffix.to_owned(), value);
                        }
                    }
                }
            }
        }
        if event.action.hook().is_some() {
            let name = device_iface.unwrap_or(iface_arg);
            event.iface = Some(Iface::parse(&name)?);
        }
        Ok(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStringExt;

    fn os(s: &str) -> OsString {
        OsString::from(s)
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs.iter().map(|(k, v)| (os(k), os(v))).collect()
    }

    #[test]
    fn parses_a_down_event() {
        let e = DispatcherEvent::from_parts(
            [os("wired0"), os("down")],
            env(&[
                ("DEVICE_IFACE", "wired0"),
                ("CONNECTION_UUID", "11111111-1111-4111-8111-111111111111"),
                ("CONNECTION_ID", "Wired"),
                ("CONNECTION_FILENAME", "/etc/NetworkManager/system-connections/Wired.nmconnection"),
                ("PATH", "/usr/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(e.action, DispatcherAction::Down);
        assert_eq!(e.iface.unwrap().as_str(), "wired0");
        assert_eq!(e.connection_uuid.unwrap().as_str(), "11111111-1111-4111-8111-111111111111");
        assert_eq!(e.connection_id.as_deref(), Some("Wired"));
    }

    #[test]
    fn device_iface_wins_over_ip_iface_argument() {
        let e = DispatcherEvent::from_parts([os("ppp0"), os("up")], env(&[("DEVICE_IFACE", "wwan0")])).unwrap();
        assert_eq!(e.iface.unwrap().as_str(), "wwan0");
    }

    #[test]
    fn hostname_and_connectivity_events_need_no_interface() {
        let e = DispatcherEvent::from_parts([os("none"), os("hostname")], env(&[])).unwrap();
        assert_eq!(e.action, DispatcherAction::Other("hostname".into()));
        let e = DispatcherEvent::from_parts([os(""), os("connectivity-change")], env(&[])).unwrap();
        assert!(e.iface.is_none());
    }

    #[test]
    fn user_data_env_and_dhcp_address() {
        let e = DispatcherEvent::from_parts(
            [os("backup0"), os("up")],
            env(&[("CONNECTION_USER_NM_055HANDOVER__ROLE", "backup"), ("DHCP4_IP_ADDRESS", "198.18.0.150")]),
        )
        .unwrap();
        assert_eq!(e.user_env.get("NM_055HANDOVER__ROLE").map(String::as_str), Some("backup"));
        assert_eq!(e.dhcp4_address, Some("198.18.0.150".parse().unwrap()));
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert_eq!(DispatcherEvent::from_parts([os("x")], env(&[])), Err(EventError::ArgCount(1)));
        assert!(DispatcherEvent::from_parts([os("../../x"), os("down")], env(&[])).is_err());
        assert!(DispatcherEvent::from_parts([os("wired0"), os("down")], env(&[("CONNECTION_UUID", "../../../etc/shadow")])).is_err());
        let not_utf8 = OsString::from_vec(vec![0x77, 0xff, 0x30]);
        assert!(DispatcherEvent::from_parts([not_utf8, os("down")], env(&[])).is_err());
    }
}
