//! The API's accept loop and connections: HTTP/1.1 with hyper, each connection a task of
//! its own, asked to close after its current request when the server shuts down.
//!
//! Served here rather than by `axum::serve`, whose connections clone their service (the
//! router and the handlers' state) for every request: on a function URL that was seven
//! reference counts shared by every connection, raised and dropped on each call by both
//! cores.

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use axum::body::Body;
use ember_api::{Connection, Front};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

/// Serves `front` on `listener` until `shutdown` completes, then lets the open connections
/// finish their current requests and waits for them to close.
pub async fn serve(listener: TcpListener, front: Front, shutdown: impl Future<Output = ()>) {
    let (draining, drain) = watch::channel(false);
    // Closed once every connection has let go of its clone.
    let (open, mut all_closed) = mpsc::channel::<Infallible>(1);
    let mut shutdown = pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(connection(
            tcp,
            front.connection(peer),
            drain.clone(),
            open.clone(),
        ));
    }
    let _ = draining.send(true);
    drop(open);
    let _ = all_closed.recv().await;
}

/// One connection, to its end; asked to close after its current request when the server
/// drains.
async fn connection(
    tcp: TcpStream,
    service: Connection,
    mut drain: watch::Receiver<bool>,
    _open: mpsc::Sender<Infallible>,
) {
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        service.serve(request.map(Body::new))
    });
    let mut conn = pin!(
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), service)
    );
    let mut draining = pin!(drain.wait_for(|d| *d));
    let mut asked = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::trace!(error = %e, "a connection failed");
                }
                return;
            }
            _ = &mut draining, if !asked => {
                asked = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// After a failed `accept`: a connection that went away before it was accepted is nothing;
/// anything else (out of file descriptors, say) is logged and waited out.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "could not accept a connection");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
