//! `allowed_outbound_hosts`: which network destinations a component may
//! reach, in Spin's syntax.
//!
//! An entry is `<scheme>://<host>[:<port>]`. Each part may be `*`; a host
//! may also be `*.example.com` (any subdomain, not the domain itself), an
//! IP address or CIDR block (`10.0.0.0/8`, `::1`), or `self` (relative
//! URLs: requests to the app itself); a port may be a range `a..b` (end
//! excluded, as in Spin). Without a port, the scheme's well-known port is
//! meant (http 80, https 443, redis 6379, postgres 5432, mysql 3306,
//! mqtt 1883); other schemes must name one. Paths and `{a,b}` lists are
//! refused, as Spin refuses them.
//!
//! The manifest loader checks every entry without a `{{ template }}` so a
//! mistake is reported at its line; entries with templates are parsed by
//! the capabilities once variables are resolved.

use std::fmt;
use std::net::IpAddr;
use std::ops::Range;

/// Where Spin's documentation explains the syntax, for error messages.
const SYNTAX_HELP: &str = "entries look like \"https://example.com\", \"redis://*:6379\" or \"*://*:*\"; see https://spinframework.dev/v3/http-outbound#granting-http-permissions-to-components";

/// Host suffix that addresses another component of the same app
/// (`http://<component-id>.spin.internal/...`), as in Spin.
pub const SERVICE_CHAINING_SUFFIX: &str = ".spin.internal";

/// A malformed `allowed_outbound_hosts` entry or outbound URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AllowedHostError(String);

/// One parsed `allowed_outbound_hosts` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHost {
    original: String,
    scheme: Option<String>,
    host: HostPattern,
    port: PortPattern,
}

/// What hosts an entry admits.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    /// `*`.
    Any,
    /// `*.example.com`: held as `.example.com`.
    Subdomain(String),
    /// `self` or `self.alt`: relative URLs, to the app itself.
    ToSelf,
    /// An IP address or CIDR block.
    Network { address: IpAddr, prefix: u8 },
    /// A host name, lower case.
    Name(String),
}

/// What ports an entry admits.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PortPattern {
    Any,
    One(u16),
    Range(Range<u16>),
}

impl AllowedHost {
    /// Parse one entry (templates already expanded).
    pub fn parse(entry: &str) -> Result<Self, AllowedHostError> {
        let fail = |problem: String| AllowedHostError(format!("{problem}; {SYNTAX_HELP}"));
        let text = entry.trim();
        if text == "insecure:allow-all" {
            return Err(fail(
                "\"insecure:allow-all\" is not supported: use \"*://*:*\" if the component may really reach any host".into(),
            ));
        }
        let Some((scheme, rest)) = text.split_once("://") else {
            if matches!(text, "*" | "" | ":" | "?") {
                return Err(fail(format!(
                    "{text:?} is not a host pattern; to allow every destination (no network sandboxing at all) write \"*://*:*\""
                )));
            }
            return Err(fail(format!("{text:?} has no scheme (such as \"https://\" or \"*://\")")));
        };
        let scheme = match scheme {
            "*" => None,
            s if s.starts_with('{') => {
                return Err(fail(format!("{text:?}: scheme lists are not supported yet")));
            }
            s if s.is_empty() || !s.chars().all(|c| c.is_ascii_alphabetic()) => {
                return Err(fail(format!("{text:?}: scheme {s:?} must be letters only")));
            }
            s => Some(s.to_ascii_lowercase()),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (host, port) = split_host_port(rest);
        if host.contains('/') && parse_network(host).is_none()
            || port.is_some_and(|p| p.contains('/'))
        {
            return Err(fail(format!(
                "{text:?} has a path: only scheme, host and port may be given"
            )));
        }
        let host =
            parse_host_pattern(host).map_err(|problem| fail(format!("{text:?}: {problem}")))?;
        let port = match port {
            None => match scheme.as_deref().and_then(well_known_port) {
                Some(port) => PortPattern::One(port),
                None => {
                    return Err(fail(format!(
                        "{text:?} has no port, and {} has no well-known port: add one, or \":*\" for any",
                        scheme.map_or("scheme `*`".to_string(), |s| format!("scheme `{s}`"))
                    )));
                }
            },
            Some("*") => PortPattern::Any,
            Some(p) if p.starts_with('{') => {
                return Err(fail(format!("{text:?}: port lists are not supported yet")));
            }
            Some(p) => match p.split_once("..") {
                Some((start, end)) => match (start.parse(), end.parse()) {
                    (Ok(start), Ok(end)) => PortPattern::Range(start..end),
                    _ => {
                        return Err(fail(format!(
                            "{text:?}: port range {p:?} must be two numbers"
                        )));
                    }
                },
                None => match p.parse() {
                    Ok(port) => PortPattern::One(port),
                    Err(_) => return Err(fail(format!("{text:?}: port {p:?} is not a number"))),
                },
            },
        };
        Ok(Self { original: entry.to_string(), scheme, host, port })
    }

    /// Whether this entry admits `target` (an absolute URL).
    pub fn admits(&self, target: &OutboundTarget) -> bool {
        self.scheme.as_ref().is_none_or(|s| *s == target.scheme)
            && match &self.host {
                HostPattern::Any => true,
                HostPattern::Subdomain(suffix) => target.host.ends_with(suffix.as_str()),
                HostPattern::ToSelf => false,
                HostPattern::Network { address, prefix } => {
                    target.ip().is_some_and(|ip| in_network(ip, *address, *prefix))
                }
                HostPattern::Name(name) => *name == target.host,
            }
            && match &self.port {
                PortPattern::Any => true,
                PortPattern::One(port) => *port == target.port,
                PortPattern::Range(range) => range.contains(&target.port),
            }
    }

    /// Whether this entry names `address` itself, by an IP address or a
    /// CIDR block, or names the exact host `host`: a deliberate grant, as
    /// opposed to a wildcard that happens to match.
    fn names(&self, host: &str, address: IpAddr) -> bool {
        match &self.host {
            HostPattern::Network { address: net, prefix } => in_network(address, *net, *prefix),
            HostPattern::Name(name) => name == host,
            HostPattern::Any | HostPattern::Subdomain(_) | HostPattern::ToSelf => false,
        }
    }
}

impl fmt::Display for AllowedHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.original)
    }
}

/// A component's `allowed_outbound_hosts`, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedHosts(Vec<AllowedHost>);

impl AllowedHosts {
    /// Parse every entry; the first malformed one is the error.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, AllowedHostError> {
        entries.iter().map(|e| AllowedHost::parse(e.as_ref())).collect::<Result<_, _>>().map(Self)
    }

    /// Whether any entry admits `target`.
    pub fn admits(&self, target: &OutboundTarget) -> bool {
        self.0.iter().any(|entry| entry.admits(target))
    }

    /// Whether relative URLs (requests to the app itself) are allowed for
    /// `scheme`: an entry `<scheme>://self`, or a host `*`.
    pub fn admits_relative(&self, scheme: &str) -> bool {
        self.0.iter().any(|entry| {
            entry.scheme.as_ref().is_none_or(|s| s == scheme)
                && matches!(entry.host, HostPattern::Any | HostPattern::ToSelf)
        })
    }

    /// Whether an entry names `address` (by IP or CIDR) or `host` exactly.
    /// Loopback, link-local and other special addresses are only reachable
    /// when named like this: a wildcard such as `*://*:*` or
    /// `https://*.example.com` never reaches them, whatever DNS says.
    pub fn names(&self, host: &str, address: IpAddr) -> bool {
        self.0.iter().any(|entry| entry.names(host, address))
    }

    /// Whether there are no entries: the component has no network.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The destination of an outbound connection: scheme, host (lower case,
/// IPv6 without brackets) and port (the scheme's default if not given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundTarget {
    /// The URL scheme, lower case.
    pub scheme: String,
    /// The host name or IP address.
    pub host: String,
    /// The port.
    pub port: u16,
}

impl OutboundTarget {
    /// Parse an absolute URL such as `redis://user:pw@host:6379/0`.
    pub fn parse(url: &str) -> Result<Self, AllowedHostError> {
        let invalid =
            |why: &str| AllowedHostError(format!("{url:?} is not a valid address: {why}"));
        let (scheme, rest) = url.split_once("://").ok_or_else(|| invalid("no scheme"))?;
        // RFC 3986: a letter, then letters, digits, `+`, `-` or `.`.
        if !scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            || !scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        {
            return Err(invalid("bad scheme"));
        }
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let authority = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
        let (host, port) = split_host_port(authority);
        if host.is_empty() {
            return Err(invalid("no host"));
        }
        // A host name, an IPv4 address or a bracketed IPv6 address: no
        // spaces or control characters that could make a log line or a
        // suggested entry mean something else.
        if host.parse::<IpAddr>().is_err()
            && !host.chars().all(|c| c.is_ascii_alphanumeric() || "-._~%".contains(c))
        {
            return Err(invalid("bad host"));
        }
        let scheme = scheme.to_ascii_lowercase();
        let port = match port {
            Some(port) => port.parse().map_err(|_| invalid("bad port"))?,
            None => well_known_port(&scheme).ok_or_else(|| invalid("no port"))?,
        };
        Ok(Self {
            scheme,
            host: host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase(),
            port,
        })
    }

    /// The host as an IP address, if it is one.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }

    /// The entry that would admit exactly this target, for messages that
    /// tell the user what to add.
    pub fn as_entry(&self) -> String {
        let host =
            if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        if well_known_port(&self.scheme) == Some(self.port) {
            format!("{}://{host}", self.scheme)
        } else {
            format!("{}://{host}:{}", self.scheme, self.port)
        }
    }
}

impl fmt::Display for OutboundTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host =
            if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        write!(f, "{}://{host}:{}", self.scheme, self.port)
    }
}

/// The default port of a scheme, as Spin knows them.
pub fn well_known_port(scheme: &str) -> Option<u16> {
    Some(match scheme {
        "http" => 80,
        "https" => 443,
        "redis" => 6379,
        "postgres" => 5432,
        "mysql" => 3306,
        "mqtt" => 1883,
        _ => return None,
    })
}

/// Split `host[:port]`, minding `[v6]:port` and a bare IPv6 address.
fn split_host_port(authority: &str) -> (&str, Option<&str>) {
    if let Some(rest) = authority.strip_prefix('[')
        && let Some((host, after)) = rest.split_once(']')
    {
        return (host, after.strip_prefix(':'));
    }
    // A bare IPv6 address or block (`::1`, `fd00::/8`) has no port.
    if parse_network(authority).is_some() {
        return (authority, None);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    }
}

fn parse_host_pattern(host: &str) -> Result<HostPattern, String> {
    let host = host.trim();
    Ok(match host {
        "" => return Err("no host: use \"*\" for any host".into()),
        "*" => HostPattern::Any,
        "self" | "self.alt" => HostPattern::ToSelf,
        h if h.starts_with('{') => return Err("host lists are not supported yet".into()),
        h => {
            if let Some((address, prefix)) = parse_network(h) {
                return Ok(HostPattern::Network { address, prefix });
            }
            if let Some(domain) = h.strip_prefix("*.") {
                if domain.contains('*') || domain.is_empty() {
                    return Err(
                        "`*` may only be a whole host or a first label (`*.example.com`)".into()
                    );
                }
                return Ok(HostPattern::Subdomain(format!(".{}", domain.to_ascii_lowercase())));
            }
            if h.contains('*') {
                return Err(
                    "`*` may only be a whole host or a first label (`*.example.com`)".into()
                );
            }
            HostPattern::Name(h.to_ascii_lowercase())
        }
    })
}

/// `10.0.0.1`, `10.0.0.0/8`, `::1`, `fd00::/8`: an address and prefix
/// length (host bits beyond the prefix are ignored, as Spin truncates).
fn parse_network(text: &str) -> Option<(IpAddr, u8)> {
    let (address, prefix) = match text.split_once('/') {
        Some((address, prefix)) => {
            (address.parse::<IpAddr>().ok()?, Some(prefix.parse::<u8>().ok()?))
        }
        None => (text.parse::<IpAddr>().ok()?, None),
    };
    let max = if address.is_ipv4() { 32 } else { 128 };
    let prefix = prefix.unwrap_or(max);
    (prefix <= max).then_some((address, prefix))
}

fn in_network(ip: IpAddr, network: IpAddr, prefix: u8) -> bool {
    fn masked(bits: u128, width: u32, prefix: u8) -> u128 {
        if prefix == 0 { 0 } else { bits >> (width - u32::from(prefix)) }
    }
    match (ip, network) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            masked(u32::from(ip).into(), 32, prefix) == masked(u32::from(net).into(), 32, prefix)
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => {
            masked(u128::from(ip), 128, prefix) == masked(u128::from(net), 128, prefix)
        }
        // An IPv4-mapped IPv6 address is the IPv4 address it maps.
        (IpAddr::V6(ip), IpAddr::V4(_)) => {
            ip.to_ipv4_mapped().is_some_and(|v4| in_network(IpAddr::V4(v4), network, prefix))
        }
        (IpAddr::V4(_), IpAddr::V6(_)) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admits(entry: &str, url: &str) -> bool {
        AllowedHost::parse(entry).unwrap().admits(&OutboundTarget::parse(url).unwrap())
    }

    fn error(entry: &str) -> String {
        AllowedHost::parse(entry).unwrap_err().to_string()
    }

    #[test]
    fn scheme_host_and_port_must_all_match() {
        assert!(admits("https://example.com", "https://example.com/path?q"));
        assert!(admits("https://example.com", "https://example.com:443"));
        assert!(admits("https://EXAMPLE.com", "https://example.COM"));
        assert!(!admits("https://example.com", "http://example.com"));
        assert!(!admits("https://example.com", "https://example.com:8443"));
        assert!(!admits("https://example.com", "https://api.example.com"));
        assert!(admits("redis://cache:6379", "redis://user:pw@cache/0"));
        assert!(admits("postgres://db", "postgres://u@db:5432/app"));
        assert!(admits("mysql://db", "mysql://db/app"));
        assert!(admits("mqtt://broker", "mqtt://broker:1883"));
    }

    #[test]
    fn wildcards_for_each_part() {
        assert!(admits("*://example.com:*", "redis://example.com:1"));
        assert!(admits("http://*:8080", "http://anything:8080"));
        assert!(!admits("http://*:8080", "http://anything:8081"));
        assert!(admits("https://*.example.com", "https://api.example.com"));
        assert!(admits("https://*.example.com", "https://a.b.example.com"));
        assert!(!admits("https://*.example.com", "https://example.com"));
        assert!(!admits("https://*.example.com", "https://badexample.com"));
        assert!(admits("*://*:*", "mqtt://x:1"));
    }

    #[test]
    fn port_ranges_exclude_their_end_as_in_spin() {
        assert!(admits("http://localhost:8000..8010", "http://localhost:8000"));
        assert!(admits("http://localhost:8000..8010", "http://localhost:8009"));
        assert!(!admits("http://localhost:8000..8010", "http://localhost:8010"));
    }

    #[test]
    fn ip_addresses_and_cidr_blocks() {
        assert!(admits("http://10.0.0.0/8", "http://10.1.2.3"));
        assert!(!admits("http://10.0.0.0/8", "http://11.0.0.1"));
        assert!(!admits("http://10.0.0.0/8", "http://ten.example"));
        assert!(admits("http://127.0.0.1:3000", "http://127.0.0.1:3000"));
        assert!(admits("http://[::1]:3000", "http://[::1]:3000/x"));
        assert!(admits("http://fd00::/8:*", "http://[fd12::1]:9"));
        assert!(admits("*://0.0.0.0/0:*", "http://1.2.3.4:5"));
    }

    #[test]
    fn self_admits_only_relative_urls() {
        let hosts = AllowedHosts::parse(&["http://self", "https://example.com"]).unwrap();
        assert!(hosts.admits_relative("http"));
        assert!(!hosts.admits_relative("https"));
        assert!(!hosts.admits(&OutboundTarget::parse("http://self").unwrap()));
        assert!(AllowedHosts::parse(&["*://*:*"]).unwrap().admits_relative("http"));
        assert!(!AllowedHosts::parse(&["https://*.example.com"]).unwrap().admits_relative("https"));
    }

    #[test]
    fn wildcards_never_name_special_addresses() {
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(!AllowedHosts::parse(&["*://*:*"]).unwrap().names("evil.example", loopback));
        assert!(!AllowedHosts::parse(&["https://*.example"]).unwrap().names("a.example", loopback));
        assert!(AllowedHosts::parse(&["http://localhost:1"]).unwrap().names("localhost", loopback));
        assert!(AllowedHosts::parse(&["http://127.0.0.0/8:*"]).unwrap().names("x", loopback));
        assert!(!AllowedHosts::parse(&["http://10.0.0.0/8:*"]).unwrap().names("x", loopback));
    }

    #[test]
    fn malformed_entries_say_what_is_wrong() {
        assert!(error("*").contains("write \"*://*:*\""), "{}", error("*"));
        assert!(error("example.com").contains("has no scheme"));
        assert!(error("https://example.com/api").contains("has a path"));
        assert!(error("foo://example.com").contains("no well-known port"));
        assert!(error("*://example.com").contains("no well-known port"));
        assert!(error("http://example.com:http").contains("is not a number"));
        assert!(error("http://example.com:1..x").contains("two numbers"));
        assert!(error("http://ex*ample.com").contains("first label"));
        assert!(error("http://*.*.com").contains("first label"));
        assert!(error("{http,https}://example.com").contains("scheme lists"));
        assert!(error("http://{a,b}.com").contains("host lists"));
        assert!(error("http://a.com:{1,2}").contains("port lists"));
        assert!(error("insecure:allow-all").contains("*://*:*"));
        assert!(error("h_t://x").contains("letters only"));
        // A trailing slash is not a path.
        assert!(AllowedHost::parse("https://example.com/").is_ok());
    }

    #[test]
    fn targets_name_the_entry_that_would_admit_them() {
        let target = OutboundTarget::parse("https://Example.com/a").unwrap();
        assert_eq!(target.as_entry(), "https://example.com");
        assert_eq!(target.to_string(), "https://example.com:443");
        let target = OutboundTarget::parse("http://[::1]:8080").unwrap();
        assert_eq!(target.as_entry(), "http://[::1]:8080");
        assert!(OutboundTarget::parse("/relative").is_err());
        assert!(OutboundTarget::parse("foo://x").is_err());
    }

    /// Found by `fuzz/run.sh allowed_hosts`: a URL with a scheme starting
    /// with a digit, or control characters in its host, parsed, and the
    /// entry suggested for it did not.
    #[test]
    fn urls_with_malformed_schemes_or_hosts_are_invalid() {
        assert!(OutboundTarget::parse("0://x:1").is_err());
        assert!(OutboundTarget::parse("http://\u{7}\0:80").is_err());
        assert!(OutboundTarget::parse("http://a b:80").is_err());
        assert!(OutboundTarget::parse("http://a\nb").is_err());
        assert!(OutboundTarget::parse("ll://[self.a]-w:0w]:1").is_err());
        for url in ["http://a.b", "https://[::1]:8443/x", "redis://u:p@h.example:1/0"] {
            let target = OutboundTarget::parse(url).unwrap();
            assert!(AllowedHost::parse(&target.as_entry()).unwrap().admits(&target), "{url}");
        }
    }
}
