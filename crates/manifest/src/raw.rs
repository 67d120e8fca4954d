//! The manifest as the user writes it: serde structs mirroring the TOML,
//! with spans kept for every value a later check may need to point at.
//!
//! Unknown fields are errors everywhere (as in Spin), so a typo such as
//! `sourse` is reported instead of silently ignored. Values that TOML lets
//! take several shapes (a route string or `{ private = true }`, a component
//! id or an inline table) are kept as spanned `toml::Value`s and decoded by
//! `validate`, which can then point at the value with a precise message.

use indexmap::IndexMap;
use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawManifest {
    #[expect(dead_code, reason = "checked before the rest is read")]
    pub spin_manifest_version: Spanned<toml::Value>,
    pub application: Spanned<RawApplication>,
    #[serde(default)]
    pub variables: IndexMap<Spanned<String>, Spanned<RawVariable>>,
    #[serde(default)]
    pub trigger: RawTriggers,
    #[serde(default)]
    pub component: IndexMap<Spanned<String>, Spanned<RawComponent>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawApplication {
    pub name: String,
    pub version: Option<String>,
    pub description: Option<String>,
    #[serde(default)]
    pub authors: Vec<String>,
    #[serde(default)]
    #[expect(dead_code, reason = "deployment targets are accepted and not used")]
    pub targets: Vec<String>,
    #[serde(default)]
    pub trigger: RawApplicationTriggers,
    #[expect(dead_code, reason = "`[application.tool.*]` is for other tools")]
    pub tool: Option<toml::Table>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawApplicationTriggers {
    pub http: Option<RawApplicationHttp>,
    #[expect(dead_code, reason = "only the HTTP trigger runs so far")]
    pub redis: Option<toml::Table>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawApplicationHttp {
    pub base: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawVariable {
    pub default: Option<String>,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub secret: bool,
    pub description: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTriggers {
    #[serde(default)]
    pub http: Vec<Spanned<RawHttpTrigger>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHttpTrigger {
    pub id: Option<String>,
    pub route: Spanned<toml::Value>,
    pub component: Option<Spanned<toml::Value>>,
    pub executor: Option<Spanned<toml::Value>>,
    pub static_response: Option<Spanned<toml::Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawComponent {
    pub source: Spanned<toml::Value>,
    pub description: Option<String>,
    #[serde(default)]
    pub variables: IndexMap<Spanned<String>, String>,
    #[serde(default)]
    pub environment: IndexMap<String, String>,
    #[serde(default)]
    pub files: Vec<Spanned<toml::Value>>,
    #[serde(default)]
    pub exclude_files: Vec<String>,
    #[serde(default)]
    pub allowed_outbound_hosts: Vec<Spanned<String>>,
    #[serde(default)]
    pub allowed_http_hosts: Vec<String>,
    #[serde(default)]
    pub key_value_stores: Vec<Spanned<String>>,
    #[serde(default)]
    pub sqlite_databases: Vec<Spanned<String>>,
    #[serde(default)]
    pub ai_models: Vec<String>,
    #[expect(dead_code, reason = "deployment targets are accepted and not used")]
    pub targets: Option<Vec<String>>,
    pub build: Option<RawBuild>,
    /// `[component.<id>.tool.<name>]`: tools' own settings. Bantam reads
    /// `bantam` and leaves the others alone.
    #[serde(default)]
    pub tool: IndexMap<String, Spanned<toml::Value>>,
    pub dependencies_inherit_configuration: Option<bool>,
    pub dependencies: Option<Spanned<toml::Table>>,
    pub profile: Option<Spanned<toml::Table>>,
}

/// `[component.<id>.tool.bantam]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBantamTool {
    pub instance_reuse: Option<RawInstanceReuse>,
}

/// `instance_reuse = { max_requests, max_concurrent, idle_timeout }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawInstanceReuse {
    pub max_requests: i64,
    pub max_concurrent: Option<i64>,
    /// A duration (`"500ms"`, `"2s"`) or a number of seconds.
    pub idle_timeout: Option<toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBuild {
    pub command: StringOrList,
    pub workdir: Option<String>,
    #[serde(default)]
    pub watch: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum StringOrList {
    One(String),
    Many(Vec<String>),
}
