//! `bantam deploy` and `bantam apps`: the client side of `bantam serve`'s
//! admin API.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use bantam_capabilities::VariableSources;
use bantam_manifest::units::human_size;
use bantam_platform::{DeploySettings, ResetLimit};
use clap::{Args, Subcommand};
use serde_json::Value;

use super::up::AppLimitArgs;

/// Where the admin API is and how to authenticate.
#[derive(Debug, Clone, Args)]
pub struct AdminArgs {
    /// The admin address of `bantam serve`.
    #[arg(
        long,
        env = "BANTAM_ADMIN_URL",
        default_value = "http://127.0.0.1:3001",
        value_name = "URL"
    )]
    pub admin: String,
    /// The host's admin token (its `--admin-token`).
    #[arg(
        long,
        env = "BANTAM_ADMIN_TOKEN",
        hide_env_values = true,
        default_value = "",
        hide_default_value = true,
        value_name = "TOKEN"
    )]
    pub token: String,
}

/// Flags of `bantam deploy`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "Examples:\n  \
    bantam deploy --token $TOKEN                         ./spin.toml as its app name\n  \
    bantam deploy -f shop/ --name shop --variable api_key=@key.txt --domain shop.example.com\n  \
    bantam deploy --from-registry ghcr.io/me/shop:v1 --name shop\n  \
    bantam deploy --name shop --request-timeout 5s --max-memory 64MiB\n  \
    bantam deploy --name shop --reset-limit max-memory   the host's --max-memory again\n\n\
    Deploying an existing name updates it with no dropped request. Variables,\n\
    domains and limits set before are kept unless given again or reset.")]
pub struct DeployArgs {
    /// The application: a spin.toml or a directory holding one (default:
    /// spin.toml here or in a parent directory).
    #[arg(short = 'f', long = "from", alias = "file", value_name = "APP")]
    pub from: Option<PathBuf>,
    /// Have the host pull and run this registry reference instead.
    #[arg(long, value_name = "REFERENCE", conflicts_with_all = ["from", "build"])]
    pub from_registry: Option<String>,
    /// The host talks plain HTTP to the registry (a local registry).
    #[arg(short = 'k', long, requires = "from_registry")]
    pub insecure: bool,
    /// The app's name on the host (its host name is `<name>.localhost`);
    /// default: the manifest's application name.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Run the components' build commands first.
    #[arg(long)]
    pub build: bool,
    /// Set a variable: `name=value`, `name=@file`, or `@vars.json|toml`.
    /// Values set by earlier deploys are kept unless given again.
    #[arg(long = "variable", value_name = "VARIABLE")]
    pub variables: Vec<String>,
    /// A custom domain the app answers on (repeatable); replaces the
    /// domains set before. Without it, they are kept.
    #[arg(long = "domain", value_name = "DOMAIN")]
    pub domains: Vec<String>,
    /// Write the bundle to this file instead of uploading it (to upload
    /// later: `curl -T FILE -H 'content-type: application/gzip'
    /// -H "authorization: Bearer $TOKEN" <admin>/v1/apps/<name>`).
    #[arg(long, value_name = "FILE", conflicts_with = "from_registry")]
    pub save_bundle: Option<PathBuf>,
    /// The admin API.
    #[command(flatten)]
    pub admin: AdminArgs,
    /// The app's own limits; those it never sets are the host's flags.
    /// Its memory cannot be more than the host's `--max-memory`.
    #[command(flatten, next_help_heading = "Limits of this app [default: the host's]")]
    pub limits: AppLimitArgs,
    /// Give up this app's own limit (a flag's name, such as `max-memory`,
    /// or `all`; repeatable): it follows the host's flag again. Limits
    /// given in the same deploy are set after the reset.
    #[arg(
        long = "reset-limit",
        value_name = "LIMIT",
        help_heading = "Limits of this app [default: the host's]"
    )]
    pub reset_limits: Vec<ResetLimit>,
}

/// `bantam apps ...`.
#[derive(Debug, Subcommand)]
pub enum AppsCommand {
    /// List the host's apps.
    #[command(alias = "ls")]
    List {
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
        /// The admin API.
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Show one app: hosts, routes, variables (never values), limits,
    /// history.
    Info {
        /// The app name.
        name: String,
        /// The admin API.
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Delete an app and its data (stores, databases, logs).
    #[command(alias = "rm")]
    Delete {
        /// The app name.
        name: String,
        /// The admin API.
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// A client of the admin API.
struct Admin {
    base: String,
    token: String,
    client: reqwest::Client,
    runtime: tokio::runtime::Runtime,
}

impl Admin {
    fn new(args: &AdminArgs) -> anyhow::Result<Self> {
        if args.token.is_empty() {
            bail!("no admin token: pass --token or set BANTAM_ADMIN_TOKEN");
        }
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .context("cannot start the HTTP client")?;
        Ok(Self {
            base: args.admin.trim_end_matches('/').to_string(),
            token: args.token.clone(),
            client,
            runtime,
        })
    }

    /// Send `request` to `path`; the JSON answer, or an error carrying
    /// the API's own message.
    fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<(&'static str, Vec<u8>)>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        self.runtime.block_on(async {
            let mut request = self.client.request(method.clone(), &url).bearer_auth(&self.token);
            if let Some((content_type, bytes)) = body {
                request = request.header("content-type", content_type).body(bytes);
            }
            let response = request.send().await.with_context(|| {
                format!("cannot reach the admin API at {} (is `bantam serve` running?)", self.base)
            })?;
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            let value: Value = if text.is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text).unwrap_or(Value::String(text))
            };
            if !status.is_success() {
                let message = value
                    .get("error")
                    .and_then(Value::as_str)
                    .map_or_else(|| value.to_string(), str::to_owned);
                bail!("{method} {path}: {status}: {message}");
            }
            Ok(value)
        })
    }
}

/// Run `bantam deploy`.
pub fn deploy(args: DeployArgs) -> anyhow::Result<()> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let mut sources = VariableSources::default();
    for flag in &args.variables {
        sources.add_flag(flag, &cwd)?;
    }
    let settings = DeploySettings {
        variables: sources.flags.into_iter().collect(),
        domains: (!args.domains.is_empty()).then(|| args.domains.clone()),
        limits: args.limits.to_table(),
        reset_limits: args.reset_limits.clone(),
    };
    let (name, body) = match &args.from_registry {
        Some(reference) => {
            let Some(name) = args.name.clone() else {
                bail!("--from-registry needs --name: the app's name on the host");
            };
            let mut body = serde_json::to_value(&settings)?;
            body["reference"] = reference.clone().into();
            body["insecure"] = args.insecure.into();
            (name, ("application/json", serde_json::to_vec(&body)?))
        }
        None => {
            let manifest_path = bantam_app::find_manifest(args.from.as_deref(), &cwd)?;
            if args.build {
                super::build::build(&manifest_path, &[])?;
            }
            let app = bantam_app::load(&manifest_path)?;
            let name = args.name.clone().unwrap_or_else(|| host_name_of(&app.name));
            let spinner = crate::terminal::spinner(format!("Bundling `{}`", app.name));
            let bundle = bantam_platform::bundle::pack(&app, &settings)?;
            spinner.finish_and_clear();
            (name, ("application/gzip", bundle))
        }
    };
    bantam_platform::check_name(&name)?;
    if let Some(path) = &args.save_bundle {
        let path = cwd.join(path);
        std::fs::write(&path, &body.1)
            .with_context(|| format!("cannot write the bundle to {}", path.display()))?;
        println!(
            "Wrote the bundle of `{name}` ({}) to {}",
            human_size(body.1.len() as u64),
            path.display()
        );
        return Ok(());
    }
    let admin = Admin::new(&args.admin)?;
    let size = body.1.len();
    let spinner = crate::terminal::spinner(format!(
        "Deploying `{name}` ({}) to {}",
        human_size(size as u64),
        admin.base
    ));
    let outcome = admin.call(reqwest::Method::PUT, &format!("/v1/apps/{name}"), Some(body));
    spinner.finish_and_clear();
    let app = outcome.with_context(|| format!("deploying `{name}` failed"))?;
    println!(
        "Deployed `{name}` (deployment {})",
        app.get("deployment").and_then(Value::as_u64).unwrap_or_default()
    );
    print_app(&app);
    Ok(())
}

/// Run `bantam apps ...`.
pub fn apps(command: AppsCommand) -> anyhow::Result<()> {
    match command {
        AppsCommand::List { json, admin } => {
            let apps = Admin::new(&admin)?.call(reqwest::Method::GET, "/v1/apps", None)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&apps)?);
                return Ok(());
            }
            let apps = apps.as_array().cloned().unwrap_or_default();
            if apps.is_empty() {
                println!("No apps deployed.");
                return Ok(());
            }
            let rows: Vec<[String; 5]> = apps
                .iter()
                .map(|app| {
                    let field = |key: &str| match app.get(key) {
                        Some(Value::String(s)) => s.clone(),
                        Some(Value::Null) | None => "-".into(),
                        Some(other) => other.to_string(),
                    };
                    let urls =
                        app.get("urls").and_then(Value::as_array).map_or(String::new(), |u| {
                            u.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" ")
                        });
                    [field("name"), field("status"), field("deployment"), field("version"), urls]
                })
                .collect();
            print!("{}", table(["NAME", "STATUS", "DEPLOYMENT", "VERSION", "URLS"], &rows));
            Ok(())
        }
        AppsCommand::Info { name, admin } => {
            let app = Admin::new(&admin)?.call(
                reqwest::Method::GET,
                &format!("/v1/apps/{name}"),
                None,
            )?;
            println!("{name}: {}", app.get("status").and_then(Value::as_str).unwrap_or("?"));
            print_app(&app);
            if let Some(history) = app.get("history").and_then(Value::as_array) {
                println!("History:");
                for deployment in history {
                    let field = |key| {
                        deployment.get(key).map_or(String::new(), |v| match v {
                            Value::String(s) => s.clone(),
                            Value::Null => "-".into(),
                            other => other.to_string(),
                        })
                    };
                    println!(
                        "  #{} {} {} {} ({})",
                        field("number"),
                        field("deployed_at"),
                        field("version"),
                        field("source"),
                        field("outcome")
                    );
                }
            }
            Ok(())
        }
        AppsCommand::Delete { name, admin } => {
            Admin::new(&admin)?.call(reqwest::Method::DELETE, &format!("/v1/apps/{name}"), None)?;
            println!("Deleted `{name}` and its data.");
            Ok(())
        }
    }
}

/// URLs, routes, variables and limits of an app as the API returns it.
fn print_app(app: &Value) {
    if let Some(error) = app.get("error").and_then(Value::as_str) {
        println!("  Error: {error}");
    }
    for url in app.get("urls").and_then(Value::as_array).into_iter().flatten() {
        println!("  {}", url.as_str().unwrap_or_default());
    }
    let routes = app.get("routes").and_then(Value::as_array).cloned().unwrap_or_default();
    if !routes.is_empty() {
        println!("Routes:");
        for route in routes {
            let field = |key| route.get(key).and_then(Value::as_str).unwrap_or_default();
            println!("  {}: {}", field("component"), field("route"));
        }
    }
    let variables = app.get("variables").and_then(Value::as_array).cloned().unwrap_or_default();
    if !variables.is_empty() {
        println!("Variables:");
        for variable in variables {
            let name = variable.get("name").and_then(Value::as_str).unwrap_or_default();
            let set = variable.get("set").and_then(Value::as_bool).unwrap_or(false);
            let secret = variable.get("secret").and_then(Value::as_bool).unwrap_or(false);
            println!(
                "  {name}{}: {}",
                if secret { " (secret)" } else { "" },
                if set { "set" } else { "default" }
            );
        }
    }
    let limits = app.get("limits").and_then(Value::as_array).cloned().unwrap_or_default();
    if !limits.is_empty() {
        println!("Limits:");
        for limit in limits {
            let field = |key| limit.get(key).and_then(Value::as_str).unwrap_or_default();
            let set = limit.get("set").and_then(Value::as_bool).unwrap_or(false);
            println!(
                "  {}: {}{}",
                field("name"),
                field("value"),
                if set { "" } else { " (the host's)" }
            );
        }
    }
}

/// An app name the host accepts, from a manifest's application name.
fn host_name_of(name: &str) -> String {
    let mapped: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let trimmed = mapped.trim_matches('-');
    trimmed.chars().take(63).collect::<String>().trim_end_matches('-').to_string()
}

/// Columns padded to their widest cell.
fn table<const N: usize>(headers: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = headers.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> =
            cells.iter().zip(widths).map(|(cell, width)| format!("{cell:width$}")).collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_names_become_host_names() {
        assert_eq!(host_name_of("My Shop_2"), "my-shop-2");
        assert_eq!(host_name_of("--hello--"), "hello");
        assert_eq!(host_name_of(&"a".repeat(80)).len(), 63);
    }

    /// `bantam deploy`'s flags alone.
    #[derive(Debug, clap::Parser)]
    struct DeployOnly {
        #[command(flatten)]
        args: DeployArgs,
    }

    #[test]
    fn limits_to_reset_are_flag_names_or_all() {
        use bantam_capabilities::runtime_config::LimitName;
        use clap::Parser;

        let parsed = DeployOnly::try_parse_from([
            "bantam deploy",
            "--reset-limit",
            "max-memory",
            "--reset-limit",
            "request_timeout",
            "--reset-limit",
            "all",
        ])
        .unwrap();
        assert_eq!(
            parsed.args.reset_limits,
            [
                ResetLimit::One(LimitName::MaxMemory),
                ResetLimit::One(LimitName::RequestTimeout),
                ResetLimit::All
            ]
        );

        let error = DeployOnly::try_parse_from(["bantam deploy", "--reset-limit", "max-cpu"])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(
                "invalid value 'max-cpu' for '--reset-limit <LIMIT>': there is no limit `max-cpu` to reset: name one of request-timeout, max-memory, max-request-body-size, max-response-body-size, max-instances-per-component, max-outbound-connections, max-store-size, or `all`"
            ),
            "{error}"
        );
    }

    #[test]
    fn tables_pad_columns() {
        let rows = [["shop".to_string(), "serving".to_string()]];
        assert_eq!(table(["NAME", "STATUS"], &rows), "NAME  STATUS\nshop  serving\n");
    }
}
