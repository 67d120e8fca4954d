//! The `spin-*` headers Spin injects into every request a component sees.
//!
//! Components written for Spin read these to learn how they were reached,
//! so names and values match Spin's exactly: route `/foo/:userid/...`
//! reached by `http://host/foo/42/bar?q` gives `spin-full-url:
//! http://host/foo/42/bar?q`, `spin-path-info: /bar`, `spin-matched-route`
//! and `spin-raw-component-route: /foo/:userid/...`, `spin-component-route:
//! /foo/:userid`, `spin-base-path: /`, `spin-client-addr: <peer ip:port>`
//! and `spin-path-match-userid: 42`.
//!
//! Any `spin-*` header sent by the client is removed first, so a guest can
//! trust these values (a client cannot forge its own `spin-client-addr`).

use std::net::SocketAddr;

use http::{HeaderMap, HeaderName, HeaderValue};

use bantam_manifest::RoutePattern;

use crate::router::RouteMatch;

/// The full URL of the request.
pub const FULL_URL: HeaderName = HeaderName::from_static("spin-full-url");
/// The part of the path matched by a trailing `/...`.
pub const PATH_INFO: HeaderName = HeaderName::from_static("spin-path-info");
/// The route pattern that matched, with the base path.
pub const MATCHED_ROUTE: HeaderName = HeaderName::from_static("spin-matched-route");
/// The route pattern as written in the manifest.
pub const RAW_COMPONENT_ROUTE: HeaderName = HeaderName::from_static("spin-raw-component-route");
/// The route pattern without its trailing `/...`.
pub const COMPONENT_ROUTE: HeaderName = HeaderName::from_static("spin-component-route");
/// The application base path (always `/`, as in Spin).
pub const BASE_PATH: HeaderName = HeaderName::from_static("spin-base-path");
/// The client's socket address.
pub const CLIENT_ADDR: HeaderName = HeaderName::from_static("spin-client-addr");
/// The prefix of one header per `:name` route segment.
pub const PATH_MATCH_PREFIX: &str = "spin-path-match-";

/// Spin's headers that depend only on the route: made once per route at
/// start-up, shared by every request it matches.
#[derive(Debug)]
pub struct RouteHeaders {
    matched_route: Option<HeaderValue>,
    raw_component_route: Option<HeaderValue>,
    component_route: Option<HeaderValue>,
}

impl RouteHeaders {
    /// The headers for requests matching `pattern`. Patterns are valid
    /// header text (the manifest checked them); one that is not is left
    /// out rather than failing.
    pub fn new(pattern: &RoutePattern) -> Self {
        let value = |text: &str| HeaderValue::from_str(text).ok();
        Self {
            matched_route: value(pattern.matched_route()),
            raw_component_route: value(pattern.as_str()),
            component_route: value(pattern.component_route()),
        }
    }
}

/// Remove client-sent `spin-*` headers and hop-by-hop `connection`, then
/// add Spin's headers for a request to `full_url` that matched a route
/// with `route` headers.
pub fn inject<T>(
    headers: &mut HeaderMap,
    full_url: HeaderValue,
    route: &RouteHeaders,
    matched: &RouteMatch<'_, T>,
    client: SocketAddr,
) {
    headers.remove(http::header::CONNECTION);
    if headers.keys().any(|name| name.as_str().starts_with("spin-")) {
        let forged: Vec<HeaderName> =
            headers.keys().filter(|name| name.as_str().starts_with("spin-")).cloned().collect();
        for name in forged {
            headers.remove(name);
        }
    }

    headers.insert(FULL_URL, full_url);
    // The path comes from the request line, already valid header text; an
    // invalid one is dropped rather than failing.
    if let Ok(path_info) = HeaderValue::from_str(matched.path_info) {
        headers.insert(PATH_INFO, path_info);
    }
    for (name, value) in [
        (MATCHED_ROUTE, &route.matched_route),
        (RAW_COMPONENT_ROUTE, &route.raw_component_route),
        (COMPONENT_ROUTE, &route.component_route),
    ] {
        if let Some(value) = value {
            headers.insert(name, value.clone());
        }
    }
    headers.insert(BASE_PATH, HeaderValue::from_static("/"));
    if let Ok(client) = HeaderValue::try_from(client.to_string()) {
        headers.insert(CLIENT_ADDR, client);
    }
    for (name, value) in &matched.params {
        let header = format!("{PATH_MATCH_PREFIX}{}", name.to_lowercase().replace('_', "-"));
        if let (Ok(header), Ok(value)) =
            (HeaderName::try_from(header), HeaderValue::from_str(value))
        {
            headers.insert(header, value);
        }
    }
}
