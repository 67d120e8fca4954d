//! Real servers the tests talk to, started on a free loopback port and
//! stopped on drop. A missing server binary fails the test with the command
//! that installs it: a test that cannot reach its server must not pass.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free loopback port (bound, then released for the server to take).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Find `binary` on the PATH or fail saying how to install it.
pub fn require(binary: &str, package: &str) -> std::path::PathBuf {
    // Daemons live in sbin, which a non-root PATH may leave out.
    let path = std::env::var_os("PATH").unwrap_or_default();
    // Debian keeps PostgreSQL's server programs in a versioned directory.
    let mut postgres_dirs: Vec<std::path::PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin"))
        .collect();
    postgres_dirs.sort();
    postgres_dirs.reverse();
    let found = std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .chain(postgres_dirs)
        .map(|dir| dir.join(binary))
        .find(|path| path.is_file());
    found.unwrap_or_else(|| {
        panic!(
            "`{binary}` is not installed, and this test needs a real one: \
             run `sudo apt-get install -y {package}` (CI's .ci/run installs it)"
        )
    })
}

/// Wait until something accepts connections on `port`.
fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start listening on port {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A redis-server process with no persistence.
pub struct Redis {
    child: Child,
    pub port: u16,
}

impl Redis {
    /// Start redis-server on a free port.
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// Start redis-server on `port` (to bring one back after a stop).
    pub fn start_on(port: u16) -> Self {
        let binary = require("redis-server", "redis-server");
        let child = Command::new(binary)
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .current_dir(std::env::temp_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting redis-server");
        wait_for_port(port, "redis-server");
        Self { child, port }
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stop the server now (the port is free again when this returns).
    pub fn stop(mut self) -> u16 {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.port
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A mosquitto MQTT broker allowing anonymous clients on loopback.
pub struct Mosquitto {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Start mosquitto on a free port.
    pub fn start() -> Self {
        let binary = require("mosquitto", "mosquitto");
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("mosquitto.conf");
        std::fs::write(&config, format!("listener {port} 127.0.0.1\nallow_anonymous true\n"))
            .unwrap();
        let child = Command::new(binary)
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting mosquitto");
        wait_for_port(port, "mosquitto");
        Self { child, port, _dir: dir }
    }

    /// Stop the broker now.
    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A PostgreSQL server in a temporary directory, trusting local clients,
/// with the `postgres` superuser and database. Run as the `postgres` user
/// when the tests run as root (PostgreSQL refuses to run as root).
pub struct Postgres {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Postgres {
    /// initdb and start a server on a free port.
    pub fn start() -> Self {
        let initdb = require("initdb", "postgresql");
        let postgres = require("postgres", "postgresql");
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        // Root runs the server as the `postgres` user, owner of the files.
        let id = |flag: &str, user: Option<&str>| -> Option<u32> {
            let output = Command::new("id").arg(flag).args(user).output().ok()?;
            String::from_utf8_lossy(&output.stdout).trim().parse().ok()
        };
        let owner = match id("-u", None) {
            Some(0) => Some((
                id("-u", Some("postgres"))
                    .expect("no `postgres` user (apt-get install postgresql makes it)"),
                id("-g", Some("postgres")).expect("no `postgres` group"),
            )),
            _ => None,
        };
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        }
        let as_postgres = |program: &std::path::Path| {
            use std::os::unix::process::CommandExt;
            let mut command = Command::new(program);
            if let Some((uid, gid)) = owner {
                command.uid(uid).gid(gid);
            }
            command
        };
        let output = as_postgres(&initdb)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync", "-D"])
            .arg(&data)
            .output()
            .expect("running initdb");
        assert!(
            output.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let port = free_port();
        let child = as_postgres(&postgres)
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1", "-F", "-k"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting postgres");
        wait_for_port(port, "postgres");
        // It listens a moment before it accepts queries.
        std::thread::sleep(Duration::from_millis(300));
        Self { child, port, _dir: dir }
    }

    /// A URL for the `postgres` database as the `postgres` user.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGQUIT: immediate shutdown of the postmaster and its children.
        let _ = crate::support::signal("QUIT", &self.child.id().to_string());
        let _ = self.child.wait();
    }
}

/// A MariaDB server in a temporary directory, its grant tables off (any
/// user connects, with any password), on a free loopback port.
pub struct Mariadb {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Mariadb {
    /// Initialise a data directory and start a server on a free port.
    pub fn start() -> Self {
        let install = require("mariadb-install-db", "mariadb-server");
        let server = require("mariadbd", "mariadb-server");
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        // MariaDB runs as root only when told to; otherwise as whoever we are.
        let user = Command::new("id")
            .arg("-un")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|_| "root".into());
        let output = Command::new(install)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--user={user}"))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
            .output()
            .expect("running mariadb-install-db");
        assert!(
            output.status.success(),
            "mariadb-install-db failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let port = free_port();
        let child = Command::new(server)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--user={user}"))
            .arg(format!("--port={port}"))
            .arg(format!("--socket={}", dir.path().join("mysqld.sock").display()))
            .arg(format!("--pid-file={}", dir.path().join("mysqld.pid").display()))
            .arg(format!("--log-error={}", dir.path().join("error.log").display()))
            .args([
                "--bind-address=127.0.0.1",
                "--skip-grant-tables",
                "--skip-name-resolve",
                "--skip-log-bin",
                "--innodb-buffer-pool-size=16M",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting mariadbd");
        wait_for_port(port, "mariadbd");
        Self { child, port, _dir: dir }
    }

    /// A URL for `database` as root.
    pub fn url(&self, database: &str) -> String {
        format!("mysql://root@127.0.0.1:{}/{database}", self.port)
    }

    /// The server's Unix socket, which it also reports as `@@socket`.
    pub fn socket(&self) -> std::path::PathBuf {
        self._dir.path().join("mysqld.sock")
    }
}

impl Drop for Mariadb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Docker distribution registry (Debian's `docker-registry`) storing
/// into a temporary directory, plain HTTP on loopback.
pub struct Registry {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// Start the registry on a free port, open to anyone.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// Start the registry on a free port, requiring `user` and `password`
    /// (HTTP basic authentication against an htpasswd file).
    pub fn start_with_login(user: &str, password: &str) -> Self {
        Self::start_with(Some((user, password)))
    }

    fn start_with(login: Option<(&str, &str)>) -> Self {
        let binary = require("docker-registry", "docker-registry");
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.yml");
        let mut text = format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: 127.0.0.1:{port}\nlog:\n  level: error\n",
            dir.path().join("data").display()
        );
        if let Some((user, password)) = login {
            let htpasswd = dir.path().join("htpasswd");
            let hash = bcrypt::hash(password, 5).unwrap();
            std::fs::write(&htpasswd, format!("{user}:{hash}\n")).unwrap();
            text.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        std::fs::write(&config, text).unwrap();
        let child = Command::new(binary)
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting docker-registry");
        wait_for_port(port, "docker-registry");
        Self { child, port, _dir: dir }
    }

    /// `127.0.0.1:<port>/<repository>`.
    pub fn reference(&self, repository: &str) -> String {
        format!("127.0.0.1:{}/{repository}", self.port)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
