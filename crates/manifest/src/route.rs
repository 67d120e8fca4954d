//! The route grammar of Spin's HTTP trigger.
//!
//! A route is a path pattern: literal segments (`/hello`), named segments
//! (`/users/:id`) and an optional trailing wildcard (`/files/...`, or
//! `/files/*` as Spin also accepts). `/...` matches everything. Matching
//! lives with the HTTP trigger; this module only parses and validates, so a
//! malformed route is caught when the manifest is loaded.
//!
//! The grammar follows what Spin's router (the `routefinder` crate) makes
//! of a route, so that every route Spin serves is read the same way here:
//! leading, trailing and doubled `/` are ignored (`//a//b/` is `/a/b`), and
//! a segment is a wildcard only when it is exactly `...` or `*`, otherwise
//! a literal (`/a...` is the literal segment `a...`). Bantam is stricter
//! where Spin would accept a route that cannot work: a wildcard that is not
//! last (Spin's router panics on the first request), an unnamed or oddly
//! named `:` parameter, and a route not starting with `/`.

use std::fmt;

/// One segment of a route pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Matches exactly this text (compared as sent, not percent-decoded).
    Literal(String),
    /// Matches any one non-empty segment and captures it under this name.
    Param(String),
}

/// A parsed route pattern.
#[derive(Clone, PartialEq, Eq)]
pub struct RoutePattern {
    text: String,
    segments: Vec<Segment>,
    wildcard: bool,
}

/// Why a route does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// Routes are absolute paths.
    #[error("must start with `/`")]
    NoLeadingSlash,
    /// `...` (or `*`) may only end a route.
    #[error("`{0}` may only be the last segment")]
    WildcardNotLast(String),
    /// A wildcard has no name (Spin rejects `*name` too).
    #[error("segment `{0}`: a wildcard takes no name; write `...` or `*`")]
    NamedWildcard(String),
    /// `:` must be followed by a name usable in a `spin-path-match-<name>`
    /// header.
    #[error("segment `{0}` needs a name made of letters, digits, `_` and `-` after `:`")]
    BadParamName(String),
    /// A `:` parameter sharing its segment with `.` (`/:name.json`,
    /// `/file.:ext`): Spin's router reads these as a parameter plus a
    /// literal, which Bantam does not do.
    #[error("segment `{0}`: a `:` parameter must be a whole segment (no `.` before or after it)")]
    PartialParam(String),
}

impl RoutePattern {
    /// Parse a route as written in `spin.toml`.
    pub fn parse(text: &str) -> Result<Self, RouteError> {
        let Some(rest) = text.strip_prefix('/') else {
            return Err(RouteError::NoLeadingSlash);
        };
        // Empty parts come from `//` and a trailing `/`; Spin's router
        // ignores them, so `/hello/` and `/hello` are the same pattern.
        let mut parts = rest.split('/').filter(|part| !part.is_empty()).peekable();
        let mut segments = Vec::new();
        let mut wildcard = false;
        while let Some(part) = parts.next() {
            let last = parts.peek().is_none();
            match part {
                "..." | "*" if last => wildcard = true,
                "..." | "*" => return Err(RouteError::WildcardNotLast(part.to_string())),
                _ if part.starts_with('*') => {
                    return Err(RouteError::NamedWildcard(part.to_string()));
                }
                _ => match part.strip_prefix(':') {
                    Some(name) if name.contains('.') => {
                        return Err(RouteError::PartialParam(part.to_string()));
                    }
                    Some(name) if !name.is_empty() && name.chars().all(is_param_char) => {
                        segments.push(Segment::Param(name.to_string()));
                    }
                    Some(_) => return Err(RouteError::BadParamName(part.to_string())),
                    None if part.contains(".:") => {
                        return Err(RouteError::PartialParam(part.to_string()));
                    }
                    None => segments.push(Segment::Literal(part.to_string())),
                },
            }
        }
        Ok(Self { text: text.to_string(), segments, wildcard })
    }

    /// The route as written in the manifest (`spin-raw-component-route`).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the route ends in a wildcard and so matches a whole subtree.
    pub fn is_wildcard(&self) -> bool {
        self.wildcard
    }

    /// The route without a trailing `/...` (`spin-component-route`):
    /// `/foo/:id/...` gives `/foo/:id`, `/...` gives the empty string.
    /// Like Spin, only `/...` is removed: `/static/*` stays `/static/*`.
    pub fn component_route(&self) -> &str {
        self.text.strip_suffix("/...").unwrap_or(&self.text)
    }

    /// The route as Spin reports it in `spin-matched-route` (the route
    /// joined to the base `/`): the text without one trailing `/`. So `/`
    /// gives the empty string and `/hello/` gives `/hello`.
    pub fn matched_route(&self) -> &str {
        self.text.strip_suffix('/').unwrap_or(&self.text)
    }

    /// The literal and `:name` segments, in order, before any wildcard.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Whether both patterns match exactly the same paths, even if written
    /// differently (`/a/` and `/a`, `/x/*` and `/x/...`, `/:id` and
    /// `/:name`). Of two such routes only one can ever be reached.
    pub fn is_equivalent(&self, other: &RoutePattern) -> bool {
        self.wildcard == other.wildcard
            && self.segments.len() == other.segments.len()
            && self.segments.iter().zip(&other.segments).all(|pair| match pair {
                (Segment::Literal(a), Segment::Literal(b)) => a == b,
                (Segment::Param(_), Segment::Param(_)) => true,
                _ => false,
            })
    }
}

/// Characters allowed in a `:name`: the name becomes part of a header name
/// (`spin-path-match-<name>`), so only characters valid there, less `.`,
/// which Spin's router treats as a separator.
fn is_param_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_-!#$%&'*+^`|~".contains(c)
}

impl fmt::Display for RoutePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for RoutePattern {
    // The text says everything the parsed form does, and reads better in
    // test expectations.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RoutePattern").field(&self.text).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lit(text: &str) -> Segment {
        Segment::Literal(text.into())
    }

    fn param(name: &str) -> Segment {
        Segment::Param(name.into())
    }

    #[test]
    fn parses_the_route_forms_spin_accepts() {
        let exact = RoutePattern::parse("/hello/world").unwrap();
        assert!(!exact.is_wildcard());
        assert_eq!(exact.segments(), [lit("hello"), lit("world")]);
        assert_eq!(exact.component_route(), "/hello/world");
        assert_eq!(exact.matched_route(), "/hello/world");

        let param_route = RoutePattern::parse("/users/:user_id/...").unwrap();
        assert!(param_route.is_wildcard());
        assert_eq!(param_route.segments(), [lit("users"), param("user_id")]);
        assert_eq!(param_route.component_route(), "/users/:user_id");
        assert_eq!(param_route.as_str(), "/users/:user_id/...");
        assert_eq!(param_route.to_string(), "/users/:user_id/...");

        let all = RoutePattern::parse("/...").unwrap();
        assert!(all.is_wildcard() && all.segments().is_empty());
        assert_eq!(all.component_route(), "");
        assert_eq!(all.matched_route(), "/...");

        let star = RoutePattern::parse("/static/*").unwrap();
        assert!(star.is_wildcard());
        assert_eq!(star.segments(), [lit("static")]);
        assert_eq!(star.component_route(), "/static/*");

        let root = RoutePattern::parse("/").unwrap();
        assert!(!root.is_wildcard() && root.segments().is_empty());
        assert_eq!(root.component_route(), "/");
        assert_eq!(root.matched_route(), "");
    }

    #[test]
    fn slashes_are_normalised_as_spin_does() {
        let trailing = RoutePattern::parse("/hello/").unwrap();
        assert_eq!(trailing.segments(), [lit("hello")]);
        assert_eq!(trailing.as_str(), "/hello/");
        assert_eq!(trailing.matched_route(), "/hello");
        assert_eq!(RoutePattern::parse("//a//b//").unwrap().segments(), [lit("a"), lit("b")]);
        assert!(RoutePattern::parse("/files/.../").unwrap().is_wildcard());
    }

    #[test]
    fn odd_literals_stay_literal() {
        for (route, segment) in [
            ("/a...", "a..."),
            ("/file.txt", "file.txt"),
            ("/a:b", "a:b"),
            ("/a*", "a*"),
            ("/caf%C3%A9", "caf%C3%A9"),
        ] {
            assert_eq!(RoutePattern::parse(route).unwrap().segments(), [lit(segment)], "{route}");
        }
        assert_eq!(RoutePattern::parse("/:kebab-name").unwrap().segments(), [param("kebab-name")]);
    }

    #[test]
    fn equivalence_ignores_spelling_and_param_names() {
        let eq = |a: &str, b: &str| {
            RoutePattern::parse(a).unwrap().is_equivalent(&RoutePattern::parse(b).unwrap())
        };
        assert!(eq("/a", "/a/"));
        assert!(eq("/x/*", "/x/..."));
        assert!(eq("/u/:id", "/u/:name"));
        assert!(!eq("/a", "/a/..."));
        assert!(!eq("/a", "/:a"));
        assert!(!eq("/a/b", "/a"));
    }

    #[test]
    fn rejects_malformed_routes() {
        for (route, error) in [
            ("hello", RouteError::NoLeadingSlash),
            ("", RouteError::NoLeadingSlash),
            ("/.../x", RouteError::WildcardNotLast("...".into())),
            ("/a/*/b", RouteError::WildcardNotLast("*".into())),
            ("/a/*rest", RouteError::NamedWildcard("*rest".into())),
            ("/users/:", RouteError::BadParamName(":".into())),
            ("/users/:a b", RouteError::BadParamName(":a b".into())),
            ("/users/:é", RouteError::BadParamName(":é".into())),
            ("/:name.json", RouteError::PartialParam(":name.json".into())),
            ("/file.:ext", RouteError::PartialParam("file.:ext".into())),
        ] {
            assert_eq!(RoutePattern::parse(route), Err(error), "{route:?}");
        }
    }
}
