//! The runtime config file (`bantam up --runtime-config-file rc.toml`), in
//! Spin's format: where each key-value store and SQLite database lives.
//!
//! ```toml
//! [key_value_store.cache]
//! type = "redis"
//! url = "redis://127.0.0.1:6379"
//!
//! [key_value_store.archive]
//! type = "spin"                # SQLite
//! path = "data/archive.db"     # relative to this file; in memory if absent
//!
//! [sqlite_database.orders]
//! type = "spin"
//! path = "data/orders.db"
//! ```
//!
//! Without a file, `default` is the only store and database, both SQLite
//! files in the app's `.spin` directory, as with Spin. Bantam adds a
//! `[limits]` table (see [`Limits`]) and reads Spin's top-level
//! `max_instance_memory`. Unknown tables and
//! fields are errors, reported with the file, line and column.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bantam_manifest::units::{format_duration, format_size};
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

/// The file name of the default key-value store, in the state directory.
const DEFAULT_KEY_VALUE_FILE: &str = "sqlite_key_value.db";
/// The file name of the default SQLite database, in the state directory.
const DEFAULT_SQLITE_FILE: &str = "sqlite_db.db";

/// Why a runtime config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeConfigError {
    /// The file could not be read.
    #[error("cannot read runtime config {}: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not valid, with toml's location and explanation.
    #[error("{}:{line}:{column}: {message}", .path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column of the problem.
        column: usize,
        /// What is wrong.
        message: String,
    },
}

/// The parsed runtime config file.
#[derive(Debug, Default, Clone)]
pub struct RuntimeConfig {
    /// The directory relative paths resolve against.
    dir: PathBuf,
    key_value_stores: IndexMap<String, KeyValueConfig>,
    sqlite_databases: IndexMap<String, SqliteConfig>,
    /// The `[limits]` table (with Spin's `max_instance_memory`).
    pub limits: Limits,
}

/// Where one key-value store lives.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum KeyValueConfig {
    /// `type = "spin"`: a SQLite file (`path`), or memory without one.
    Spin {
        /// The database file.
        path: Option<PathBuf>,
    },
    /// `type = "redis"`: a Redis server.
    Redis {
        /// `redis://host:port[/db]`.
        url: String,
    },
}

/// Where one SQLite database lives.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SqliteConfig {
    /// `type = "spin"`: a local file (`path`), or memory without one.
    Spin {
        /// The database file.
        path: Option<PathBuf>,
    },
}

/// The `[limits]` table: what one request and one instance may use. The
/// same names as `bantam up`'s flags (`max_memory` or `max-memory` for
/// `--max-memory`); a flag wins over the file. Unset fields keep their
/// defaults. The deploy settings of `bantam serve` carry the same table,
/// one per app; it is written back (serialised) in the same syntax.
///
/// ```toml
/// [limits]
/// request_timeout = "30s"
/// max_memory = "64MiB"
/// ```
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct Limits {
    /// Wall-clock deadline of one request; zero for none.
    #[serde(
        default,
        alias = "request-timeout",
        deserialize_with = "de::duration",
        serialize_with = "ser::duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub request_timeout: Option<Duration>,
    /// Linear memory one instance may grow to, in bytes.
    #[serde(
        default,
        alias = "max-memory",
        deserialize_with = "de::size",
        serialize_with = "ser::size",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_memory: Option<u64>,
    /// WebAssembly stack one instance may use, in bytes.
    #[serde(
        default,
        alias = "max-stack-size",
        deserialize_with = "de::size",
        serialize_with = "ser::size",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_stack_size: Option<u64>,
    /// Largest request body a component is given, in bytes.
    #[serde(
        default,
        alias = "max-request-body-size",
        deserialize_with = "de::size",
        serialize_with = "ser::size",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_request_body_size: Option<u64>,
    /// Largest response body a component may send, in bytes.
    #[serde(
        default,
        alias = "max-response-body-size",
        deserialize_with = "de::size",
        serialize_with = "ser::size",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_response_body_size: Option<u64>,
    /// Instances of one component alive at once.
    #[serde(
        default,
        alias = "max-instances-per-component",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_instances_per_component: Option<usize>,
    /// Outbound HTTP requests one instance may have in flight at once.
    #[serde(default, alias = "max-outbound-connections", skip_serializing_if = "Option::is_none")]
    pub max_outbound_connections: Option<usize>,
    /// Bytes one key-value store's or SQLite database's file (or database
    /// in memory) may hold; zero for no limit.
    #[serde(
        default,
        alias = "max-store-size",
        deserialize_with = "de::size",
        serialize_with = "ser::size",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_store_size: Option<u64>,
}

impl Limits {
    /// Each limit from `self` if set, else from `fallback`.
    pub fn or(self, fallback: Limits) -> Limits {
        Limits {
            request_timeout: self.request_timeout.or(fallback.request_timeout),
            max_memory: self.max_memory.or(fallback.max_memory),
            max_stack_size: self.max_stack_size.or(fallback.max_stack_size),
            max_request_body_size: self.max_request_body_size.or(fallback.max_request_body_size),
            max_response_body_size: self.max_response_body_size.or(fallback.max_response_body_size),
            max_instances_per_component: self
                .max_instances_per_component
                .or(fallback.max_instances_per_component),
            max_outbound_connections: self
                .max_outbound_connections
                .or(fallback.max_outbound_connections),
            max_store_size: self.max_store_size.or(fallback.max_store_size),
        }
    }

    /// Every limit by its flag's name (`max-memory`), with its value as a
    /// flag would write it (`64MiB`), or `None` where unset.
    pub fn entries(&self) -> [(&'static str, Option<String>); 8] {
        LimitName::ALL.map(|name| (name.as_str(), self.value(name)))
    }

    /// Limit `name` as a flag would write it, or `None` where unset.
    pub fn value(&self, name: LimitName) -> Option<String> {
        match name {
            LimitName::RequestTimeout => self.request_timeout.map(format_duration),
            LimitName::MaxMemory => self.max_memory.map(format_size),
            LimitName::MaxStackSize => self.max_stack_size.map(format_size),
            LimitName::MaxRequestBodySize => self.max_request_body_size.map(format_size),
            LimitName::MaxResponseBodySize => self.max_response_body_size.map(format_size),
            LimitName::MaxInstancesPerComponent => {
                self.max_instances_per_component.map(|n| n.to_string())
            }
            LimitName::MaxOutboundConnections => {
                self.max_outbound_connections.map(|n| n.to_string())
            }
            LimitName::MaxStoreSize => self.max_store_size.map(format_size),
        }
    }

    /// Unset limit `name`, so that the fallback's stands in [`Limits::or`].
    pub fn clear(&mut self, name: LimitName) {
        match name {
            LimitName::RequestTimeout => self.request_timeout = None,
            LimitName::MaxMemory => self.max_memory = None,
            LimitName::MaxStackSize => self.max_stack_size = None,
            LimitName::MaxRequestBodySize => self.max_request_body_size = None,
            LimitName::MaxResponseBodySize => self.max_response_body_size = None,
            LimitName::MaxInstancesPerComponent => self.max_instances_per_component = None,
            LimitName::MaxOutboundConnections => self.max_outbound_connections = None,
            LimitName::MaxStoreSize => self.max_store_size = None,
        }
    }
}

/// One limit of [`Limits`], named as its flag is (`max-memory`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitName {
    /// `request-timeout`.
    RequestTimeout,
    /// `max-memory`.
    MaxMemory,
    /// `max-stack-size`.
    MaxStackSize,
    /// `max-request-body-size`.
    MaxRequestBodySize,
    /// `max-response-body-size`.
    MaxResponseBodySize,
    /// `max-instances-per-component`.
    MaxInstancesPerComponent,
    /// `max-outbound-connections`.
    MaxOutboundConnections,
    /// `max-store-size`.
    MaxStoreSize,
}

impl LimitName {
    /// Every limit, in the order listings show them.
    pub const ALL: [LimitName; 8] = [
        LimitName::RequestTimeout,
        LimitName::MaxMemory,
        LimitName::MaxStackSize,
        LimitName::MaxRequestBodySize,
        LimitName::MaxResponseBodySize,
        LimitName::MaxInstancesPerComponent,
        LimitName::MaxOutboundConnections,
        LimitName::MaxStoreSize,
    ];

    /// Its flag's name: `max-memory`.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitName::RequestTimeout => "request-timeout",
            LimitName::MaxMemory => "max-memory",
            LimitName::MaxStackSize => "max-stack-size",
            LimitName::MaxRequestBodySize => "max-request-body-size",
            LimitName::MaxResponseBodySize => "max-response-body-size",
            LimitName::MaxInstancesPerComponent => "max-instances-per-component",
            LimitName::MaxOutboundConnections => "max-outbound-connections",
            LimitName::MaxStoreSize => "max-store-size",
        }
    }

    /// The limit named `name` in either spelling the `[limits]` table
    /// takes (`max-memory` or `max_memory`).
    pub fn from_name(name: &str) -> Option<LimitName> {
        let flag = name.replace('_', "-");
        Self::ALL.into_iter().find(|limit| limit.as_str() == flag)
    }
}

impl std::fmt::Display for LimitName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Serialisers writing sizes and durations as text, in the syntax the
/// deserializers read back.
mod ser {
    use std::time::Duration;

    use serde::Serializer;

    pub fn size<S: Serializer>(value: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(bytes) => s.serialize_str(&super::format_size(*bytes)),
            None => s.serialize_none(),
        }
    }

    pub fn duration<S: Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(duration) => s.serialize_str(&super::format_duration(*duration)),
            None => s.serialize_none(),
        }
    }
}

/// Deserializers for sizes and durations written as text (`"64MiB"`,
/// `"30s"`) or as plain numbers (bytes, seconds).
mod de {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumberOrText {
        Number(u64),
        Text(String),
    }

    pub fn size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        match NumberOrText::deserialize(d)? {
            NumberOrText::Number(n) => Ok(Some(n)),
            NumberOrText::Text(t) => {
                bantam_manifest::units::parse_size(&t).map(Some).map_err(serde::de::Error::custom)
            }
        }
    }

    pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        match NumberOrText::deserialize(d)? {
            NumberOrText::Number(n) => Ok(Some(Duration::from_secs(n))),
            NumberOrText::Text(t) => bantam_manifest::units::parse_duration(&t)
                .map(Some)
                .map_err(serde::de::Error::custom),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRuntimeConfig {
    #[serde(default)]
    key_value_store: IndexMap<String, KeyValueConfig>,
    #[serde(default)]
    sqlite_database: IndexMap<String, SqliteConfig>,
    #[serde(default)]
    limits: Limits,
    /// Spin's top-level name for the memory limit, in bytes.
    #[serde(default, deserialize_with = "de::size")]
    max_instance_memory: Option<u64>,
}

impl RuntimeConfig {
    /// Read and parse a runtime config file.
    pub fn load(path: &Path) -> Result<Self, RuntimeConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| RuntimeConfigError::Read { path: path.to_path_buf(), source })?;
        Self::parse(&text, path)
    }

    /// Parse runtime config text; `path` names it in errors and relative
    /// paths resolve against its directory.
    pub fn parse(text: &str, path: &Path) -> Result<Self, RuntimeConfigError> {
        let raw: RawRuntimeConfig = toml::from_str(text).map_err(|error| {
            let (line, column) =
                error.span().map(|span| line_column(text, span.start)).unwrap_or((1, 1));
            RuntimeConfigError::Invalid {
                path: path.to_path_buf(),
                line,
                column,
                message: error.message().to_string(),
            }
        })?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let absolute = |p: Option<PathBuf>| p.map(|p| dir.join(p));
        let limits =
            raw.limits.or(Limits { max_memory: raw.max_instance_memory, ..Limits::default() });
        Ok(Self {
            limits,
            key_value_stores: raw
                .key_value_store
                .into_iter()
                .map(|(label, config)| {
                    let config = match config {
                        KeyValueConfig::Spin { path } => {
                            KeyValueConfig::Spin { path: absolute(path) }
                        }
                        redis => redis,
                    };
                    (label, config)
                })
                .collect(),
            sqlite_databases: raw
                .sqlite_database
                .into_iter()
                .map(|(label, SqliteConfig::Spin { path })| {
                    (label, SqliteConfig::Spin { path: absolute(path) })
                })
                .collect(),
            dir,
        })
    }

    /// Where the key-value store `label` lives: as configured, or for
    /// `default`, `sqlite_key_value.db` in the app's state directory.
    /// `None` for an undefined label.
    pub fn key_value_store(&self, label: &str, state_dir: &Path) -> Option<KeyValueConfig> {
        match self.key_value_stores.get(label) {
            Some(config) => Some(config.clone()),
            None if label == "default" => {
                Some(KeyValueConfig::Spin { path: Some(state_dir.join(DEFAULT_KEY_VALUE_FILE)) })
            }
            None => None,
        }
    }

    /// Where the SQLite database `label` lives (`None` inside: in memory):
    /// as configured, or for `default`, `sqlite_db.db` in the app's state
    /// directory. `None` for an undefined label.
    pub fn sqlite_database(&self, label: &str, state_dir: &Path) -> Option<Option<PathBuf>> {
        match self.sqlite_databases.get(label) {
            Some(SqliteConfig::Spin { path }) => Some(path.clone()),
            None if label == "default" => Some(Some(state_dir.join(DEFAULT_SQLITE_FILE))),
            None => None,
        }
    }

    /// One line per configured store, for the start-up summary, as Spin
    /// prints them (`[key_value_store.cache: redis]`).
    pub fn summary(&self) -> Vec<String> {
        let kv = self.key_value_stores.iter().map(|(label, config)| {
            let kind = match config {
                KeyValueConfig::Spin { .. } => "spin",
                KeyValueConfig::Redis { .. } => "redis",
            };
            format!("[key_value_store.{label}: {kind}]")
        });
        let sqlite =
            self.sqlite_databases.keys().map(|label| format!("[sqlite_database.{label}: spin]"));
        kv.chain(sqlite).collect()
    }

    /// The directory relative paths resolve against.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// 1-based line and column of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(before.len(), |nl| before.len() - nl - 1) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_and_databases_with_paths_relative_to_the_file() {
        let config = RuntimeConfig::parse(
            r#"
[key_value_store.cache]
type = "redis"
url = "redis://127.0.0.1:6379"

[key_value_store.archive]
type = "spin"
path = "data/archive.db"

[sqlite_database.orders]
type = "spin"
"#,
            Path::new("/app/rc.toml"),
        )
        .unwrap();
        let state = Path::new("/app/.spin");
        assert_eq!(
            config.key_value_store("cache", state),
            Some(KeyValueConfig::Redis { url: "redis://127.0.0.1:6379".into() })
        );
        assert_eq!(
            config.key_value_store("archive", state),
            Some(KeyValueConfig::Spin { path: Some("/app/data/archive.db".into()) })
        );
        assert_eq!(
            config.key_value_store("default", state),
            Some(KeyValueConfig::Spin { path: Some("/app/.spin/sqlite_key_value.db".into()) })
        );
        assert_eq!(config.key_value_store("other", state), None);
        assert_eq!(config.sqlite_database("orders", state), Some(None));
        assert_eq!(
            config.sqlite_database("default", state),
            Some(Some("/app/.spin/sqlite_db.db".into()))
        );
        assert_eq!(config.sqlite_database("nope", state), None);
    }

    #[test]
    fn limits_in_either_spelling_with_units_or_plain_numbers() {
        let config = RuntimeConfig::parse(
            "max_instance_memory = 1048576\n[limits]\nrequest_timeout = \"500ms\"\nmax-request-body-size = \"2KiB\"\nmax_stack_size = 65536\nmax_outbound_connections = 3\n",
            Path::new("rc.toml"),
        )
        .unwrap();
        assert_eq!(
            config.limits,
            Limits {
                request_timeout: Some(Duration::from_millis(500)),
                max_memory: Some(1 << 20),
                max_stack_size: Some(65536),
                max_request_body_size: Some(2048),
                max_outbound_connections: Some(3),
                ..Limits::default()
            }
        );
        let err = RuntimeConfig::parse("[limits]\nmax_memory = \"lots\"\n", Path::new("rc.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("rc.toml:2:") && err.contains("expected a size"), "{err}");
        let err = RuntimeConfig::parse("[limits]\nmax_cpu = 1\n", Path::new("rc.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("rc.toml:2:1") && err.contains("max_cpu"), "{err}");
    }

    #[test]
    fn limits_are_written_as_they_are_read() {
        let limits = Limits {
            request_timeout: Some(Duration::from_millis(250)),
            max_memory: Some(64 << 20),
            max_instances_per_component: Some(20),
            ..Limits::default()
        };
        let json = serde_json::to_string(&limits).unwrap();
        assert_eq!(
            json,
            r#"{"request_timeout":"250ms","max_memory":"64MiB","max_instances_per_component":20}"#
        );
        assert_eq!(serde_json::from_str::<Limits>(&json).unwrap(), limits);
        let entries = limits.entries();
        assert_eq!(entries[0], ("request-timeout", Some("250ms".to_string())));
        assert_eq!(entries[2], ("max-stack-size", None));
    }

    #[test]
    fn a_cleared_limit_falls_back_and_every_name_reads_back() {
        let mut own = Limits {
            request_timeout: Some(Duration::from_secs(1)),
            max_memory: Some(16 << 20),
            ..Limits::default()
        };
        own.clear(LimitName::RequestTimeout);
        let host = Limits { request_timeout: Some(Duration::from_secs(60)), ..Limits::default() };
        let in_force = own.or(host);
        assert_eq!(in_force.value(LimitName::RequestTimeout).as_deref(), Some("60s"));
        assert_eq!(in_force.value(LimitName::MaxMemory).as_deref(), Some("16MiB"));

        for name in LimitName::ALL {
            assert_eq!(LimitName::from_name(name.as_str()), Some(name));
            assert_eq!(LimitName::from_name(&name.as_str().replace('-', "_")), Some(name));
        }
        assert_eq!(LimitName::from_name("max-cpu"), None);
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let err = RuntimeConfig::parse(
            "[key_value_store.cache]\ntype = \"redis\"\nurl = \"redis://x\"\nport = 1\n",
            Path::new("rc.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("rc.toml:1:1: "), "{err}");
        assert!(err.contains("port"), "{err}");

        let err =
            RuntimeConfig::parse("[key_value_store.x]\ntype = \"dynamo\"\n", Path::new("rc.toml"))
                .unwrap_err()
                .to_string();
        assert!(err.contains("dynamo") && err.contains("spin") && err.contains("redis"), "{err}");

        let err = RuntimeConfig::parse("[limitz]\n", Path::new("rc.toml")).unwrap_err().to_string();
        assert!(err.starts_with("rc.toml:1:") && err.contains("limitz"), "{err}");
    }
}
