//! What one app's requests and instances may use.
//!
//! `bantam up` takes its [`AppLimits`] from its flags and the runtime
//! config's `[limits]` table; `bantam serve` gives each app its own, the
//! host's flags being the defaults. They travel with every prepared
//! component ([`crate::ComponentPre::limits`]): the engine reads the memory
//! limit and the request timeout when it makes a store, the HTTP trigger
//! the rest. What is set once for the whole process (the size of a pooled
//! memory slot, the stack size, the pool's total instances) is in
//! [`crate::EngineConfig`] instead.

use std::time::Duration;

use bantam_capabilities::outbound_http::DEFAULT_MAX_OUTBOUND_CONNECTIONS;
use bantam_capabilities::runtime_config::Limits;

/// Each store's default size limit: room for any app's working data, not
/// for filling the host's disk (or, for a database in memory, its memory).
const DEFAULT_MAX_STORE_SIZE: u64 = 1 << 30;

/// The limits of one app, every one resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppLimits {
    /// How long one instance may run (its request, response body
    /// included) before it is interrupted; `None` for no limit.
    pub request_timeout: Option<Duration>,
    /// The largest linear memory one instance may grow to, in bytes; at
    /// most the engine's [`crate::EngineConfig::max_instance_memory`].
    pub max_memory: usize,
    /// Request bodies: larger declared ones get 413, a streamed one fails
    /// the guest's read.
    pub max_request_body_size: u64,
    /// Response bodies: a larger declared one is answered 500, a streamed
    /// one is cut off.
    pub max_response_body_size: u64,
    /// The most instances of one component alive at once; beyond it the
    /// trigger turns requests away rather than queueing them.
    pub max_instances_per_component: usize,
    /// Outbound HTTP requests one instance may have in flight at once.
    pub max_outbound_connections: usize,
    /// The most bytes each key-value store's or SQLite database's file may
    /// hold; `None` for no limit.
    pub max_store_size: Option<u64>,
}

impl Default for AppLimits {
    fn default() -> Self {
        Self {
            request_timeout: Some(Duration::from_secs(60)),
            max_memory: 256 << 20,
            max_request_body_size: 100 << 20,
            max_response_body_size: 1 << 30,
            max_instances_per_component: 1000,
            max_outbound_connections: DEFAULT_MAX_OUTBOUND_CONNECTIONS,
            max_store_size: Some(DEFAULT_MAX_STORE_SIZE),
        }
    }
}

/// Why a limit cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// A size that must not be zero is.
    #[error("--{0} must be more than 0")]
    Zero(&'static str),
    /// A size does not fit this machine's address space.
    #[error("--{0} is too large")]
    TooLarge(&'static str),
}

impl AppLimits {
    /// These limits with each one `limits` sets in its place (a zero
    /// request timeout or store size meaning none). `limits.max_stack_size`
    /// is not an app's to set: the caller reads it for the engine.
    pub fn with(&self, limits: &Limits) -> Result<Self, LimitError> {
        Ok(Self {
            request_timeout: match limits.request_timeout {
                None => self.request_timeout,
                Some(Duration::ZERO) => None,
                Some(timeout) => Some(timeout),
            },
            max_memory: size_limit(limits.max_memory, self.max_memory, "max-memory")?,
            max_request_body_size: limits
                .max_request_body_size
                .unwrap_or(self.max_request_body_size),
            max_response_body_size: limits
                .max_response_body_size
                .unwrap_or(self.max_response_body_size),
            max_instances_per_component: limits
                .max_instances_per_component
                .unwrap_or(self.max_instances_per_component),
            max_outbound_connections: limits
                .max_outbound_connections
                .unwrap_or(self.max_outbound_connections),
            max_store_size: match limits.max_store_size {
                None => self.max_store_size,
                Some(0) => None,
                Some(size) => Some(size),
            },
        })
    }

    /// These limits as the `[limits]` table writes them, every one set
    /// (no request timeout or store size limit is a zero one).
    pub fn to_table(&self) -> Limits {
        Limits {
            request_timeout: Some(self.request_timeout.unwrap_or(Duration::ZERO)),
            max_memory: Some(self.max_memory as u64),
            max_stack_size: None,
            max_request_body_size: Some(self.max_request_body_size),
            max_response_body_size: Some(self.max_response_body_size),
            max_instances_per_component: Some(self.max_instances_per_component),
            max_outbound_connections: Some(self.max_outbound_connections),
            max_store_size: Some(self.max_store_size.unwrap_or(0)),
        }
    }
}

/// A size limit in bytes: `value` if set (more than zero, and addressable),
/// else `default`; `flag` names it in errors.
pub fn size_limit(
    value: Option<u64>,
    default: usize,
    flag: &'static str,
) -> Result<usize, LimitError> {
    match value {
        None => Ok(default),
        Some(0) => Err(LimitError::Zero(flag)),
        Some(n) => usize::try_from(n).map_err(|_| LimitError::TooLarge(flag)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_limits_replace_the_defaults_and_the_rest_stay() {
        let host = AppLimits { max_memory: 64 << 20, ..AppLimits::default() };
        let app = host
            .with(&Limits {
                request_timeout: Some(Duration::from_secs(5)),
                max_instances_per_component: Some(20),
                ..Limits::default()
            })
            .unwrap();
        assert_eq!(app.request_timeout, Some(Duration::from_secs(5)));
        assert_eq!(app.max_instances_per_component, 20);
        assert_eq!(app.max_memory, 64 << 20, "the host's, not set by the app");
        let untimed = host
            .with(&Limits { request_timeout: Some(Duration::ZERO), ..Limits::default() })
            .unwrap();
        assert_eq!(untimed.request_timeout, None);
        assert_eq!(untimed.to_table().request_timeout, Some(Duration::ZERO));
        assert_eq!(host.max_store_size, Some(DEFAULT_MAX_STORE_SIZE));
        let unlimited =
            host.with(&Limits { max_store_size: Some(0), ..Limits::default() }).unwrap();
        assert_eq!(unlimited.max_store_size, None);
        assert_eq!(unlimited.to_table().max_store_size, Some(0));
        assert_eq!(host.with(&unlimited.to_table()), Ok(unlimited), "no limit round-trips");
        assert_eq!(host.with(&host.to_table()), Ok(host), "the table round-trips");
        let zero = host.with(&Limits { max_memory: Some(0), ..Limits::default() });
        assert_eq!(zero.unwrap_err().to_string(), "--max-memory must be more than 0");
    }
}
