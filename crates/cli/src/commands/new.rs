//! `bantam new`, `bantam add` and `bantam templates list`: start an app, or
//! a component in an existing app, from a built-in template.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use crate::templates::{self, Template, Values};

/// Flags shared by `new` and `add`, as `spin new` has them.
#[derive(Debug, Args)]
pub struct TemplateArgs {
    /// The template to start from (see `bantam templates list`).
    #[arg(short = 't', long = "template", value_name = "TEMPLATE")]
    pub template: String,
    /// The name of the new app or component; asked for when missing.
    pub name: Option<String>,
    /// Set a template parameter without being asked (repeatable).
    #[arg(short = 'v', long = "value", value_name = "NAME=VALUE", value_parser = super::parse_key_value)]
    pub values: Vec<(String, String)>,
    /// A TOML file of parameter values (`name = "value"` lines).
    #[arg(long = "values-file", value_name = "FILE")]
    pub values_file: Option<PathBuf>,
    /// Take every parameter's default instead of asking.
    #[arg(short = 'a', long = "accept-defaults")]
    pub accept_defaults: bool,
    /// Where to create it (default: a folder named after it).
    #[arg(short = 'o', long = "output", value_name = "DIR")]
    pub output: Option<PathBuf>,
    /// Write into a folder that already has files in it.
    #[arg(long)]
    pub allow_overwrite: bool,
}

/// Flags of `bantam new`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    bantam new -t http-rust hello --accept-defaults\n  \
    bantam new -t http-js api -v http-path=/api/...\n  \
    bantam new -t http-empty shop --init")]
pub struct NewArgs {
    #[command(flatten)]
    template: TemplateArgs,
    /// Create the app in the current folder instead of a new one.
    #[arg(long, conflicts_with = "output")]
    init: bool,
}

/// Flags of `bantam add`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    bantam add -t http-rust admin -v http-path=/admin/...\n  \
    bantam add -t http-py -f apps/shop/spin.toml checkout")]
pub struct AddArgs {
    #[command(flatten)]
    template: TemplateArgs,
    /// The app to add to: a spin.toml or a folder holding one (default:
    /// spin.toml here or in a parent folder).
    #[arg(short = 'f', long = "file", value_name = "APP")]
    file: Option<PathBuf>,
}

/// `bantam templates ...`.
#[derive(Debug, Subcommand)]
pub enum TemplatesCommand {
    /// List the built-in templates.
    #[command(after_help = "Examples:\n  \
        bantam templates list\n  \
        bantam new -t http-py hello      start an app from one of them")]
    List,
}

/// Run `bantam templates list`.
pub fn templates(command: TemplatesCommand) -> anyhow::Result<()> {
    match command {
        TemplatesCommand::List => {
            let templates = templates::all();
            let width = templates.iter().map(|t| t.id.len()).max().unwrap_or(0);
            for template in templates {
                println!("{:width$}  {}", template.id, template.description);
            }
            Ok(())
        }
    }
}

/// Run `bantam new`.
pub fn new(args: NewArgs) -> anyhow::Result<()> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let (template, name, values) = prepare(&args.template)?;
    let dir = if args.init {
        cwd.clone()
    } else {
        cwd.join(args.template.output.clone().unwrap_or_else(|| PathBuf::from(&name)))
    };
    let manifest_path = dir.join(bantam_app::DEFAULT_MANIFEST_FILE);
    if manifest_path.exists() {
        bail!(
            "{} already exists: use `bantam add` to add a component to it",
            manifest_path.display()
        );
    }
    if !args.template.allow_overwrite && !args.init && is_non_empty_dir(&dir) {
        bail!(
            "{} already has files in it: pass --allow-overwrite to write there anyway",
            dir.display()
        );
    }

    let mut manifest = templates::render(APP_MANIFEST_HEADER, &values)?;
    if let Some(snippet) = template.render_snippet(&values)? {
        manifest.push('\n');
        manifest.push_str(&snippet);
    }
    // Check before writing anything: a value that breaks the manifest
    // (a quote in the description, say) leaves no half-made app behind.
    bantam_manifest::parse(&manifest, &manifest_path).with_context(|| {
        format!("template `{}` with these values makes a bad manifest", template.id)
    })?;

    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    template.write_content(&values, &dir)?;
    std::fs::write(&manifest_path, manifest)
        .with_context(|| format!("cannot write {}", manifest_path.display()))?;

    let shown = dir.strip_prefix(&cwd).unwrap_or(&dir);
    eprintln!("Created `{name}` from template `{}` in {}", template.id, display_dir(shown));
    if template.has_component() {
        let cd = if shown.as_os_str().is_empty() {
            String::new()
        } else {
            format!("cd {} && ", shown.display())
        };
        eprintln!("Build and serve it with:\n  {cd}bantam build --up");
    } else {
        eprintln!(
            "Add a component with:\n  bantam add -t http-rust <name> -f {}",
            display_dir(shown)
        );
    }
    Ok(())
}

/// Run `bantam add`.
pub fn add(args: AddArgs) -> anyhow::Result<()> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let manifest_path = bantam_app::find_manifest(args.file.as_deref(), &cwd)?;
    let app_dir = manifest_path.parent().map(Path::to_path_buf).unwrap_or_else(|| cwd.clone());
    let (template, name, values) = prepare(&args.template)?;
    let Some(snippet) = template.render_snippet(&values)? else {
        bail!("template `{}` makes an app, not a component: use `bantam new`", template.id);
    };
    // The component's folder, relative to the manifest.
    let folder = args.template.output.clone().unwrap_or_else(|| PathBuf::from(&name));
    if folder.is_absolute() || folder.components().any(|c| c == std::path::Component::ParentDir) {
        bail!("--output must be a folder inside the app: {}", folder.display());
    }
    let dir = app_dir.join(&folder);
    if !args.template.allow_overwrite && is_non_empty_dir(&dir) {
        bail!(
            "{} already has files in it: pass --allow-overwrite to write there anyway",
            dir.display()
        );
    }

    let original = std::fs::read_to_string(&manifest_path)
        .with_context(|| format!("cannot read {}", manifest_path.display()))?;
    let mut snippet = relocate(&snippet, &folder)?;
    if !snippet.ends_with('\n') {
        snippet.push('\n');
    }
    let mut manifest = original.clone();
    if !manifest.ends_with('\n') {
        manifest.push('\n');
    }
    manifest.push('\n');
    manifest.push_str(&snippet);
    // Checked as a whole: a clashing component id or route is reported
    // against the new manifest and nothing is written.
    let parsed = bantam_manifest::parse(&manifest, &manifest_path).with_context(|| {
        format!(
            "adding `{name}` would make {} invalid; nothing was changed",
            manifest_path.display()
        )
    })?;
    for warning in &parsed.warnings {
        crate::terminal::print_warning(warning);
    }

    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    template.write_content(&values, &dir)?;
    std::fs::write(&manifest_path, manifest)
        .with_context(|| format!("cannot write {}", manifest_path.display()))?;
    eprintln!(
        "Added component `{name}` from template `{}` in {} to {}",
        template.id,
        display_dir(&folder),
        manifest_path.display()
    );
    Ok(())
}

/// Spin's header for a new manifest.
const APP_MANIFEST_HEADER: &str = r#"spin_manifest_version = 2

[application]
name = "{{ project-name | kebab_case }}"
version = "0.1.0"
description = "{{ project-description }}"
"#;

/// Find the template, the name and the values of a `new` or `add`.
fn prepare(args: &TemplateArgs) -> anyhow::Result<(Template, String, Values)> {
    let template = templates::find(&args.template)?;
    let name = match &args.name {
        Some(name) => name.clone(),
        None if !args.accept_defaults && std::io::IsTerminal::is_terminal(&std::io::stdin()) => {
            templates::ask("Name", "")?
        }
        None => bail!(
            "give the name of the new app or component, as in `bantam new -t {} hello`",
            args.template
        ),
    };
    if name.is_empty() || !name.chars().next().is_some_and(|c| c.is_ascii_alphabetic()) {
        bail!("the name must start with a letter: `{name}`");
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        bail!("the name may hold only letters, digits, `-` and `_`: `{name}`");
    }
    let mut given = Values::new();
    if let Some(file) = &args.values_file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the values file {}", file.display()))?;
        let table: std::collections::BTreeMap<String, String> = toml::from_str(&text)
            .with_context(|| {
                format!("{}: values must be `name = \"value\"` lines", file.display())
            })?;
        given.extend(table);
    }
    given.extend(args.values.iter().cloned());
    let values = templates::resolve_values(&template, &name, given, args.accept_defaults)?;
    Ok((template, name, values))
}

/// Rewrite a component snippet for a component living in `folder`: its
/// relative `source` moves under the folder, and its build runs there.
fn relocate(snippet: &str, folder: &Path) -> anyhow::Result<String> {
    let mut doc: toml_edit::DocumentMut =
        snippet.parse().context("template snippet is not TOML")?;
    let folder_text = folder.to_str().context("the folder name is not UTF-8")?.replace('\\', "/");
    let Some(components) = doc.get_mut("component").and_then(|c| c.as_table_like_mut()) else {
        return Ok(doc.to_string());
    };
    for (_, component) in components.iter_mut() {
        let Some(component) = component.as_table_like_mut() else { continue };
        if let Some(source) = component.get_mut("source")
            && let Some(path) = source.as_str()
            && !Path::new(path).is_absolute()
        {
            *source = toml_edit::value(format!("{folder_text}/{path}"));
        }
        if let Some(build) = component.get_mut("build").and_then(|b| b.as_table_like_mut()) {
            build.insert("workdir", toml_edit::value(folder_text.clone()));
        }
    }
    Ok(doc.to_string())
}

fn is_non_empty_dir(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some())
}

fn display_dir(dir: &Path) -> String {
    if dir.as_os_str().is_empty() { ".".into() } else { dir.display().to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relocated_snippets_build_in_their_folder() {
        let snippet =
            "[component.a]\nsource = \"target/a.wasm\"\n[component.a.build]\ncommand = \"make\"\n";
        let out = relocate(snippet, Path::new("a")).unwrap();
        assert!(out.contains("source = \"a/target/a.wasm\""), "{out}");
        assert!(out.contains("workdir = \"a\""), "{out}");
    }
}
