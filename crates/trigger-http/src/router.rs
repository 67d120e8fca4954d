//! Route matching with Spin's semantics.
//!
//! Built once at start-up from the manifest's routes; [`Router::route`]
//! picks the most specific route for a request path. Specificity is decided
//! segment by segment from the left: a literal segment beats a `:name`
//! segment, which beats a trailing wildcard; when two routes tie, one
//! without a wildcard beats one with. So `/users/me` beats `/users/:id`,
//! which beats `/users/...`, and `/...` matches what nothing else does.
//! Duplicate routes: the last one given wins, as in Spin.
//!
//! Path segments are compared as sent, without percent-decoding, and
//! captured `:name` values are passed on undecoded, as Spin does.

use bantam_manifest::{RoutePattern, Segment};

/// The routes of an app, ready to match.
#[derive(Debug)]
pub struct Router<T> {
    routes: Vec<(RoutePattern, T)>,
}

/// The result of a successful match.
#[derive(Debug)]
pub struct RouteMatch<'a, T> {
    /// What the route leads to.
    pub target: &'a T,
    /// The route that matched.
    pub pattern: &'a RoutePattern,
    /// The part of the path matched by a trailing wildcard, from its
    /// leading `/` (`spin-path-info`); empty when nothing is left.
    pub path_info: &'a str,
    /// The `:name` segments and the text each matched, in route order.
    pub params: Vec<(&'a str, &'a str)>,
}

/// How well one path segment matched: higher is more specific.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Rank {
    Wildcard,
    Param,
    Literal,
}

impl<T> Router<T> {
    /// Build a router; a later route with the same pattern text replaces an
    /// earlier one.
    pub fn build(routes: impl IntoIterator<Item = (RoutePattern, T)>) -> Self {
        let mut kept: Vec<(RoutePattern, T)> = Vec::new();
        for (pattern, target) in routes {
            kept.retain(|(existing, _)| existing.as_str() != pattern.as_str());
            kept.push((pattern, target));
        }
        Self { routes: kept }
    }

    /// The routes, in the order given (replaced duplicates left out).
    pub fn routes(&self) -> impl Iterator<Item = (&RoutePattern, &T)> {
        self.routes.iter().map(|(pattern, target)| (pattern, target))
    }

    /// The most specific route matching `path` (no query string).
    pub fn route<'a>(&'a self, path: &'a str) -> Option<RouteMatch<'a, T>> {
        let segments = path_segments(path);
        let mut best: Option<(usize, Vec<Rank>)> = None;
        for (index, (pattern, _)) in self.routes.iter().enumerate() {
            let Some(ranks) = ranks(pattern, &segments) else {
                continue;
            };
            let better = match &best {
                None => true,
                Some((best_index, best_ranks)) => {
                    let best_pattern = &self.routes[*best_index].0;
                    (ranks.as_slice(), !pattern.is_wildcard())
                        >= (best_ranks.as_slice(), !best_pattern.is_wildcard())
                }
            };
            if better {
                best = Some((index, ranks));
            }
        }
        let (index, _) = best?;
        let (pattern, target) = &self.routes[index];
        let prefix = pattern.segments().len();
        let params = pattern
            .segments()
            .iter()
            .zip(&segments)
            .filter_map(|(segment, value)| match segment {
                Segment::Param(name) => Some((name.as_str(), *value)),
                Segment::Literal(_) => None,
            })
            .collect();
        Some(RouteMatch {
            target,
            pattern,
            path_info: if pattern.is_wildcard() {
                rest_after_segments(path, prefix)
            } else {
                ""
            },
            params,
        })
    }
}

/// The segments of a request path; a trailing `/` does not make an extra
/// segment (`/hello/` is `/hello`).
fn path_segments(path: &str) -> Vec<&str> {
    let trimmed = path.strip_prefix('/').unwrap_or(path);
    let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
    if trimmed.is_empty() {
        Vec::new()
    } else {
        trimmed.split('/').collect()
    }
}

/// How `pattern` matches each path segment, or `None` if it does not.
fn ranks(pattern: &RoutePattern, segments: &[&str]) -> Option<Vec<Rank>> {
    let fixed = pattern.segments();
    if segments.len() < fixed.len() || (!pattern.is_wildcard() && segments.len() != fixed.len()) {
        return None;
    }
    let mut ranks = Vec::with_capacity(segments.len());
    for (index, segment) in segments.iter().enumerate() {
        ranks.push(match fixed.get(index) {
            Some(Segment::Literal(literal)) if literal == segment => Rank::Literal,
            Some(Segment::Literal(_)) => return None,
            Some(Segment::Param(_)) => Rank::Param,
            None => Rank::Wildcard,
        });
    }
    Some(ranks)
}

/// The part of `path` after its first `count` segments, from the `/` that
/// follows them: `("/foo/bar/", 1)` gives `/bar/`; nothing left gives ``.
fn rest_after_segments(path: &str, count: usize) -> &str {
    let mut rest = path;
    for _ in 0..count {
        let after_slash = rest.strip_prefix('/').unwrap_or(rest);
        rest = after_slash.find('/').map_or("", |at| &after_slash[at..]);
    }
    rest
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(routes: &[&str]) -> Router<String> {
        Router::build(
            routes
                .iter()
                .map(|r| (RoutePattern::parse(r).unwrap(), r.to_string())),
        )
    }

    fn matched(router: &Router<String>, path: &str) -> Option<String> {
        router.route(path).map(|m| m.target.clone())
    }

    #[test]
    fn exact_beats_param_beats_wildcard() {
        let r = router(&["/...", "/users/...", "/users/:id", "/users/me", "/users/:id/posts"]);
        assert_eq!(matched(&r, "/users/me").as_deref(), Some("/users/me"));
        assert_eq!(matched(&r, "/users/42").as_deref(), Some("/users/:id"));
        assert_eq!(matched(&r, "/users/42/posts").as_deref(), Some("/users/:id/posts"));
        assert_eq!(matched(&r, "/users/42/other").as_deref(), Some("/users/..."));
        assert_eq!(matched(&r, "/users").as_deref(), Some("/users/..."));
        assert_eq!(matched(&r, "/elsewhere").as_deref(), Some("/..."));
        assert_eq!(matched(&r, "/").as_deref(), Some("/..."));
    }

    #[test]
    fn longest_literal_prefix_wins_among_wildcards() {
        let r = router(&["/a/...", "/a/b/...", "/..."]);
        assert_eq!(matched(&r, "/a/b/c").as_deref(), Some("/a/b/..."));
        assert_eq!(matched(&r, "/a/c").as_deref(), Some("/a/..."));
        assert_eq!(matched(&r, "/ab").as_deref(), Some("/..."));
    }

    #[test]
    fn exact_route_beats_wildcard_on_the_same_path() {
        let r = router(&["/hello/...", "/hello"]);
        assert_eq!(matched(&r, "/hello").as_deref(), Some("/hello"));
        assert_eq!(matched(&r, "/hello/").as_deref(), Some("/hello"));
        assert_eq!(matched(&r, "/hello/x").as_deref(), Some("/hello/..."));
    }

    #[test]
    fn unmatched_paths_find_nothing() {
        let r = router(&["/hello", "/api/:version"]);
        assert_eq!(matched(&r, "/"), None);
        assert_eq!(matched(&r, "/hello/more"), None);
        assert_eq!(matched(&r, "/hellothere"), None);
        assert_eq!(matched(&r, "/api"), None);
        assert_eq!(matched(&r, "/api/v1/x"), None);
    }

    #[test]
    fn wildcards_do_not_match_partial_segments() {
        let r = router(&["/foo/..."]);
        assert_eq!(matched(&r, "/foobar"), None);
        assert!(matched(&r, "/foo").is_some());
        assert!(matched(&r, "/foo/").is_some());
    }

    #[test]
    fn path_info_and_params_are_captured() {
        let r = router(&["/foo/:userid/...", "/files/...", "/exact", "/..."]);
        let m = r.route("/foo/42/bar").unwrap();
        assert_eq!(m.path_info, "/bar");
        assert_eq!(m.params, [("userid", "42")]);
        assert_eq!(r.route("/files/a/b/").unwrap().path_info, "/a/b/");
        assert_eq!(r.route("/files").unwrap().path_info, "");
        assert_eq!(r.route("/files/").unwrap().path_info, "/");
        assert_eq!(r.route("/exact").unwrap().path_info, "");
        assert_eq!(r.route("/x/y").unwrap().path_info, "/x/y");
        assert_eq!(r.route("/").unwrap().path_info, "/");
    }

    #[test]
    fn the_last_duplicate_wins() {
        let r = Router::build([
            (RoutePattern::parse("/a").unwrap(), "first"),
            (RoutePattern::parse("/b").unwrap(), "other"),
            (RoutePattern::parse("/a").unwrap(), "second"),
        ]);
        assert_eq!(*r.route("/a").unwrap().target, "second");
        assert_eq!(r.routes().count(), 2);
    }
}
