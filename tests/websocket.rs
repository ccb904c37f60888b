//! MQTT over WebSocket: a browser's way in. The same broker behind it (topics, retained
//! messages, wills, the Clients panel's transport), packets across frames and frames with many
//! packets, and every bad upgrade closed with the right answer and nothing else touched.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use mqtt_lab::broker::Config;
use mqtt_lab::broker::protocol::Transport;
use rumqttc::QoS;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{WebSocketStream, client_async};

type Ws = WebSocketStream<TcpStream>;

async fn start_ws() -> (mqtt_lab::broker::Broker, SocketAddr) {
    let config = Config {
        ws_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..config()
    };
    let broker = start_with(config).await;
    let ws = broker.ws_addr().expect("a WebSocket listener");
    (broker, ws)
}

/// Opens a WebSocket on `path` offering `protocols` (comma-separated; empty for none).
async fn open(addr: SocketAddr, path: &str, protocols: &str) -> Result<Ws, String> {
    let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
    if !protocols.is_empty() {
        request
            .headers_mut()
            .insert("sec-websocket-protocol", protocols.parse().unwrap());
    }
    let tcp = TcpStream::connect(addr).await.unwrap();
    match client_async(request, tcp).await {
        Ok((ws, response)) => {
            if !protocols.is_empty() {
                let chosen = response.headers().get("sec-websocket-protocol");
                assert!(chosen.is_some(), "the answer names the subprotocol");
            }
            Ok(ws)
        }
        Err(e) => Err(e.to_string()),
    }
}

/// The next MQTT packet from the broker, from as many binary frames as it takes.
async fn next_packet(ws: &mut Ws, buf: &mut Vec<u8>) -> Option<RawPacket> {
    loop {
        if let Some(p) = take_packet(buf) {
            return Some(p);
        }
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame within the wait")
        {
            Some(Ok(Message::Binary(b))) => buf.extend_from_slice(&b),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(other)) => panic!("unexpected frame {other:?}"),
        }
    }
}

async fn send(ws: &mut Ws, bytes: &[u8]) {
    ws.send(Message::Binary(bytes.to_vec().into()))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_websocket_client_subscribes_publishes_and_gets_retained_messages_and_wills() {
    let (broker, ws_addr) = start_ws().await;
    let tcp_addr = broker.local_addr();
    let publisher = Client::connect(options(tcp_addr, "tcp-pub")).await;
    publisher
        .publish("lab/b", QoS::AtLeastOnce, true, b"retained")
        .await;

    let mut ws = open(ws_addr, "/mqtt", "mqtt").await.unwrap();
    let mut buf = Vec::new();
    // CONNECT (with a will) and SUBSCRIBE in one frame.
    let mut first = connect_packet(&ConnectOpts {
        client_id: "browser",
        keep_alive: 60,
        will: Some(("lab/c/d", b"tab closed", 1, false)),
        ..Default::default()
    });
    first.extend(subscribe_packet(
        1,
        &[("lab/a", 2), ("lab/b", 1), ("nope", 0)],
    ));
    send(&mut ws, &first).await;
    assert_eq!(next_packet(&mut ws, &mut buf).await.unwrap().byte1, 0x20);
    let suback = next_packet(&mut ws, &mut buf).await.unwrap();
    assert_eq!(suback.body, [0, 1, 2, 1, 0x80]);
    let retained = next_packet(&mut ws, &mut buf).await.unwrap();
    assert!(retained.retain());
    assert_eq!(retained.publish().2, b"retained");
    // A PUBACK for it, split across two frames.
    let (_, pkid, _) = retained.publish();
    let ack = ack_packet(0x40, pkid);
    send(&mut ws, &ack[..1]).await;
    send(&mut ws, &ack[1..]).await;

    // TCP in, WebSocket out, at QoS 2.
    publisher
        .publish("lab/a", QoS::ExactlyOnce, false, b"from tcp")
        .await;
    let p = next_packet(&mut ws, &mut buf).await.unwrap();
    assert_eq!((p.qos(), p.publish().2), (2, b"from tcp".to_vec()));
    send(&mut ws, &ack_packet(0x50, p.publish().1)).await;
    assert_eq!(next_packet(&mut ws, &mut buf).await.unwrap().byte1, 0x62);
    send(&mut ws, &ack_packet(0x70, p.publish().1)).await;

    // WebSocket in, TCP out.
    let mut sub = Client::connect(options(tcp_addr, "tcp-sub")).await;
    sub.subscribe(&[("lab/c/d", QoS::AtLeastOnce)]).await;
    send(
        &mut ws,
        &publish_packet("lab/c/d", 1, 9, false, false, b"from ws"),
    )
    .await;
    assert_eq!(next_packet(&mut ws, &mut buf).await.unwrap().byte1, 0x40);
    assert_eq!(&sub.next_publish().await.payload[..], b"from ws");

    // The Clients panel says how it came in.
    let snap = snapshot(&broker).await;
    let browser = client(&snap, "browser");
    assert_eq!(
        browser.connection.as_ref().unwrap().transport,
        Transport::WebSocket
    );

    // A WebSocket ping is answered with a pong; MQTT's own ping too.
    ws.send(Message::Ping(b"hi".to_vec().into())).await.unwrap();
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
            Some(Ok(Message::Pong(p))) => {
                assert_eq!(&p[..], b"hi");
                break;
            }
            Some(Ok(Message::Binary(b))) => buf.extend_from_slice(&b),
            other => panic!("expected a pong, got {other:?}"),
        }
    }
    send(&mut ws, &[0xc0, 0]).await;
    assert_eq!(next_packet(&mut ws, &mut buf).await.unwrap().byte1, 0xd0);

    // Closing the tab without DISCONNECT: the will fires.
    drop(ws);
    assert_eq!(&sub.next_publish().await.payload[..], b"tab closed");
    broker.shutdown().await;
}

#[tokio::test]
async fn the_old_subprotocol_name_and_the_root_path_are_accepted() {
    let (broker, ws_addr) = start_ws().await;
    for (path, protocols) in [("/", "mqttv3.1"), ("/mqtt", "foo, mqtt"), ("/mqtt", "")] {
        let mut ws = open(ws_addr, path, protocols).await.unwrap();
        send(&mut ws, &connect_packet(&ConnectOpts::default())).await;
        let mut buf = Vec::new();
        let ack = next_packet(&mut ws, &mut buf).await;
        assert_eq!(ack.map(|p| p.byte1), Some(0x20), "{path} {protocols:?}");
    }
    broker.shutdown().await;
}

/// Reads what the server answers to a raw HTTP request, until it closes.
async fn http(addr: SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

const UPGRADE: &str = "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

#[tokio::test]
async fn bad_upgrades_are_answered_and_closed_and_nothing_else_is_touched() {
    let config = Config {
        ws_listen: Some("127.0.0.1:0".parse().unwrap()),
        connect_timeout: Duration::from_millis(500),
        max_packet_size: 1024,
        ..config()
    };
    let broker = start_with(config).await;
    let ws_addr = broker.ws_addr().unwrap();
    let mut bystander = Client::connect(options(broker.local_addr(), "bystander")).await;

    let wrong_path = http(
        ws_addr,
        &format!("GET /chat HTTP/1.1\r\nHost: x\r\n{UPGRADE}Sec-WebSocket-Protocol: mqtt\r\n\r\n"),
    )
    .await;
    assert!(wrong_path.starts_with("HTTP/1.1 404"), "{wrong_path}");
    let wrong_protocol = http(
        ws_addr,
        &format!("GET /mqtt HTTP/1.1\r\nHost: x\r\n{UPGRADE}Sec-WebSocket-Protocol: chat\r\n\r\n"),
    )
    .await;
    assert!(
        wrong_protocol.starts_with("HTTP/1.1 400"),
        "{wrong_protocol}"
    );
    let no_upgrade = http(ws_addr, "GET /mqtt HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(no_upgrade.starts_with("HTTP/1.1 4"), "{no_upgrade}");
    // Plain MQTT on the WebSocket port: not HTTP, closed.
    let mut mqtt = Raw::open(ws_addr).await;
    mqtt.send(&connect_packet(&ConnectOpts::default())).await;
    assert!(mqtt.read().await.is_none_or(|p| p.byte1 != 0x20));
    // A handshake that never finishes is timed out.
    let mut silent = Raw::open(ws_addr).await;
    silent.send(b"GET /mqtt HTTP/1.1\r\n").await;
    assert!(silent.read().await.is_none(), "closed after the timeout");

    // After the upgrade: a text frame, and a frame over the maximum packet size.
    let mut text = open(ws_addr, "/mqtt", "mqtt").await.unwrap();
    send(&mut text, &connect_packet(&ConnectOpts::default())).await;
    let mut buf = Vec::new();
    assert!(next_packet(&mut text, &mut buf).await.is_some());
    text.send(Message::text("hello")).await.unwrap();
    assert!(next_packet(&mut text, &mut buf).await.is_none(), "closed");
    let mut big = open(ws_addr, "/mqtt", "mqtt").await.unwrap();
    send(&mut big, &connect_packet(&ConnectOpts::default())).await;
    let mut buf = Vec::new();
    assert!(next_packet(&mut big, &mut buf).await.is_some());
    let _ = big.send(Message::Binary(vec![0u8; 4096].into())).await;
    assert!(next_packet(&mut big, &mut buf).await.is_none(), "closed");

    // Each was logged for the window, and the bystander never noticed.
    let snap = wait_for(&broker, "the refusals logged", |s| {
        s.events
            .iter()
            .filter(|e| e.text.contains("WebSocket"))
            .count()
            >= 3
    })
    .await;
    let texts: Vec<_> = snap.events.iter().map(|e| e.text.as_str()).collect();
    assert!(texts.iter().any(|t| t.contains("404")), "{texts:?}");
    assert!(texts.iter().any(|t| t.contains("400")), "{texts:?}");
    assert!(
        texts.iter().any(|t| t.contains("not done within")),
        "{texts:?}"
    );
    bystander.subscribe(&[("lab/a", QoS::AtMostOnce)]).await;
    broker.shutdown().await;
}

/// The WebSocket upgrade and CONNECT share one CONNECT timeout, counted from accept: a client
/// slow at both cannot hold a connection for twice as long.
#[tokio::test]
async fn the_upgrade_and_connect_share_one_timeout() {
    let config = Config {
        ws_listen: Some("127.0.0.1:0".parse().unwrap()),
        connect_timeout: Duration::from_secs(1),
        ..config()
    };
    let broker = start_with(config).await;
    let ws_addr = broker.ws_addr().unwrap();
    let started = std::time::Instant::now();
    let tcp = TcpStream::connect(ws_addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut request = format!("ws://{ws_addr}/mqtt")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "mqtt".parse().unwrap());
    let (mut ws, _) = client_async(request, tcp).await.unwrap();
    // No CONNECT: closed at the one deadline (1 s after accept), not 1 s after the upgrade.
    let mut buf = Vec::new();
    assert!(next_packet(&mut ws, &mut buf).await.is_none());
    let took = started.elapsed();
    assert!(took < Duration::from_millis(1500), "closed after {took:?}");
    broker.shutdown().await;
}
