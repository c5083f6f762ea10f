//! The port proxy against upstream servers on loopback: an axum front that
//! forwards everything to an axum upstream, as the daemon does.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ws::{Message as AxMessage, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Request};
use axum::response::IntoResponse;
use axum::routing::{any, get, post};
use futures::{SinkExt, StreamExt};
use ironclaw_net::ports::{proxy, Forwarded};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;

async fn serve(app: axum::Router) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(l, app.into_make_service_with_connect_info::<SocketAddr>())
            .await
            .unwrap()
    });
    addr
}

/// The upstream: echo of bodies and headers, a response that waits for the
/// test between two chunks, and a WebSocket echo.
async fn upstream(release: Arc<Notify>) -> SocketAddr {
    let app = axum::Router::new()
        .route(
            "/echo",
            post(|b: Body| async move { Body::from_stream(b.into_data_stream()) }),
        )
        .route(
            "/headers",
            any(|req: Request| async move {
                let h: serde_json::Map<String, serde_json::Value> = req
                    .headers()
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").into()))
                    .collect();
                axum::Json(serde_json::json!({"uri": req.uri().to_string(), "headers": h}))
            }),
        )
        .route(
            "/slow",
            get(move || {
                let release = release.clone();
                async move {
                    let s = futures::stream::unfold(0, move |i| {
                        let release = release.clone();
                        async move {
                            match i {
                                0 => Some((Ok::<_, std::io::Error>("first;".to_string()), 1)),
                                1 => {
                                    release.notified().await;
                                    Some((Ok("second".to_string()), 2))
                                }
                                _ => None,
                            }
                        }
                    });
                    Body::from_stream(s)
                }
            }),
        )
        .route(
            "/ws",
            get(|ws: WebSocketUpgrade| async move {
                ws.on_upgrade(|mut s| async move {
                    while let Some(Ok(m)) = s.recv().await {
                        if matches!(m, AxMessage::Close(_)) {
                            break;
                        }
                        if s.send(m).await.is_err() {
                            break;
                        }
                    }
                })
            }),
        );
    serve(app).await
}

/// The front: every request proxied to `target`.
async fn front(target: SocketAddr) -> SocketAddr {
    let app = axum::Router::new().fallback(
        move |ConnectInfo(peer): ConnectInfo<SocketAddr>, req: Request| async move {
            let fwd = Forwarded {
                client: Some(peer.ip()),
                proto: "http",
            };
            proxy(req, target, &fwd)
                .await
                .map(Body::new)
                .into_response()
        },
    );
    serve(app).await
}

async fn setup() -> (SocketAddr, Arc<Notify>) {
    let release = Arc::new(Notify::new());
    let up = upstream(release.clone()).await;
    (front(up).await, release)
}

#[tokio::test]
async fn large_bodies_stream_both_ways() {
    let (front, _) = setup().await;
    // 48 MiB in 1 MiB chunks, sent as a stream of unknown length.
    let chunk: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    let mut want = Sha256::new();
    for _ in 0..48 {
        want.update(&chunk);
    }
    let body = futures::stream::iter((0..48).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
    let resp = reqwest::Client::new()
        .post(format!("http://{front}/echo"))
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut got = Sha256::new();
    let mut n = 0usize;
    let mut s = resp.bytes_stream();
    while let Some(c) = s.next().await {
        let c = c.unwrap();
        n += c.len();
        got.update(&c);
    }
    assert_eq!(n, 48 << 20);
    assert_eq!(got.finalize(), want.finalize());
}

#[tokio::test]
async fn responses_are_not_buffered_whole() {
    let (front, release) = setup().await;
    let resp = reqwest::get(format!("http://{front}/slow")).await.unwrap();
    let mut s = resp.bytes_stream();
    // The first chunk arrives while the upstream still holds the second.
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), s.next())
        .await
        .expect("first chunk through the proxy before the body ended")
        .unwrap()
        .unwrap();
    assert_eq!(&first[..], b"first;");
    release.notify_one();
    let mut rest = Vec::new();
    while let Some(c) = s.next().await {
        rest.extend_from_slice(&c.unwrap());
    }
    assert_eq!(rest, b"second");
}

#[tokio::test]
async fn hop_by_hop_headers_go_and_forwarded_headers_come() {
    let (front, _) = setup().await;
    let v: serde_json::Value = reqwest::Client::new()
        .get(format!("http://{front}/headers?a=1"))
        .header("host", "8080-dev.example.test:7777")
        .header("connection", "x-private")
        .header("x-private", "secret")
        .header("proxy-authorization", "Basic eA==")
        .header("te", "trailers")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-kept", "yes")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let h = &v["headers"];
    assert_eq!(v["uri"], "/headers?a=1");
    assert_eq!(h["host"], "8080-dev.example.test:7777");
    assert_eq!(h["x-forwarded-host"], "8080-dev.example.test:7777");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(h["x-kept"], "yes");
    for gone in ["x-private", "proxy-authorization", "te"] {
        assert!(h.get(gone).is_none(), "{gone} reached the upstream: {v}");
    }
}

#[tokio::test]
async fn a_refusing_port_is_a_clear_502() {
    // A port that was free a moment ago: nothing listens there.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = l.local_addr().unwrap();
    drop(l);
    let front = front(dead).await;
    let resp = reqwest::get(format!("http://{front}/")).await.unwrap();
    assert_eq!(resp.status(), 502);
    let text = resp.text().await.unwrap();
    assert!(text.contains("connection refused"), "{text}");
    assert!(text.contains(&dead.port().to_string()), "{text}");
}

#[tokio::test]
async fn websockets_pass_through() {
    let (front, _) = setup().await;
    let (mut ws, resp) = tokio_tungstenite::connect_async(format!("ws://{front}/ws"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);
    ws.send(Message::Text("hello".into())).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::Text("hello".into())
    );
    let big = vec![7u8; 1 << 20];
    ws.send(Message::Binary(big.clone())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::Binary(big));
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn http2_clients_reach_an_http1_upstream() {
    use http_body_util::{BodyExt, Full};
    let (front, _) = setup().await;
    let tcp = tokio::net::TcpStream::connect(front).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = http::Request::post("http://8080-dev.example.test/echo")
        .body(Full::new(bytes::Bytes::from(vec![5u8; 300_000])))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), 300_000);
    // The upstream saw HTTP/1.1 with the client's authority as Host.
    let req = http::Request::get("http://8080-dev.example.test/headers")
        .body(Full::new(bytes::Bytes::new()))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(v["headers"]["host"], "8080-dev.example.test", "{v}");
}
