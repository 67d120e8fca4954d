//! Variables: `[variables]` in the manifest, component `variables` with
//! `{{ name }}` templates, and the three interfaces guests read them with
//! (`spin:variables@3.0.0`, `fermyon:spin/variables@2.0.0`,
//! `wasi:config/store`).
//!
//! Application variables take their value from, highest first:
//! `bantam up --variable name=value`, the environment
//! (`SPIN_VARIABLE_<NAME>`), then the manifest's `default`. Everything is
//! resolved once at start-up; a required variable without a value stops
//! start-up, naming it. A guest sees only its component's variables, never
//! the application's directly, as in Spin.
//!
//! Secret values are never written to logs or error messages: errors name
//! variables, not values, and `Value`'s `Debug` hides secrets.

use std::collections::HashMap;
use std::path::Path;

use bantam_manifest::{Part, Template};
use indexmap::IndexMap;
use wasmtime::component::Accessor;

use crate::bindings::fermyon::spin::variables as v2;
use crate::bindings::spin::variables::variables as v3;
use crate::bindings::wasi::config::store as wasi_config;
use crate::{Capabilities, CapabilitiesView};

/// The environment variable prefix Spin reads variables from.
const ENV_PREFIX: &str = "SPIN_VARIABLE_";

/// Why variables could not be resolved at start-up.
#[derive(Debug, thiserror::Error)]
pub enum VariableError {
    /// A required variable has no value from any source.
    #[error(
        "variable `{name}` is required but has no value: pass `--variable {name}=<value>` or set {env}",
        env = env_name(.name)
    )]
    MissingRequired {
        /// The variable name.
        name: String,
    },
    /// A component variable's template refers to an undefined application
    /// variable.
    #[error(
        "component `{component}` variable `{variable}` refers to `{{{{ {reference} }}}}`, which is not an application variable: add it to [variables]"
    )]
    UndefinedReference {
        /// The component id.
        component: String,
        /// The component variable whose template is wrong.
        variable: String,
        /// The name it refers to.
        reference: String,
    },
    /// A template is malformed (an unclosed `{{`, an empty or invalid name).
    #[error("component `{component}` {field}: {problem}")]
    BadTemplate {
        /// The component id.
        component: String,
        /// Where the template is (`variable `x``, `allowed_outbound_hosts`).
        field: String,
        /// What is wrong.
        problem: String,
    },
    /// A `--variable` flag is malformed or its file unreadable.
    #[error("--variable {flag}: {problem}")]
    BadFlag {
        /// The flag's value as given.
        flag: String,
        /// What is wrong.
        problem: String,
    },
}

fn env_name(variable: &str) -> String {
    format!("{ENV_PREFIX}{}", variable.to_ascii_uppercase())
}

/// Where variable values come from, besides the manifest's defaults.
#[derive(Debug, Default, Clone)]
pub struct VariableSources {
    /// Values given with `--variable`, in order (a later one wins).
    pub flags: Vec<(String, String)>,
    /// The `SPIN_VARIABLE_*` environment, by upper-case name without the
    /// prefix.
    pub environment: HashMap<String, String>,
}

impl VariableSources {
    /// Sources with the process environment's `SPIN_VARIABLE_*` values.
    pub fn from_env() -> Self {
        let environment = std::env::vars()
            .filter_map(|(key, value)| Some((key.strip_prefix(ENV_PREFIX)?.to_string(), value)))
            .collect();
        Self { flags: Vec::new(), environment }
    }

    /// Add one `--variable` flag, in any of Spin's forms: `name=value`,
    /// `name=@file` (the file's contents), `@file.json` or `@file.toml` (a
    /// table of names to values). Relative paths resolve against `cwd`.
    pub fn add_flag(&mut self, flag: &str, cwd: &Path) -> Result<(), VariableError> {
        let bad = |problem: String| VariableError::BadFlag { flag: flag.to_string(), problem };
        let read = |path: &str| {
            let path = cwd.join(path);
            std::fs::read_to_string(&path)
                .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))
        };
        if let Some(file) = flag.strip_prefix('@') {
            let json = file.ends_with(".json");
            if !json && !file.ends_with(".toml") {
                return Err(bad("a variables file must end in .json or .toml".into()));
            }
            let text = read(file)?;
            let table: IndexMap<String, toml::Value> = if json {
                serde_json::from_str(&text).map_err(|e| bad(format!("not a JSON object: {e}")))?
            } else {
                toml::from_str(&text).map_err(|e| bad(format!("not a TOML table: {e}")))?
            };
            for (name, value) in table {
                let value = match value {
                    toml::Value::String(text) => text,
                    toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_) => {
                        value.to_string()
                    }
                    _ => return Err(bad(format!("`{name}` must be a string, number or boolean"))),
                };
                self.flags.push((name, value));
            }
            return Ok(());
        }
        let Some((name, value)) = flag.split_once('=') else {
            return Err(bad("expected `name=value`, `name=@file` or `@file.json`".into()));
        };
        let value = match value.strip_prefix('@') {
            Some(file) => read(file)?,
            None => value.to_string(),
        };
        self.flags.push((name.trim().to_string(), value));
        Ok(())
    }

    fn value_of(&self, name: &str) -> Option<&str> {
        if let Some((_, value)) = self.flags.iter().rev().find(|(flag, _)| flag == name) {
            return Some(value);
        }
        self.environment.get(&name.to_ascii_uppercase()).map(String::as_str)
    }
}

/// A resolved value, marked secret if any variable it came from is.
#[derive(Clone)]
pub(crate) struct Value {
    text: String,
    secret: bool,
}

impl std::fmt::Debug for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.secret { f.write_str("<secret>") } else { self.text.fmt(f) }
    }
}

/// The application variables of one app, resolved.
#[derive(Debug)]
pub struct Variables {
    values: HashMap<String, Value>,
}

impl Variables {
    /// Resolve every application variable from `sources` and the
    /// manifest's defaults.
    pub fn resolve(
        app: &bantam_app::App,
        sources: &VariableSources,
    ) -> Result<Self, VariableError> {
        for (name, _) in &sources.flags {
            if !app.variables.contains_key(name) {
                tracing::warn!("--variable {name}: the app has no variable of that name");
            }
        }
        let mut values = HashMap::new();
        for (name, variable) in &app.variables {
            let text = match sources.value_of(name).or(variable.default.as_deref()) {
                Some(text) => text.to_string(),
                None => return Err(VariableError::MissingRequired { name: name.clone() }),
            };
            values.insert(name.clone(), Value { text, secret: variable.secret });
        }
        Ok(Self { values })
    }

    /// The variables of `component`: each of its `variables` entries with
    /// its template expanded.
    pub(crate) fn for_component(
        &self,
        component: &bantam_app::Component,
    ) -> Result<IndexMap<String, Value>, VariableError> {
        let mut resolved = IndexMap::new();
        for (name, template) in &component.variables {
            let value = expand(template, |reference| {
                self.values.get(reference).cloned().ok_or_else(|| {
                    VariableError::UndefinedReference {
                        component: component.id.clone(),
                        variable: name.clone(),
                        reference: reference.to_string(),
                    }
                })
            })
            .map_err(|problem| problem.into_error(&component.id, &format!("variable `{name}`")))?;
            resolved.insert(name.clone(), value);
        }
        Ok(resolved)
    }
}

/// Expand `{{ name }}` templates in each entry against a component's
/// variables, dropping entries that expand to nothing (as Spin does for
/// `allowed_outbound_hosts`).
pub(crate) fn expand_entries(
    component: &str,
    field: &str,
    entries: &[String],
    variables: &IndexMap<String, Value>,
) -> Result<Vec<String>, VariableError> {
    let mut expanded = Vec::with_capacity(entries.len());
    for entry in entries {
        let value = expand(entry, |reference| {
            variables.get(reference).cloned().ok_or_else(|| VariableError::BadTemplate {
                component: component.to_string(),
                field: field.to_string(),
                problem: format!(
                    "`{entry}` refers to `{reference}`, which is not one of the component's variables"
                ),
            })
        })
        .map_err(|problem| problem.into_error(component, field))?;
        if !value.text.is_empty() {
            expanded.push(value.text);
        }
    }
    Ok(expanded)
}

/// Why a template could not be expanded.
enum TemplateProblem {
    Syntax(String),
    Lookup(VariableError),
}

impl TemplateProblem {
    fn into_error(self, component: &str, field: &str) -> VariableError {
        match self {
            Self::Syntax(problem) => VariableError::BadTemplate {
                component: component.to_string(),
                field: field.to_string(),
                problem,
            },
            Self::Lookup(error) => error,
        }
    }
}

/// Expand the `{{ name }}` references in `template` with `lookup`. The
/// manifest has already checked templates and references; this only fails
/// for apps made some other way.
fn expand(
    template: &str,
    mut lookup: impl FnMut(&str) -> Result<Value, VariableError>,
) -> Result<Value, TemplateProblem> {
    let template = Template::parse(template).map_err(TemplateProblem::Syntax)?;
    let mut text = String::new();
    let mut secret = false;
    for part in template.parts() {
        match part {
            Part::Literal(literal) => text.push_str(literal),
            Part::Variable(name) => {
                let value = lookup(name).map_err(TemplateProblem::Lookup)?;
                text.push_str(&value.text);
                secret |= value.secret;
            }
        }
    }
    Ok(Value { text, secret })
}

/// A variable's value as a guest asks for it: the same answer, with each
/// interface's own error variant.
enum Lookup {
    Found(String),
    InvalidName(String),
    Undefined(String),
}

fn lookup(view: &CapabilitiesView<'_>, name: &str) -> Lookup {
    if let Some(problem) = bantam_manifest::variable_name_problem(name) {
        return Lookup::InvalidName(format!("invalid variable name {name:?}: {problem}"));
    }
    let component = view.state.component();
    match component.variables.get(name) {
        Some(value) => Lookup::Found(value.text.clone()),
        None => Lookup::Undefined(format!("no variable for {:?}.{name:?}", component.id)),
    }
}

impl v3::Host for CapabilitiesView<'_> {}

impl<T> v3::HostWithStore<T> for Capabilities {
    async fn get(
        accessor: &Accessor<T, Self>,
        name: String,
    ) -> wasmtime::Result<Result<String, v3::Error>> {
        Ok(accessor.with(|mut access| match lookup(&access.get(), &name) {
            Lookup::Found(value) => Ok(value),
            Lookup::InvalidName(message) => Err(v3::Error::InvalidName(message)),
            Lookup::Undefined(message) => Err(v3::Error::Undefined(message)),
        }))
    }
}

impl v2::Host for CapabilitiesView<'_> {
    async fn get(&mut self, name: String) -> wasmtime::Result<Result<String, v2::Error>> {
        Ok(match lookup(self, &name) {
            Lookup::Found(value) => Ok(value),
            Lookup::InvalidName(message) => Err(v2::Error::InvalidName(message)),
            Lookup::Undefined(message) => Err(v2::Error::Undefined(message)),
        })
    }
}

impl wasi_config::Host for CapabilitiesView<'_> {
    /// As in Spin: an undefined or malformed name is simply absent.
    async fn get(
        &mut self,
        key: String,
    ) -> wasmtime::Result<Result<Option<String>, wasi_config::Error>> {
        Ok(Ok(match lookup(self, &key) {
            Lookup::Found(value) => Some(value),
            Lookup::InvalidName(_) | Lookup::Undefined(_) => None,
        }))
    }

    async fn get_all(
        &mut self,
    ) -> wasmtime::Result<Result<Vec<(String, String)>, wasi_config::Error>> {
        let variables = &self.state.component().variables;
        Ok(Ok(variables.iter().map(|(name, value)| (name.clone(), value.text.clone())).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_of_the_variable_flag() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token.txt"), "from-file").unwrap();
        std::fs::write(dir.path().join("vars.json"), r#"{"a": "json", "n": 3}"#).unwrap();
        std::fs::write(dir.path().join("vars.toml"), "b = \"toml\"\nflag = true\n").unwrap();
        let mut sources = VariableSources::default();
        for flag in ["x=1", "x=2", "token=@token.txt", "@vars.json", "@vars.toml", "eq=a=b"] {
            sources.add_flag(flag, dir.path()).unwrap();
        }
        assert_eq!(sources.value_of("x"), Some("2"), "a later flag wins");
        assert_eq!(sources.value_of("token"), Some("from-file"));
        assert_eq!(sources.value_of("a"), Some("json"));
        assert_eq!(sources.value_of("n"), Some("3"));
        assert_eq!(sources.value_of("b"), Some("toml"));
        assert_eq!(sources.value_of("flag"), Some("true"));
        assert_eq!(sources.value_of("eq"), Some("a=b"));

        for (flag, problem) in [
            ("novalue", "expected `name=value`"),
            ("@vars.yaml", "must end in .json or .toml"),
            ("@missing.json", "cannot read"),
            ("k=@missing.txt", "cannot read"),
        ] {
            let error = sources.add_flag(flag, dir.path()).unwrap_err().to_string();
            assert!(
                error.starts_with(&format!("--variable {flag}: ")) && error.contains(problem),
                "{error}"
            );
        }
    }

    #[test]
    fn flags_beat_the_environment_which_is_upper_case() {
        let mut sources = VariableSources::default();
        sources.environment.insert("API_KEY".into(), "env".into());
        sources.environment.insert("OTHER".into(), "env-other".into());
        sources.add_flag("api_key=flag", Path::new(".")).unwrap();
        assert_eq!(sources.value_of("api_key"), Some("flag"));
        assert_eq!(sources.value_of("other"), Some("env-other"));
        assert_eq!(sources.value_of("missing"), None);
    }

    #[test]
    fn secrets_are_hidden_from_debug_output() {
        let secret = Value { text: "hunter2".into(), secret: true };
        let plain = Value { text: "public".into(), secret: false };
        assert_eq!(format!("{secret:?} {plain:?}"), "<secret> \"public\"");
        let expanded = expand("key={{ k }}", |_| Ok(secret.clone())).ok().unwrap();
        assert!(expanded.secret, "a value built from a secret is secret");
    }
}
