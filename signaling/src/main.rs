use signaling::config::{Command, Config, LogFormat, TokenArgs};
use signaling::config_file::ConfigError;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() {
    let loaded = match signaling::config_file::load() {
        Ok(l) => l,
        // --help, --version and bad flags: clap prints and exits itself.
        Err(ConfigError::Args(e)) => e.exit(),
        Err(e) => {
            eprintln!("signaling: {e}");
            std::process::exit(2);
        }
    };
    if loaded.config.print_config {
        print!("{}", loaded.describe());
        return;
    }
    let mut config = loaded.config;
    match config.command.take() {
        Some(Command::Token(args)) => std::process::exit(print_invite(&mut config, &args)),
        Some(Command::Webhooks(cmd)) => {
            std::process::exit(signaling::webhook::cli::run(&mut config, &cmd).await)
        }
        None => {}
    }
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    match config.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }

    let server = match signaling::bind(config).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("{e}");
            std::process::exit(2);
        }
    };
    let handle = server.shutdown_handle();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal: draining (send it again to exit now)");
        handle.shutdown();
        wait_for_signal().await;
        tracing::warn!("second signal: exiting without finishing the drain");
        std::process::exit(1);
    });
    if let Err(e) = server.serve().await {
        tracing::error!("server failed: {e}");
        // A node id another instance is using is a configuration error, as
        // a refused start is.
        std::process::exit(if e.kind() == std::io::ErrorKind::AddrInUse {
            2
        } else {
            1
        });
    }
}

/// SIGTERM or Ctrl-C.
async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `signaling token`: a join token and the invite link that carries it.
fn print_invite(config: &mut Config, args: &TokenArgs) -> i32 {
    if let Err(e) = signaling::server::resolve_secrets(config) {
        eprintln!("signaling token: {e}");
        return 2;
    }
    let Some(secret) = &config.auth_secret else {
        eprintln!(
            "signaling token: no auth secret: give --auth-secret, SIGNALING_AUTH_SECRET or \
             SIGNALING_AUTH_SECRET_FILE (the same one the server runs with)"
        );
        return 2;
    };
    let room_ok = args.room == "*"
        || signaling_protocol::room::is_valid_room(&args.room, config.limits.max_room_len);
    if !room_ok {
        eprintln!("signaling token: `{}` is not a valid room name", args.room);
        return 2;
    }
    let mut claims = serde_json::json!({
        "room": args.room,
        "exp": signaling::auth::now_unix() + args.ttl.as_secs(),
    });
    if let Some(name) = &args.name {
        claims["sub"] = name.clone().into();
    }
    let token = signaling::auth::Auth::new(secret.expose()).sign(&claims);
    let room = if args.room == "*" {
        ""
    } else {
        args.room.as_str()
    };
    let sep = if args.url.contains('?') { '&' } else { '?' };
    println!("{token}");
    println!("{}{sep}room={room}#token={token}", args.url);
    0
}
