//! Route matching with Spin's semantics.
//!
//! Built once at start-up from the manifest's routes; [`Router::route`]
//! picks the most specific route for a request path. The rules are those
//! of Spin's router (the `routefinder` crate's `best_match`):
//!
//! - Leading, trailing and repeated trailing `/` of the path are ignored:
//!   `/hello/` and `//hello` match the route `/hello`. A `//` inside the
//!   path is an empty segment and matches no literal.
//! - Specificity is decided segment by segment from the left: a literal
//!   beats a `:name`, which beats the trailing wildcard. So `/users/me`
//!   beats `/users/:id`, which beats `/users/...`; among wildcards the
//!   longest literal prefix wins, and `/...` takes what nothing else does.
//! - When that ties, a route without a wildcard beats one with (`/foo`
//!   beats `/foo/...` for `/foo`), and then the route given first wins
//!   (`/a/:x` and `/a/:y` match the same paths; only the first is used).
//! - A later route with the same text as an earlier one replaces it, in
//!   the earlier one's place (Spin keys its routes by their text).
//! - Path segments are compared as sent, without percent-decoding, and
//!   `:name` values are passed on undecoded, as Spin does.
//!
//! Matching scans the routes in order and allocates only the list of
//! captured parameters (nothing for routes without `:name` segments).

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
    /// What the trailing wildcard matched, as Spin's `spin-path-info`
    /// gives it: from a leading `/`, keeping a trailing `/` of the path.
    /// For route `/foo/...`: `/foo` gives ``, `/foo/` gives `/`,
    /// `/foo/bar/` gives `/bar/`. Empty for routes without a wildcard.
    pub path_info: &'a str,
    /// The `:name` segments and the text each matched, in route order.
    pub params: Vec<(&'a str, &'a str)>,
}

/// How specifically a route matches one path segment: higher is more
/// specific.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Rank {
    Wildcard,
    Param,
    Literal,
}

impl<T> Router<T> {
    /// Build a router. A route with the same text as an earlier one
    /// replaces it (the last one wins, as in Spin), keeping the earlier
    /// one's place in [`Router::routes`].
    pub fn build(routes: impl IntoIterator<Item = (RoutePattern, T)>) -> Self {
        let mut kept: Vec<(RoutePattern, T)> = Vec::new();
        for (pattern, target) in routes {
            match kept.iter_mut().find(|(existing, _)| existing.as_str() == pattern.as_str()) {
                Some(slot) => slot.1 = target,
                None => kept.push((pattern, target)),
            }
        }
        Self { routes: kept }
    }

    /// The routes, in the order given (replaced duplicates left out).
    pub fn routes(&self) -> impl Iterator<Item = (&RoutePattern, &T)> {
        self.routes.iter().map(|(pattern, target)| (pattern, target))
    }

    /// The most specific route matching `path` (the request path without
    /// the query string), if any.
    pub fn route<'a>(&'a self, path: &'a str) -> Option<RouteMatch<'a, T>> {
        let trimmed = Trimmed::new(path);
        let mut best: Option<&'a (RoutePattern, T)> = None;
        for entry in &self.routes {
            if matches(&entry.0, &trimmed)
                && best.is_none_or(|best| more_specific(&entry.0, &best.0))
            {
                best = Some(entry);
            }
        }
        let (pattern, target) = best?;
        let params = pattern
            .segments()
            .iter()
            .zip(trimmed.segments())
            .filter_map(|(segment, value)| match segment {
                Segment::Param(name) => Some((name.as_str(), value)),
                Segment::Literal(_) => None,
            })
            .collect();
        let path_info =
            if pattern.is_wildcard() { trimmed.path_info(pattern.segments().len()) } else { "" };
        Some(RouteMatch { target, pattern, path_info, params })
    }
}

/// A request path with its leading and trailing `/` set aside, the way
/// Spin's router reads it.
struct Trimmed<'a> {
    path: &'a str,
    /// Where the segments start in `path`.
    start: usize,
    /// The segments, `/`-separated: `a/b` for `/a/b/`.
    inner: &'a str,
    /// How many segments there are.
    count: usize,
}

impl<'a> Trimmed<'a> {
    fn new(path: &'a str) -> Self {
        let without_leading = path.trim_start_matches('/');
        let inner = without_leading.trim_end_matches('/');
        Self {
            path,
            start: path.len() - without_leading.len(),
            inner,
            count: if inner.is_empty() { 0 } else { inner.matches('/').count() + 1 },
        }
    }

    fn segments(&self) -> impl Iterator<Item = &'a str> + use<'a> {
        let inner = self.inner;
        (!inner.is_empty()).then(|| inner.split('/')).into_iter().flatten()
    }

    /// Spin's `spin-path-info` for a wildcard after `fixed` segments: what
    /// remains, from a leading `/`, with a `/` at the end if the path ends
    /// with one. It is always a slice of the path: the remainder is
    /// preceded by the `/` that ends the last fixed segment (or that starts
    /// the path) and followed by the path's trailing `/`.
    fn path_info(&self, fixed: usize) -> &'a str {
        let rest_start = match fixed {
            0 => 0,
            n => match self.inner.match_indices('/').nth(n - 1) {
                Some((at, _)) => at + 1,
                None => self.inner.len(),
            },
        };
        let trailing_slash = self.path.ends_with('/');
        if rest_start == self.inner.len() {
            return if trailing_slash { "/" } else { "" };
        }
        // Step back onto the `/` before the remainder. Only a path without
        // a leading `/` (such as `*` in `OPTIONS *`) has none; it is given
        // unprefixed.
        let start = (self.start + rest_start).saturating_sub(1);
        let end = self.start + self.inner.len() + usize::from(trailing_slash);
        &self.path[start..end]
    }
}

/// Whether `pattern` matches the whole of `path`.
fn matches(pattern: &RoutePattern, path: &Trimmed<'_>) -> bool {
    let fixed = pattern.segments();
    let count_fits =
        if pattern.is_wildcard() { path.count >= fixed.len() } else { path.count == fixed.len() };
    // A `:name` matches any segment; an empty one (from `//`) too, as in
    // Spin's router.
    count_fits
        && fixed.iter().zip(path.segments()).all(|(segment, value)| match segment {
            Segment::Literal(literal) => literal == value,
            Segment::Param(_) => true,
        })
}

/// How `pattern` matches path segment `index` (assuming it matches).
fn rank(pattern: &RoutePattern, index: usize) -> Rank {
    match pattern.segments().get(index) {
        Some(Segment::Literal(_)) => Rank::Literal,
        Some(Segment::Param(_)) => Rank::Param,
        None => Rank::Wildcard,
    }
}

/// Whether `candidate` should be chosen over `best`, both matching the same
/// path. Past both routes' fixed segments both ranks are `Wildcard`, so only
/// those positions need comparing. Ties keep `best`, the earlier route.
fn more_specific(candidate: &RoutePattern, best: &RoutePattern) -> bool {
    let fixed = candidate.segments().len().max(best.segments().len());
    for index in 0..fixed {
        let (mine, theirs) = (rank(candidate, index), rank(best, index));
        if mine != theirs {
            return mine > theirs;
        }
    }
    !candidate.is_wildcard() && best.is_wildcard()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(routes: &[&str]) -> Router<String> {
        Router::build(routes.iter().map(|r| (RoutePattern::parse(r).unwrap(), r.to_string())))
    }

    fn matched(router: &Router<String>, path: &str) -> Option<String> {
        router.route(path).map(|m| m.target.clone())
    }

    #[track_caller]
    fn assert_routes(router: &Router<String>, cases: &[(&str, Option<&str>)]) {
        for (path, expected) in cases {
            assert_eq!(matched(router, path).as_deref(), *expected, "path {path:?}");
        }
    }

    #[test]
    fn exact_beats_param_beats_wildcard() {
        let r = router(&["/...", "/users/...", "/users/:id", "/users/me", "/users/:id/posts"]);
        assert_routes(
            &r,
            &[
                ("/users/me", Some("/users/me")),
                ("/users/42", Some("/users/:id")),
                ("/users/42/posts", Some("/users/:id/posts")),
                ("/users/42/other", Some("/users/...")),
                ("/users", Some("/users/...")),
                ("/users/", Some("/users/...")),
                ("/elsewhere", Some("/...")),
                ("/", Some("/...")),
            ],
        );
    }

    #[test]
    fn precedence_does_not_depend_on_order() {
        let routes = ["/one/...", "/one/two/...", "/one/two/three/...", "/one/:x/three", "/..."];
        let mut reversed = routes;
        reversed.reverse();
        for r in [router(&routes), router(&reversed)] {
            assert_routes(
                &r,
                &[
                    ("/one/two/three/four", Some("/one/two/three/...")),
                    ("/one/two/three", Some("/one/two/three/...")),
                    ("/one/six/three", Some("/one/:x/three")),
                    ("/one/two/x", Some("/one/two/...")),
                    ("/one/x", Some("/one/...")),
                    ("/onetwo", Some("/...")),
                ],
            );
        }
    }

    #[test]
    fn a_literal_early_outranks_params_later() {
        // Decided at the first segment that differs, as routefinder does.
        let r = router(&["/:a/b/c", "/a/..."]);
        assert_routes(&r, &[("/a/b/c", Some("/a/...")), ("/x/b/c", Some("/:a/b/c"))]);
        let r = router(&["/a/:b/...", "/a/..."]);
        assert_routes(
            &r,
            &[("/a", Some("/a/...")), ("/a/x", Some("/a/:b/...")), ("/a/x/y", Some("/a/:b/..."))],
        );
    }

    #[test]
    fn exact_route_beats_wildcard_on_the_same_path() {
        let r = router(&["/hello/...", "/hello", "/...", "/"]);
        assert_routes(
            &r,
            &[
                ("/hello", Some("/hello")),
                ("/hello/", Some("/hello")),
                ("/hello/x", Some("/hello/...")),
                ("/", Some("/")),
                ("//", Some("/")),
                ("/x", Some("/...")),
            ],
        );
    }

    #[test]
    fn slashes_around_the_path_are_ignored() {
        let r = router(&["/hello", "/a/b"]);
        assert_routes(
            &r,
            &[
                ("/hello//", Some("/hello")),
                ("//hello", Some("/hello")),
                ("/a/b/", Some("/a/b")),
                ("/a//b", None),
            ],
        );
        // A route written with a trailing slash is the same pattern.
        assert_routes(&router(&["/hello/"]), &[("/hello", Some("/hello/"))]);
    }

    #[test]
    fn unmatched_paths_find_nothing() {
        let r = router(&["/hello", "/api/:version", "/files/..."]);
        assert_routes(
            &r,
            &[
                ("/", None),
                ("/hello/more", None),
                ("/hellothere", None),
                ("/Hello", None),
                ("/api", None),
                ("/api/", None),
                ("/api/v1/x", None),
                ("/filesx", None),
            ],
        );
        assert!(Router::<()>::build([]).route("/").is_none());
    }

    #[test]
    fn wildcards_match_whole_segments_only() {
        let r = router(&["/foo/..."]);
        assert_routes(
            &r,
            &[
                ("/foobar", None),
                ("/foo", Some("/foo/...")),
                ("/foo/", Some("/foo/...")),
                ("/foo/bar/baz", Some("/foo/...")),
            ],
        );
        assert_eq!(matched(&router(&["/static/*"]), "/static/a.css").as_deref(), Some("/static/*"));
    }

    #[test]
    fn path_info_is_what_the_wildcard_matched() {
        let r = router(&["/foo/:userid/...", "/files/...", "/exact", "/..."]);
        let path_info = |path: &str| r.route(path).unwrap().path_info.to_string();
        assert_eq!(path_info("/foo/42/bar"), "/bar");
        assert_eq!(path_info("/foo/42"), "");
        assert_eq!(path_info("/files"), "");
        assert_eq!(path_info("/files/"), "/");
        assert_eq!(path_info("/files//"), "/");
        assert_eq!(path_info("/files/hello"), "/hello");
        assert_eq!(path_info("/files/a/b/"), "/a/b/");
        assert_eq!(path_info("/files/a/b//"), "/a/b/");
        assert_eq!(path_info("/files//a"), "//a");
        assert_eq!(path_info("/exact"), "");
        assert_eq!(path_info("/exact/"), "");
        assert_eq!(path_info("/x/y"), "/x/y");
        assert_eq!(path_info("//x/y"), "/x/y");
        assert_eq!(path_info("/"), "/");
        assert_eq!(path_info("*"), "*");
    }

    #[test]
    fn params_are_captured_undecoded() {
        let r = router(&["/foo/:userid/...", "/p/:a/:b", "/e/:x/y"]);
        let m = r.route("/foo/42/bar").unwrap();
        assert_eq!(m.params, [("userid", "42")]);
        assert_eq!(
            r.route("/p/one/caf%C3%A9/").unwrap().params,
            [("a", "one"), ("b", "caf%C3%A9")]
        );
        assert_eq!(r.route("/e//y").unwrap().params, [("x", "")]);
        assert!(r.route("/p/one/").is_none());
        assert!(router(&["/x"]).route("/x").unwrap().params.is_empty());
    }

    #[test]
    fn the_last_duplicate_wins_in_the_first_ones_place() {
        let r = Router::build([
            (RoutePattern::parse("/a").unwrap(), "first"),
            (RoutePattern::parse("/b").unwrap(), "other"),
            (RoutePattern::parse("/a").unwrap(), "second"),
        ]);
        assert_eq!(*r.route("/a").unwrap().target, "second");
        let listed: Vec<_> = r.routes().map(|(p, t)| (p.as_str(), *t)).collect();
        assert_eq!(listed, [("/a", "second"), ("/b", "other")]);
    }

    #[test]
    fn of_equivalent_routes_the_first_wins() {
        // Different text, so not duplicates: both are kept, as in Spin,
        // and the tie goes to the first.
        let r = router(&["/users/:id", "/users/:name", "/x/", "/x", "/s/*", "/s/..."]);
        assert_eq!(r.routes().count(), 6);
        assert_routes(
            &r,
            &[("/users/1", Some("/users/:id")), ("/x", Some("/x/")), ("/s/a", Some("/s/*"))],
        );
        let m = r.route("/users/1").unwrap();
        assert_eq!(m.params, [("id", "1")]);
    }
}
