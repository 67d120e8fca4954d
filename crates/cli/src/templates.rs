//! The built-in application templates of `bantam new` and `bantam add`.
//!
//! Each template is a folder under `crates/cli/templates/<id>/`, compiled
//! into the binary:
//! - `template.toml`: a `description` and `[parameters.<name>]` tables, each
//!   with a `prompt`, a `default` and an optional `pattern` (a regex the
//!   value must match);
//! - `component.toml`: the manifest snippet (`[[trigger.http]]` and
//!   `[component.<id>]`) that `new` puts in the new spin.toml and `add`
//!   appends to an existing one; a template without it makes an empty app;
//! - `content/`: the files of the component's folder.
//!
//! Files are rendered with `{{ name }}` and `{{ name | filter }}`, the
//! filters being `kebab_case`, `snake_case` and `pascal_case`, as in Spin's
//! templates. `project-name` is always set.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use include_dir::{Dir, include_dir};
use serde::Deserialize;

static TEMPLATES: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/templates");

/// A built-in template.
#[derive(Debug)]
pub struct Template {
    /// Its id, as given to `-t`.
    pub id: &'static str,
    /// What it makes.
    pub description: String,
    /// The values it asks for, in order.
    pub parameters: Vec<Parameter>,
    dir: &'static Dir<'static>,
}

/// One value a template asks for.
#[derive(Debug, Deserialize)]
pub struct Parameter {
    /// Its name, as used in `{{ name }}` and `--value name=...`.
    #[serde(skip)]
    pub name: String,
    /// The question asked on a terminal.
    pub prompt: String,
    /// The value taken with `--accept-defaults` or without a terminal.
    #[serde(default)]
    pub default: String,
    /// A regex the value must match.
    #[serde(default)]
    pub pattern: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateFile {
    description: String,
    #[serde(default)]
    parameters: indexmap::IndexMap<String, Parameter>,
}

/// Every built-in template, sorted by id.
pub fn all() -> Vec<Template> {
    let mut templates: Vec<Template> = TEMPLATES
        .dirs()
        .map(|dir| {
            let id = dir.path().to_str().expect("template folder names are UTF-8");
            let text = dir
                .get_file(dir.path().join("template.toml"))
                .and_then(|f| f.contents_utf8())
                .unwrap_or_else(|| panic!("template `{id}` has no template.toml"));
            let file: TemplateFile = toml::from_str(text)
                .unwrap_or_else(|e| panic!("template `{id}`: bad template.toml: {e}"));
            let parameters = file
                .parameters
                .into_iter()
                .map(|(name, parameter)| Parameter { name, ..parameter })
                .collect();
            Template { id, description: file.description, parameters, dir }
        })
        .collect();
    templates.sort_by_key(|t| t.id);
    templates
}

/// The template called `id`; the error lists the ones there are.
pub fn find(id: &str) -> anyhow::Result<Template> {
    let templates = all();
    let ids: Vec<&str> = templates.iter().map(|t| t.id).collect();
    templates.into_iter().find(|t| t.id == id).with_context(|| {
        format!("there is no template `{id}`; the templates are: {}", ids.join(", "))
    })
}

impl Template {
    /// Whether the template makes a component (and so can be `add`ed).
    pub fn has_component(&self) -> bool {
        self.snippet().is_some()
    }

    /// The manifest snippet, rendered with `values`.
    pub fn render_snippet(&self, values: &Values) -> anyhow::Result<Option<String>> {
        self.snippet().map(|text| render(text, values)).transpose()
    }

    /// Write the template's `content/` files, rendered, under `out`;
    /// the paths written, relative to `out`.
    pub fn write_content(&self, values: &Values, out: &Path) -> anyhow::Result<Vec<PathBuf>> {
        let Some(content) = self.dir.get_dir(self.dir.path().join("content")) else {
            return Ok(Vec::new());
        };
        let mut written = Vec::new();
        write_dir(content, content.path(), values, out, &mut written)?;
        Ok(written)
    }

    fn snippet(&self) -> Option<&'static str> {
        self.dir.get_file(self.dir.path().join("component.toml")).and_then(|f| f.contents_utf8())
    }
}

fn write_dir(
    dir: &Dir<'static>,
    root: &Path,
    values: &Values,
    out: &Path,
    written: &mut Vec<PathBuf>,
) -> anyhow::Result<()> {
    for file in dir.files() {
        let relative = file.path().strip_prefix(root).expect("files lie under their template");
        let target = out.join(relative);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let text = file.contents_utf8().expect("template files are UTF-8");
        std::fs::write(&target, render(text, values)?)
            .with_context(|| format!("cannot write {}", target.display()))?;
        written.push(relative.to_path_buf());
    }
    for sub in dir.dirs() {
        write_dir(sub, root, values, out, written)?;
    }
    Ok(())
}

/// The values a template is rendered with.
pub type Values = BTreeMap<String, String>;

/// Ask for (or take) the value of each parameter of `template`: `given`
/// first, then the default with `accept_defaults` or without a terminal,
/// else a prompt on the terminal. Every value is checked against its
/// parameter's pattern.
pub fn resolve_values(
    template: &Template,
    project_name: &str,
    mut given: Values,
    accept_defaults: bool,
) -> anyhow::Result<Values> {
    let interactive = !accept_defaults && std::io::IsTerminal::is_terminal(&std::io::stdin());
    let mut values = Values::new();
    values.insert("project-name".into(), project_name.into());
    for parameter in &template.parameters {
        let value = match given.remove(&parameter.name) {
            Some(value) => value,
            None if interactive => ask(&parameter.prompt, &parameter.default)?,
            None => parameter.default.clone(),
        };
        if let Some(pattern) = &parameter.pattern {
            let regex = regex::Regex::new(pattern).expect("template patterns are valid");
            if !regex.is_match(&value) {
                bail!("`{value}` is not a valid {}: it must match {pattern}", parameter.name);
            }
        }
        values.insert(parameter.name.clone(), value);
    }
    if let Some(unknown) = given.keys().next() {
        let names: Vec<&str> = template.parameters.iter().map(|p| p.name.as_str()).collect();
        bail!(
            "template `{}` has no parameter `{unknown}`; its parameters are: {}",
            template.id,
            names.join(", ")
        );
    }
    Ok(values)
}

/// Ask `question` on the terminal; the answer, or `default` when empty.
pub fn ask(question: &str, default: &str) -> anyhow::Result<String> {
    use std::io::Write;
    let mut stderr = std::io::stderr();
    if default.is_empty() {
        write!(stderr, "{question}: ")?;
    } else {
        write!(stderr, "{question} [{default}]: ")?;
    }
    stderr.flush()?;
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).context("cannot read the answer")?;
    let answer = line.trim();
    Ok(if answer.is_empty() { default.to_owned() } else { answer.to_owned() })
}

/// Render `{{ name }}` and `{{ name | filter }}` in `text`.
pub fn render(text: &str, values: &Values) -> anyhow::Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").context("a `{{` in a template is not closed")?;
        let mut parts = after[..end].split('|').map(str::trim);
        let name = parts.next().unwrap_or_default();
        let mut value = values
            .get(name)
            .with_context(|| format!("template value `{name}` is not set"))?
            .clone();
        for filter in parts {
            value = match filter {
                "kebab_case" => words(&value).join("-"),
                "snake_case" => words(&value).join("_"),
                "pascal_case" => words(&value)
                    .iter()
                    .map(|w| {
                        let mut chars = w.chars();
                        chars
                            .next()
                            .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                            .unwrap_or_default()
                    })
                    .collect(),
                other => bail!("unknown template filter `{other}`"),
            };
        }
        out.push_str(&value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The lowercase words of a name: split at non-alphanumerics and at
/// lower-to-upper case changes (`MyApp_v2` -> `my`, `app`, `v2`).
fn words(name: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut previous_lower = false;
    for c in name.chars() {
        if !c.is_ascii_alphanumeric() {
            if !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
            previous_lower = false;
            continue;
        }
        if c.is_ascii_uppercase() && previous_lower && !current.is_empty() {
            words.push(std::mem::take(&mut current));
        }
        previous_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        current.push(c.to_ascii_lowercase());
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_change_case() {
        let values = Values::from([("project-name".to_string(), "My App_v2".to_string())]);
        let text = "{{ project-name | kebab_case }} {{project-name|snake_case}} {{ project-name | pascal_case }}";
        assert_eq!(render(text, &values).unwrap(), "my-app-v2 my_app_v2 MyAppV2");
        assert_eq!(words("helloWorld"), ["hello", "world"]);
    }

    #[test]
    fn unknown_values_and_filters_are_errors() {
        let values = Values::new();
        assert!(render("{{ nope }}", &values).unwrap_err().to_string().contains("`nope`"));
        let values = Values::from([("a".to_string(), "b".to_string())]);
        assert!(render("{{ a | shout }}", &values).unwrap_err().to_string().contains("shout"));
        assert!(render("{{ a", &values).is_err());
    }

    #[test]
    fn every_template_loads_and_renders() {
        for template in all() {
            let mut given = Values::new();
            for parameter in &template.parameters {
                given.insert(parameter.name.clone(), parameter.default.clone());
            }
            let values = resolve_values(&template, "demo-app", given, true).unwrap();
            template.render_snippet(&values).unwrap();
            let out = tempfile::tempdir().unwrap();
            template.write_content(&values, out.path()).unwrap();
        }
        assert!(find("http-rust").unwrap().has_component());
        assert!(find("nope").unwrap_err().to_string().contains("http-rust"));
    }
}
