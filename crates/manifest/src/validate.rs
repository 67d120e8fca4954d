//! From the raw TOML to a validated [`AppManifest`].
//!
//! Every check that can fail points at the value responsible, so the
//! message reads `spin.toml:12:10: component `hello` source: ...`.

use std::collections::HashSet;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use indexmap::IndexMap;
use serde::de::DeserializeOwned;
use toml::Spanned;

use crate::raw::{RawBantamTool, RawComponent, RawHttpTrigger, RawManifest, StringOrList};
use crate::{
    AppManifest, Application, BuildConfig, Component, ComponentSource, Executor, FileMount,
    HttpTrigger, InstanceReuse, Location, ManifestError, ManifestWarning, Route, RoutePattern,
    Template, Variable,
};

/// Turns byte spans into located errors for one manifest file.
struct Source<'a> {
    text: &'a str,
    path: &'a Path,
}

impl Source<'_> {
    fn location(&self, span: Range<usize>) -> Location {
        let start = span.start.min(self.text.len());
        let before = &self.text[..start];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |at| at + 1);
        Location {
            path: self.path.to_path_buf(),
            line,
            column: self.text[line_start..start].chars().count() + 1,
        }
    }

    fn error(&self, span: Range<usize>, message: impl Into<String>) -> ManifestError {
        ManifestError::Invalid { location: self.location(span), message: message.into() }
    }

    fn toml_error(&self, error: &toml::de::Error) -> ManifestError {
        // toml's messages name the field (`unknown field `sourse`, expected
        // one of ...`); the span points at it.
        let mut message = error.message().trim().to_string();
        if let Some(kind) = message
            .strip_prefix("unknown field `")
            .and_then(|rest| rest.strip_suffix("`, expected `http`"))
        {
            message = format!(
                "trigger type `{kind}` is not supported by Bantam yet; only `[[trigger.http]]` is"
            );
        }
        self.error(error.span().unwrap_or(0..0), message)
    }

    /// Decode a value embedded in the manifest (such as an inline table)
    /// with spans that still point into the whole file: the document is
    /// re-parsed with everything outside the value blanked out.
    fn reparse<T: DeserializeOwned>(&self, span: Range<usize>) -> Result<T, ManifestError> {
        #[derive(serde::Deserialize)]
        struct Wrapper<T> {
            x: T,
        }
        let mut doc: String =
            self.text[..span.start].chars().map(|c| if c == '\n' { '\n' } else { ' ' }).collect();
        // Two columns before the value always exist (`key = value`).
        doc.truncate(doc.len().saturating_sub(2));
        doc.push_str("x=");
        doc.push_str(&self.text[span.clone()]);
        match toml::from_str::<Wrapper<T>>(&doc) {
            Ok(wrapper) => Ok(wrapper.x),
            Err(error) => Err(self.toml_error(&error)),
        }
    }
}

pub(crate) fn validate(text: &str, path: &Path) -> Result<AppManifest, ManifestError> {
    let source = Source { text, path };
    // The version decides how the rest is read, so it is checked first: a
    // version 1 manifest should hear that, not about its unknown fields.
    #[derive(serde::Deserialize)]
    struct VersionOnly {
        spin_manifest_version: Option<Spanned<toml::Value>>,
    }
    let version: VersionOnly = toml::from_str(text).map_err(|e| source.toml_error(&e))?;
    match &version.spin_manifest_version {
        Some(version) => check_version(&source, version)?,
        None => {
            return Err(source.error(
                0..0,
                "missing field `spin_manifest_version` (expected `spin_manifest_version = 2`)",
            ));
        }
    }
    let raw: RawManifest = toml::from_str(text).map_err(|e| source.toml_error(&e))?;
    let application = raw.application.get_ref();
    let http_base = application.trigger.http.as_ref().and_then(|h| h.base.as_ref());
    if let Some(base) = http_base
        && base.get_ref() != "/"
    {
        return Err(source.error(
            base.span(),
            format!(
                "application.trigger.http.base = \"{}\": base paths other than \"/\" are not \
                 supported (as in Spin); include the prefix in each route instead",
                base.get_ref()
            ),
        ));
    }

    let http_base = http_base.map(|base| base.get_ref().clone());

    let mut variables = IndexMap::new();
    for (name, variable) in &raw.variables {
        check_id(&source, name, IdKind::Variable)?;
        let v = variable.get_ref();
        if v.required && v.default.is_some() {
            return Err(source.error(
                variable.span(),
                format!(
                    "variable `{}`: `required = true` and `default` cannot both be given",
                    name.get_ref()
                ),
            ));
        }
        if !v.required && v.default.is_none() {
            return Err(source.error(
                variable.span(),
                format!("variable `{}`: give a `default` or set `required = true`", name.get_ref()),
            ));
        }
        variables.insert(
            name.get_ref().clone(),
            Variable {
                default: v.default.clone(),
                required: v.required,
                secret: v.secret,
                description: v.description.clone(),
            },
        );
    }

    let manifest_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let context = ComponentContext {
        source: &source,
        manifest_dir: &manifest_dir,
        app_variables: &variables,
    };
    let mut components = IndexMap::new();
    for (id, component) in &raw.component {
        check_id(&source, id, IdKind::Component)?;
        let component = convert_component(&context, id.get_ref(), component.get_ref())?;
        components.insert(id.get_ref().clone(), component);
    }

    let mut http_triggers = Vec::new();
    let mut warnings = Vec::new();
    // Public routes so far: pattern, component, where the route is written.
    let mut routes_seen: Vec<(RoutePattern, String, Range<usize>)> = Vec::new();
    let trigger_ids = trigger_ids(&raw.trigger.http);
    for (trigger, trigger_id) in raw.trigger.http.iter().zip(&trigger_ids) {
        let trigger_span = trigger.span();
        let trigger = trigger.get_ref();
        let route = convert_route(&source, &trigger.route)?;
        let route_label = match &route {
            Route::Public(pattern) => format!("trigger.http route \"{pattern}\""),
            Route::Private => "trigger.http route { private = true }".to_string(),
        };
        if let Some(static_response) = &trigger.static_response {
            return Err(source.error(
                static_response.span(),
                format!("{route_label}: `static_response` is not supported by Bantam yet"),
            ));
        }
        let component = component_reference(
            &context,
            trigger,
            trigger_span,
            trigger_id,
            &route_label,
            &mut components,
        )?;
        let executor = convert_executor(&source, trigger.executor.as_ref(), &route_label)?;
        if let Route::Public(pattern) = &route {
            let location = source.location(trigger.route.span());
            if let Some(message) = route_warning(&source, pattern, &component, &routes_seen) {
                warnings.push(ManifestWarning { location: location.clone(), message });
            }
            // Spin answers `/.well-known/spin/*` itself and logs an error
            // for app routes under it; the route is kept but never reached.
            if pattern.matched_route().starts_with(RESERVED_PREFIX) {
                warnings.push(ManifestWarning {
                    location,
                    message: format!(
                        "route \"{pattern}\" is under the reserved `{RESERVED_PREFIX}`: requests \
                         there are answered by the host and never reach component `{component}` \
                         (as in Spin)"
                    ),
                });
            }
            routes_seen.push((pattern.clone(), component.clone(), trigger.route.span()));
        }
        http_triggers.push(HttpTrigger { id: trigger.id.clone(), route, component, executor });
    }

    let application = raw.application.into_inner();
    Ok(AppManifest {
        application: Application {
            name: application.name,
            version: application.version,
            description: application.description,
            authors: application.authors,
            http_base,
        },
        variables,
        http_triggers,
        components,
        warnings,
        manifest_path: path.to_path_buf(),
        manifest_dir,
    })
}

fn check_version(source: &Source<'_>, version: &Spanned<toml::Value>) -> Result<(), ManifestError> {
    match version.get_ref() {
        toml::Value::Integer(2) => Ok(()),
        toml::Value::String(v) if v == "1" => Err(source.error(
            version.span(),
            "spin_manifest_version = \"1\": version 1 manifests are not supported; \
             upgrade to version 2 (`spin doctor` can do it)",
        )),
        other => Err(source.error(
            version.span(),
            format!("spin_manifest_version = {other}: only version 2 is supported"),
        )),
    }
}

/// The kinds of identifier Spin restricts, each with its own rules.
#[derive(Clone, Copy, PartialEq, Eq)]
enum IdKind {
    /// `[component.<id>]`: Spin's `KebabId`.
    Component,
    /// `[variables]` names and a component's `variables` keys: Spin's
    /// `LowerSnakeId`.
    Variable,
    /// `key_value_stores` and `sqlite_databases` labels: kebab-case or
    /// snake_case (Spin's `KebabId` or `SnakeId`).
    StoreLabel,
}

/// Check an identifier with Spin's rules: words joined by one delimiter,
/// each word starting with an ASCII letter and made of ASCII letters and
/// digits, all lowercase or all uppercase (all lowercase for variables).
fn check_id(source: &Source<'_>, id: &Spanned<String>, kind: IdKind) -> Result<(), ManifestError> {
    let text = id.get_ref();
    let problem = match kind {
        IdKind::Component => id_problem(text, '-', false),
        IdKind::Variable => id_problem(text, '_', true),
        // Report the problem for the style the label seems to attempt.
        IdKind::StoreLabel => id_problem(text, '-', false)
            .and(id_problem(text, '_', false))
            .and(id_problem(text, if text.contains('_') { '_' } else { '-' }, false)),
    };
    let Some(problem) = problem else {
        return Ok(());
    };
    let what = match kind {
        IdKind::Component => {
            format!("component id `{text}` must be kebab-case like `my-component`")
        }
        IdKind::Variable => {
            format!("variable name `{text}` must be lower_snake_case like `api_key`")
        }
        IdKind::StoreLabel => {
            format!(
                "store label `{text}` must be kebab-case or snake_case like `my-store` or `my_store`"
            )
        }
    };
    Err(source.error(id.span(), format!("{what}: {problem}")))
}

/// Why `id` is not words joined by `delim` (as Spin's `Id` type defines
/// them), or `None` if it is.
pub(crate) fn id_problem(id: &str, delim: char, lowercase_only: bool) -> Option<String> {
    if id.is_empty() {
        return Some("it is empty".into());
    }
    let wrong = if delim == '-' { '_' } else { '-' };
    if id.contains(wrong) {
        return Some(format!("words are separated with `{delim}`, not `{wrong}`"));
    }
    for word in id.split(delim) {
        let mut chars = word.chars();
        let Some(first) = chars.next() else {
            return Some(format!("`{delim}` must separate non-empty words"));
        };
        if !first.is_ascii_alphabetic() {
            return Some(format!("each word must start with an ASCII letter, not `{first}`"));
        }
        if let Some(bad) = chars.clone().find(|c| !c.is_ascii_alphanumeric()) {
            return Some(format!("words may contain only ASCII letters and digits, not `{bad}`"));
        }
        let upper = first.is_ascii_uppercase();
        if chars.any(|c| c.is_ascii_alphabetic() && c.is_ascii_uppercase() != upper) {
            return Some(format!("each word must be all lowercase or all UPPERCASE, not `{word}`"));
        }
        if lowercase_only && upper {
            return Some(format!("words must be lowercase, not `{word}`"));
        }
    }
    None
}

/// Spin's reserved path prefix, answered by the host itself.
const RESERVED_PREFIX: &str = "/.well-known/spin/";

/// The warning for a public route that repeats an earlier one, if it does.
///
/// Spin keys routes by their text: a later trigger with the same text
/// replaces the earlier one (the last one wins, and Spin logs an error).
/// Routes written differently but matching the same paths (`/a` and `/a/`)
/// are both kept, and the first one always wins: the later one is dead.
fn route_warning(
    source: &Source<'_>,
    pattern: &RoutePattern,
    component: &str,
    seen: &[(RoutePattern, String, Range<usize>)],
) -> Option<String> {
    if let Some((_, previous, span)) =
        seen.iter().rev().find(|(p, _, _)| p.as_str() == pattern.as_str())
    {
        return Some(format!(
            "duplicate route \"{pattern}\": the trigger for component `{component}` replaces the \
             one for `{previous}` at line {} (the last one wins, as in Spin)",
            source.location(span.clone()).line
        ));
    }
    let (earlier, previous, span) = seen.iter().find(|(p, _, _)| p.is_equivalent(pattern))?;
    Some(format!(
        "route \"{pattern}\" for component `{component}` is never reached: \"{earlier}\" for \
         `{previous}` at line {} matches the same paths and comes first (the first one wins, as in Spin)",
        source.location(span.clone()).line
    ))
}

/// The id Spin gives each HTTP trigger: its own `id`, else
/// `<component>-http-trigger` for a trigger naming a component, else
/// `http-trigger<n>`; never one already taken. Inline component ids are
/// derived from these.
fn trigger_ids(triggers: &[Spanned<RawHttpTrigger>]) -> Vec<String> {
    let given = |trigger: &RawHttpTrigger| trigger.id.clone().filter(|id| !id.is_empty());
    let mut taken: HashSet<String> = triggers.iter().filter_map(|t| given(t.get_ref())).collect();
    let mut counter = 1;
    triggers
        .iter()
        .map(|trigger| {
            let trigger = trigger.get_ref();
            if let Some(id) = given(trigger) {
                return id;
            }
            if let Some(toml::Value::String(component)) =
                trigger.component.as_ref().map(Spanned::get_ref)
            {
                let natural = format!("{component}-http-trigger");
                if taken.insert(natural.clone()) {
                    return natural;
                }
            }
            loop {
                let id = format!("http-trigger{counter}");
                counter += 1;
                if taken.insert(id.clone()) {
                    return id;
                }
            }
        })
        .collect()
}

fn convert_route(
    source: &Source<'_>,
    route: &Spanned<toml::Value>,
) -> Result<Route, ManifestError> {
    match route.get_ref() {
        toml::Value::String(text) => RoutePattern::parse(text)
            .map(Route::Public)
            .map_err(|e| source.error(route.span(), format!("trigger.http route \"{text}\": malformed route: {e}"))),
        toml::Value::Table(table) => match (table.get("private"), table.len()) {
            (Some(toml::Value::Boolean(true)), 1) => Ok(Route::Private),
            (Some(toml::Value::Boolean(false)), 1) => Err(source.error(
                route.span(),
                "trigger.http route: `private = false` is not allowed; give the route as a string instead",
            )),
            _ => Err(source.error(
                route.span(),
                "trigger.http route: expected a route string such as \"/hello/...\" or `{ private = true }`",
            )),
        },
        _ => Err(source.error(
            route.span(),
            "trigger.http route: expected a route string such as \"/hello/...\" or `{ private = true }`",
        )),
    }
}

/// What converting any component needs besides the component itself,
/// whether it is a `[component.<id>]` table or inline in a trigger.
struct ComponentContext<'a> {
    /// The manifest, for the locations of errors.
    source: &'a Source<'a>,
    /// The directory its paths are relative to.
    manifest_dir: &'a Path,
    /// The application variables its own variables may refer to.
    app_variables: &'a IndexMap<String, Variable>,
}

/// The id of the component a trigger names, adding inline components
/// (`component = { source = ... }`) under a generated id.
fn component_reference(
    context: &ComponentContext<'_>,
    trigger: &RawHttpTrigger,
    trigger_span: Range<usize>,
    trigger_id: &str,
    route_label: &str,
    components: &mut IndexMap<String, Component>,
) -> Result<String, ManifestError> {
    let source = context.source;
    let Some(reference) = &trigger.component else {
        return Err(source.error(trigger_span, format!("{route_label}: missing field `component`")));
    };
    match reference.get_ref() {
        toml::Value::String(id) => {
            if components.contains_key(id) {
                Ok(id.clone())
            } else {
                let defined = components.keys().cloned().collect::<Vec<_>>();
                Err(source.error(
                    reference.span(),
                    format!(
                        "{route_label}: component `{id}` is not defined (defined components: {})",
                        if defined.is_empty() { "none".to_string() } else { defined.join(", ") }
                    ),
                ))
            }
        }
        toml::Value::Table(_) => {
            let raw: RawComponent = source.reparse(reference.span())?;
            // Spin's naming, so logs, listings and `<id>.spin.internal`
            // agree: `<trigger id>-component` if that is a free kebab-case
            // id, else the first free `inline-component<n>`.
            let natural = format!("{trigger_id}-component");
            let id = if id_problem(&natural, '-', false).is_none()
                && !components.contains_key(&natural)
            {
                natural
            } else {
                (1..)
                    .map(|n| format!("inline-component{n}"))
                    .find(|id| !components.contains_key(id))
                    .expect("some number is free")
            };
            let component = convert_component(context, &id, &raw)?;
            components.insert(id.clone(), component);
            Ok(id)
        }
        _ => Err(source.error(
            reference.span(),
            format!(
                "{route_label}: `component` must be a component id or an inline component table"
            ),
        )),
    }
}

fn convert_executor(
    source: &Source<'_>,
    executor: Option<&Spanned<toml::Value>>,
    route_label: &str,
) -> Result<Executor, ManifestError> {
    let Some(executor) = executor else {
        return Ok(Executor::Http);
    };
    let bad = |message: &str| {
        source.error(executor.span(), format!("{route_label}: executor: {message}"))
    };
    let toml::Value::Table(table) = executor.get_ref() else {
        return Err(bad("expected a table such as `{ type = \"http\" }`"));
    };
    match table.get("type").and_then(toml::Value::as_str) {
        Some("http" | "spin") => match table.keys().find(|key| *key != "type") {
            None => Ok(Executor::Http),
            Some(key) => Err(bad(&format!("unknown field `{key}` for the http executor"))),
        },
        Some("wagi") => {
            for key in table.keys() {
                if !matches!(key.as_str(), "type" | "argv" | "entrypoint") {
                    return Err(bad(&format!("unknown field `{key}` for the wagi executor")));
                }
            }
            let field =
                |name: &str| table.get(name).and_then(toml::Value::as_str).map(str::to_string);
            Ok(Executor::Wagi { argv: field("argv"), entrypoint: field("entrypoint") })
        }
        Some(other) => {
            Err(bad(&format!("unknown executor type `{other}`, expected `http` or `wagi`")))
        }
        None => Err(bad("missing field `type`")),
    }
}

fn convert_component(
    context: &ComponentContext<'_>,
    id: &str,
    raw: &RawComponent,
) -> Result<Component, ManifestError> {
    let ComponentContext { source, manifest_dir, app_variables } = *context;
    if let Some(dependencies) = &raw.dependencies
        && !dependencies.get_ref().is_empty()
    {
        return Err(source.error(
            dependencies.span(),
            format!("component `{id}`: `dependencies` are not supported by Bantam yet"),
        ));
    }
    if let Some(profile) = &raw.profile
        && !profile.get_ref().is_empty()
    {
        return Err(source.error(
            profile.span(),
            format!("component `{id}`: build `profile`s are not supported by Bantam yet"),
        ));
    }

    for label in raw.key_value_stores.iter().chain(&raw.sqlite_databases) {
        check_id(source, label, IdKind::StoreLabel)?;
    }
    // Templates refer to application variables in component variables,
    // and to the component's own variables in allowed_outbound_hosts, as
    // in Spin; both are checked here so the error points at the line.
    for (name, value) in &raw.variables {
        check_id(source, name, IdKind::Variable)?;
        let template = Template::parse(value).map_err(|problem| {
            source.error(
                name.span(),
                format!("component `{id}` variable `{}`: {problem}", name.get_ref()),
            )
        })?;
        if let Some(missing) = template.references().find(|r| !app_variables.contains_key(*r)) {
            return Err(source.error(
                name.span(),
                format!(
                    "component `{id}` variable `{}` refers to `{{{{ {missing} }}}}`, which is not an application variable: add it to [variables]",
                    name.get_ref()
                ),
            ));
        }
    }
    for entry in &raw.allowed_outbound_hosts {
        let template = Template::parse(entry.get_ref()).map_err(|problem| {
            source
                .error(entry.span(), format!("component `{id}` allowed_outbound_hosts: {problem}"))
        })?;
        if template.references().next().is_none() {
            // A literal entry can be checked now; one with templates is
            // checked once its variables are resolved, at start-up.
            crate::allowed_hosts::AllowedHost::parse(entry.get_ref()).map_err(|problem| {
                source.error(
                    entry.span(),
                    format!("component `{id}` allowed_outbound_hosts: {problem}"),
                )
            })?;
        }
        if let Some(missing) =
            template.references().find(|r| !raw.variables.keys().any(|name| name.get_ref() == r))
        {
            return Err(source.error(
                entry.span(),
                format!(
                    "component `{id}` allowed_outbound_hosts: `{}` refers to `{{{{ {missing} }}}}`, which is not one of the component's variables",
                    entry.get_ref()
                ),
            ));
        }
    }

    let component_source = convert_source(source, id, &raw.source)?;
    let source_path = match &component_source {
        ComponentSource::Local(file) => manifest_dir.join(file),
        ComponentSource::Remote { .. } | ComponentSource::Registry { .. } => {
            return Err(source.error(
                raw.source.span(),
                format!("component `{id}` source: only local files are supported by Bantam yet"),
            ));
        }
    };

    let files = raw
        .files
        .iter()
        .map(|entry| match entry.get_ref() {
            toml::Value::String(pattern) => Ok(FileMount::Glob(pattern.clone())),
            toml::Value::Table(table) => {
                let field = |name: &str| table.get(name).and_then(toml::Value::as_str).map(str::to_string);
                match (field("source"), field("destination"), table.len()) {
                    (Some(source), Some(destination), 2) => Ok(FileMount::Mapping { source, destination }),
                    _ => Err(source.error(
                        entry.span(),
                        format!("component `{id}` files: expected a glob or `{{ source = \"dir\", destination = \"/path\" }}`"),
                    )),
                }
            }
            _ => Err(source.error(
                entry.span(),
                format!("component `{id}` files: expected a glob or `{{ source = \"dir\", destination = \"/path\" }}`"),
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;

    Ok(Component {
        id: id.to_string(),
        description: raw.description.clone(),
        source: component_source,
        source_path,
        source_location: source.location(raw.source.span()),
        files,
        exclude_files: raw.exclude_files.clone(),
        environment: raw.environment.clone(),
        allowed_outbound_hosts: raw
            .allowed_outbound_hosts
            .iter()
            .map(|h| h.get_ref().clone())
            .collect(),
        allowed_http_hosts: raw.allowed_http_hosts.clone(),
        key_value_stores: raw.key_value_stores.iter().map(|l| l.get_ref().clone()).collect(),
        sqlite_databases: raw.sqlite_databases.iter().map(|l| l.get_ref().clone()).collect(),
        ai_models: raw.ai_models.clone(),
        variables: raw
            .variables
            .iter()
            .map(|(name, value)| (name.get_ref().clone(), value.clone()))
            .collect(),
        build: raw.build.as_ref().map(|build| BuildConfig {
            command: match &build.command {
                StringOrList::One(command) => vec![command.clone()],
                StringOrList::Many(commands) => commands.clone(),
            },
            workdir: build.workdir.as_ref().map(Into::into),
            watch: build.watch.clone(),
        }),
        dependencies_inherit_configuration: raw.dependencies_inherit_configuration.unwrap_or(false),
        instance_reuse: match raw.tool.get("bantam") {
            Some(table) => convert_bantam_tool(source, id, table)?,
            None => None,
        },
    })
}

/// `[component.<id>.tool.bantam]`: Bantam's own settings for a component.
/// The table is Bantam's, so unknown fields are errors here too.
fn convert_bantam_tool(
    source: &Source<'_>,
    id: &str,
    table: &Spanned<toml::Value>,
) -> Result<Option<InstanceReuse>, ManifestError> {
    let bad = |message: String| {
        source.error(table.span(), format!("component `{id}` tool.bantam: {message}"))
    };
    let raw: RawBantamTool =
        table.get_ref().clone().try_into().map_err(|e: toml::de::Error| bad(e.message().into()))?;
    let Some(reuse) = raw.instance_reuse else { return Ok(None) };
    let max_requests = u32::try_from(reuse.max_requests)
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| bad("instance_reuse.max_requests must be a whole number from 1".into()))?;
    let max_concurrent = match reuse.max_concurrent {
        None => 1,
        Some(n) => {
            u32::try_from(n).ok().filter(|n| (1..=max_requests).contains(n)).ok_or_else(|| {
                bad(format!(
                    "instance_reuse.max_concurrent must be from 1 to max_requests ({max_requests})"
                ))
            })?
        }
    };
    let idle_timeout = match &reuse.idle_timeout {
        None => Duration::from_secs(1),
        Some(toml::Value::Integer(seconds)) if *seconds >= 0 => {
            Duration::from_secs(seconds.unsigned_abs())
        }
        Some(toml::Value::String(text)) => crate::units::parse_duration(text)
            .map_err(|problem| bad(format!("instance_reuse.idle_timeout: {problem}")))?,
        Some(_) => {
            return Err(bad(
                "instance_reuse.idle_timeout: expected a duration such as \"1s\" or \"500ms\""
                    .into(),
            ));
        }
    };
    if idle_timeout.is_zero() || idle_timeout > InstanceReuse::MAX_IDLE_TIMEOUT {
        return Err(bad(format!(
            "instance_reuse.idle_timeout must be more than 0 and at most {}s",
            InstanceReuse::MAX_IDLE_TIMEOUT.as_secs()
        )));
    }
    Ok(Some(InstanceReuse { max_requests, max_concurrent, idle_timeout }))
}

fn convert_source(
    source: &Source<'_>,
    id: &str,
    raw: &Spanned<toml::Value>,
) -> Result<ComponentSource, ManifestError> {
    let bad = || {
        source.error(
            raw.span(),
            format!(
                "component `{id}` source: expected a path such as \"target/app.wasm\", \
                 `{{ url, digest }}` or `{{ package, version }}`"
            ),
        )
    };
    match raw.get_ref() {
        toml::Value::String(path) => Ok(ComponentSource::Local(path.clone())),
        toml::Value::Table(table) => {
            let field =
                |name: &str| table.get(name).and_then(toml::Value::as_str).map(str::to_string);
            if let (Some(url), Some(digest)) = (field("url"), field("digest")) {
                Ok(ComponentSource::Remote { url, digest })
            } else if let (Some(package), Some(version)) = (field("package"), field("version")) {
                Ok(ComponentSource::Registry { registry: field("registry"), package, version })
            } else {
                Err(bad())
            }
        }
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::id_problem;

    #[test]
    fn ids_follow_spins_rules() {
        for valid in ["hello", "hello2", "hello-world", "HELLO-world", "a-b-c", "x1-y2"] {
            assert_eq!(id_problem(valid, '-', false), None, "{valid}");
        }
        for invalid in ["", "hello-2", "-a", "a-", "a--b", "Hello", "hello_world", "héllo", "a b"]
        {
            assert!(id_problem(invalid, '-', false).is_some(), "{invalid}");
        }
        assert_eq!(id_problem("api_key", '_', true), None);
        assert!(id_problem("API_KEY", '_', true).is_some());
        assert_eq!(id_problem("API_KEY", '_', false), None);
    }
}
