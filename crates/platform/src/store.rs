//! What the host remembers across restarts: `<data dir>/bantam.db`
//! (SQLite), one row per deployed app (its live lock, variables, domains
//! and own limits) and one per deployment attempt (the history).
//!
//! Variable values, secrets included, are stored here so that a restarted
//! host can serve its apps again; the file is created readable by its
//! owner only, and nothing here is ever returned by the admin API.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use bantam_capabilities::runtime_config::Limits;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::PlatformError;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS apps (
    name       TEXT PRIMARY KEY,
    lock       TEXT NOT NULL,
    variables  TEXT NOT NULL,
    domains    TEXT NOT NULL,
    deployment INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    limits     TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS deployments (
    app         TEXT NOT NULL,
    number      INTEGER NOT NULL,
    version     TEXT,
    source      TEXT NOT NULL,
    deployed_at TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    PRIMARY KEY (app, number)
);
";

/// An app as stored: enough to prepare it again.
#[derive(Debug, Clone)]
pub struct StoredApp {
    /// The app's name on this host.
    pub name: String,
    /// The live version, as Spin lock JSON.
    pub lock: String,
    /// Variable values set at deploy time.
    pub variables: BTreeMap<String, String>,
    /// Custom domains it answers on, besides `<name>.localhost`.
    pub domains: Vec<String>,
    /// The limits its deploys set (the host's flags stand for the rest).
    pub limits: Limits,
    /// The number of its live deployment.
    pub deployment: u64,
    /// When it was first deployed (RFC 3339).
    pub created_at: String,
}

/// One deployment attempt.
#[derive(Debug, Clone, Serialize)]
pub struct DeploymentRecord {
    /// 1 for the first deployment of the app, then counting up.
    pub number: u64,
    /// The app's own version (`[application] version`), if it has one.
    pub version: Option<String>,
    /// Where it came from: `bundle` or `oci:<reference>`, `settings` for a
    /// change of variables, domains or limits.
    pub source: String,
    /// When (RFC 3339).
    pub deployed_at: String,
    /// `live`, `replaced`, or `failed: <why>`.
    pub outcome: String,
}

/// The host's database.
pub struct Store {
    connection: Mutex<Connection>,
}

fn db_error(error: rusqlite::Error) -> PlatformError {
    PlatformError::Database(error.to_string())
}

impl Store {
    /// Open (or create) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, PlatformError> {
        let fresh = !path.exists();
        let connection = Connection::open(path).map_err(db_error)?;
        if fresh {
            restrict_to_owner(path)?;
        }
        connection.execute_batch("PRAGMA journal_mode = WAL;").map_err(db_error)?;
        connection.execute_batch(SCHEMA).map_err(db_error)?;
        // A database made before apps had their own limits.
        let has_limits: bool = connection
            .query_row(
                "SELECT COUNT(*) FROM pragma_table_info('apps') WHERE name = 'limits'",
                [],
                |row| row.get(0),
            )
            .map_err(db_error)?;
        if !has_limits {
            connection
                .execute_batch("ALTER TABLE apps ADD COLUMN limits TEXT NOT NULL DEFAULT '{}'")
                .map_err(db_error)?;
        }
        Ok(Self { connection: Mutex::new(connection) })
    }

    fn connection(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.connection.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every stored app, by name.
    pub fn apps(&self) -> Result<Vec<StoredApp>, PlatformError> {
        let connection = self.connection();
        let mut statement = connection
            .prepare(
                "SELECT name, lock, variables, domains, deployment, created_at, limits
                 FROM apps ORDER BY name",
            )
            .map_err(db_error)?;
        let rows = statement
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                    row.get::<_, i64>(4)?,
                    row.get::<_, String>(5)?,
                    row.get::<_, String>(6)?,
                ))
            })
            .map_err(db_error)?;
        let mut apps = Vec::new();
        for row in rows {
            let (name, lock, variables, domains, deployment, created_at, limits) =
                row.map_err(db_error)?;
            let corrupt = |what: &str, e: serde_json::Error| {
                PlatformError::Database(format!("app `{name}`: stored {what} do not parse: {e}"))
            };
            apps.push(StoredApp {
                variables: serde_json::from_str(&variables).map_err(|e| corrupt("variables", e))?,
                domains: serde_json::from_str(&domains).map_err(|e| corrupt("domains", e))?,
                limits: serde_json::from_str(&limits).map_err(|e| corrupt("limits", e))?,
                name,
                lock,
                deployment: deployment as u64,
                created_at,
            });
        }
        Ok(apps)
    }

    /// Store `app` as its live version, replacing what was there.
    pub fn save_app(&self, app: &StoredApp) -> Result<(), PlatformError> {
        let variables = serde_json::to_string(&app.variables).expect("a map serialises");
        let domains = serde_json::to_string(&app.domains).expect("a list serialises");
        let limits = serde_json::to_string(&app.limits).expect("limits serialise");
        let connection = self.connection();
        connection
            .execute(
                "INSERT INTO apps (name, lock, variables, domains, deployment, created_at, limits)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (name) DO UPDATE SET lock = ?2, variables = ?3, domains = ?4,
                     deployment = ?5, limits = ?7",
                params![
                    app.name,
                    app.lock,
                    variables,
                    domains,
                    app.deployment as i64,
                    app.created_at,
                    limits
                ],
            )
            .map_err(db_error)?;
        // The previous live deployment is now history.
        connection
            .execute(
                "UPDATE deployments SET outcome = 'replaced'
                 WHERE app = ?1 AND outcome = 'live' AND number <> ?2",
                params![app.name, app.deployment as i64],
            )
            .map_err(db_error)?;
        Ok(())
    }

    /// Forget `name` and its history; whether it was there.
    pub fn delete_app(&self, name: &str) -> Result<bool, PlatformError> {
        let connection = self.connection();
        connection.execute("DELETE FROM deployments WHERE app = ?1", [name]).map_err(db_error)?;
        let removed =
            connection.execute("DELETE FROM apps WHERE name = ?1", [name]).map_err(db_error)?;
        Ok(removed > 0)
    }

    /// Start a deployment attempt of `app`: its number.
    pub fn begin_deployment(
        &self,
        app: &str,
        version: Option<&str>,
        source: &str,
    ) -> Result<u64, PlatformError> {
        let connection = self.connection();
        let last: Option<i64> = connection
            .query_row("SELECT MAX(number) FROM deployments WHERE app = ?1", [app], |row| {
                row.get(0)
            })
            .optional()
            .map_err(db_error)?
            .flatten();
        let number = last.unwrap_or(0) + 1;
        connection
            .execute(
                "INSERT INTO deployments (app, number, version, source, deployed_at, outcome)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'preparing')",
                params![app, number, version, source, now()],
            )
            .map_err(db_error)?;
        Ok(number as u64)
    }

    /// Record how deployment `number` of `app` ended.
    pub fn finish_deployment(
        &self,
        app: &str,
        number: u64,
        outcome: &str,
    ) -> Result<(), PlatformError> {
        self.connection()
            .execute(
                "UPDATE deployments SET outcome = ?3 WHERE app = ?1 AND number = ?2",
                params![app, number as i64, outcome],
            )
            .map_err(db_error)?;
        Ok(())
    }

    /// The deployments of `app`, newest first.
    pub fn history(&self, app: &str) -> Result<Vec<DeploymentRecord>, PlatformError> {
        let connection = self.connection();
        let mut statement = connection
            .prepare(
                "SELECT number, version, source, deployed_at, outcome FROM deployments
                 WHERE app = ?1 ORDER BY number DESC",
            )
            .map_err(db_error)?;
        let rows = statement
            .query_map([app], |row| {
                Ok(DeploymentRecord {
                    number: row.get::<_, i64>(0)? as u64,
                    version: row.get(1)?,
                    source: row.get(2)?,
                    deployed_at: row.get(3)?,
                    outcome: row.get(4)?,
                })
            })
            .map_err(db_error)?;
        rows.collect::<Result<_, _>>().map_err(db_error)
    }
}

/// Now, as RFC 3339 in UTC.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(unix)]
fn restrict_to_owner(path: &Path) -> Result<(), PlatformError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|error| PlatformError::Io { path: path.to_path_buf(), error })
}

#[cfg(not(unix))]
fn restrict_to_owner(_path: &Path) -> Result<(), PlatformError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(name: &str, deployment: u64) -> StoredApp {
        StoredApp {
            name: name.into(),
            lock: "{}".into(),
            variables: BTreeMap::from([("token".into(), "s3cret".into())]),
            domains: vec!["shop.example.com".into()],
            limits: Limits {
                max_memory: Some(64 << 20),
                request_timeout: Some(std::time::Duration::from_millis(1500)),
                ..Limits::default()
            },
            deployment,
            created_at: now(),
        }
    }

    #[test]
    fn apps_and_history_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bantam.db");
        {
            let store = Store::open(&path).unwrap();
            let first = store.begin_deployment("shop", Some("1.0.0"), "bundle").unwrap();
            store.save_app(&app("shop", first)).unwrap();
            store.finish_deployment("shop", first, "live").unwrap();
            let second = store.begin_deployment("shop", Some("1.1.0"), "bundle").unwrap();
            assert_eq!((first, second), (1, 2));
            store.save_app(&app("shop", second)).unwrap();
            store.finish_deployment("shop", second, "live").unwrap();
            let third = store.begin_deployment("shop", None, "bundle").unwrap();
            store.finish_deployment("shop", third, "failed: no").unwrap();
        }
        let store = Store::open(&path).unwrap();
        let apps = store.apps().unwrap();
        assert_eq!(apps.len(), 1);
        assert_eq!(apps[0].deployment, 2);
        assert_eq!(apps[0].variables["token"], "s3cret");
        assert_eq!(apps[0].domains, ["shop.example.com"]);
        assert_eq!(apps[0].limits, app("shop", 2).limits);
        let outcomes: Vec<_> =
            store.history("shop").unwrap().into_iter().map(|d| d.outcome).collect();
        assert_eq!(outcomes, ["failed: no", "live", "replaced"]);
        assert!(store.delete_app("shop").unwrap());
        assert!(store.apps().unwrap().is_empty());
        assert!(store.history("shop").unwrap().is_empty());
        assert!(!store.delete_app("shop").unwrap());
    }

    #[test]
    fn a_database_from_before_per_app_limits_is_brought_up_to_date() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bantam.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch(
                "CREATE TABLE apps (name TEXT PRIMARY KEY, lock TEXT NOT NULL,
                     variables TEXT NOT NULL, domains TEXT NOT NULL,
                     deployment INTEGER NOT NULL, created_at TEXT NOT NULL);
                 INSERT INTO apps VALUES ('old', '{}', '{}', '[]', 1, '2026-01-01T00:00:00Z');",
            )
            .unwrap();
        let store = Store::open(&path).unwrap();
        let apps = store.apps().unwrap();
        assert_eq!(apps[0].name, "old");
        assert_eq!(apps[0].limits, Limits::default(), "no limits of its own");
        store.save_app(&app("old", 2)).unwrap();
        assert_eq!(store.apps().unwrap()[0].limits, app("old", 2).limits);
    }

    #[cfg(unix)]
    #[test]
    fn the_database_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bantam.db");
        Store::open(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
