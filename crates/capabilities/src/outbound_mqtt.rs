//! Outbound MQTT: `spin:mqtt/mqtt@3.0.0` (spin-sdk 7) and
//! `fermyon:spin/mqtt@2.0.0` (spin-sdk 2 to 5).
//!
//! `open` takes an `mqtt://host:port?client_id=...` URL (the client id is
//! required, as on Spin), a user name, a password and a keep-alive
//! interval. The host and port must be in the component's
//! `allowed_outbound_hosts`, otherwise `invalid-address`. The broker is
//! contacted on the first publish; `publish` returns once the broker has
//! acknowledged the message at the requested quality of service (for
//! at-most-once, once it is written).

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS};
use tokio::sync::Mutex;
use wasmtime::component::{Accessor, Resource};

use crate::bindings::fermyon::spin::mqtt as v2;
use crate::bindings::spin::mqtt::mqtt as v3;
use crate::{Capabilities, CapabilitiesView, ComponentCapabilities};

/// How long one publish (connecting included) may take.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(30);

/// An MQTT client, as a guest holds it.
pub struct MqttConnection {
    client: AsyncClient,
    /// Driven only while a publish waits for its acknowledgement.
    events: Arc<Mutex<EventLoop>>,
}

/// Why a call failed, before mapping to each interface's error.
enum Failure {
    InvalidAddress,
    ConnectionFailed(String),
    Other(String),
}

async fn open(
    component: &ComponentCapabilities,
    address: &str,
    username: String,
    password: String,
    keep_alive_secs: u64,
) -> Result<MqttConnection, Failure> {
    let mut options = MqttOptions::parse_url(address).map_err(|_| Failure::InvalidAddress)?;
    if crate::check_outbound_resolved(component, address).await.is_err() {
        return Err(Failure::InvalidAddress);
    }
    if !username.is_empty() {
        options.set_credentials(username, password);
    }
    // rumqttc refuses keep-alives under 5 s.
    options.set_keep_alive(Duration::from_secs(keep_alive_secs.max(5)));
    let (client, events) = AsyncClient::new(options, 16);
    Ok(MqttConnection { client, events: Arc::new(Mutex::new(events)) })
}

async fn publish(
    client: AsyncClient,
    events: Arc<Mutex<EventLoop>>,
    topic: String,
    payload: Vec<u8>,
    qos: QoS,
) -> Result<(), Failure> {
    let mut events = events.lock().await;
    client.publish(topic, qos, false, payload).await.map_err(|e| Failure::Other(e.to_string()))?;
    let delivered = async {
        loop {
            let event =
                events.poll().await.map_err(|e| Failure::ConnectionFailed(e.to_string()))?;
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
    ) -> wasmtime::Result<(AsyncClient, Arc<Mutex<EventLoop>>)> {
        let connection = self.table.get(handle)?;
        Ok((connection.client.clone(), Arc::clone(&connection.events)))
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
        let (client, events) = accessor.with(|mut access| access.get().mqtt(&this))?;
        Ok(publish(client, events, topic, payload, qos.into()).await.map_err(Into::into))
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
        let (client, events) = self.mqtt(&this)?;
        Ok(publish(client, events, topic, payload, qos.into()).await.map_err(Into::into))
    }

    async fn drop(&mut self, connection: Resource<MqttConnection>) -> wasmtime::Result<()> {
        let connection = self.table.delete(connection)?;
        let _ = connection.client.try_disconnect();
        Ok(())
    }
}
