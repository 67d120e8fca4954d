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

/// Remove client-sent `spin-*` headers and hop-by-hop `connection`, then
/// add Spin's headers for this match.
pub fn inject<T>(
    headers: &mut HeaderMap,
    full_url: &str,
    route: &RouteMatch<'_, T>,
    client: SocketAddr,
) {
    headers.remove(http::header::CONNECTION);
    let forged: Vec<HeaderName> =
        headers.keys().filter(|name| name.as_str().starts_with("spin-")).cloned().collect();
    for name in forged {
        headers.remove(name);
    }

    let raw_route = route.pattern.as_str();
    let mut set = |name: HeaderName, value: &str| {
        // Values come from the request line and the manifest, both already
        // valid header text; an invalid one is dropped rather than failing.
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    set(FULL_URL, full_url);
    set(PATH_INFO, route.path_info);
    set(MATCHED_ROUTE, route.pattern.matched_route());
    set(RAW_COMPONENT_ROUTE, raw_route);
    set(COMPONENT_ROUTE, route.pattern.component_route());
    set(BASE_PATH, "/");
    set(CLIENT_ADDR, &client.to_string());
    for (name, value) in &route.params {
        let header = format!("{PATH_MATCH_PREFIX}{}", name.to_lowercase().replace('_', "-"));
        if let (Ok(header), Ok(value)) =
            (HeaderName::try_from(header), HeaderValue::from_str(value))
        {
            headers.insert(header, value);
        }
    }
}
