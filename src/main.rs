//! nm-handover: keep one IPv4 address across a wired <-> backup (Wi-Fi)
//! handover with NetworkManager. Runs as an nm-dispatcher script
//! (`nm-handover IFACE ACTION`) and as a command for pairing profiles.

#![deny(unsafe_code)]

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tracing::{debug, error};

use nm_handover::{check, commands, dispatch, error, pairing, supervise, sys};

#[derive(Parser)]
#[command(
    name = "nm-handover",
    version,
    about = "Keep one IPv4 address when a laptop moves between cable and Wi-Fi on the same LAN",
    long_about = "Keep one IPv4 address when a laptop moves between cable and Wi-Fi on the same LAN.\n\n\
        When the paired wired link loses carrier, the backup profile is activated with the wired MAC \
        address, so the DHCP server hands out the same lease and TCP sessions survive. When the cable \
        returns, the backup link is taken down and the wired link asks for the same address.\n\n\
        nm-dispatcher runs it for you (through nm-handover-dispatch, with NM_DISPATCHER_ACTION set); \
        `nm-handover dispatch IFACE ACTION` handles one event by hand. The other commands are for people.",
    after_help = "Logs go to standard error (the journal, under nm-dispatcher). Set NM_HANDOVER_LOG=debug for more."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Pair a wired profile with a backup profile (Wi-Fi or Ethernet) and prepare the backup.
    ///
    /// Stores the pairing in both profiles' user data, sets the backup's cloned MAC address to the
    /// wired MAC, gives it the DHCP client-id the wired link presents, turns the backup's autoconnect off, and
    /// shortens NetworkManager's carrier-loss wait for the wired device. Prints every change;
    /// `unpair` undoes all of them.
    Pair {
        /// The wired profile (name or UUID).
        wired: String,
        /// The backup profile (name or UUID).
        backup: String,
        /// The wired device, when the profile does not name one.
        #[arg(long, value_name = "IFACE")]
        wired_device: Option<String>,
        /// The backup device, when the profile does not name one.
        #[arg(long, value_name = "IFACE")]
        backup_device: Option<String>,
        /// How long NetworkManager waits after the wired carrier is lost before acting.
        #[arg(long, value_name = "MS", default_value_t = pairing::DEFAULT_CARRIER_WAIT_MS,
              value_parser = clap::value_parser!(u32).range(0..=60_000))]
        carrier_wait_ms: u32,
        /// Do not copy DHCP leases between the two links' lease files (patched NM does not need it).
        #[arg(long)]
        no_lease_carry: bool,
        /// On stock NetworkManager, start no carrier watcher with the backup (nm-handover-watch takes the
        /// backup off the LAN the moment the cable returns, before the wired DHCP client sends anything).
        #[arg(long)]
        no_carrier_watch: bool,
        /// Keep the backup Wi-Fi associated while the cable is in, silent (no address, no ARP
        /// replies, IPv6 off on it), and move the address onto it the moment the cable goes:
        /// no scan, association or DHCP at a pull. The radio stays on while docked.
        #[arg(long)]
        standby: bool,
        /// Pair as given even where the profiles look swapped (the "backup" is the active one, or
        /// connects automatically while the "wired" one does not).
        #[arg(long)]
        force: bool,
    },
    /// Undo `pair` for the pair a profile (either side) belongs to.
    Unpair {
        /// Either profile of the pair (name or UUID).
        profile: String,
    },
    /// Show the pairs, which side is active, addresses, client-ids, and the NetworkManager mode.
    Status {
        /// Print JSON (schema in nm-handover(8)) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Check what makes handovers fail on a real system; changes nothing.
    ///
    /// Each finding is ok, warning or problem, with why and the command that fixes it. Exits 1
    /// when any problem is found.
    Check {
        /// Only this pair (either profile, by name or UUID).
        pair: Option<String>,
        /// Print JSON (schema in nm-handover(8)) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script (bash, zsh or fish) to standard output.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Bring every pair to its proper state now (cable out: backup up; cable in: backup down).
    Reconcile {
        /// How long to wait for NetworkManager to be running first (the dispatcher's start-up
        /// events arrive while it is still coming up).
        #[arg(long, value_name = "SECS", default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=300))]
        wait_for_nm_secs: u16,
    },
    /// Watch NetworkManager between dispatcher events and reconcile the pairs when it changes.
    ///
    /// One per machine; started by the dispatcher when NetworkManager starts, and by `pair`.
    /// Sleeps until NetworkManager reports a change (the backup's network back in range, a device
    /// ready late at boot or after a resume), then reconciles every pair under the handover lock.
    /// Exits when NetworkManager stops or no pair is left.
    Supervise {
        /// How long to wait for NetworkManager to be running first.
        #[arg(long, value_name = "SECS", default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=300))]
        wait_for_nm_secs: u16,
    },
    /// Handle one dispatcher event by hand, as nm-dispatcher has it handled (it runs nm-handover-dispatch IFACE ACTION).
    Dispatch {
        /// The interface nm-dispatcher passes.
        iface: OsString,
        /// The action nm-dispatcher passes (up, down, dhcp4-change, link-up, ...).
        action: OsString,
    },
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("NM_HANDOVER_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let format = tracing_subscriber::fmt::format().with_ansi(false).with_target(false).with_timer(WallClock);
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).event_format(WithPriority(format)).init();
}

/// A line format with the line's journal priority in front where stderr is
/// a journal stream (see [`sys::stderr`]).
struct WithPriority<F>(F);

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for WithPriority<F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        writer.write_str(sys::stderr::line_prefix(*event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

/// Each line's time as NetworkManager writes it in its own log lines
/// (`[seconds.fraction]` since the epoch), so that our lines and NM's line
/// up, in the journal as in a lab's files.
struct WallClock;

impl tracing_subscriber::fmt::time::FormatTime for WallClock {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        write!(w, "[{}.{:04}]", now.as_secs(), now.subsec_micros() / 100)
    }
}

fn run_dispatch(args: Vec<OsString>) -> ExitCode {
    // nm-dispatcher hands every script's stderr to the journal unlabelled:
    // name ourselves and the event on every line.
    let label = |i: usize| args.get(i).map(|a| a.to_string_lossy().into_owned()).unwrap_or_default();
    let span = tracing::info_span!("nm-handover", iface = %label(0), action = %label(1));
    let _entered = span.enter();
    match dispatch::run(args.clone(), std::env::vars_os()) {
        Ok(outcome) => {
            debug!(?outcome);
            ExitCode::SUCCESS
        }
        Err(error::Error::Nm(sys::libnm::NmError::NotRunning)) => {
            // NM dispatches connectivity-change while it shuts down.
            tracing::warn!("NetworkManager is not running (any more): event skipped");
            ExitCode::SUCCESS
        }
        Err(err) => {
            error!("{err}");
            ExitCode::FAILURE
        }
    }
}

/// The commands that work on a connection to NetworkManager; `Ok(true)`
/// when `check` found a problem.
fn run_command(nm: &sys::libnm::Nm, command: Command) -> Result<bool, error::Error> {
    match command {
        Command::Pair { wired, backup, wired_device, backup_device, carrier_wait_ms, no_lease_carry, no_carrier_watch, standby, force } => {
            let args = commands::PairArgs {
                wired: &wired,
                backup: &backup,
                wired_device: wired_device.as_deref(),
                backup_device: backup_device.as_deref(),
                carrier_wait_ms,
                lease_carry: !no_lease_carry,
                carrier_watch: !no_carrier_watch,
                standby,
                force,
            };
            commands::pair(nm, &args).map(|lines| print_lines(&lines)).map(|()| false)
        }
        Command::Unpair { profile } => commands::unpair(nm, &profile).map(|lines| print_lines(&lines)).map(|()| false),
        Command::Status { json } => {
            let status = commands::status(nm);
            if json {
                print_json(&status);
            } else {
                print_lines(&status.lines());
            }
            Ok(false)
        }
        Command::Check { pair, json } => commands::check(nm, pair.as_deref()).map(|findings| {
            if json {
                print_json(&findings);
            } else {
                for f in &findings {
                    let level = match f.level {
                        check::Level::Ok => "ok",
                        check::Level::Warning => "warning",
                        check::Level::Problem => "PROBLEM",
                    };
                    let pair = f.pair.as_deref().map(|p| format!(" ['{p}']")).unwrap_or_default();
                    println!("{level:<8} {}{pair}: {}", f.check, f.message);
                    if let (Some(fix), true) = (&f.fix, f.level != check::Level::Ok) {
                        println!("         fix: {fix}");
                    }
                }
            }
            check::has_problem(&findings)
        }),
        Command::Reconcile { .. } | Command::Supervise { .. } | Command::Dispatch { .. } | Command::Completions { .. } => unreachable!("handled in main"),
    }
}

/// `reconcile`: NM dispatches the events that start it while it is still
/// coming up (not yet on D-Bus) and while it shuts down, so it first waits,
/// a bounded time, for NM to be there; then takes the handover lock, and only
/// then reads NM's state.
fn reconcile(wait_for_nm: Duration) -> Result<(), error::Error> {
    drop(connect_when_running(wait_for_nm)?);
    let _lock = sys::lock::FileLock::acquire(Path::new(sys::paths::LOCK_PATH), Duration::from_secs(10))?;
    let nm = sys::libnm::Nm::connect()?;
    supervise::reconcile(&nm).map(|n| println!("{n} pair(s) needed action"))
}

/// A client of NetworkManager, once it runs (waiting up to `wait_for_nm`).
fn connect_when_running(wait_for_nm: Duration) -> Result<sys::libnm::Nm, error::Error> {
    let started = std::time::Instant::now();
    loop {
        match sys::libnm::Nm::connect() {
            Ok(nm) => return Ok(nm),
            Err(sys::libnm::NmError::NotRunning) if started.elapsed() < wait_for_nm => std::thread::sleep(Duration::from_millis(250)),
            Err(err) => return Err(err.into()),
        }
    }
}

/// `supervise` (see [`supervise::supervise`]).
fn supervise(wait_for_nm: Duration) -> Result<(), error::Error> {
    if let Err(e) = sys::lower_priority() {
        tracing::warn!("supervisor: cannot lower its CPU priority: {e}");
    }
    let Some(lock) = supervise::take_lock()? else {
        debug!("supervisor: {:?}", supervise::Ended::AlreadyRunning);
        return Ok(());
    };
    // (One client: the supervisor reads NM's state without the handover lock anyway.)
    let nm = connect_when_running(wait_for_nm)?;
    supervise::supervise(&nm, lock).map(|ended| debug!("supervisor: {ended:?}"))
}

fn print_json(value: &impl serde::Serialize) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(e) => eprintln!("{}nm-handover: cannot write JSON: {e}", sys::stderr::error_prefix()),
    }
}

fn print_lines(lines: &[String]) {
    for line in lines {
        println!("{line}");
    }
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    // nm-dispatcher calls scripts with exactly two arguments and sets
    // NM_DISPATCHER_ACTION; take that path before anything else is loaded.
    if args.len() == 3 && std::env::var_os("NM_DISPATCHER_ACTION").is_some() {
        init_logging();
        return run_dispatch(args[1..].to_vec());
    }
    let cli = Cli::parse_from(args);
    init_logging();
    if let Command::Dispatch { iface, action } = cli.command {
        return run_dispatch(vec![iface, action]);
    }
    if let Command::Completions { shell } = cli.command {
        clap_complete::generate(shell, &mut <Cli as clap::CommandFactory>::command(), "nm-handover", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    let result = match cli.command {
        // It connects to NM itself, after waiting for it and taking the lock.
        Command::Reconcile { wait_for_nm_secs } => reconcile(Duration::from_secs(wait_for_nm_secs.into())).map(|()| false),
        Command::Supervise { wait_for_nm_secs } => supervise(Duration::from_secs(wait_for_nm_secs.into())).map(|()| false),
        command => sys::libnm::Nm::connect().map_err(error::Error::from).and_then(|nm| run_command(&nm, command)),
    };
    match result {
        Ok(false) => ExitCode::SUCCESS,
        Ok(true) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("{}nm-handover: {err}", sys::stderr::error_prefix());
            ExitCode::FAILURE
        }
    }
}
