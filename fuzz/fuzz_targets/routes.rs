//! Route patterns (all lines but the last) and a request path (the last
//! line): parsing and matching never panic, and a match's pattern is one
//! of the routes.
#![no_main]

use bantam_manifest::RoutePattern;
use bantam_trigger_http::router::Router;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let mut lines: Vec<&str> = text.lines().collect();
    let Some(path) = lines.pop() else { return };
    let routes: Vec<(RoutePattern, usize)> = lines
        .iter()
        .enumerate()
        .filter_map(|(i, line)| Some((RoutePattern::parse(line).ok()?, i)))
        .collect();
    for (pattern, _) in &routes {
        let _ = (pattern.matched_route(), pattern.component_route());
    }
    let router = Router::build(routes);
    if let Some(matched) = router.route(path) {
        assert!(router.routes().any(|(pattern, _)| pattern == matched.pattern));
        assert!(path.contains(matched.path_info) || matched.path_info.is_empty());
    }
});
