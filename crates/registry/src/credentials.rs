//! Registry credentials: `bantam registry login` stores them in
//! `~/.config/bantam/registry-auth.json` (mode 0600); Docker's
//! `~/.docker/config.json` is read too, so a `docker login` works as is.

use std::path::PathBuf;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use oci_client::secrets::RegistryAuth;
use serde_json::{Value, json};

use crate::{ClientOptions, RegistryError};

fn bantam_file() -> Option<PathBuf> {
    std::env::var_os("BANTAM_REGISTRY_AUTH")
        .map(PathBuf::from)
        .or_else(|| dirs::config_dir().map(|d| d.join("bantam").join("registry-auth.json")))
}

fn docker_file() -> Option<PathBuf> {
    std::env::var_os("DOCKER_CONFIG")
        .map(|d| PathBuf::from(d).join("config.json"))
        .or_else(|| dirs::home_dir().map(|d| d.join(".docker").join("config.json")))
}

/// The stored credentials for `registry`, else anonymous.
pub fn for_registry(registry: &str) -> RegistryAuth {
    for file in [bantam_file(), docker_file()].into_iter().flatten() {
        let Ok(text) = std::fs::read_to_string(&file) else { continue };
        let Ok(json) = serde_json::from_str::<Value>(&text) else { continue };
        let Some(auth) = json.pointer(&format!("/auths/{}/auth", registry.replace('/', "~1")))
        else {
            continue;
        };
        let decoded = auth.as_str().and_then(|a| STANDARD.decode(a).ok());
        if let Some((user, password)) = decoded
            .and_then(|d| String::from_utf8(d).ok())
            .and_then(|d| d.split_once(':').map(|(u, p)| (u.to_owned(), p.to_owned())))
        {
            return RegistryAuth::Basic(user, password);
        }
    }
    RegistryAuth::Anonymous
}

/// Check `username`/`password` against `registry` (its `/v2/` endpoint),
/// then store them.
pub async fn login(
    registry: &str,
    username: &str,
    password: &str,
    options: &ClientOptions,
) -> Result<PathBuf, RegistryError> {
    let scheme = if options.insecure { "http" } else { "https" };
    let url = format!("{scheme}://{registry}/v2/");
    let failed = |message: String| RegistryError::Registry {
        action: "logging in to",
        reference: registry.to_owned(),
        message,
    };
    let response = reqwest::Client::new()
        .get(&url)
        .basic_auth(username, Some(password))
        .send()
        .await
        .map_err(|e| failed(crate::error_chain(&e)))?;
    // 401 with a token challenge is how token registries answer `/v2/`
    // even to good credentials: the token request is what decides.
    let status = response.status();
    if status == reqwest::StatusCode::UNAUTHORIZED {
        let challenge = response
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        if !challenge.to_ascii_lowercase().starts_with("bearer") {
            return Err(failed("the registry refused these credentials".into()));
        }
    } else if !status.is_success() {
        return Err(failed(format!("{url} answered {status}")));
    }

    let file = bantam_file().ok_or_else(|| RegistryError::Write {
        path: PathBuf::from("registry-auth.json"),
        error: std::io::Error::other("no config directory"),
    })?;
    let mut json: Value = std::fs::read_to_string(&file)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_else(|| json!({ "auths": {} }));
    if !json["auths"].is_object() {
        json["auths"] = json!({});
    }
    json["auths"][registry] = json!({ "auth": STANDARD.encode(format!("{username}:{password}")) });
    if let Some(parent) = file.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| RegistryError::Write { path: parent.to_path_buf(), error: e })?;
    }
    write_private(&file, &serde_json::to_vec_pretty(&json).expect("JSON serialises"))
        .map_err(|e| RegistryError::Write { path: file.clone(), error: e })?;
    Ok(file)
}

/// Write a file only its owner can read: it holds passwords.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)
}
