//! Mapping an incoming request for a guest: arbitrary client headers, a
//! route and a path. Never panics; no client-sent `spin-*` header
//! survives, and Spin's own headers are set.
#![no_main]

use arbitrary::Arbitrary;
use bantam_manifest::RoutePattern;
use bantam_trigger_http::headers;
use bantam_trigger_http::router::Router;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    route: &'a str,
    path: &'a str,
    headers: Vec<(&'a [u8], &'a [u8])>,
}

fuzz_target!(|input: Input<'_>| {
    let Ok(pattern) = RoutePattern::parse(input.route) else { return };
    let route = headers::RouteHeaders::new(&pattern);
    let router = Router::build([(pattern, ())]);
    let Some(matched) = router.route(input.path) else { return };
    let mut map = http::HeaderMap::new();
    for (name, value) in input.headers {
        if let (Ok(name), Ok(value)) =
            (http::HeaderName::from_bytes(name), http::HeaderValue::from_bytes(value))
        {
            map.append(name, value);
        }
    }
    let Ok(full_url) = http::HeaderValue::from_str(&format!("http://localhost{}", input.path))
    else {
        return;
    };
    headers::inject(&mut map, full_url.clone(), &route, &matched, "127.0.0.1:1".parse().unwrap());
    for (name, value) in &map {
        if name.as_str().starts_with("spin-") {
            let ours = [
                "spin-full-url",
                "spin-path-info",
                "spin-matched-route",
                "spin-raw-component-route",
                "spin-component-route",
                "spin-base-path",
                "spin-client-addr",
            ];
            assert!(
                ours.contains(&name.as_str()) || name.as_str().starts_with("spin-path-match-"),
                "{name}: {value:?}"
            );
        }
    }
    assert_eq!(map.get(headers::CLIENT_ADDR).unwrap(), "127.0.0.1:1");
    assert_eq!(map.get(headers::FULL_URL), Some(&full_url));
});
