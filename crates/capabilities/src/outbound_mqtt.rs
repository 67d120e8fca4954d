//! Outbound MQTT: `spin:mqtt/mqtt@3.0.0` (spin-sdk 7) and
//! `fermyon:spin/mqtt@2.0.0` (spin-sdk 2 to 5).
//!
//! `open` takes an `mqtt://host:port?client_id=...` URL (the client id is
//! required, as on Spin), a user name, a password and a keep-alive
//! interval. The host and port must be in the component's
//! `allowed_outbound_hosts`, otherwise `invalid-address`. The broker is
//! contacted on the first publish, at an address the grant check resolved
//! and checked; `publish` returns once the broker has acknowledged the
//! message at the requested quality of service (for at-most-once, once it
//! is written).
//!
//! TLS (`mqtts://`) is the one exception to connecting to a checked
//! address: rumqttc 0.24 takes the TLS server name from the address it
//! connects to, so an IP address would lose SNI and the certificate check
//! of the name. It connects by name, and the certificate, verified against
//! that name, stands between a changed DNS answer and the guest's bytes.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS, Transport,
};
use tokio::sync::Mutex;
use url::Url;
use wasmtime::component::{Accessor, Resource};

use crate::bindings::fermyon::spin::mqtt as v2;
use crate::bindings::spin::mqtt::mqtt as v3;
use crate::{Capabilities, CapabilitiesView, CheckedTarget, ComponentCapabilities};

/// How long one publish (connecting included) may take.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(30);
/// rumqttc's packet limit, each way, unless the URL sets one.
const DEFAULT_PACKET_BYTES: usize = 10 * 1024;

/// An MQTT client, as a guest holds it.
pub struct MqttConnection {
    client: AsyncClient,
    /// Driven only while a publish waits for its acknowledgement.
    session: Arc<Mutex<Session>>,
}

/// A client's event loop, and the checked addresses it has yet to try if
/// the one it is given does not answer (until the broker first does).
struct Session {
    events: EventLoop,
    /// Options for the next addresses, the next one last.
    untried: Vec<MqttOptions>,
}

/// Why a call failed, before mapping to each interface's error.
enum Failure {
    InvalidAddress,
    ConnectionFailed(String),
    Other(String),
}

/// What the guest asked for: its URL, credentials and keep-alive.
struct Request<'a> {
    url: Url,
    username: &'a str,
    password: &'a str,
    keep_alive_secs: u64,
}

impl Request<'_> {
    /// Client options for `url` with the guest's credentials and keep-alive.
    fn options(&self, url: Url) -> Result<MqttOptions, Failure> {
        // The URL may raise rumqttc's packet limits (10 KiB by default);
        // a packet from the broker, the tenant's choice, is read whole, so
        // the incoming one is held to what a database result may hold.
        let limit = |name: &str| {
            url.query_pairs().find(|(key, _)| key == name).and_then(|(_, v)| v.parse().ok())
        };
        let incoming = limit("max_incoming_packet_size_bytes").unwrap_or(DEFAULT_PACKET_BYTES);
        let outgoing = limit("max_outgoing_packet_size_bytes").unwrap_or(DEFAULT_PACKET_BYTES);
        let mut options = MqttOptions::try_from(url).map_err(|_| Failure::InvalidAddress)?;
        options.set_max_packet_size(incoming.min(crate::MAX_RESULT_BYTES), outgoing);
        if !self.username.is_empty() {
            options.set_credentials(self.username, self.password);
        }
        // rumqttc refuses keep-alives under 5 s.
        options.set_keep_alive(Duration::from_secs(self.keep_alive_secs.max(5)));
        Ok(options)
    }

    /// The options for each address to try, in order: one per checked
    /// address for plain TCP, the name itself for TLS (see the module
    /// documentation). `named` are the options for the URL as given.
    fn candidates(
        &self,
        named: MqttOptions,
        checked: &CheckedTarget,
    ) -> Result<Vec<MqttOptions>, Failure> {
        if !matches!(named.transport(), Transport::Tcp) {
            return Ok(vec![named]);
        }
        checked
            .addresses
            .iter()
            .map(|ip| {
                let mut url = self.url.clone();
                url.set_ip_host(*ip).map_err(|()| Failure::InvalidAddress)?;
                url.set_port(Some(checked.target.port)).map_err(|()| Failure::InvalidAddress)?;
                self.options(url)
            })
            .collect()
    }
}

async fn open(
    component: &ComponentCapabilities,
    address: &str,
    username: String,
    password: String,
    keep_alive_secs: u64,
) -> Result<MqttConnection, Failure> {
    let url = Url::parse(address).map_err(|_| Failure::InvalidAddress)?;
    let request = Request { url, username: &username, password: &password, keep_alive_secs };
    let named = request.options(request.url.clone())?;
    let Ok(checked) = crate::check_outbound_resolved(component, address).await else {
        return Err(Failure::InvalidAddress);
    };
    connection(request.candidates(named, &checked)?)
}

/// A client that connects with the first of `candidates` that answers.
fn connection(mut candidates: Vec<MqttOptions>) -> Result<MqttConnection, Failure> {
    candidates.reverse();
    let first = candidates.pop().ok_or(Failure::InvalidAddress)?;
    let (client, events) = AsyncClient::new(first, 16);
    let session = Session { events, untried: candidates };
    Ok(MqttConnection { client, session: Arc::new(Mutex::new(session)) })
}

async fn publish(
    client: AsyncClient,
    session: Arc<Mutex<Session>>,
    topic: String,
    payload: Vec<u8>,
    qos: QoS,
) -> Result<(), Failure> {
    let mut session = session.lock().await;
    let session = &mut *session;
    client.publish(topic, qos, false, payload).await.map_err(|e| Failure::Other(e.to_string()))?;
    let delivered = async {
        loop {
            let event = match session.events.poll().await {
                Ok(event) => event,
                // Nobody answered at this address: the next one, as
                // connecting by name would try it.
                Err(ConnectionError::Io(_) | ConnectionError::NetworkTimeout)
                    if let Some(next) = session.untried.pop() =>
                {
                    session.events.mqtt_options = next;
                    continue;
                }
                Err(error) => return Err(Failure::ConnectionFailed(error.to_string())),
            };
            if let Event::Incoming(Packet::ConnAck(_)) = event {
                session.untried.clear();
            }
            let done = matches!(
                (qos, event),
                (QoS::AtMostOnce, Event::Outgoing(Outgoing::Publish(_)))
                    | (QoS::AtLeastOnce, Event::Incoming(Packet::PubAck(_)))
                    | (QoS::ExactlyOnce, Event::Incoming(Packet::PubComp(_)))
            );
            if done {
                return Ok(());
            }
        }
    };
    tokio::time::timeout(PUBLISH_TIMEOUT, delivered).await.unwrap_or_else(|_| {
        Err(Failure::ConnectionFailed("timed out waiting for the broker".into()))
    })
}

/// Generates the per-version conversions.
macro_rules! conversions {
    ($wit:ident) => {
        impl From<Failure> for $wit::Error {
            fn from(failure: Failure) -> Self {
                match failure {
                    Failure::InvalidAddress => $wit::Error::InvalidAddress,
                    Failure::ConnectionFailed(message) => $wit::Error::ConnectionFailed(message),
                    Failure::Other(message) => $wit::Error::Other(message),
                }
            }
        }

        impl From<$wit::Qos> for QoS {
            fn from(qos: $wit::Qos) -> Self {
                match qos {
                    $wit::Qos::AtMostOnce => QoS::AtMostOnce,
                    $wit::Qos::AtLeastOnce => QoS::AtLeastOnce,
                    $wit::Qos::ExactlyOnce => QoS::ExactlyOnce,
                }
            }
        }
    };
}

conversions!(v3);
conversions!(v2);

impl CapabilitiesView<'_> {
    fn push_mqtt(
        &mut self,
        opened: Result<MqttConnection, Failure>,
    ) -> Result<Resource<MqttConnection>, Failure> {
        self.table.push(opened?).map_err(|_| Failure::Other("too many open connections".into()))
    }

    fn mqtt(
        &self,
        handle: &Resource<MqttConnection>,
    ) -> wasmtime::Result<(AsyncClient, Arc<Mutex<Session>>)> {
        let connection = self.table.get(handle)?;
        Ok((connection.client.clone(), Arc::clone(&connection.session)))
    }
}

impl v3::Host for CapabilitiesView<'_> {}

impl v3::HostConnection for CapabilitiesView<'_> {
    async fn drop(&mut self, connection: Resource<MqttConnection>) -> wasmtime::Result<()> {
        let connection = self.table.delete(connection)?;
        let _ = connection.client.try_disconnect();
        Ok(())
    }
}

impl<T> v3::HostConnectionWithStore<T> for Capabilities {
    async fn open(
        accessor: &Accessor<T, Self>,
        address: String,
        username: String,
        password: String,
        keep_alive_interval_in_secs: u64,
    ) -> wasmtime::Result<Result<Resource<MqttConnection>, v3::Error>> {
        let component =
            accessor.with(|mut access| std::sync::Arc::clone(access.get().state.component()));
        let opened =
            open(&component, &address, username, password, keep_alive_interval_in_secs).await;
        Ok(accessor.with(|mut access| access.get().push_mqtt(opened).map_err(Into::into)))
    }

    async fn publish(
        accessor: &Accessor<T, Self>,
        this: Resource<MqttConnection>,
        topic: String,
        payload: Vec<u8>,
        qos: v3::Qos,
    ) -> wasmtime::Result<Result<(), v3::Error>> {
        let (client, session) = accessor.with(|mut access| access.get().mqtt(&this))?;
        Ok(publish(client, session, topic, payload, qos.into()).await.map_err(Into::into))
    }
}

impl v2::Host for CapabilitiesView<'_> {}

impl v2::HostConnection for CapabilitiesView<'_> {
    async fn open(
        &mut self,
        address: String,
        username: String,
        password: String,
        keep_alive_interval_in_secs: u64,
    ) -> wasmtime::Result<Result<Resource<MqttConnection>, v2::Error>> {
        let component = std::sync::Arc::clone(self.state.component());
        let opened =
            open(&component, &address, username, password, keep_alive_interval_in_secs).await;
        Ok(self.push_mqtt(opened).map_err(Into::into))
    }

    async fn publish(
        &mut self,
        this: Resource<MqttConnection>,
        topic: String,
        payload: Vec<u8>,
        qos: v2::Qos,
    ) -> wasmtime::Result<Result<(), v2::Error>> {
        let (client, session) = self.mqtt(&this)?;
        Ok(publish(client, session, topic, payload, qos.into()).await.map_err(Into::into))
    }

    async fn drop(&mut self, connection: Resource<MqttConnection>) -> wasmtime::Result<()> {
        let connection = self.table.delete(connection)?;
        let _ = connection.client.try_disconnect();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{UNRESOLVABLE, checked, listener, reaches};

    fn request(url: &str) -> Request<'static> {
        Request { url: Url::parse(url).unwrap(), username: "", password: "", keep_alive_secs: 5 }
    }

    fn candidates(request: &Request, checked: &CheckedTarget) -> Vec<MqttOptions> {
        let Ok(named) = request.options(request.url.clone()) else { panic!("invalid URL") };
        let Ok(candidates) = request.candidates(named, checked) else { panic!("refused") };
        candidates
    }

    /// The URL sets the packet limits, but a broker's packets are held to
    /// 64 MiB whatever it says.
    #[test]
    fn the_incoming_packet_limit_is_held_to_64_mib() {
        let options = |query: &str| {
            let request = request(&format!("mqtt://broker.example:1883?client_id=t{query}"));
            request.options(request.url.clone()).ok().unwrap().max_packet_size()
        };
        assert_eq!(options(""), 10 * 1024);
        assert_eq!(options("&max_incoming_packet_size_bytes=1048576"), 1 << 20);
        assert_eq!(options("&max_incoming_packet_size_bytes=4294967296"), crate::MAX_RESULT_BYTES);
    }

    #[tokio::test]
    async fn plain_mqtt_connects_to_each_checked_address_in_turn() {
        let (listener, port) = listener().await;
        let request = request(&format!("mqtt://{UNRESOLVABLE}:{port}?client_id=t"));
        // 127.0.0.2 is loopback too, but nothing listens there on this port.
        let candidates =
            candidates(&request, &checked("mqtt", port, &["127.0.0.2", "127.0.0.1"]).await);
        let brokers: Vec<_> = candidates.iter().map(MqttOptions::broker_address).collect();
        assert_eq!(brokers, [("127.0.0.2".to_string(), port), ("127.0.0.1".to_string(), port)]);
        let Ok(connection) = connection(candidates) else { panic!("no candidate") };
        let publishing = async move {
            let MqttConnection { client, session } = connection;
            drop(publish(client, session, "t".into(), b"x".to_vec(), QoS::AtMostOnce).await)
        };
        assert!(reaches(&listener, publishing).await);
    }

    #[tokio::test]
    async fn tls_keeps_the_name_for_sni_and_the_certificate() {
        let request = request(&format!("mqtts://{UNRESOLVABLE}:8883?client_id=t"));
        let candidates = candidates(&request, &checked("mqtts", 8883, &["127.0.0.1"]).await);
        let brokers: Vec<_> = candidates.iter().map(MqttOptions::broker_address).collect();
        assert_eq!(brokers, [(UNRESOLVABLE.to_string(), 8883)]);
    }
}
