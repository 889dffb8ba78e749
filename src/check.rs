//! `nm-handover check`: the ways a handover breaks on a real laptop, judged
//! from facts the command gathers (no I/O here), each as ok / warning /
//! problem with one line of why and the command that fixes it.

use serde::Serialize;

/// How a finding weighs. Serialised in lower case (`--json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warning,
    Problem,
}

/// One finding. `check` is a stable identifier for scripts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub check: &'static str,
    /// The pair's wired profile, for findings about one pair.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pair: Option<String>,
    pub level: Level,
    pub message: String,
    /// A command that fixes it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// How systemd sees nm-dispatcher's unit, where systemd runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DispatcherUnit {
    /// No systemd: nm-dispatcher is started by D-Bus activation; whether its
    /// D-Bus service file exists.
    NoSystemd { activatable: bool },
    /// `systemctl is-enabled` of NetworkManager-dispatcher.service.
    Systemd(String),
}

/// A dispatcher entry point of the companion (`90-nm-handover` in a dispatcher directory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DispatchLink {
    pub path: String,
    /// `Err` says why nm-dispatcher would not run it (missing, not
    /// root-owned, writable by others, ...).
    pub state: Result<(), String>,
    /// Needed for this NetworkManager (link-up.d only on patched NM).
    pub needed: bool,
    /// nm-dispatcher queues it behind other requests it waits for: it does
    /// not link into no-wait.d.
    pub queued: bool,
}

/// What `check` looks at in one pair.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PairFacts {
    pub wired: String,
    pub backup: String,
    /// Why the pair cannot be read (a profile deleted, malformed data).
    pub broken: Option<String>,
    /// Why root does not act on the pair (see `crate::trust`), and whether
    /// the reason is a private profile (which `pair` refuses).
    pub untrusted: Option<(String, bool)>,
    pub backup_autoconnect: bool,
    /// The backup's cloned MAC and the wired link's MAC on the LAN.
    pub backup_cloned_mac: Option<String>,
    pub wired_mac: Option<String>,
    /// The client-id the backup is set to present, and the one the wired
    /// link sent (when it is connected and NM reports it).
    pub backup_client_id: Option<String>,
    pub wired_client_id_sent: Option<String>,
    pub carrier_wait_conf: bool,
    pub backup_is_wifi: bool,
    /// The DHCP hostname settings (`ipv4.dhcp-hostname`, ...) in which the
    /// backup differs from the wired profile.
    pub hostname_differs: Vec<String>,
    /// The wired link's LAN and the backup's, where the backup holds a lease
    /// of another network (see `crate::lan`).
    pub other_lan: Option<(String, String)>,
    /// The pair's links nm-handover refuses to touch, each with why (see
    /// `crate::trust::link_refusal`): a device NetworkManager no longer
    /// binds to the profile, one it does not manage, one of another kind.
    pub refused_links: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Facts {
    pub nm_version: Option<String>,
    pub patched: bool,
    pub dispatcher_unit: Option<DispatcherUnit>,
    pub links: Vec<DispatchLink>,
    /// `wifi.backend` in NetworkManager's configuration.
    pub wifi_backend: Option<String>,
    /// Other dispatcher scripts nm-dispatcher waits for (serialised with ours).
    pub other_waiting_scripts: Vec<String>,
    pub pairs: Vec<PairFacts>,
}

/// `name` as one word for a POSIX shell (in single quotes, a quote inside as
/// `'\''`), with control characters shown as `?`: profile names are chosen by
/// whoever made the profile, and a fix is pasted into a root shell.
pub fn shell_word(name: &str) -> String {
    let shown: String = name.chars().map(|c| if c.is_control() { '?' } else { c }).collect();
    format!("'{}'", shown.replace('\'', r"'\''"))
}

fn finding(check: &'static str, pair: Option<&str>, level: Level, message: String, fix: Option<String>) -> Finding {
    Finding { check, pair: pair.map(str::to_owned), level, message, fix }
}

pub fn judge(facts: &Facts) -> Vec<Finding> {
    let mut out = Vec::new();
    let version = facts.nm_version.as_deref().unwrap_or("unknown");
    out.push(if facts.patched {
        finding(
            "networkmanager",
            None,
            Level::Ok,
            format!("NetworkManager {version} dispatches link-up: the backup leaves the LAN before the wired DHCP client sends anything"),
            None,
        )
    } else {
        finding(
            "networkmanager",
            None,
            Level::Ok,
            format!(
                "NetworkManager {version} has not dispatched link-up since boot (stock, or patched and no link-up yet): \
                 leases are carried between the links' lease files, and a carrier watcher takes the backup off the LAN when the cable returns"
            ),
            None,
        )
    });
    match &facts.dispatcher_unit {
        Some(DispatcherUnit::Systemd(state)) => match state.as_str() {
            "enabled" | "enabled-runtime" | "static" | "alias" | "indirect" => {
                out.push(finding("dispatcher-service", None, Level::Ok, format!("NetworkManager-dispatcher.service is {state}"), None))
            }
            "masked" | "masked-runtime" => out.push(finding(
                "dispatcher-service",
                None,
                Level::Problem,
                "NetworkManager-dispatcher.service is masked: no dispatcher script runs, no handover happens".into(),
                Some("systemctl unmask NetworkManager-dispatcher.service && systemctl enable NetworkManager-dispatcher.service".into()),
            )),
            other => out.push(finding(
                "dispatcher-service",
                None,
                Level::Problem,
                format!("NetworkManager-dispatcher.service is {other}: NetworkManager may not start it (Fedora-family systems ship it disabled)"),
                Some("systemctl enable NetworkManager-dispatcher.service".into()),
            )),
        },
        Some(DispatcherUnit::NoSystemd { activatable: true }) => {
            out.push(finding("dispatcher-service", None, Level::Ok, "nm-dispatcher is started by D-Bus activation (no systemd)".into(), None))
        }
        Some(DispatcherUnit::NoSystemd { activatable: false }) => out.push(finding(
            "dispatcher-service",
            None,
            Level::Problem,
            "no D-Bus service file for nm-dispatcher: nothing starts it, no handover happens".into(),
            Some("reinstall NetworkManager (its package ships org.freedesktop.nm_dispatcher.service)".into()),
        )),
        None => {}
    }
    for link in &facts.links {
        match (&link.state, link.needed) {
            (Ok(()), _) => out.push(finding("dispatcher-link", None, Level::Ok, format!("{} is run by nm-dispatcher", link.path), None)),
            (Err(why), true) => out.push(finding(
                "dispatcher-link",
                None,
                Level::Problem,
                format!("{}: {why}; nm-dispatcher skips it silently", link.path),
                Some("meson install -C build (or fix the owner and mode: root-owned, not writable by group or others)".into()),
            )),
            (Err(_), false) => {}
        }
    }
    if facts.wifi_backend.as_deref() == Some("iwd") {
        out.push(finding(
            "wifi-backend",
            None,
            Level::Problem,
            "NetworkManager uses the iwd Wi-Fi backend, which does not apply cloned-mac-address: the Wi-Fi would present its own MAC and get another address"
                .into(),
            Some("set wifi.backend=wpa_supplicant in a NetworkManager.conf [device] section, then systemctl restart NetworkManager".into()),
        ));
    }
    if !facts.other_waiting_scripts.is_empty() {
        let scripts = facts.other_waiting_scripts.join(", ");
        // nm-dispatcher runs requests with scripts it must wait for one at a
        // time. The companion's entries (dispatcher.d and link-up.d) link into
        // no-wait.d as installed, so neither a pull nor a re-plug's link-up
        // queues behind these (tests/faults.rs, tests/patched.rs).
        out.push(match facts.links.iter().find(|l| l.needed && l.state.is_ok() && l.queued) {
            Some(link) => finding(
                "other-scripts",
                None,
                Level::Warning,
                format!("{} is queued behind the requests of other scripts nm-dispatcher waits for, for as long as they take: {scripts}", link.path),
                Some(format!("link it through no-wait.d, as the package installs it: ln -sfn ../no-wait.d/90-nm-handover {}", link.path)),
            ),
            None => finding(
                "other-scripts",
                None,
                Level::Ok,
                format!("other scripts nm-dispatcher waits for ({scripts}) delay no handover: the companion's entries are in no-wait.d"),
                None,
            ),
        });
    }
    if facts.pairs.is_empty() {
        out.push(finding("pairs", None, Level::Warning, "no pairs: nothing is handed over".into(), Some("nm-handover pair WIRED BACKUP".into())));
    }
    for pair in &facts.pairs {
        judge_pair(pair, &mut out);
    }
    out
}

fn judge_pair(p: &PairFacts, out: &mut Vec<Finding>) {
    let pair = Some(p.wired.as_str());
    let repair = format!("nm-handover unpair {} && nm-handover pair {} {}", shell_word(&p.wired), shell_word(&p.wired), shell_word(&p.backup));
    if let Some(why) = &p.broken {
        out.push(finding("pair", pair, Level::Problem, format!("the pair is broken: {why}"), Some(format!("nm-handover unpair {}", shell_word(&p.wired)))));
        return;
    }
    if let Some((why, private)) = &p.untrusted {
        let fix = if *private {
            format!("nm-handover unpair {} (as root; a private profile cannot be paired: pair two system profiles)", shell_word(&p.wired))
        } else {
            format!(
                "nm-handover pair {} {} (as root: records the pair, with the devices its user data should name)",
                shell_word(&p.wired),
                shell_word(&p.backup)
            )
        };
        out.push(finding("trust", pair, Level::Problem, format!("'{}' <-> '{}': nm-handover does nothing for this pair: {why}", p.wired, p.backup), Some(fix)));
        return;
    }
    out.push(finding("pair", pair, Level::Ok, format!("'{}' <-> '{}'", p.wired, p.backup), None));
    if let Some((wired_lan, backup_lan)) = &p.other_lan {
        out.push(finding(
            "lan",
            pair,
            Level::Warning,
            format!("not the same LAN: '{}' holds a lease of {backup_lan}, the wired link had one of {wired_lan}: the address could not be kept (connected as plain NetworkManager would be)", p.backup),
            Some(format!("none needed where this is another network; for the office, give '{}' the SSID of the wired link's LAN", p.backup)),
        ));
    }
    for refused in &p.refused_links {
        out.push(finding(
            "link",
            pair,
            Level::Problem,
            format!("nm-handover will not touch {refused}: a handover there does only what NetworkManager does by itself"),
            Some(format!("{repair} (as root: records the devices NetworkManager binds the profiles to now)")),
        ));
    }
    if p.backup_autoconnect {
        out.push(finding(
            "backup-autoconnect",
            pair,
            Level::Problem,
            format!("'{}' connects automatically: it races the wired link with the same MAC and client-id", p.backup),
            Some(format!("nmcli connection modify {} connection.autoconnect no", shell_word(&p.backup))),
        ));
    }
    let same_mac = match (&p.backup_cloned_mac, &p.wired_mac) {
        (Some(b), Some(w)) => b.eq_ignore_ascii_case(w),
        _ => false,
    };
    if !same_mac {
        out.push(finding(
            "backup-mac",
            pair,
            Level::Problem,
            format!(
                "'{}' presents {} on the LAN, the wired link {}: the DHCP server sees another client{}",
                p.backup,
                p.backup_cloned_mac.as_deref().unwrap_or("its own (or a random) MAC"),
                p.wired_mac.as_deref().unwrap_or("an unknown MAC"),
                if p.backup_is_wifi { " (a Wi-Fi MAC randomisation setting?)" } else { "" }
            ),
            Some(repair.clone()),
        ));
    }
    if let Some(sent) = &p.wired_client_id_sent {
        // `mac` (NM's default for an unset value, unless NetworkManager.conf
        // sets another) presents 01:<MAC>: the cloned MAC makes it equal.
        let as_mac = p.wired_mac.as_deref().is_some_and(|mac| sent.eq_ignore_ascii_case(&format!("01:{mac}")));
        let presents_mac = matches!(p.backup_client_id.as_deref(), None | Some("mac")) && same_mac;
        if p.backup_client_id.as_deref().is_some_and(|b| b.eq_ignore_ascii_case(sent)) || (as_mac && presents_mac) {
            out.push(finding("client-id", pair, Level::Ok, format!("both links present client-id {sent}"), None));
        } else {
            out.push(finding(
                "client-id",
                pair,
                Level::Problem,
                format!(
                    "the wired link sent client-id {sent}, '{}' is set to present {}: the DHCP server sees another client",
                    p.backup,
                    p.backup_client_id.as_deref().unwrap_or("NetworkManager's default")
                ),
                Some(repair),
            ));
        }
    }
    if !p.hostname_differs.is_empty() {
        out.push(finding(
            "hostname",
            pair,
            Level::Warning,
            format!(
                "'{}' sends another hostname than the wired link ({} differ): the address is kept, but DNS updates keyed on the name do not follow it",
                p.backup,
                p.hostname_differs.join(", ")
            ),
            Some(format!("nm-handover pair {} {}", shell_word(&p.wired), shell_word(&p.backup))),
        ));
    }
    if !p.carrier_wait_conf {
        out.push(finding(
            "carrier-wait",
            pair,
            Level::Warning,
            "no carrier-wait snippet for the wired device: NetworkManager waits 6 s after the cable is pulled before anything happens".into(),
            Some(format!("nm-handover unpair {} && nm-handover pair {} {}", shell_word(&p.wired), shell_word(&p.wired), shell_word(&p.backup))),
        ));
    }
}

/// The exit status `check` reports: non-zero when any problem was found.
pub fn has_problem(findings: &[Finding]) -> bool {
    findings.iter().any(|f| f.level == Level::Problem)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good_pair() -> PairFacts {
        PairFacts {
            wired: "Office LAN".into(),
            backup: "Office Wi-Fi".into(),
            backup_cloned_mac: Some("52:54:00:AA:BB:CC".into()),
            wired_mac: Some("52:54:00:aa:bb:cc".into()),
            backup_client_id: None,
            wired_client_id_sent: Some("01:52:54:00:aa:bb:cc".into()),
            carrier_wait_conf: true,
            backup_is_wifi: true,
            ..PairFacts::default()
        }
    }

    fn good() -> Facts {
        Facts {
            nm_version: Some("1.42.4".into()),
            dispatcher_unit: Some(DispatcherUnit::Systemd("enabled".into())),
            links: vec![DispatchLink { path: "/usr/lib/NetworkManager/dispatcher.d/90-nm-handover".into(), state: Ok(()), needed: true, queued: false }],
            pairs: vec![good_pair()],
            ..Facts::default()
        }
    }

    fn problems(facts: &Facts) -> Vec<&'static str> {
        judge(facts).into_iter().filter(|f| f.level != Level::Ok).map(|f| f.check).collect()
    }

    #[test]
    fn a_link_nm_handover_refuses_is_a_problem_with_the_fix() {
        let mut facts = good();
        facts.pairs[0].refused_links = vec!["wlan0 of 'Office Wi-Fi': NetworkManager does not bind the profile to it".into()];
        let found = judge(&facts);
        let link = found.iter().find(|f| f.check == "link").expect("a link finding");
        assert_eq!(link.level, Level::Problem);
        assert!(link.message.contains("wlan0 of 'Office Wi-Fi'") && link.fix.as_deref().is_some_and(|f| f.contains("nm-handover pair")), "{link:?}");
        assert!(!judge(&good()).iter().any(|f| f.check == "link"));
    }

    #[test]
    fn a_correct_setup_is_clean() {
        assert_eq!(problems(&good()), Vec::<&str>::new());
        assert!(!has_problem(&judge(&good())));
    }

    #[test]
    fn a_profile_name_in_a_fix_is_one_shell_word() {
        assert_eq!(shell_word("Office LAN"), "'Office LAN'");
        assert_eq!(shell_word("x'; reboot; echo '"), r"'x'\''; reboot; echo '\'''");
        assert_eq!(shell_word("a\nb\u{1b}[2J"), "'a?b?[2J'");
        let mut facts = good();
        facts.pairs[0].wired = "x'; reboot; echo '".into();
        facts.pairs[0].untrusted = Some(("private".into(), true));
        let fix = judge(&facts).into_iter().find(|f| f.check == "trust").and_then(|f| f.fix).unwrap();
        assert!(fix.starts_with(r"nm-handover unpair 'x'\''; reboot; echo '\''' "), "{fix}");
    }

    #[test]
    fn each_broken_thing_is_found_with_a_fix() {
        type Breakage = Box<dyn Fn(&mut Facts)>;
        let cases: Vec<(&[&str], Breakage)> = vec![
            (&["dispatcher-service"], Box::new(|f| f.dispatcher_unit = Some(DispatcherUnit::Systemd("masked".into())))),
            (&["dispatcher-service"], Box::new(|f| f.dispatcher_unit = Some(DispatcherUnit::Systemd("disabled".into())))),
            (&["dispatcher-service"], Box::new(|f| f.dispatcher_unit = Some(DispatcherUnit::NoSystemd { activatable: false }))),
            (&["dispatcher-link"], Box::new(|f| f.links[0].state = Err("writable by group or others".into()))),
            (&["wifi-backend"], Box::new(|f| f.wifi_backend = Some("iwd".into()))),
            (
                &["other-scripts"],
                Box::new(|f| {
                    f.patched = true;
                    f.links.push(link_up_link(true));
                    f.other_waiting_scripts = vec!["50-vpn-check".into()]
                }),
            ),
            (&["backup-autoconnect"], Box::new(|f| f.pairs[0].backup_autoconnect = true)),
            (&["backup-mac", "client-id"], Box::new(|f| f.pairs[0].backup_cloned_mac = Some("random".into()))),
            (&["client-id"], Box::new(|f| f.pairs[0].backup_client_id = Some("stable".into()))),
            (&["client-id"], Box::new(|f| f.pairs[0].wired_client_id_sent = Some("ff:12:34:56:78:00:01".into()))),
            (&["hostname"], Box::new(|f| f.pairs[0].hostname_differs = vec!["ipv4.dhcp-hostname".into()])),
            (&["carrier-wait"], Box::new(|f| f.pairs[0].carrier_wait_conf = false)),
            (
                &["lan"],
                Box::new(|f| f.pairs[0].other_lan = Some(("198.18.0.0/24 (DHCP server 198.18.0.1)".into(), "198.19.0.0/24 (DHCP server 198.19.0.1)".into()))),
            ),
            (&["pair"], Box::new(|f| f.pairs[0].broken = Some("its peer profile is gone".into()))),
            (&["trust"], Box::new(|f| f.pairs[0].untrusted = Some(("no record of this pair written by root".into(), false)))),
            (&["trust"], Box::new(|f| f.pairs[0].untrusted = Some(("'Office LAN' is a private profile".into(), true)))),
            (&["pairs"], Box::new(|f| f.pairs.clear())),
        ];
        for (checks, breaks) in cases {
            let mut facts = good();
            breaks(&mut facts);
            let findings = judge(&facts);
            let found: Vec<&Finding> = findings.iter().filter(|f| f.level != Level::Ok).collect();
            // (A backup with another MAC also presents another mac-based client-id.)
            assert_eq!(found.iter().map(|f| f.check).collect::<Vec<_>>(), checks, "{findings:#?}");
            assert!(found.iter().all(|f| f.fix.as_deref().is_some_and(|fix| !fix.is_empty())), "{checks:?}: no fix given");
        }
    }

    #[test]
    fn a_literal_client_id_equal_to_the_one_sent_is_clean() {
        let mut facts = good();
        facts.pairs[0].backup_client_id = Some("01:52:54:00:AA:BB:CC".into());
        assert_eq!(problems(&facts), Vec::<&str>::new());
        facts.pairs[0].backup_client_id = Some("mac".into());
        assert_eq!(problems(&facts), Vec::<&str>::new());
    }

    #[test]
    fn a_link_up_link_is_needed_only_on_patched_nm() {
        let mut facts = good();
        facts.links.push(DispatchLink {
            path: "/usr/lib/NetworkManager/dispatcher.d/link-up.d/90-nm-handover".into(),
            state: Err("missing".into()),
            needed: false,
            queued: false,
        });
        assert_eq!(problems(&facts), Vec::<&str>::new());
        facts.links[1].needed = true;
        assert_eq!(problems(&facts), ["dispatcher-link"]);
    }

    #[test]
    fn other_waiting_scripts_delay_only_an_entry_outside_no_wait() {
        let mut facts = good();
        facts.other_waiting_scripts = vec!["50-vpn-check".into()];
        facts.patched = true;
        facts.links.push(link_up_link(false));
        assert_eq!(problems(&facts), Vec::<&str>::new());
        assert!(judge(&facts).iter().any(|f| f.check == "other-scripts" && f.message.contains("50-vpn-check")));
        facts.links[1].queued = true;
        assert_eq!(problems(&facts), ["other-scripts"]);
    }

    /// The link-up.d entry of a patched NetworkManager, through no-wait.d or not.
    fn link_up_link(queued: bool) -> DispatchLink {
        DispatchLink { path: "/usr/lib/NetworkManager/dispatcher.d/link-up.d/90-nm-handover".into(), state: Ok(()), needed: true, queued }
    }

    #[test]
    fn json_field_names_are_stable() {
        let text = serde_json::to_string(&judge(&good())[0]).unwrap();
        assert!(text.starts_with(r#"{"check":"networkmanager","level":"ok","message":"#), "{text}");
    }
}
