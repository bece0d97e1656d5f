//! Components: WASI 0.2 (`wasi:cli`, `wasi:filesystem`, `wasi:clocks`, `wasi:random`,
//! `wasi:io`, `wasi:sockets` with every address refused, and `wasi:http`), run as a
//! `wasi:cli/run` command or served as a `wasi:http/incoming-handler`.
//!
//! A component's outgoing HTTP requests are refused (`HTTP-request-denied`) unless its
//! function has `Network: egress` (`egress.rs`).

use std::convert::Infallible;

use bytes::Bytes;
use futures_util::FutureExt;
use http_body_util::{BodyExt, Full};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::bindings::{Proxy, ProxyPre};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use crate::{OUTPUT_BYTES, State, WasmError};

/// What a component's instance holds besides its limits.
pub(crate) struct Host {
    pub(crate) ctx: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    hooks: Outbound,
}

impl Host {
    /// `egress`: whether outgoing requests may leave (to other hosts).
    pub(crate) fn new(ctx: WasiCtx, egress: bool) -> Host {
        Host {
            ctx,
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            hooks: Outbound { egress },
        }
    }
}

impl WasiView for State<Host> {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi.ctx,
            table: &mut self.wasi.table,
        }
    }
}

impl WasiHttpView for State<Host> {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.wasi.http,
            table: &mut self.wasi.table,
            hooks: &mut self.wasi.hooks,
        }
    }
}

/// Sends outgoing requests to other hosts with egress, refuses them without.
struct Outbound {
    egress: bool,
}

impl WasiHttpHooks for Outbound {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = wasmtime_wasi_http::Result<(
                    http::Response<wasmtime_wasi_http::WasiBody>,
                    Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                )>,
            > + Send,
    > {
        let egress = self.egress;
        Box::new(async move {
            if !egress {
                return Err(wasmtime_wasi_http::Error::HttpRequestDenied);
            }
            crate::egress::send(request, options).await
        })
    }
}

/// The linker components are resolved against.
pub(crate) fn linker(engine: &wasmtime::Engine) -> wasmtime::Result<Linker<State<Host>>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    Ok(linker)
}

/// A component ready to instantiate, by what it exports.
#[derive(Clone)]
pub(crate) enum Exports {
    Http(ProxyPre<State<Host>>),
    Command(CommandPre<State<Host>>),
}

/// Resolves a component's imports and finds its entry point.
pub(crate) fn prepare(
    linker: &Linker<State<Host>>,
    component: &Component,
) -> Result<Exports, WasmError> {
    let pre = linker
        .instantiate_pre(component)
        .map_err(|e| WasmError::Link(format!("{e:#}")))?;
    if let Ok(proxy) = ProxyPre::new(pre.clone()) {
        return Ok(Exports::Http(proxy));
    }
    CommandPre::new(pre).map(Exports::Command).map_err(|_| {
        WasmError::Link(
            "a component must export wasi:http/incoming-handler (an HTTP handler) or wasi:cli/run (a command)".into(),
        )
    })
}

/// Whether a component imports `interface` (any version of it), e.g.
/// `wasi:filesystem/preopens`.
pub(crate) fn imports(engine: &wasmtime::Engine, component: &Component, interface: &str) -> bool {
    component
        .component_type()
        .imports(engine)
        .any(|(name, _)| name.starts_with(interface))
}

/// What an HTTP handler answered.
#[derive(Debug, Clone)]
pub struct HttpAnswer {
    pub status: u16,
    pub headers: Vec<(String, Bytes)>,
    pub body: Bytes,
}

/// How serving one request went, apart from how the instance ended.
#[derive(Debug, Clone)]
pub enum Served {
    /// The handler answered and finished the body.
    Answered(HttpAnswer),
    /// The body was larger than [`OUTPUT_BYTES`].
    TooLarge,
    /// The handler answered with an error, or its body broke off.
    Failed(String),
    /// The handler returned without answering.
    NoAnswer,
}

/// Hands `request` to the handler of `proxy`, an instance in `store`. The instance's end
/// comes back with what it served.
pub(crate) async fn serve(
    proxy: &Proxy,
    store: &mut wasmtime::Store<State<Host>>,
    request: http::Request<Bytes>,
) -> (wasmtime::Result<()>, Served) {
    let (sender, mut receiver) = tokio::sync::oneshot::channel();
    let request = request.map(|body| {
        Full::new(body).map_err(|never: Infallible| -> hyper::Error { match never {} })
    });
    let setup = (|| {
        let mut http = store.data_mut().http();
        let request = http.new_incoming_request(Scheme::Http, request)?;
        let out = http.new_response_outparam(sender)?;
        Ok::<_, wasmtime::Error>((request, out))
    })();
    let (request, out) = match setup {
        Ok(setup) => setup,
        Err(e) => return (Err(e), Served::NoAnswer),
    };
    let (returned, mut guest_returned) = tokio::sync::oneshot::channel::<()>();
    let guest = async {
        let end = proxy
            .wasi_http_incoming_handler()
            .call_handle(&mut *store, request, out)
            .await;
        let _ = returned.send(());
        end
    };
    // Once the guest has returned, whatever it answered is already queued: what is not
    // there then never will be (a response never set, a body never finished).
    let host = async {
        let mut done = false;
        let response = tokio::select! {
            response = &mut receiver => response.ok(),
            _ = &mut guest_returned => {
                done = true;
                receiver.try_recv().ok()
            }
        };
        let response = match response {
            Some(Ok(response)) => response,
            Some(Err(code)) => return Served::Failed(describe(&code)),
            None => return Served::NoAnswer,
        };
        let (parts, mut body) = response.into_parts();
        let mut bytes = Vec::new();
        loop {
            let frame = if done {
                match body.frame().now_or_never() {
                    Some(frame) => frame,
                    None => {
                        return Served::Failed(
                            "the handler returned before finishing its response body".into(),
                        );
                    }
                }
            } else {
                tokio::select! {
                    frame = body.frame() => frame,
                    _ = &mut guest_returned => {
                        done = true;
                        continue;
                    }
                }
            };
            match frame {
                None => break,
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        if bytes.len() + data.len() > OUTPUT_BYTES {
                            return Served::TooLarge;
                        }
                        bytes.extend_from_slice(data);
                    }
                }
                Some(Err(e)) => {
                    return Served::Failed(format!("the handler's body broke off: {e}"));
                }
            }
        }
        Served::Answered(HttpAnswer {
            status: parts.status.as_u16(),
            headers: parts
                .headers
                .iter()
                .map(|(name, value)| {
                    (
                        name.as_str().to_owned(),
                        Bytes::copy_from_slice(value.as_bytes()),
                    )
                })
                .collect(),
            body: Bytes::from(bytes),
        })
    };
    // The guest writes the body while the host reads it: both run together.
    tokio::join!(guest, host)
}

fn describe(code: &ErrorCode) -> String {
    format!("the handler answered with an error: {code:?}")
}
