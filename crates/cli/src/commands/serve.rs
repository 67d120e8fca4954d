//! `bantam serve`: one host serving many apps, managed through the admin
//! API (`bantam deploy`, `bantam apps`, the dashboard).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use bantam_platform::{Platform, PlatformConfig};
use clap::Args;

use super::up::{Host, ServingArgs, shutdown_signal};

/// Flags of `bantam serve`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "Examples:\n  \
    bantam serve --admin-token \"$(openssl rand -hex 16)\"\n  \
    bantam serve --listen 0.0.0.0:80 --admin-listen 127.0.0.1:3001 --data-dir /var/lib/bantam\n\n\
    Apps answer on http://<app>.localhost:<port>/ and on the domains their deploy names.\n\
    Deploy with `bantam deploy`; the dashboard is at the admin address.\n\
    The limit flags are every app's defaults: a deploy may set its own, its\n\
    --max-memory up to the host's (the size of every instance's memory slot).")]
pub struct ServeArgs {
    /// The public address apps are served on. Port 0 picks a free port.
    #[arg(long, env = "BANTAM_LISTEN", default_value = "127.0.0.1:3000", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// The address of the admin API, `/metrics` and the dashboard.
    #[arg(
        long,
        env = "BANTAM_ADMIN_LISTEN",
        default_value = "127.0.0.1:3001",
        value_name = "ADDR"
    )]
    pub admin_listen: SocketAddr,
    /// The bearer token the admin API requires.
    #[arg(long, env = "BANTAM_ADMIN_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub admin_token: String,
    /// Where deployed apps, their state and the host's database live.
    #[arg(long, env = "BANTAM_DATA_DIR", default_value = "bantam-data", value_name = "DIR")]
    pub data_dir: PathBuf,
    /// How the host serves: threads, compile cache, limits.
    #[command(flatten)]
    pub serving: ServingArgs,
}

/// Run `bantam serve`.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    if args.admin_token.trim().is_empty() {
        bail!("--admin-token must not be empty");
    }
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let host = Host::new(&args.serving, None, &cwd)?;
    let bind = |address: SocketAddr| {
        host.runtime.block_on(async move {
            tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen on {address}"))
        })
    };
    let public = bind(args.listen)?;
    let admin = bind(args.admin_listen)?;
    let public_address = public.local_addr()?;
    let admin_address = admin.local_addr()?;

    let data_dir = cwd.join(&args.data_dir);
    let spinner = crate::terminal::spinner(format!("Opening {}", data_dir.display()));
    let platform = Platform::open(
        PlatformConfig {
            data_dir: data_dir.clone(),
            public_port: public_address.port(),
            limits: host.limits(),
            max_log_file_size: args.serving.max_log_file_size,
        },
        host.engine().clone(),
    )
    .with_context(|| format!("cannot open the data directory {}", data_dir.display()))?;
    spinner.finish_and_clear();

    let mut out = format!(
        "\nServing http://{public_address}\n\
         Apps answer on http://<app>.localhost:{}/\n\
         Admin API http://{admin_address}/v1 (dashboard: http://{admin_address}/)\n\
         Data in {}\n",
        public_address.port(),
        data_dir.display()
    );
    let apps = platform.list();
    if !apps.is_empty() {
        out.push_str("Deployed apps:\n");
        for app in &apps {
            let detail = match &app.error {
                Some(error) => format!("failed: {error}"),
                None => app.urls.join(" "),
            };
            out.push_str(&format!("  {}: {detail}\n", app.name));
        }
    }
    print!("{out}");
    use std::io::Write;
    let _ = std::io::stdout().flush();

    let (stop, stopped) = tokio::sync::watch::channel(false);
    host.runtime.spawn(async move {
        shutdown_signal().await;
        let _ = stop.send(true);
    });
    let until_stopped = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        }
    };
    let admin_server = host.runtime.spawn(bantam_platform::admin::serve(
        platform.clone(),
        admin,
        args.admin_token.clone(),
        until_stopped(),
    ));
    let serving = host.serve(&args.serving, Arc::clone(&platform), public, until_stopped());
    let outcome = host.runtime.block_on(serving);
    // The admin server has been told to stop too; let it finish its
    // requests (a deploy in progress completes).
    let _ = host.runtime.block_on(admin_server);
    outcome
}
