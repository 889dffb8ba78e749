//! Profile edits, applied to a profile as NetworkManager exchanges it on
//! D-Bus: the settings dict `a{sa{sv}}` of `GetSettings` and `Update2`.
//!
//! `pair` and `unpair` edit the daemon's own dict rather than a libnm
//! `NMConnection`, so every other property survives the update untouched,
//! including those the linked libnm is too old to know: a libnm 1.42
//! `NMConnection` sent back to a newer daemon silently drops them.
//!
//! `GetSettings` leaves secrets out. Sent back without any, the daemon is to
//! merge its stored ones in, but that merge fails, silently, as soon as the
//! update lacks a setting the profile had (libnm's
//! `nm_connection_update_secrets()` refuses secrets for a setting that is not
//! there): an `unpair` that removed the `user` setting lost Wi-Fi passwords
//! that way. So every update carries the profile's stored secrets itself
//! ([`with_secrets`]), and the outcome no longer depends on that merge.

use std::collections::BTreeMap;

use glib::prelude::*;
use glib::{Variant, VariantTy};

/// A settings dict that cannot be edited as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value for {what}: {message}")]
pub struct SettingsError {
    pub what: String,
    pub message: String,
}

/// A typed value of a profile property.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PropertyValue {
    /// `None` removes the property (its default applies).
    Str(Option<String>),
    Bool(bool),
    /// `None` removes the property.
    U64(Option<u64>),
    /// An enumeration such as `ipv6.addr-gen-mode`; `None` removes it.
    I32(Option<i32>),
    /// Flags such as `ipv4.dhcp-hostname-flags`; `None` removes them.
    U32(Option<u32>),
}

/// One property to change: (`setting name`, `property name`, new value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropertyChange {
    pub setting: &'static str,
    pub property: &'static str,
    pub value: PropertyValue,
}

/// Changes to apply to a stored profile in one update.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProfileEdit {
    pub properties: Vec<PropertyChange>,
    /// `None` removes the key.
    pub user_data: BTreeMap<String, Option<String>>,
}

impl ProfileEdit {
    pub fn is_empty(&self) -> bool {
        self.properties.is_empty() && self.user_data.is_empty()
    }
}

/// The D-Bus type of a whole profile.
pub const SETTINGS_TYPE: &str = "a{sa{sv}}";

const USER_SETTING: &str = "user";
const USER_DATA: &str = "data";

/// One setting's properties, in the daemon's order.
type Properties = Vec<(String, Variant)>;

/// Returns `settings` (`a{sa{sv}}`) with `edit` applied and nothing else changed.
pub fn apply_edit(settings: &Variant, edit: &ProfileEdit) -> Result<Variant, SettingsError> {
    let mut dict = parse(settings)?;
    for change in &edit.properties {
        let what = format!("{}.{}", change.setting, change.property);
        let properties = dict
            .iter_mut()
            .find(|(name, _)| name == change.setting)
            .map(|(_, properties)| properties)
            .ok_or_else(|| invalid(&what, format!("the profile has no '{}' setting", change.setting)))?;
        let (key, superseded) = dbus_name(change.property);
        if let Some(old_name) = superseded {
            properties.retain(|(name, _)| name != old_name);
        }
        let value = match &change.value {
            PropertyValue::Str(Some(s)) => Some(s.to_variant()),
            PropertyValue::Bool(b) => Some(b.to_variant()),
            PropertyValue::U64(Some(n)) => Some(n.to_variant()),
            PropertyValue::I32(Some(n)) => Some(n.to_variant()),
            PropertyValue::U32(Some(n)) => Some(n.to_variant()),
            PropertyValue::Str(None) | PropertyValue::U64(None) | PropertyValue::I32(None) | PropertyValue::U32(None) => None,
        };
        set(properties, key, value, &what)?;
    }
    if !edit.user_data.is_empty() {
        apply_user_data(&mut dict, &edit.user_data)?;
    }
    Ok(build(&dict))
}

/// Returns `settings` with `secrets` filled in: each the reply of
/// `GetSecrets` for one setting (`a{sa{sv}}`), as the daemon stores them.
/// A secret the dict already has is left alone; a setting the dict lacks is
/// refused (the update would silently drop that secret).
pub fn with_secrets(settings: &Variant, secrets: &[Variant]) -> Result<Variant, SettingsError> {
    let mut dict = parse(settings)?;
    for reply in secrets {
        for (setting, stored) in parse(reply)? {
            if stored.is_empty() {
                continue;
            }
            let properties = dict
                .iter_mut()
                .find(|(name, _)| *name == setting)
                .map(|(_, properties)| properties)
                .ok_or_else(|| invalid(&setting, "NetworkManager holds secrets for a setting the update lacks".into()))?;
            for (key, value) in stored {
                if properties.iter().all(|(name, _)| *name != key) {
                    properties.push((key, value));
                }
            }
        }
    }
    Ok(build(&dict))
}

/// The properties of the setting `name`, if the profile has it.
pub fn setting(settings: &Variant, name: &str) -> Result<Option<Vec<(String, Variant)>>, SettingsError> {
    Ok(parse(settings)?.into_iter().find(|(setting, _)| setting == name).map(|(_, properties)| properties))
}

/// Returns `settings` with the setting `name` replaced by `properties`
/// (added where the profile lacks it), or removed (`None`).
pub fn replace_setting(settings: &Variant, name: &str, properties: Option<Vec<(String, Variant)>>) -> Result<Variant, SettingsError> {
    let mut dict = parse(settings)?;
    let existing = dict.iter().position(|(setting, _)| setting == name);
    match (existing, properties) {
        (Some(i), Some(properties)) => dict[i].1 = properties,
        (Some(i), None) => {
            dict.remove(i);
        }
        (None, Some(properties)) => dict.push((name.to_owned(), properties)),
        (None, None) => {}
    }
    Ok(build(&dict))
}

/// The names of the settings a profile has.
pub fn setting_names(settings: &Variant) -> Result<Vec<String>, SettingsError> {
    Ok(parse(settings)?.into_iter().map(|(name, _)| name).collect())
}

/// The name a property has on D-Bus, and the deprecated name it supersedes.
/// The daemon prefers `assigned-mac-address` when a dict has both, so the
/// legacy byte-array form must go, or it would contradict the new value.
fn dbus_name(property: &'static str) -> (&'static str, Option<&'static str>) {
    match property {
        "cloned-mac-address" => ("assigned-mac-address", Some("cloned-mac-address")),
        other => (other, None),
    }
}

fn set(properties: &mut Properties, key: &str, value: Option<Variant>, what: &str) -> Result<(), SettingsError> {
    let existing = properties.iter().position(|(name, _)| name == key);
    match (existing, value) {
        (Some(i), Some(value)) => {
            if properties[i].1.type_() != value.type_() {
                return Err(invalid(what, format!("NetworkManager stores it as '{}', not '{}'", properties[i].1.type_(), value.type_())));
            }
            properties[i].1 = value;
        }
        (Some(i), None) => {
            properties.remove(i);
        }
        (None, Some(value)) => properties.push((key.to_owned(), value)),
        (None, None) => {}
    }
    Ok(())
}

fn apply_user_data(dict: &mut Vec<(String, Properties)>, changes: &BTreeMap<String, Option<String>>) -> Result<(), SettingsError> {
    let index = match dict.iter().position(|(name, _)| name == USER_SETTING) {
        Some(i) => i,
        None => {
            dict.push((USER_SETTING.to_owned(), Vec::new()));
            dict.len() - 1
        }
    };
    let properties = &mut dict[index].1;
    let mut data: BTreeMap<String, String> = match properties.iter().find(|(name, _)| name == USER_DATA) {
        Some((_, value)) => value.get().ok_or_else(|| invalid("user.data", format!("NetworkManager sent '{}', not 'a{{ss}}'", value.type_())))?,
        None => BTreeMap::new(),
    };
    for (key, value) in changes {
        match value {
            Some(v) => data.insert(key.clone(), v.clone()),
            None => data.remove(key),
        };
    }
    let value = (!data.is_empty()).then(|| data.to_variant());
    set(properties, USER_DATA, value, "user.data")?;
    if properties.is_empty() {
        dict.remove(index);
    }
    Ok(())
}

fn parse(settings: &Variant) -> Result<Vec<(String, Properties)>, SettingsError> {
    let expected = VariantTy::new(SETTINGS_TYPE).expect("valid type string");
    if !settings.is_type(expected) {
        return Err(invalid("profile settings", format!("NetworkManager sent '{}', not '{SETTINGS_TYPE}'", settings.type_())));
    }
    Ok(settings
        .iter()
        .map(|entry| {
            let name = entry.child_value(0).str().unwrap_or_default().to_owned();
            let properties =
                entry.child_value(1).iter().filter_map(|prop| Some((prop.child_value(0).str()?.to_owned(), prop.child_value(1).as_variant()?))).collect();
            (name, properties)
        })
        .collect())
}

fn build(dict: &[(String, Properties)]) -> Variant {
    let property_entry = VariantTy::new("{sv}").expect("valid type string");
    let setting_entry = VariantTy::new("{sa{sv}}").expect("valid type string");
    Variant::array_from_iter_with_type(
        setting_entry,
        dict.iter().map(|(name, properties)| {
            let properties = Variant::array_from_iter_with_type(
                property_entry,
                properties.iter().map(|(key, value)| Variant::from_dict_entry(&key.to_variant(), &Variant::from_variant(value))),
            );
            Variant::from_dict_entry(&name.to_variant(), &properties)
        }),
    )
}

fn invalid(what: &str, message: String) -> SettingsError {
    SettingsError { what: what.to_owned(), message }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A wired profile as a 1.58 daemon sends it, with properties libnm 1.42
    /// does not know (`dhcp-send-release`, `dhcp-dscp`).
    const PROFILE: &str = "{'connection': {'id': <'Backup link'>, 'uuid': <'4c1a0d57-7a43-4c3f-9d0e-2f4f0c0b6d11'>, \
        'type': <'802-3-ethernet'>, 'autoconnect': <true>}, \
        '802-3-ethernet': {'cloned-mac-address': <[byte 0x02, 0x00, 0x00, 0x00, 0x00, 0x01]>, \
        'assigned-mac-address': <'02:00:00:00:00:01'>, 'mtu': <uint32 0>}, \
        'ipv4': {'method': <'auto'>, 'dhcp-client-id': <'mac'>, 'dhcp-send-release': <int32 1>, 'dhcp-dscp': <'CS0'>}}";

    fn profile() -> Variant {
        Variant::parse(Some(VariantTy::new(SETTINGS_TYPE).unwrap()), PROFILE).unwrap()
    }

    fn lookup(settings: &Variant, setting: &str, key: &str) -> Option<Variant> {
        parse(settings).unwrap().into_iter().find(|(name, _)| name == setting)?.1.into_iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    fn change(setting: &'static str, property: &'static str, value: PropertyValue) -> ProfileEdit {
        ProfileEdit { properties: vec![PropertyChange { setting, property, value }], ..Default::default() }
    }

    #[test]
    fn an_empty_edit_changes_nothing() {
        assert_eq!(apply_edit(&profile(), &ProfileEdit::default()).unwrap(), profile());
    }

    #[test]
    fn properties_unknown_to_libnm_survive_an_edit() {
        let edited = apply_edit(&profile(), &change("connection", "autoconnect", PropertyValue::Bool(false))).unwrap();
        assert_eq!(lookup(&edited, "connection", "autoconnect"), Some(false.to_variant()));
        assert_eq!(lookup(&edited, "ipv4", "dhcp-send-release"), Some(1i32.to_variant()));
        assert_eq!(lookup(&edited, "ipv4", "dhcp-dscp"), Some("CS0".to_variant()));
        assert_eq!(lookup(&edited, "802-3-ethernet", "mtu"), Some(0u32.to_variant()));
    }

    #[test]
    fn a_cloned_mac_is_sent_as_assigned_mac_address_only() {
        let mac = PropertyValue::Str(Some("52:54:00:12:34:56".into()));
        let edited = apply_edit(&profile(), &change("802-3-ethernet", "cloned-mac-address", mac)).unwrap();
        assert_eq!(lookup(&edited, "802-3-ethernet", "assigned-mac-address"), Some("52:54:00:12:34:56".to_variant()));
        assert_eq!(lookup(&edited, "802-3-ethernet", "cloned-mac-address"), None);
        let cleared = apply_edit(&edited, &change("802-3-ethernet", "cloned-mac-address", PropertyValue::Str(None))).unwrap();
        assert_eq!(lookup(&cleared, "802-3-ethernet", "assigned-mac-address"), None);
        assert_eq!(lookup(&cleared, "802-3-ethernet", "mtu"), Some(0u32.to_variant()));
    }

    #[test]
    fn a_missing_property_is_added_and_none_removes_one() {
        let added = apply_edit(&profile(), &change("ipv4", "dhcp-hostname", PropertyValue::Str(Some("laptop".into())))).unwrap();
        assert_eq!(lookup(&added, "ipv4", "dhcp-hostname"), Some("laptop".to_variant()));
        let removed = apply_edit(&profile(), &change("ipv4", "dhcp-client-id", PropertyValue::Str(None))).unwrap();
        assert_eq!(lookup(&removed, "ipv4", "dhcp-client-id"), None);
        assert_eq!(lookup(&removed, "ipv4", "method"), Some("auto".to_variant()));
    }

    #[test]
    fn user_data_is_merged_and_an_emptied_user_setting_removed() {
        let mut edit = ProfileEdit::default();
        edit.user_data.insert("nm-handover.role".into(), Some("backup".into()));
        edit.user_data.insert("nm-handover.peer".into(), Some("6f2a".into()));
        let paired = apply_edit(&profile(), &edit).unwrap();
        let data: BTreeMap<String, String> = lookup(&paired, "user", "data").unwrap().get().unwrap();
        assert_eq!(data.len(), 2);
        assert_eq!(data["nm-handover.role"], "backup");

        let mut more = ProfileEdit::default();
        more.user_data.insert("nm-handover.peer".into(), None);
        more.user_data.insert("org.example.other".into(), Some("kept".into()));
        let merged = apply_edit(&paired, &more).unwrap();
        let data: BTreeMap<String, String> = lookup(&merged, "user", "data").unwrap().get().unwrap();
        assert_eq!(data.keys().collect::<Vec<_>>(), ["nm-handover.role", "org.example.other"]);

        let mut clear = ProfileEdit::default();
        clear.user_data.insert("nm-handover.role".into(), None);
        clear.user_data.insert("org.example.other".into(), None);
        let cleared = apply_edit(&merged, &clear).unwrap();
        assert!(parse(&cleared).unwrap().iter().all(|(name, _)| name != "user"));
        assert_eq!(lookup(&cleared, "ipv4", "dhcp-send-release"), Some(1i32.to_variant()));
    }

    fn secrets(text: &str) -> Variant {
        Variant::parse(Some(VariantTy::new(SETTINGS_TYPE).unwrap()), text).unwrap()
    }

    #[test]
    fn stored_secrets_are_carried_into_the_update() {
        let wifi = secrets(
            "{'connection': {'id': <'Office Wi-Fi'>}, '802-11-wireless-security': {'key-mgmt': <'wpa-psk'>}, \
             'user': {'data': <{'nm-handover.role': 'backup'}>}}",
        );
        let mut unpair = ProfileEdit::default();
        unpair.user_data.insert("nm-handover.role".into(), None);
        let without_user = apply_edit(&wifi, &unpair).unwrap();
        let stored = [secrets("{'connection': @a{sv} {}}"), secrets("{'802-11-wireless-security': {'psk': <'correct horse'>}}"), secrets("@a{sa{sv}} {}")];
        let sent = with_secrets(&without_user, &stored).unwrap();
        assert_eq!(lookup(&sent, "802-11-wireless-security", "psk"), Some("correct horse".to_variant()));
        assert_eq!(lookup(&sent, "802-11-wireless-security", "key-mgmt"), Some("wpa-psk".to_variant()));
        assert!(parse(&sent).unwrap().iter().all(|(name, _)| name != "user"));
    }

    #[test]
    fn a_secret_already_in_the_update_is_kept_and_one_for_a_missing_setting_refused() {
        let wifi = secrets("{'802-11-wireless-security': {'psk': <'new'>}}");
        let sent = with_secrets(&wifi, &[secrets("{'802-11-wireless-security': {'psk': <'old'>}}")]).unwrap();
        assert_eq!(lookup(&sent, "802-11-wireless-security", "psk"), Some("new".to_variant()));
        let err = with_secrets(&wifi, &[secrets("{'802-1x': {'password': <'pw'>}}")]).unwrap_err();
        assert!(err.to_string().contains("802-1x"), "{err}");
    }

    #[test]
    fn a_timestamp_is_set_or_removed() {
        let stamped = apply_edit(&profile(), &change("connection", "timestamp", PropertyValue::U64(Some(1700000000)))).unwrap();
        assert_eq!(lookup(&stamped, "connection", "timestamp"), Some(1700000000u64.to_variant()));
        let removed = apply_edit(&stamped, &change("connection", "timestamp", PropertyValue::U64(None))).unwrap();
        assert_eq!(lookup(&removed, "connection", "timestamp"), None);
        assert_eq!(removed, profile());
    }

    #[test]
    fn a_value_of_the_wrong_type_is_refused() {
        let err = apply_edit(&profile(), &change("connection", "autoconnect", PropertyValue::Str(Some("yes".into())))).unwrap_err();
        assert!(err.to_string().contains("connection.autoconnect") && err.to_string().contains("'b'"), "{err}");
    }

    #[test]
    fn a_missing_setting_is_refused() {
        let err = apply_edit(&profile(), &change("802-11-wireless", "cloned-mac-address", PropertyValue::Str(None))).unwrap_err();
        assert!(err.to_string().contains("no '802-11-wireless' setting"), "{err}");
    }

    #[test]
    fn a_dict_of_another_type_is_refused() {
        let err = apply_edit(&"x".to_variant(), &ProfileEdit::default()).unwrap_err();
        assert!(err.to_string().contains("not 'a{sa{sv}}'"), "{err}");
        let user = Variant::parse(Some(VariantTy::new(SETTINGS_TYPE).unwrap()), "{'user': {'data': <'oops'>}}").unwrap();
        let mut edit = ProfileEdit::default();
        edit.user_data.insert("k".into(), Some("v".into()));
        assert!(apply_edit(&user, &edit).unwrap_err().to_string().contains("user.data"));
    }
}
