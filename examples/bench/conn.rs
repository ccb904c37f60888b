//! One client connection: the socket, one read buffer and one write buffer. Packets are appended
//! to the write buffer and go out in one `write` per batch; reads take whatever the socket holds
//! and every complete packet in it is handled before the next read.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::mqtt::{self, Packet};

pub fn other(msg: impl ToString) -> io::Error {
    io::Error::other(msg.to_string())
}

/// Who connects and how (the same for every connection of a run).
pub struct Login {
    pub addr: SocketAddr,
    pub keepalive: u16,
    pub user: Option<String>,
    pub pass: Option<String>,
}

pub struct Conn {
    stream: TcpStream,
    rbuf: BytesMut,
    pub wbuf: BytesMut,
    /// Free space reserved before each read: large for busy clients, small for idle ones.
    chunk: usize,
}

impl Conn {
    /// TCP connect, CONNECT, and wait for a CONNACK that accepts.
    pub async fn open(login: &Login, client_id: &str, chunk: usize) -> io::Result<Conn> {
        let stream = TcpStream::connect(login.addr).await?;
        stream.set_nodelay(true)?;
        let mut c = Conn {
            stream,
            rbuf: BytesMut::with_capacity(chunk),
            wbuf: BytesMut::with_capacity(chunk.min(1024)),
            chunk,
        };
        mqtt::connect(
            &mut c.wbuf,
            client_id,
            login.keepalive,
            login.user.as_deref(),
            login.pass.as_deref(),
        );
        c.flush().await?;
        let (kind, body) = c.next_packet().await?;
        match (kind, body.get(1)) {
            (mqtt::CONNACK, Some(0)) => Ok(c),
            (mqtt::CONNACK, code) => Err(other(format!(
                "CONNECT refused with CONNACK return code {code:?}"
            ))),
            _ => Err(other(format!("expected CONNACK, got packet type {kind}"))),
        }
    }

    /// SUBSCRIBE to one filter; the granted QoS, or an error if the broker refused it.
    pub async fn subscribe(&mut self, filter: &str, qos: u8) -> io::Result<u8> {
        mqtt::subscribe(&mut self.wbuf, 1, filter, qos);
        self.flush().await?;
        loop {
            let (kind, body) = self.next_packet().await?;
            if kind == mqtt::SUBACK {
                return match body.get(2) {
                    Some(&g) if g <= 2 => Ok(g),
                    g => Err(other(format!(
                        "SUBSCRIBE to {filter} refused (SUBACK return code {g:?})"
                    ))),
                };
            }
        }
    }

    /// Write out everything in the write buffer.
    pub async fn flush(&mut self) -> io::Result<()> {
        if !self.wbuf.is_empty() {
            self.stream.write_all(&self.wbuf).await?;
            self.wbuf.clear();
        }
        Ok(())
    }

    /// Wait for bytes and read what is there; the broker closing the connection is an error.
    pub async fn fill(&mut self) -> io::Result<()> {
        self.rbuf.reserve(self.chunk);
        match self.stream.read_buf(&mut self.rbuf).await? {
            0 => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the broker closed the connection",
            )),
            _ => Ok(()),
        }
    }

    /// Read what is there without waiting; false if nothing was.
    pub fn try_fill(&mut self) -> io::Result<bool> {
        self.rbuf.reserve(self.chunk);
        match self.stream.try_read_buf(&mut self.rbuf) {
            Ok(0) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the broker closed the connection",
            )),
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The next packet's type and body, copied out (handshakes only, not the hot path).
    async fn next_packet(&mut self) -> io::Result<(u8, Vec<u8>)> {
        loop {
            if let Some((p, used)) = mqtt::decode(&self.rbuf).map_err(other)? {
                let r = (p.kind, p.body.to_vec());
                self.rbuf.advance(used);
                return Ok(r);
            }
            self.fill().await?;
        }
    }

    /// Hand every complete packet in the read buffer to `f`, which may append replies to the
    /// write buffer (sent with the next `flush`).
    pub fn drain(
        &mut self,
        mut f: impl FnMut(&Packet<'_>, &mut BytesMut) -> io::Result<()>,
    ) -> io::Result<()> {
        let mut off = 0;
        while let Some((p, used)) = mqtt::decode(&self.rbuf[off..]).map_err(other)? {
            f(&p, &mut self.wbuf)?;
            off += used;
        }
        self.rbuf.advance(off);
        Ok(())
    }

    /// DISCONNECT, then wait (briefly) for the broker to close its side, so that neither side
    /// resets a connection with bytes still unread.
    pub async fn close(mut self) {
        mqtt::disconnect(&mut self.wbuf);
        if self.flush().await.is_err() || self.stream.shutdown().await.is_err() {
            return;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            loop {
                self.rbuf.clear();
                self.rbuf.reserve(256);
                match self.stream.read_buf(&mut self.rbuf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
    }
}
