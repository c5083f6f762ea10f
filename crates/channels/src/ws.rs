//! A WebSocket client over plain TCP (ws://, tests and self-hosted) or
//! rustls with the webpki roots (wss://, the real services).

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::WebSocketStream;

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub type Ws = WebSocketStream<Box<dyn Io>>;

pub async fn connect(url: &str) -> Result<Ws, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("bad URL {url}: {e}"))?;
    let host = parsed.host_str().ok_or("URL without a host")?.to_string();
    let tls = match parsed.scheme() {
        "wss" => true,
        "ws" => false,
        s => return Err(format!("not a WebSocket URL scheme: {s}")),
    };
    let port = parsed.port().unwrap_or(if tls { 443 } else { 80 });
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("connecting to {host}:{port}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let io: Box<dyn Io> = if tls {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let config = ClientConfig::builder_with_provider(Arc::new(
            tokio_rustls::rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = tokio_rustls::rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|e| e.to_string())?;
        let s = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS to {host}: {e}"))?;
        Box::new(s)
    } else {
        Box::new(tcp)
    };
    let req = url.into_client_request().map_err(|e| e.to_string())?;
    let (ws, _) = tokio_tungstenite::client_async(req, io)
        .await
        .map_err(|e| format!("WebSocket handshake with {host}: {e}"))?;
    Ok(ws)
}
