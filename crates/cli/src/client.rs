//! A small client of Ember's HTTP API, for the CLI commands and the benchmark.

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

#[derive(Clone)]
pub struct Client {
    base: String,
    http: HttpClient<HttpConnector, Full<Bytes>>,
}

/// A complete response.
pub struct Answer {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Client {
    pub fn new(base: &str) -> Client {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Client {
            base: base.trim_end_matches('/').to_owned(),
            http: HttpClient::builder(TokioExecutor::new()).build(connector),
        }
    }

    /// Sends a request and returns the raw response, whatever its status.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> anyhow::Result<Response<Incoming>> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(Bytes::from(body)))?;
        self.http.request(req).await.with_context(|| {
            format!(
                "could not reach the Ember server at {}; is `ember server` running?",
                self.base
            )
        })
    }

    /// Sends a request and reads the whole answer, whatever its status.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> anyhow::Result<Answer> {
        let response = self.send(method, path, headers, body).await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await?.to_bytes();
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    /// Like [`Client::request`], but an error status becomes an error naming its type.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> anyhow::Result<Answer> {
        let answer = self.request(method, path, headers, body).await?;
        if answer.status >= 400 {
            let kind = answer
                .header("x-amzn-errortype")
                .unwrap_or("Error")
                .to_owned();
            let message = serde_json::from_slice::<serde_json::Value>(&answer.body)
                .ok()
                .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&answer.body).into_owned());
            bail!("{kind}: {message}");
        }
        Ok(answer)
    }

    pub async fn invoke(&self, name: &str, payload: &[u8], tail: bool) -> anyhow::Result<Answer> {
        let headers: &[(&str, &str)] = if tail {
            &[("x-amz-log-type", "Tail")]
        } else {
            &[]
        };
        self.call(
            Method::POST,
            &format!("/2015-03-31/functions/{name}/invocations"),
            headers,
            payload.to_vec(),
        )
        .await
    }
}
