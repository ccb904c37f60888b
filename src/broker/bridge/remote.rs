//! The remote side of a bridge: rumqttc's MQTT 5 client, set up from the bridge's config.

use std::time::Duration;

use rumqttc::v5::mqttbytes::QoS as RQoS;
use rumqttc::v5::mqttbytes::v5::{ConnectProperties, Filter, RetainForwardRule};
use rumqttc::v5::{AsyncClient, EventLoop, MqttOptions};
use rumqttc::{TlsConfiguration, Transport};

use super::config::{BridgeConfig, Remote, Scheme};
use crate::broker::protocol::QoS;

/// Requests (publishes, acknowledgements) that wait for the remote's event loop: when full,
/// the bridge stops taking messages from its local session, which queues them.
const REQUESTS: usize = 64;

/// The client and its event loop for one connection attempt (a fresh pair each time: what was
/// in flight is re-sent from the local session, not by rumqttc), and where it connects.
pub fn client(config: &BridgeConfig) -> Result<(AsyncClient, EventLoop, Remote), String> {
    let remote = Remote::parse(&config.address)?;
    let id = config.remote_client_id();
    let mut options = match remote.scheme {
        Scheme::Mqtt | Scheme::Mqtts => MqttOptions::new(id, remote.host.clone(), remote.port),
        // For WebSocket, rumqttc takes the whole URL as the host.
        Scheme::Ws | Scheme::Wss => MqttOptions::new(id, remote.ws_url(), remote.port),
    };
    let tls = || -> Result<TlsConfiguration, String> {
        let config = crate::broker::tls::client_config(config.ca_file.as_deref())
            .map_err(|e| e.to_string())?;
        Ok(TlsConfiguration::Rustls(config))
    };
    options.set_transport(match remote.scheme {
        Scheme::Mqtt => Transport::Tcp,
        Scheme::Mqtts => Transport::Tls(tls()?),
        Scheme::Ws => Transport::Ws,
        Scheme::Wss => Transport::Wss(tls()?),
    });
    options
        .set_keep_alive(Duration::from_secs(config.keepalive.into()))
        .set_clean_start(config.clean_session)
        .set_manual_acks(true)
        .set_connection_timeout(10)
        .set_request_channel_capacity(REQUESTS);
    // MQTT 5 ends a session with its connection unless told otherwise; a bridge without a
    // clean session wants the remote to keep its subscriptions and messages while it is away.
    options.set_connect_properties(ConnectProperties {
        session_expiry_interval: (!config.clean_session).then_some(u32::MAX),
        ..ConnectProperties::new()
    });
    if let Some(user) = &config.username {
        options.set_credentials(user.clone(), config.password.clone().unwrap_or_default());
    }
    let (client, events) = AsyncClient::new(options, REQUESTS);
    Ok((client, events, remote))
}

/// The remote subscription of an `in` rule: not sent back what the bridge itself publishes,
/// retained messages arrive retained, and (with a session the remote keeps) only for a new
/// subscription, not again at every reconnect.
pub fn filter(path: String, qos: u8, clean_session: bool) -> Filter {
    Filter {
        path,
        qos: to_remote_qos(qos),
        nolocal: true,
        preserve_retain: true,
        retain_forward_rule: if clean_session {
            RetainForwardRule::OnEverySubscribe
        } else {
            RetainForwardRule::OnNewSubscribe
        },
    }
}

pub fn to_remote_qos(qos: u8) -> RQoS {
    match qos {
        0 => RQoS::AtMostOnce,
        1 => RQoS::AtLeastOnce,
        _ => RQoS::ExactlyOnce,
    }
}

pub fn from_remote_qos(qos: RQoS) -> QoS {
    match qos {
        RQoS::AtMostOnce => QoS::AtMostOnce,
        RQoS::AtLeastOnce => QoS::AtLeastOnce,
        RQoS::ExactlyOnce => QoS::ExactlyOnce,
    }
}
