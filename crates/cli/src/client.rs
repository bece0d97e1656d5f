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
    /// (key id, secret, region) to sign requests with, when configured.
    credentials: Option<(String, String, String)>,
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
    /// The server's URL, `http://host:port`.
    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn new(base: &str) -> Client {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Client {
            base: base.trim_end_matches('/').to_owned(),
            http: HttpClient::builder(TokioExecutor::new()).build(connector),
            credentials: credentials_from_env(),
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
        let uri: hyper::Uri = format!("{}{path}", self.base).parse()?;
        let mut req = Request::builder().method(method.clone()).uri(uri.clone());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some((key_id, secret, region)) = &self.credentials {
            let host = uri
                .authority()
                .map(|a| a.as_str().to_owned())
                .unwrap_or_default();
            let base = vec![("host".to_owned(), host.clone())];
            let signed = ember_api::sigv4::SignedRequest {
                method: method.as_str(),
                path: uri.path(),
                query: uri.query().unwrap_or(""),
                headers: &base,
                body: &body,
            };
            req = req.header("host", host);
            for (k, v) in ember_api::sigv4::sign(
                &signed,
                key_id,
                secret,
                region,
                "lambda",
                std::time::SystemTime::now(),
            ) {
                req = req.header(k, v);
            }
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

    /// The same client, signing with these credentials.
    pub fn signed(&self, key_id: &str, secret: &str, region: &str) -> Client {
        Client {
            credentials: Some((key_id.to_owned(), secret.to_owned(), region.to_owned())),
            ..self.clone()
        }
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

/// Credentials to sign with: `EMBER_ACCESS_KEY_ID` and `EMBER_SECRET_ACCESS_KEY`, or the
/// AWS tools' `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`; region from `EMBER_REGION`,
/// else `AWS_REGION` / `AWS_DEFAULT_REGION`, else `us-east-1`. A server without keys
/// ignores signatures, so signing is harmless there.
fn credentials_from_env() -> Option<(String, String, String)> {
    let var = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
    };
    let key_id = var(&["EMBER_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"])?;
    let secret = var(&["EMBER_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"])?;
    let region = var(&["EMBER_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"])
        .unwrap_or_else(|| "us-east-1".into());
    Some((key_id, secret, region))
}
