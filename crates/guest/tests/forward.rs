//! `HostMsg::TcpConnect` against the agent in `serve` mode (on the host,
//! so "the sandbox's loopback" is this machine's 127.0.0.1 here): bytes
//! both ways with half-close in each direction, a refused port, and a
//! cancel that closes the socket.

mod common;

use std::time::Duration;

use common::Guest;
use ironclaw_proto::{ErrorKind, GuestMsg, HostMsg, CHUNK};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn bytes_both_ways_with_half_close() {
    let g = Guest::start();
    let c = g.connect().await;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    // The server reads to EOF, then answers with what it counted and closes.
    let server = tokio::spawn(async move {
        let (mut s, peer) = l.accept().await.unwrap();
        assert!(peer.ip().is_loopback());
        let mut all = Vec::new();
        s.read_to_end(&mut all).await.unwrap();
        s.write_all(format!("got {}", all.len()).as_bytes())
            .await
            .unwrap();
        all
    });
    let mut s = c.open(HostMsg::TcpConnect { port }).await;
    assert_eq!(s.next().await, GuestMsg::TcpConnected);
    // More than a window's worth, so credit has to flow.
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let sender = s.sender();
    let feed = {
        let data = data.clone();
        tokio::spawn(async move {
            for c in data.chunks(CHUNK) {
                sender.send(HostMsg::Data(c.to_vec())).await;
            }
            sender.send(HostMsg::Eof).await;
        })
    };
    let mut back = Vec::new();
    loop {
        match s.next().await {
            GuestMsg::Data(d) => back.extend_from_slice(&d),
            GuestMsg::TcpEof => break,
            other => panic!("{other:?}"),
        }
    }
    feed.await.unwrap();
    assert_eq!(back, b"got 3000000");
    assert_eq!(s.next().await, GuestMsg::Ok);
    assert_eq!(server.await.unwrap(), data);
}

#[tokio::test]
async fn the_server_closing_first_leaves_the_host_side_open() {
    let g = Guest::start();
    let c = g.connect().await;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        s.write_all(b"hello").await.unwrap();
        s.shutdown().await.unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.unwrap();
        rest
    });
    let mut s = c.open(HostMsg::TcpConnect { port }).await;
    assert_eq!(s.next().await, GuestMsg::TcpConnected);
    assert_eq!(s.next().await, GuestMsg::Data(b"hello".to_vec()));
    assert_eq!(s.next().await, GuestMsg::TcpEof);
    // The host still sends after the server's EOF.
    s.send(HostMsg::Data(b"late words".to_vec())).await;
    s.send(HostMsg::Eof).await;
    assert_eq!(s.next().await, GuestMsg::Ok);
    assert_eq!(server.await.unwrap(), b"late words");
}

#[tokio::test]
async fn refused_port_and_cancel() {
    let g = Guest::start();
    let c = g.connect().await;
    // A port nothing listens on (bound, then closed).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    match c.call(HostMsg::TcpConnect { port }).await {
        GuestMsg::Error { kind, message } => {
            assert_eq!(kind, ErrorKind::NotFound, "{message}");
            assert!(message.contains(&port.to_string()), "{message}");
        }
        other => panic!("{other:?}"),
    }
    match c.call(HostMsg::TcpConnect { port: 0 }).await {
        GuestMsg::Error { kind, .. } => assert_eq!(kind, ErrorKind::InvalidInput),
        other => panic!("{other:?}"),
    }
    // Cancel closes the socket: the server reads EOF.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let mut s = c.open(HostMsg::TcpConnect { port }).await;
    assert_eq!(s.next().await, GuestMsg::TcpConnected);
    let (mut conn, _) = l.accept().await.unwrap();
    s.send(HostMsg::Cancel).await;
    let mut buf = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut buf))
        .await
        .expect("the socket was not closed")
        .unwrap_or(0);
    assert_eq!(n, 0);
    // The connection to the agent is fine.
    assert_eq!(c.call(HostMsg::Ping).await, GuestMsg::Pong);
}
