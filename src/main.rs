//! The `mqtt-lab` command: the window with the broker (default), the broker alone
//! (`--headless`), and the `user` subcommands.

use std::io::{BufRead, IsTerminal, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

use mqtt_lab::broker::config::{OnStuck, TopicsMode};
use mqtt_lab::broker::files;
use mqtt_lab::broker::mdns::{self, MdnsConfig};
use mqtt_lab::broker::users::Users;
use mqtt_lab::broker::{Broker, Config, topic_list};
use mqtt_lab::paths;

/// jemalloc rather than the system's allocator: it keeps each size of allocation in pages of its
/// own, so the memory of connections that leave, or that park (see `broker/parking.rs`), is
/// whole pages it can give back. glibc's malloc held it, mixed with what stays, and an idle
/// broker kept the memory of its busiest moment.
#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read at its start: one arena (a thread's cache serves most
/// allocations; more arenas only hold more free memory), and free pages given back within a
/// second by a thread of its own, so that an idle broker shrinks too. Linux only: jemalloc has
/// no background thread on macOS (it would not start), and does not build with MSVC.
#[cfg(target_os = "linux")]
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: &[u8; 70] =
    b"narenas:1,background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

/// A desktop MQTT 3.1.1 broker for lab demos and classrooms.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Args, Debug, Clone)]
struct RunArgs {
    /// Run the broker alone, without a window; SIGINT/SIGTERM stop it.
    #[arg(long)]
    headless: bool,
    /// Address to listen on (0.0.0.0 serves a lab network).
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    bind: IpAddr,
    /// TCP port; 0 picks a free one.
    #[arg(short, long, default_value_t = 1883)]
    port: u16,
    /// Also serve MQTT over WebSocket on this port (ws://ADDR:PORT/mqtt, for browser pages);
    /// 0 picks a free one.
    #[arg(long, value_name = "PORT")]
    ws_port: Option<u16>,
    /// Also serve MQTT over TLS on this port (mqtts://, 8883 by convention); 0 picks a free one.
    #[arg(long, value_name = "PORT")]
    tls_port: Option<u16>,
    /// Also serve MQTT over secure WebSocket on this port (wss://ADDR:PORT/mqtt).
    #[arg(long, value_name = "PORT")]
    wss_port: Option<u16>,
    /// The server's certificate chain (PEM) for the TLS ports [default: one signed by a local CA
    /// the app makes in the config folder]
    #[arg(long, value_name = "FILE", requires = "key")]
    cert: Option<PathBuf>,
    /// The server certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
    /// Check client certificates against these CA certificates (PEM).
    #[arg(long, value_name = "FILE")]
    cafile: Option<PathBuf>,
    /// Refuse TLS clients without a certificate signed by --cafile.
    #[arg(long, requires = "cafile")]
    require_certificate: bool,
    /// Do not advertise the listeners on the local network (mDNS/DNS-SD). They are advertised
    /// only when bound beyond loopback (--bind 0.0.0.0, say).
    #[arg(long)]
    no_mdns: bool,
    /// The name browsers on the network list the broker under [default: "mqtt-lab on HOST"]
    #[arg(long, value_name = "NAME", conflicts_with = "no_mdns", value_parser = mdns_name)]
    mdns_name: Option<String>,
    /// Write every packet in and out to this pcap file (Wireshark, tshark -Y mqtt), after TLS
    /// and WebSocket framing; passwords are left out.
    #[arg(long, value_name = "FILE.pcap")]
    trace: Option<PathBuf>,
    /// Where retained messages and persistent sessions are kept across restarts and crashes
    /// (state.sqlite3) [default: the config folder]
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Keep retained messages and persistent sessions in memory only: a restart forgets them.
    #[arg(long, conflicts_with = "data_dir")]
    no_persistence: bool,
    /// The topic list [default: topics.ron in the config folder]
    #[arg(long, value_name = "FILE")]
    topics: Option<PathBuf>,
    /// Which topics exist: strict, only what the topic list holds (its names, and what its
    /// patterns such as devices/+/temperature match); open, any topic a client uses (those not
    /// on the list go when the last client using them leaves).
    #[arg(long, value_name = "MODE", default_value = "strict")]
    topics_mode: TopicsModeArg,
    /// Topics that may exist at once without being on the list (open mode, patterns); beyond
    /// it, PUBLISHes to new ones are dropped and counted.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    max_unlisted_topics: usize,
    /// The users file [default: users.ron in the config folder]
    #[arg(long, value_name = "FILE")]
    users: Option<PathBuf>,
    /// The bridges to other brokers [default: bridges.ron in the config folder]
    #[arg(long, value_name = "FILE")]
    bridges: Option<PathBuf>,
    /// Serve MQTT-SN 1.2 on this UDP port (sensor nodes without TCP) [default: 1883 in the
    /// window, off with --headless]; 0 picks a free port
    #[arg(long, value_name = "PORT")]
    sn_port: Option<u16>,
    /// No MQTT-SN gateway in the window either
    #[arg(long, conflicts_with = "sn_port")]
    no_sn: bool,
    /// MQTT-SN predefined topic ids, as RON: (topics: {1: "lab/temperature"})
    #[arg(long, value_name = "FILE")]
    sn_predefined: Option<PathBuf>,
    /// Send MQTT-SN ADVERTISE to this address (a broadcast or multicast ADDR:PORT) every 60 s
    #[arg(long, value_name = "ADDR:PORT")]
    sn_advertise: Option<SocketAddr>,
    /// MQTT-SN clients connected at once, at most
    #[arg(long, value_name = "N", default_value_t = 1000)]
    sn_max_clients: usize,
    /// Seconds between $SYS updates; 0 turns them off.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    sys_interval: u64,
    /// Seconds a plain TCP connection is quiet before it gives up its task and waits with the
    /// other idle ones (they then cost less than half the memory); 0: never.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    park_after: f64,
    /// Seconds a new socket has to send CONNECT.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    connect_timeout: u64,
    /// Unacknowledged QoS 1/2 messages in flight per client.
    #[arg(long, value_name = "N", default_value_t = 20)]
    max_inflight: usize,
    /// Messages queued per client behind the in-flight window (online or offline); beyond it
    /// (or --max-queued-bytes) they are dropped and counted.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    max_queued: usize,
    /// Bytes (topics and payloads) queued per client.
    #[arg(long, value_name = "BYTES", default_value_t = 64 * 1024 * 1024)]
    max_queued_bytes: usize,
    /// Seconds a subscriber's queue may stand still while it holds publishers back; then it is
    /// stuck and holds no one back any more.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    stall_timeout: f64,
    /// What becomes of a stuck subscriber: it keeps its connection and what overflows its queue
    /// is dropped, or it is disconnected.
    #[arg(long, value_name = "WHAT", default_value = "drop")]
    on_stuck: OnStuckArg,
    /// Largest packet a client may send, in bytes: the whole packet, fixed header included.
    #[arg(long, value_name = "BYTES", default_value_t = 16 * 1024 * 1024)]
    max_packet_size: usize,
    /// MQTT 5: topic aliases a client may set (Mosquitto's default; 0 turns them off).
    #[arg(long, value_name = "N", default_value_t = 10)]
    max_topic_alias: u16,
    /// MQTT 5: send aliased topics to clients that announce a Topic Alias Maximum (off by
    /// default: mosquitto_sub 2.0.11 and paho-mqtt 2.x announce one and cannot read them).
    #[arg(long)]
    send_topic_aliases: bool,
    /// Connections served at once.
    #[arg(long, value_name = "N", default_value_t = 20_000)]
    max_connections: usize,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy)]
enum TopicsModeArg {
    Strict,
    Open,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy)]
enum OnStuckArg {
    Drop,
    Disconnect,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Manage the users who may log in.
    #[command(subcommand)]
    User(UserCmd),
}

#[derive(Subcommand, Debug)]
enum UserCmd {
    /// Add a user, or set the password (and e-mail) of an existing one.
    Add {
        name: String,
        #[arg(long)]
        email: Option<String>,
        /// The password; read from standard input when not given.
        #[arg(long)]
        password: Option<String>,
        /// The users file [default: users.ron in the config folder]
        #[arg(long, value_name = "FILE")]
        users: Option<PathBuf>,
    },
    /// Remove a user.
    Remove {
        name: String,
        #[arg(long, value_name = "FILE")]
        users: Option<PathBuf>,
    },
    /// List the users.
    List {
        #[arg(long, value_name = "FILE")]
        users: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Cmd::User(cmd)) => user_command(cmd),
        None => run_broker(cli.run),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mqtt-lab: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// The broker's config from the command line and the files; `topics` overrides `--topics`
/// (the window passes the list it opened last).
fn broker_config(args: &RunArgs, topics: Option<&Path>) -> anyhow::Result<Config> {
    let topics_path = paths::topics_file(topics.or(args.topics.as_deref()))?;
    let users_path = paths::users_file(args.users.as_deref())?;
    let topics = topic_list::load(&topics_path)?;
    let users = Users::load(&users_path)?;
    let bridges_path = paths::bridges_file(args.bridges.as_deref())?;
    let bridges = mqtt_lab::broker::bridge::config::load(&bridges_path)?;
    let sn_port = args
        .sn_port
        .or((!args.headless && !args.no_sn).then_some(1883));
    let sn = match sn_port {
        Some(port) => Some(mqtt_lab::broker::sn::SnConfig {
            listen: SocketAddr::new(args.bind, port),
            predefined: match &args.sn_predefined {
                Some(p) => mqtt_lab::broker::sn::predefined::load(p)?,
                None => Default::default(),
            },
            advertise: args.sn_advertise.map(|a| (a, Duration::from_secs(60))),
            max_clients: args.sn_max_clients.max(1),
            retry: Duration::from_secs(10),
        }),
        None => None,
    };
    let (tls, tls_ca) = if args.tls_port.is_some() || args.wss_port.is_some() {
        let (config, ca) = tls_config(args)?;
        (Some(config), ca)
    } else {
        (None, None)
    };
    tracing::info!(topics = %topics_path.display(), count = topics.len(), "topic list loaded");
    tracing::info!(users = %users_path.display(), count = users.users.len(), "users loaded");
    tracing::info!(bridges = %bridges_path.display(), count = bridges.len(), "bridges loaded");
    Ok(Config {
        listen: SocketAddr::new(args.bind, args.port),
        ws_listen: args.ws_port.map(|p| SocketAddr::new(args.bind, p)),
        tls_listen: args.tls_port.map(|p| SocketAddr::new(args.bind, p)),
        wss_listen: args.wss_port.map(|p| SocketAddr::new(args.bind, p)),
        tls,
        tls_ca,
        mdns: (!args.no_mdns).then(|| MdnsConfig {
            name: args.mdns_name.clone().unwrap_or_else(mdns::default_name),
            ..MdnsConfig::on_this_host()
        }),
        trace_file: args.trace.clone(),
        data_dir: match (&args.data_dir, args.no_persistence) {
            (_, true) => None,
            (Some(dir), false) => Some(dir.clone()),
            (None, false) => Some(paths::config_dir().context(
                "no config folder to keep the broker's state in: give --data-dir or --no-persistence",
            )?),
        },
        topics,
        topics_mode: match args.topics_mode {
            TopicsModeArg::Strict => TopicsMode::Strict,
            TopicsModeArg::Open => TopicsMode::Open,
        },
        max_unlisted_topics: args.max_unlisted_topics,
        users,
        users_path: Some(users_path),
        topics_path: Some(topics_path),
        bridges,
        bridges_path: Some(bridges_path),
        sn,
        sys_interval: (args.sys_interval > 0).then(|| Duration::from_secs(args.sys_interval)),
        max_packet_size: args.max_packet_size,
        max_topic_alias: args.max_topic_alias,
        send_topic_aliases: args.send_topic_aliases,
        connect_timeout: Duration::from_secs(args.connect_timeout),
        max_inflight: args.max_inflight,
        max_queued: args.max_queued,
        max_queued_bytes: args.max_queued_bytes,
        stall_timeout: Duration::try_from_secs_f64(args.stall_timeout)
            .context("--stall-timeout must be a number of seconds")?,
        on_stuck: match args.on_stuck {
            OnStuckArg::Drop => OnStuck::Drop,
            OnStuckArg::Disconnect => OnStuck::Disconnect,
        },
        max_connections: args.max_connections,
        park_after: match Duration::try_from_secs_f64(args.park_after) {
            Ok(d) if d.is_zero() => None,
            Ok(d) if d >= Duration::from_millis(100) => Some(d),
            _ => bail!("--park-after must be 0 (never) or at least 0.1 seconds"),
        },
        ..Config::default()
    })
}

fn mdns_name(name: &str) -> Result<String, String> {
    mdns::check_name(name).map(|()| name.to_owned())
}

type TlsServerConfig = std::sync::Arc<tokio_rustls::rustls::ServerConfig>;

/// The TLS doors' settings: the given certificate, or the local CA's (made on first use, and
/// then returned too: its file and fingerprint, for the window to show).
fn tls_config(args: &RunArgs) -> anyhow::Result<(TlsServerConfig, Option<(PathBuf, String)>)> {
    use mqtt_lab::broker::tls;
    let mut ca = None;
    let files = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => tls::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            cafile: args.cafile.clone(),
            require_certificate: args.require_certificate,
        },
        _ => {
            let dir = paths::config_dir()
                .context("no config folder for the local CA: give --cert and --key")?
                .join("tls");
            let local = tls::local_ca(&dir)?;
            tracing::info!(
                ca = %local.ca.display(),
                sha256 = %local.fingerprint,
                "TLS certificate signed by the local CA: clients trust it with --cafile {}",
                local.ca.display()
            );
            ca = Some((local.ca.clone(), local.fingerprint.clone()));
            tls::TlsFiles {
                cafile: args.cafile.clone(),
                require_certificate: args.require_certificate,
                ..local.files
            }
        }
    };
    Ok((tls::server_config(&files)?, ca))
}

/// Thousands of clients need thousands of descriptors, and the soft limit is often 1024: raise
/// it to the hard limit (what a process may do by itself), so that `--max-connections` works
/// without the user running `ulimit -n` first, and say what it is.
fn raise_open_file_limit(max_connections: usize) {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            tracing::info!(limit, "open-file limit");
            // Listeners, the database, the runtime and the log take some descriptors too.
            let room = limit.saturating_sub(64);
            if room < max_connections as u64 {
                tracing::warn!(
                    limit,
                    max_connections,
                    "the open-file limit allows about {room} connections, fewer than --max-connections: \
                     raise the hard limit (ulimit -Hn, LimitNOFILE=) or lower --max-connections"
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
    }
}

fn run_broker(args: RunArgs) -> anyhow::Result<()> {
    init_logging();
    raise_open_file_limit(args.max_connections);
    if !args.headless {
        return run_window(args);
    }
    let config = broker_config(&args, None)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("mqtt-lab-broker")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        // Watch the signals before telling anyone we are up: a script that reads the line and
        // stops us at once must get a clean stop, not the default action.
        let stop = stop_signal()?;
        let broker = Broker::start(config).await?;
        for url in broker.urls() {
            println!("mqtt-lab: listening on {url}");
        }
        std::io::stdout().flush().ok();
        stop.await;
        tracing::info!("stopping");
        broker.shutdown().await;
        Ok(())
    })
}

/// Starts watching SIGINT and SIGTERM now; the future completes when one arrives.
#[cfg(unix)]
fn stop_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    })
}

#[cfg(not(unix))]
fn stop_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

/// The WebSocket port the window opens when none is given.
#[cfg(feature = "gui")]
const DEFAULT_WS_PORT: u16 = 9001;

/// The window. File and start-up errors are shown in it (with Retry), not on a terminal a
/// double-clicking user never sees.
#[cfg(feature = "gui")]
fn run_window(args: RunArgs) -> anyhow::Result<()> {
    use mqtt_lab::gui::ConfigLoader;
    use mqtt_lab::gui::settings::Settings;
    #[cfg(all(unix, not(target_os = "macos")))]
    if ["DISPLAY", "WAYLAND_DISPLAY", "WAYLAND_SOCKET"]
        .iter()
        .all(|v| std::env::var_os(v).is_none())
    {
        bail!(
            "no display to open the window on (DISPLAY and WAYLAND_DISPLAY are not set): run the broker alone with --headless"
        );
    }

    let settings_path = paths::config_dir().map(|d| d.join("gui.ron"));
    let settings = settings_path.clone();
    let load: ConfigLoader = Box::new(move || {
        let saved = settings.as_deref().map(Settings::load).unwrap_or_default();
        let last = match &args.topics {
            None => saved.last_topics_file.filter(|p| p.exists()),
            Some(_) => None,
        };
        let mut config = broker_config(&args, last.as_deref()).map_err(|e| format!("{e:#}"))?;
        // The name a teacher gave the broker in the window, unless the command line gives one.
        if let (Some(mdns), None, Some(name)) = (&mut config.mdns, &args.mdns_name, saved.mdns_name)
            && mdns::check_name(&name).is_ok()
        {
            mdns.name = name;
        }
        // Browser pages are common in a lab: the window serves WebSocket too, on Mosquitto's
        // usual port unless told otherwise (a port in use is offered another in the window).
        if config.ws_listen.is_none() {
            config.ws_listen = Some(SocketAddr::new(args.bind, DEFAULT_WS_PORT));
        }
        Ok(config)
    });
    mqtt_lab::gui::run(load, settings_path).map_err(anyhow::Error::msg)
}

#[cfg(not(feature = "gui"))]
fn run_window(_args: RunArgs) -> anyhow::Result<()> {
    bail!("this build has no window (built without the `gui` feature): run it with --headless")
}

fn load_users(path: &Path) -> anyhow::Result<Users> {
    Ok(Users::load(path)?)
}

fn user_command(cmd: UserCmd) -> anyhow::Result<()> {
    match cmd {
        UserCmd::Add {
            name,
            email,
            password,
            users,
        } => {
            let path = paths::users_file(users.as_deref())?;
            // Asked before the lock: nobody else waits while someone types.
            let password = match password {
                Some(p) => p,
                None => read_password()?,
            };
            // Read, change and write under the lock, so that adds run side by side all land.
            let _lock = files::lock(&path)?;
            let (mut list, created) = if path.exists() {
                (load_users(&path)?, false)
            } else {
                (Users::default(), true)
            };
            list.upsert(&name, email.as_deref(), &password)?;
            list.save(&path)?;
            if created {
                eprintln!(
                    "mqtt-lab: created {} (anonymous logins allowed, as in the shipped file; set allow_anonymous: false to refuse them)",
                    path.display()
                );
            }
            eprintln!("mqtt-lab: user {name:?} saved in {}", path.display());
        }
        UserCmd::Remove { name, users } => {
            let path = paths::users_file(users.as_deref())?;
            let _lock = files::lock(&path)?;
            let mut list = load_users(&path)?;
            list.remove(&name)?;
            list.save(&path)?;
            eprintln!("mqtt-lab: user {name:?} removed from {}", path.display());
        }
        UserCmd::List { users } => {
            let path = paths::users_file(users.as_deref())?;
            let list = load_users(&path)?;
            println!(
                "# {} ({} users, anonymous logins {})",
                path.display(),
                list.users.len(),
                if list.allow_anonymous {
                    "allowed"
                } else {
                    "refused"
                }
            );
            for u in &list.users {
                match &u.email {
                    Some(e) => println!("{}\t{e}", u.username),
                    None => println!("{}", u.username),
                }
            }
        }
    }
    Ok(())
}

/// The password from the terminal (not echoed) or from the first line of standard input.
fn read_password() -> anyhow::Result<String> {
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ")?;
        let again = rpassword::prompt_password("Password again: ")?;
        if first != again {
            bail!("the passwords do not match");
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from standard input")?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    };
    if password.is_empty() {
        bail!("no password given (use --password or pass it on standard input)");
    }
    Ok(password)
}
