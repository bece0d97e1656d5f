//! Outgoing HTTP for components of functions with `Network: egress`.
//!
//! A wasm function runs inside Ember's process, so its requests leave from the host: they
//! may reach other hosts, never this host's own addresses (loopback, the addresses of its
//! interfaces), where Ember's API and everything else local listens. The name is resolved
//! once, the addresses checked, and the connection made to a checked address, so a name
//! that resolves differently a moment later cannot slip past the check. `https` is
//! verified against the Web PKI roots (compiled in).

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody};

/// How long a connection (name lookup, TCP, TLS, HTTP handshake) may take when the guest
/// sets no timeout; the function's own timeout bounds everything anyway.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// Whether a request may be sent to `ip`.
fn allowed(ip: IpAddr, own: &HashSet<IpAddr>) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    let broadcast = matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || broadcast
        || own.contains(&ip))
}

/// This host's own addresses.
fn own_addresses() -> HashSet<IpAddr> {
    let Ok(addresses) = nix::ifaddrs::getifaddrs() else {
        return HashSet::new();
    };
    addresses
        .filter_map(|a| a.address)
        .filter_map(|a| {
            a.as_sockaddr_in()
                .map(|v4| IpAddr::V4(v4.ip()))
                .or_else(|| a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
        })
        .collect()
}

type Sent = (
    http::Response<WasiBody>,
    Box<dyn Future<Output = Result<(), Error>> + Send>,
);

/// Sends `request` to its authority, if that is another host.
pub(crate) async fn send(
    mut request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
) -> Result<Sent, Error> {
    let uri = request.uri();
    let authority = uri.authority().ok_or(Error::HttpRequestUriInvalid)?.clone();
    let tls = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
    let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let connect_timeout = options
        .and_then(|o| o.connect_timeout)
        .unwrap_or(CONNECT_TIMEOUT);
    let first_byte_timeout = options
        .and_then(|o| o.first_byte_timeout)
        .unwrap_or(CONNECT_TIMEOUT);
    let connect = async {
        let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|_| Error::DnsError {
                rcode: None,
                info_code: None,
            })?
            .collect();
        let own = own_addresses();
        let checked: Vec<SocketAddr> = resolved
            .iter()
            .copied()
            .filter(|a| allowed(a.ip(), &own))
            .collect();
        if checked.is_empty() {
            return Err(if resolved.is_empty() {
                Error::DestinationNotFound
            } else {
                Error::DestinationIpProhibited
            });
        }
        let tcp = TcpStream::connect(&checked[..])
            .await
            .map_err(|_| Error::ConnectionRefused)?;
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Stream> = if tls {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.into(),
            };
            let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|_| Error::TlsProtocolError)?
            .with_root_certificates(roots)
            .with_no_client_auth();
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|_| Error::HttpRequestUriInvalid)?;
            let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
            Box::new(connector.connect(name, tcp).await.map_err(Error::Tls)?)
        } else {
            Box::new(tcp)
        };
        hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(Error::from)
    };
    let (mut sender, connection) = tokio::time::timeout(connect_timeout, connect)
        .await
        .map_err(|_| Error::ConnectionTimeout)??;
    // The connection is driven on its own; how it ended is the second part of the answer.
    let (ended, end) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let _ = ended.send(connection.await);
    });
    // Sent to the host itself, the request names only its path.
    let path = uri_path(request.uri());
    *request.uri_mut() = path;
    let response = tokio::time::timeout(first_byte_timeout, sender.send_request(request))
        .await
        .map_err(|_| Error::ConnectionReadTimeout)?
        .map_err(Error::from)?;
    let response = response.map(|body| body.map_err(Error::from).boxed_unsync());
    let io = async move {
        match end.await {
            Ok(Err(e)) => Err(Error::from(e)),
            _ => Ok(()),
        }
    };
    Ok((response, Box::new(io)))
}

fn uri_path(uri: &http::Uri) -> http::Uri {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    http::Uri::builder()
        .path_and_query(path)
        .build()
        .unwrap_or_else(|_| http::Uri::from_static("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_other_hosts_are_reachable() {
        let own: HashSet<IpAddr> = ["10.1.2.3".parse().unwrap()].into();
        for refused in [
            "127.0.0.1",
            "127.8.0.1",
            "::1",
            "0.0.0.0",
            "::",
            "10.1.2.3",
            "::ffff:127.0.0.1",
            "224.0.0.1",
            "255.255.255.255",
        ] {
            assert!(!allowed(refused.parse().unwrap(), &own), "{refused}");
        }
        for reachable in ["10.1.2.4", "93.184.215.14", "2001:db8::1"] {
            assert!(allowed(reachable.parse().unwrap(), &own), "{reachable}");
        }
    }
}
