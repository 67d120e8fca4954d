//! The route grammar of Spin's HTTP trigger.
//!
//! A route is a path pattern: literal segments (`/hello`), named segments
//! (`/users/:id`) and an optional trailing wildcard (`/files/...`, or
//! `/files/*` as Spin also accepts). `/...` matches everything. Matching
//! lives with the HTTP trigger; this module only parses and validates, so a
//! malformed route is caught when the manifest is loaded.

use std::fmt;

/// One segment of a route pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Matches exactly this text.
    Literal(String),
    /// Matches any one segment and captures it under this name.
    Param(String),
}

/// A parsed route pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePattern {
    text: String,
    segments: Vec<Segment>,
    wildcard: bool,
    component_route_len: usize,
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
    /// `:` must be followed by a name.
    #[error("segment `{0}` needs a name made of letters, digits and `_` after `:`")]
    BadParamName(String),
    /// Two `/` in a row.
    #[error("empty segment (`//`)")]
    EmptySegment,
}

impl RoutePattern {
    /// Parse a route as written in `spin.toml`.
    pub fn parse(text: &str) -> Result<Self, RouteError> {
        let Some(rest) = text.strip_prefix('/') else {
            return Err(RouteError::NoLeadingSlash);
        };
        // A trailing `/` is not a segment of its own: `/hello/` is `/hello`.
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let mut segments = Vec::new();
        let mut wildcard = false;
        let parts: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').collect()
        };
        for (index, part) in parts.iter().enumerate() {
            let last = index + 1 == parts.len();
            match *part {
                "" => return Err(RouteError::EmptySegment),
                "..." | "*" if last => wildcard = true,
                "..." | "*" => return Err(RouteError::WildcardNotLast((*part).to_string())),
                _ if part.contains("...") => {
                    return Err(RouteError::WildcardNotLast((*part).to_string()));
                }
                _ => match part.strip_prefix(':') {
                    Some(name)
                        if !name.is_empty()
                            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
                    {
                        segments.push(Segment::Param(name.to_string()));
                    }
                    Some(_) => return Err(RouteError::BadParamName((*part).to_string())),
                    None => segments.push(Segment::Literal((*part).to_string())),
                },
            }
        }
        let component_route_len = if wildcard {
            // Drop `/...` (or `/*`): `/foo/...` -> `/foo`, `/...` -> ``.
            text.trim_end_matches('/').rfind('/').unwrap_or(0)
        } else {
            text.len()
        };
        Ok(Self {
            text: text.to_string(),
            segments,
            wildcard,
            component_route_len,
        })
    }

    /// The route as written in the manifest (`spin-raw-component-route`).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the route ends in a wildcard and so matches a whole subtree.
    pub fn is_wildcard(&self) -> bool {
        self.wildcard
    }

    /// The route without its trailing wildcard (`spin-component-route`):
    /// `/foo/:id/...` gives `/foo/:id`, `/...` gives the empty string.
    pub fn component_route(&self) -> &str {
        &self.text[..self.component_route_len]
    }

    /// The segments before any wildcard.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }
}

impl fmt::Display for RoutePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_route_forms_spin_accepts() {
        let exact = RoutePattern::parse("/hello/world").unwrap();
        assert!(!exact.is_wildcard());
        assert_eq!(
            exact.segments(),
            [Segment::Literal("hello".into()), Segment::Literal("world".into())]
        );
        assert_eq!(exact.component_route(), "/hello/world");

        let param = RoutePattern::parse("/users/:user_id/...").unwrap();
        assert!(param.is_wildcard());
        assert_eq!(
            param.segments(),
            [Segment::Literal("users".into()), Segment::Param("user_id".into())]
        );
        assert_eq!(param.component_route(), "/users/:user_id");
        assert_eq!(param.as_str(), "/users/:user_id/...");

        let all = RoutePattern::parse("/...").unwrap();
        assert!(all.is_wildcard() && all.segments().is_empty());
        assert_eq!(all.component_route(), "");

        let star = RoutePattern::parse("/static/*").unwrap();
        assert!(star.is_wildcard());
        assert_eq!(star.component_route(), "/static");

        let root = RoutePattern::parse("/").unwrap();
        assert!(!root.is_wildcard() && root.segments().is_empty());
        assert_eq!(root.component_route(), "/");
    }

    #[test]
    fn rejects_malformed_routes() {
        for (route, error) in [
            ("hello", RouteError::NoLeadingSlash),
            ("", RouteError::NoLeadingSlash),
            ("/.../x", RouteError::WildcardNotLast("...".into())),
            ("/a/*/b", RouteError::WildcardNotLast("*".into())),
            ("/a...", RouteError::WildcardNotLast("a...".into())),
            ("/users/:", RouteError::BadParamName(":".into())),
            ("/users/:a-b", RouteError::BadParamName(":a-b".into())),
            ("/a//b", RouteError::EmptySegment),
        ] {
            assert_eq!(RoutePattern::parse(route), Err(error), "{route:?}");
        }
    }
}
