//! MQTT over TLS and secure WebSocket, with the local CA the app makes: clients that check the
//! certificate get in, client certificates are checked when asked, and plain MQTT on the TLS
//! port (or a TLS hello on the plain port) closes that one connection, logged.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::*;
use futures_util::{SinkExt, StreamExt};
use mqtt_lab::broker::protocol::Transport;
use mqtt_lab::broker::tls::{self, LocalCa, TlsFiles};
use mqtt_lab::broker::{Broker, Config};
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
use rumqttc::QoS;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

async fn start_tls(files: &TlsFiles) -> Broker {
    let config = Config {
        tls_listen: Some("127.0.0.1:0".parse().unwrap()),
        wss_listen: Some("127.0.0.1:0".parse().unwrap()),
        tls: Some(tls::server_config(files).unwrap()),
        ..config()
    };
    start_with(config).await
}

fn roots(ca: &std::path::Path) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    roots
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client that trusts `ca` and, if given, shows a certificate of its own.
fn connector(ca: &std::path::Path, client: Option<(&str, &str)>) -> TlsConnector {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots(ca));
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
    };
    TlsConnector::from(Arc::new(config))
}

async fn tls_open(
    addr: SocketAddr,
    connector: &TlsConnector,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// CONNECT and the CONNACK's return code, or None if the broker closed the connection.
async fn mqtt_connect<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    s: &mut S,
    id: &str,
) -> Option<u8> {
    let opts = ConnectOpts {
        client_id: id,
        ..Default::default()
    };
    s.write_all(&connect_packet(&opts)).await.ok()?;
    let mut ack = [0u8; 4];
    // Anything but a CONNACK (a TLS alert, a close) is no CONNACK.
    match tokio::time::timeout(WAIT, s.read_exact(&mut ack)).await {
        Ok(Ok(_)) if ack[..2] == [0x20, 2] => Some(ack[3]),
        _ => None,
    }
}

#[tokio::test]
async fn mqtts_and_wss_clients_that_trust_the_local_ca_get_in() {
    let dir = tempfile::tempdir().unwrap();
    let LocalCa { ca, files, .. } = tls::local_ca(dir.path()).unwrap();
    let broker = start_tls(&files).await;
    let tls_addr = broker.door_addr(Transport::Tls).unwrap();
    let mut sub = Client::connect(options(broker.local_addr(), "tcp-sub")).await;
    sub.subscribe(&[("lab/a", QoS::AtLeastOnce)]).await;

    // mqtts://
    let mut s = tls_open(tls_addr, &connector(&ca, None)).await.unwrap();
    assert_eq!(mqtt_connect(&mut s, "over-tls").await, Some(0));
    s.write_all(&publish_packet("lab/a", 1, 1, false, false, b"secret"))
        .await
        .unwrap();
    let mut ack = [0u8; 4];
    s.read_exact(&mut ack).await.unwrap();
    assert_eq!(ack, [0x40, 2, 0, 1]);
    assert_eq!(&sub.next_publish().await.payload[..], b"secret");

    // wss://
    let wss_addr = broker.door_addr(Transport::SecureWebSocket).unwrap();
    let stream = tls_open(wss_addr, &connector(&ca, None)).await.unwrap();
    let mut request = format!("wss://localhost:{}/mqtt", wss_addr.port())
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "mqtt".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::client_async(request, stream)
        .await
        .unwrap();
    let mut bytes = connect_packet(&ConnectOpts {
        client_id: "over-wss",
        ..Default::default()
    });
    bytes.extend(publish_packet("lab/a", 0, 0, false, false, b"wss"));
    ws.send(Message::Binary(bytes.into())).await.unwrap();
    let connack = ws.next().await.unwrap().unwrap();
    assert_eq!(&connack.into_data()[..], [0x20, 2, 0, 0]);
    assert_eq!(&sub.next_publish().await.payload[..], b"wss");

    let snap = snapshot(&broker).await;
    let transport = |id: &str| {
        snap.clients
            .iter()
            .find(|c| c.client_id == id)
            .and_then(|c| c.connection.as_ref())
            .map(|c| c.transport)
    };
    assert_eq!(transport("over-tls"), Some(Transport::Tls));
    assert_eq!(transport("over-wss"), Some(Transport::SecureWebSocket));
    broker.shutdown().await;
}

#[tokio::test]
async fn wrong_doors_close_that_connection_and_are_logged() {
    let dir = tempfile::tempdir().unwrap();
    let local = tls::local_ca(dir.path()).unwrap();
    let broker = start_tls(&local.files).await;
    let tls_addr = broker.door_addr(Transport::Tls).unwrap();
    let mut bystander = Client::connect(options(broker.local_addr(), "bystander")).await;

    // Plain MQTT on the TLS port.
    let mut plain = TcpStream::connect(tls_addr).await.unwrap();
    assert_eq!(mqtt_connect(&mut plain, "plain").await, None);
    // A TLS hello on the plain port.
    let hello = tls_open(broker.local_addr(), &connector(&local.ca, None)).await;
    assert!(hello.is_err());
    // A client that trusts another CA.
    let other = tls::local_ca(&dir.path().join("other")).unwrap();
    assert!(
        tls_open(tls_addr, &connector(&other.ca, None))
            .await
            .is_err()
    );

    let snap = wait_for(&broker, "the refusals logged", |s| {
        s.events
            .iter()
            .any(|e| e.text.contains("TLS handshake failed"))
            && s.events
                .iter()
                .any(|e| e.text.contains("a TLS handshake on the plain"))
    })
    .await;
    assert!(snap.clients.iter().all(|c| c.client_id == "bystander"));
    bystander.subscribe(&[("lab/a", QoS::AtMostOnce)]).await;
    broker.shutdown().await;
}

/// A client certificate for `cn`, signed by a CA of the test's own: (CA PEM, cert PEM, key PEM).
fn client_ca_and_cert(cn: &str) -> (String, String, String) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::default();
    ca_params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "class CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![]).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params
        .signed_by(&key, &Issuer::new(ca_params, &ca_key))
        .unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

#[tokio::test]
async fn client_certificates_are_required_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let local = tls::local_ca(dir.path()).unwrap();
    let (class_ca, cert, key) = client_ca_and_cert("student-1");
    let cafile = dir.path().join("class-ca.pem");
    std::fs::write(&cafile, &class_ca).unwrap();
    let files = TlsFiles {
        cafile: Some(cafile),
        require_certificate: true,
        ..local.files.clone()
    };
    let broker = start_tls(&files).await;
    let tls_addr = broker.door_addr(Transport::Tls).unwrap();

    let mut with_cert = tls_open(tls_addr, &connector(&local.ca, Some((&cert, &key))))
        .await
        .unwrap();
    assert_eq!(mqtt_connect(&mut with_cert, "has-cert").await, Some(0));
    // Without one, the handshake fails (TLS 1.3 may say so only at the first read).
    match tls_open(tls_addr, &connector(&local.ca, None)).await {
        Err(_) => {}
        Ok(mut s) => assert_eq!(mqtt_connect(&mut s, "no-cert").await, None),
    }
    // One from another CA: the same.
    let (_, stranger, stranger_key) = client_ca_and_cert("stranger");
    match tls_open(
        tls_addr,
        &connector(&local.ca, Some((&stranger, &stranger_key))),
    )
    .await
    {
        Err(_) => {}
        Ok(mut s) => assert_eq!(mqtt_connect(&mut s, "stranger").await, None),
    }
    broker.shutdown().await;
}
