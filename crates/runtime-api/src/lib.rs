//! The Lambda Runtime API, one server per environment, and Ember's bundled runtimes.
//!
//! - [`RuntimeApi`] serves `/2018-06-01/runtime/…` on the listener the sandbox bound inside
//!   the environment's network namespace. The dispatcher hands it [`Invocation`]s with
//!   [`RuntimeApi::invoke`]; the runtime's `/response` or `/error` comes back as a
//!   [`Reply`] on the invocation's own channel, found by request id. A runtime serving
//!   several invocations at once (`AWS_LAMBDA_MAX_CONCURRENCY`) keeps that many `/next`
//!   requests outstanding; each gets its own invocation. [`Phase`] tells the dispatcher when init is
//!   over (the first `/next`) or failed (`/init/error`).
//! - [`runtimes`]: the bootstraps Ember ships (Python), written into the runtime directory
//!   that every environment sees read-only at `/var/runtime`.
//!
//! Responses are small and written with TCP_NODELAY: a runtime client that sends its
//! request in two segments would otherwise wait out Nagle and delayed ACK (~40 ms).

pub mod runtimes;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

/// One event handed to the runtime.
#[derive(Debug)]
pub struct Invocation {
    pub request_id: String,
    pub payload: Bytes,
    /// Epoch milliseconds.
    pub deadline_ms: u64,
    pub function_arn: String,
    pub trace_id: String,
    pub client_context: Option<String>,
    pub reply: oneshot::Sender<Reply>,
}

/// What the runtime answered for one invocation.
#[derive(Debug)]
pub enum Reply {
    Response(Bytes),
    /// `/error`: the error document and the `Lambda-Runtime-Function-Error-Type` header.
    Error {
        body: Bytes,
        error_type: Option<String>,
    },
    /// `/response` with a body over the limit; the runtime was answered 413.
    ResponseTooLarge,
}

/// Where the runtime is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Started, not yet asked for an event.
    Initializing,
    /// Asked for its first event: init is over.
    Ready,
    /// Reported `/init/error` with this body and error type.
    InitFailed {
        body: Bytes,
        error_type: Option<String>,
    },
}

struct State {
    queue: tokio::sync::Mutex<mpsc::Receiver<Invocation>>,
    /// Invocations handed out and not yet answered, by request id.
    in_flight: Mutex<HashMap<String, oneshot::Sender<Reply>>>,
    phase: watch::Sender<Phase>,
    response_limit: usize,
    /// When the runtime first connected: its own start is over by then.
    connected: Arc<OnceLock<Instant>>,
}

/// The Runtime API of one environment. Dropping it stops the server.
pub struct RuntimeApi {
    queue: mpsc::Sender<Invocation>,
    phase: watch::Receiver<Phase>,
    server: tokio::task::AbortHandle,
    connected: Arc<OnceLock<Instant>>,
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl RuntimeApi {
    /// Serves the Runtime API on `listener`. `response_limit` bounds `/response` bodies.
    pub fn serve(
        listener: std::net::TcpListener,
        response_limit: usize,
    ) -> std::io::Result<RuntimeApi> {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let (queue_tx, queue_rx) = mpsc::channel(1);
        let (phase_tx, phase_rx) = watch::channel(Phase::Initializing);
        let connected = Arc::new(OnceLock::new());
        let state = Arc::new(State {
            queue: tokio::sync::Mutex::new(queue_rx),
            in_flight: Mutex::new(HashMap::new()),
            phase: phase_tx,
            response_limit,
            connected: Arc::clone(&connected),
        });
        let server = tokio::spawn(accept_loop(listener, state)).abort_handle();
        Ok(RuntimeApi {
            queue: queue_tx,
            phase: phase_rx,
            server,
            connected,
        })
    }

    /// When the runtime first connected, if it has: Ember's runtimes connect before they
    /// load the function's code, so this splits the runtime's own start from the code's
    /// init.
    pub fn first_connection(&self) -> Option<Instant> {
        self.connected.get().copied()
    }

    /// Watches the runtime's phase.
    pub fn phase(&self) -> watch::Receiver<Phase> {
        self.phase.clone()
    }

    /// Queues an invocation for the runtime's next `/next`.
    pub async fn invoke(&self, invocation: Invocation) {
        // The receiver lives as long as the server; a send fails only once the
        // environment is gone, and then the reply channel closes and the caller sees it.
        let _ = self.queue.send(invocation).await;
    }
}

async fn accept_loop(listener: tokio::net::TcpListener, state: Arc<State>) {
    // Connections live in this set: aborting the loop drops them all.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                state.connected.get_or_init(Instant::now);
                let _ = stream.set_nodelay(true);
                let state = Arc::clone(&state);
                connections.spawn(async move {
                    let service = service_fn(move |req| handle(Arc::clone(&state), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

type Body = Full<Bytes>;

fn json(status: StatusCode, body: &'static str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("static response is valid")
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req
        .uri()
        .path()
        .strip_prefix("/2018-06-01/runtime/")
        .unwrap_or("");
    let parts: Vec<&str> = path.split('/').collect();
    let response = match (req.method(), parts.as_slice()) {
        (&Method::GET, ["invocation", "next"]) => next(&state).await,
        (&Method::POST, ["invocation", id, "response"]) => {
            let id = (*id).to_owned();
            response(&state, &id, req).await
        }
        (&Method::POST, ["invocation", id, "error"]) => {
            let id = (*id).to_owned();
            error(&state, &id, req).await
        }
        (&Method::POST, ["init", "error"]) => init_error(&state, req).await,
        _ => json(
            StatusCode::NOT_FOUND,
            r#"{"errorMessage":"Unknown Runtime API path","errorType":"InvalidPath"}"#,
        ),
    };
    Ok(response)
}

async fn next(state: &State) -> Response<Body> {
    // Outstanding `/next`s take invocations one after the other, each its own.
    let mut queue = state.queue.lock().await;
    state.phase.send_if_modified(|phase| {
        let first = *phase == Phase::Initializing;
        if first {
            *phase = Phase::Ready;
        }
        first
    });
    let received = queue.recv().await;
    drop(queue);
    let Some(inv) = received else {
        return json(
            StatusCode::GONE,
            r#"{"errorMessage":"The environment is shutting down","errorType":"Shutdown"}"#,
        );
    };
    let mut builder = Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .header("lambda-runtime-aws-request-id", &inv.request_id)
        .header("lambda-runtime-deadline-ms", inv.deadline_ms.to_string())
        .header("lambda-runtime-invoked-function-arn", &inv.function_arn)
        .header("lambda-runtime-trace-id", &inv.trace_id);
    // Optional and user-supplied: a value that cannot be a header is left out rather than
    // failing the whole event.
    if let Some(cc) = inv
        .client_context
        .as_deref()
        .and_then(|cc| http::HeaderValue::from_bytes(cc.as_bytes()).ok())
    {
        builder = builder.header("lambda-runtime-client-context", cc);
    }
    let payload = inv.payload;
    state
        .in_flight
        .lock()
        .expect("in-flight lock")
        .insert(inv.request_id, inv.reply);
    builder.body(Full::new(payload)).unwrap_or_else(|_| {
        json(
            StatusCode::INTERNAL_SERVER_ERROR,
            r#"{"errorMessage":"Invalid invocation headers","errorType":"ServiceException"}"#,
        )
    })
}

/// Takes the reply channel of the in-flight invocation `id` names.
fn take_in_flight(state: &State, id: &str) -> Option<oneshot::Sender<Reply>> {
    state.in_flight.lock().expect("in-flight lock").remove(id)
}

const UNKNOWN_ID: &str = r#"{"errorMessage":"No invocation with this request id is waiting for an answer","errorType":"InvalidRequestID"}"#;

async fn response(state: &State, id: &str, req: Request<Incoming>) -> Response<Body> {
    let Some(reply) = take_in_flight(state, id) else {
        return json(StatusCode::BAD_REQUEST, UNKNOWN_ID);
    };
    match read_limited(req.into_body(), state.response_limit).await {
        Some(body) => {
            let _ = reply.send(Reply::Response(body));
            json(StatusCode::ACCEPTED, r#"{"status":"OK"}"#)
        }
        None => {
            let _ = reply.send(Reply::ResponseTooLarge);
            json(
                StatusCode::PAYLOAD_TOO_LARGE,
                r#"{"errorMessage":"Response payload size exceeded maximum allowed payload size (6291556 bytes).","errorType":"Function.ResponseSizeTooLarge"}"#,
            )
        }
    }
}

/// How much of an oversized body is read and dropped so the runtime's connection stays
/// usable; past this the connection is closed instead.
const DRAIN_LIMIT: usize = 64 * 1024 * 1024;

/// Reads a body of at most `limit` bytes; `None` if it is larger. An oversized body is read
/// to its end (up to [`DRAIN_LIMIT`]) and dropped: answering before the runtime has sent it
/// all would break the runtime's keep-alive connection mid-write.
async fn read_limited(mut body: Incoming, limit: usize) -> Option<Bytes> {
    let mut buf = bytes::BytesMut::new();
    let mut seen = 0usize;
    while let Some(Ok(frame)) = body.frame().await {
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen += data.len();
        if seen <= limit {
            buf.extend_from_slice(&data);
        } else if seen > DRAIN_LIMIT {
            break;
        }
    }
    (seen <= limit).then(|| buf.freeze())
}

fn error_type(req: &Request<Incoming>) -> Option<String> {
    req.headers()
        .get("lambda-runtime-function-error-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Error documents are small; a runtime that sends a huge one gets it cut, not an error.
const ERROR_BODY_LIMIT: usize = 256 * 1024;

async fn read_error_body(req: Request<Incoming>) -> Bytes {
    Limited::new(req.into_body(), ERROR_BODY_LIMIT)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_else(|_| Bytes::from_static(br#"{"errorMessage":"error document too large","errorType":"Runtime.InvalidError"}"#))
}

async fn error(state: &State, id: &str, req: Request<Incoming>) -> Response<Body> {
    let Some(reply) = take_in_flight(state, id) else {
        return json(StatusCode::BAD_REQUEST, UNKNOWN_ID);
    };
    let error_type = error_type(&req);
    let body = read_error_body(req).await;
    let _ = reply.send(Reply::Error { body, error_type });
    json(StatusCode::ACCEPTED, r#"{"status":"OK"}"#)
}

async fn init_error(state: &State, req: Request<Incoming>) -> Response<Body> {
    let error_type = error_type(&req);
    let body = read_error_body(req).await;
    state
        .phase
        .send_replace(Phase::InitFailed { body, error_type });
    json(StatusCode::ACCEPTED, r#"{"status":"OK"}"#)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http_body_util::BodyExt;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    use super::*;

    type TestClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

    fn serve(limit: usize) -> (RuntimeApi, String, TestClient) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let base = format!(
            "http://{}/2018-06-01/runtime",
            listener.local_addr().unwrap()
        );
        let api = RuntimeApi::serve(listener, limit).unwrap();
        (
            api,
            base,
            Client::builder(TokioExecutor::new()).build_http(),
        )
    }

    async fn call(
        client: &TestClient,
        method: Method,
        url: String,
        body: Vec<u8>,
    ) -> (StatusCode, http::HeaderMap, Bytes) {
        let req = Request::builder()
            .method(method)
            .uri(url)
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let res = tokio::time::timeout(Duration::from_secs(5), client.request(req))
            .await
            .unwrap()
            .unwrap();
        let (parts, body) = res.into_parts();
        (
            parts.status,
            parts.headers,
            body.collect().await.unwrap().to_bytes(),
        )
    }

    fn invocation(id: &str, payload: &'static [u8]) -> (Invocation, oneshot::Receiver<Reply>) {
        let (tx, rx) = oneshot::channel();
        let inv = Invocation {
            request_id: id.into(),
            payload: Bytes::from_static(payload),
            deadline_ms: 42,
            function_arn: "arn:aws:lambda:us-east-1:000000000000:function:f".into(),
            trace_id: "Root=1-0-0".into(),
            client_context: Some("{\"a\":1}".into()),
            reply: tx,
        };
        (inv, rx)
    }

    #[tokio::test]
    async fn next_hands_over_the_event_with_lambda_headers_and_marks_init_done() {
        let (api, base, client) = serve(1024);
        assert_eq!(*api.phase().borrow(), Phase::Initializing);
        let (inv, reply) = invocation("req-1", b"{\"x\":1}");
        api.invoke(inv).await;
        let (status, headers, body) = call(
            &client,
            Method::GET,
            format!("{base}/invocation/next"),
            vec![],
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, Bytes::from_static(b"{\"x\":1}"));
        assert_eq!(headers["lambda-runtime-aws-request-id"], "req-1");
        assert_eq!(headers["lambda-runtime-deadline-ms"], "42");
        assert_eq!(
            headers["lambda-runtime-invoked-function-arn"],
            "arn:aws:lambda:us-east-1:000000000000:function:f"
        );
        assert_eq!(headers["lambda-runtime-trace-id"], "Root=1-0-0");
        assert_eq!(headers["lambda-runtime-client-context"], "{\"a\":1}");
        assert_eq!(*api.phase().borrow(), Phase::Ready);

        let (status, _, _) = call(
            &client,
            Method::POST,
            format!("{base}/invocation/req-1/response"),
            b"\"ok\"".to_vec(),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        assert!(matches!(reply.await.unwrap(), Reply::Response(b) if b == "\"ok\""));
    }

    #[tokio::test]
    async fn several_outstanding_nexts_each_get_an_invocation_answered_by_id() {
        let (api, base, client) = serve(1024);
        let nexts: Vec<_> = (0..2)
            .map(|_| {
                let client = client.clone();
                let url = format!("{base}/invocation/next");
                tokio::spawn(async move { call(&client, Method::GET, url, vec![]).await })
            })
            .collect();
        let (a, reply_a) = invocation("req-a", b"1");
        let (b, reply_b) = invocation("req-b", b"2");
        api.invoke(a).await;
        api.invoke(b).await;
        let mut ids = Vec::new();
        for next in nexts {
            let (status, headers, _) = next.await.unwrap();
            assert_eq!(status, StatusCode::OK);
            ids.push(
                headers["lambda-runtime-aws-request-id"]
                    .to_str()
                    .unwrap()
                    .to_owned(),
            );
        }
        ids.sort();
        assert_eq!(ids, ["req-a", "req-b"]);
        // Answered in the other order, each reaches its own caller.
        for (id, body) in [("req-b", "\"b\""), ("req-a", "\"a\"")] {
            let url = format!("{base}/invocation/{id}/response");
            let (status, _, _) = call(&client, Method::POST, url, body.into()).await;
            assert_eq!(status, StatusCode::ACCEPTED);
        }
        assert!(matches!(reply_a.await.unwrap(), Reply::Response(b) if b == "\"a\""));
        assert!(matches!(reply_b.await.unwrap(), Reply::Response(b) if b == "\"b\""));
    }

    #[tokio::test]
    async fn answers_for_unknown_or_already_answered_requests_are_refused() {
        let (api, base, client) = serve(1024);
        let (inv, _reply) = invocation("req-1", b"{}");
        api.invoke(inv).await;
        call(
            &client,
            Method::GET,
            format!("{base}/invocation/next"),
            vec![],
        )
        .await;
        let (status, _, _) = call(
            &client,
            Method::POST,
            format!("{base}/invocation/other/response"),
            b"1".to_vec(),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, _, _) = call(
            &client,
            Method::POST,
            format!("{base}/invocation/req-1/response"),
            b"1".to_vec(),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let (status, _, _) = call(
            &client,
            Method::POST,
            format!("{base}/invocation/req-1/error"),
            b"{}".to_vec(),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, _, _) = call(&client, Method::GET, format!("{base}/nowhere"), vec![]).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn an_oversized_response_gets_413_and_the_runtime_can_carry_on() {
        let (api, base, client) = serve(8);
        let (inv, reply) = invocation("big", b"{}");
        api.invoke(inv).await;
        call(
            &client,
            Method::GET,
            format!("{base}/invocation/next"),
            vec![],
        )
        .await;
        let (status, _, body) = call(
            &client,
            Method::POST,
            format!("{base}/invocation/big/response"),
            vec![b'x'; 100_000],
        )
        .await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(String::from_utf8_lossy(&body).contains("Function.ResponseSizeTooLarge"));
        assert!(matches!(reply.await.unwrap(), Reply::ResponseTooLarge));
        // The next event still flows.
        let (inv, reply) = invocation("small", b"{}");
        api.invoke(inv).await;
        let (_, headers, _) = call(
            &client,
            Method::GET,
            format!("{base}/invocation/next"),
            vec![],
        )
        .await;
        assert_eq!(headers["lambda-runtime-aws-request-id"], "small");
        call(
            &client,
            Method::POST,
            format!("{base}/invocation/small/response"),
            b"1".to_vec(),
        )
        .await;
        assert!(matches!(reply.await.unwrap(), Reply::Response(_)));
    }

    #[tokio::test]
    async fn errors_and_init_errors_carry_their_type() {
        let (api, base, client) = serve(1024);
        let req = Request::builder()
            .method(Method::POST)
            .uri(format!("{base}/init/error"))
            .header(
                "lambda-runtime-function-error-type",
                "Runtime.ImportModuleError",
            )
            .body(Full::new(Bytes::from_static(
                b"{\"errorType\":\"Runtime.ImportModuleError\"}",
            )))
            .unwrap();
        assert_eq!(
            client.request(req).await.unwrap().status(),
            StatusCode::ACCEPTED
        );
        let phase = api.phase().borrow().clone();
        assert!(
            matches!(phase, Phase::InitFailed { error_type: Some(t), .. } if t == "Runtime.ImportModuleError")
        );
    }
}
