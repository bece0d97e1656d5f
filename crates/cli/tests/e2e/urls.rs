//! Function URLs answered over plain HTTP, as `curl` would call them: the HTTP API
//! payload 2.0 in, the mapped response out, binary bodies included.

use bytes::Bytes;
use hyper::Method;
use serde_json::{Value, json};

use crate::require_sandbox;
use crate::support::{Api, Server, zip_files};

const WEB: &str = include_str!("fixtures/web.py");

async fn setup(api: &Api) -> String {
    let zip = zip_files(&[("app.py", WEB.as_bytes(), 0o644)]);
    let r = api
        .create(
            "web",
            &zip,
            json!({ "Runtime": "python3.11", "Handler": "app.handler" }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = api
        .request(
            Method::POST,
            "/2021-10-31/functions/web/url",
            &[],
            Bytes::from(json!({ "AuthType": "NONE" }).to_string()),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let url = r.json()["FunctionUrl"].as_str().unwrap().to_owned();
    assert!(url.ends_with("/url/web/"), "{url}");
    url
}

#[tokio::test(flavor = "multi_thread")]
async fn a_function_url_maps_requests_and_responses_binary_included() {
    require_sandbox!();
    let server = Server::start(&[]);
    let api = server.api();
    setup(&api).await;

    let r = api
        .request(
            Method::GET,
            "/url/web/orders/7?x=1&x=2",
            &[("cookie", "s=abc; t=def")],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let body = r.json();
    assert_eq!(body["path"], "/orders/7");
    assert_eq!(body["query"], json!({ "x": "1,2" }));
    assert_eq!(body["cookies"], json!(["s=abc", "t=def"]));
    assert_eq!(body["method"], "GET");
    assert_eq!(body["id"].as_str(), r.header("x-amzn-requestid"));
    assert_eq!(body["source"], "127.0.0.1");

    // A path with escapes takes the router's way, which decodes it; the event is the same.
    let r = api
        .request(Method::GET, "/url/w%65b/a%20b", &[], Bytes::new())
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["path"], "/a b");
    assert_eq!(body["source"], "127.0.0.1");
    let r = api
        .request(Method::GET, "/url/web", &[], Bytes::new())
        .await;
    assert_eq!(r.json()["path"], "/");

    let r = api
        .request(Method::POST, "/url/web/created", &[], Bytes::new())
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.header("x-made"), Some("yes"));
    let cookies: Vec<&str> = r
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(cookies, ["a=1", "b=2"]);
    assert_eq!(r.text(), "made");

    // Every byte value goes through and back.
    let binary: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    let r = api
        .request(
            Method::PUT,
            "/url/web/echo",
            &[("content-type", "application/octet-stream")],
            Bytes::from(binary.clone()),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert_eq!(r.body, binary);

    let r = api
        .request(Method::GET, "/url/web/plain", &[], Bytes::new())
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!(["just", "json"]));

    let r = api
        .request(Method::GET, "/url/web/fail", &[], Bytes::new())
        .await;
    assert_eq!(r.status, 502);
    assert_eq!(r.json(), json!({ "Message": "Internal Server Error" }));

    let r = api
        .request(Method::GET, "/url/nothing/", &[], Bytes::new())
        .await;
    assert_eq!(r.status, 404);
    let again = api
        .request(
            Method::POST,
            "/2021-10-31/functions/web/url",
            &[],
            Bytes::from(json!({ "AuthType": "NONE" }).to_string()),
        )
        .await;
    assert_eq!(again.status, 409);
    let bad = api
        .request(
            Method::PUT,
            "/2021-10-31/functions/web/url",
            &[],
            Bytes::from(json!({ "AuthType": "OPEN" }).to_string()),
        )
        .await;
    assert_eq!(bad.status, 400);
    let _: Value = bad.json();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_function_url_survives_a_restart_and_goes_with_its_function() {
    require_sandbox!();
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    let mut server = Server::start_in(&data, &[]);
    setup(&server.api()).await;
    server.stop();
    let server = Server::start_in(&data, &[]);
    let api = server.api();
    let r = api
        .request(Method::GET, "/url/web/still", &[], Bytes::new())
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["path"], "/still");
    let gone = api
        .request(
            Method::DELETE,
            "/2015-03-31/functions/web",
            &[],
            Bytes::new(),
        )
        .await;
    assert_eq!(gone.status, 204);
    let r = api
        .request(Method::GET, "/url/web/still", &[], Bytes::new())
        .await;
    assert_eq!(r.status, 404);
}

/// Creates (POST) or changes (PUT) the URL of the function `web`.
pub(crate) async fn put_url(api: &Api, method: Method, config: Value) -> crate::support::Response {
    api.request(
        method,
        "/2021-10-31/functions/web/url",
        &[],
        Bytes::from(config.to_string()),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_function_url_with_cors_answers_preflights_itself_and_sets_the_headers() {
    require_sandbox!();
    let server = Server::start(&[]);
    let api = server.api();
    let zip = zip_files(&[("app.py", WEB.as_bytes(), 0o644)]);
    let r = api
        .create(
            "web",
            &zip,
            json!({ "Runtime": "python3.11", "Handler": "app.handler" }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let bad = put_url(
        &api,
        Method::POST,
        json!({ "AuthType": "NONE", "Cors": { "AllowMethods": ["TRACE"] } }),
    )
    .await;
    assert_eq!(bad.status, 400);
    assert!(bad.text().contains("AllowMethods"), "{}", bad.text());
    let cors = json!({
        "AllowOrigins": ["https://app.example"],
        "AllowMethods": ["GET", "POST"],
        "AllowHeaders": ["x-token"],
        "ExposeHeaders": ["x-total"],
        "MaxAge": 300,
    });
    // AWS_IAM and no access keys: a call is refused, a browser's preflight is not.
    let r = put_url(
        &api,
        Method::POST,
        json!({ "AuthType": "AWS_IAM", "Cors": cors }),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["Cors"], cors);
    let preflight = [
        ("origin", "https://app.example"),
        ("access-control-request-method", "POST"),
        ("access-control-request-headers", "x-token"),
    ];
    let r = api
        .request(Method::OPTIONS, "/url/web/cors", &preflight, Bytes::new())
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(r.header("access-control-allow-methods"), Some("GET, POST"));
    assert_eq!(r.header("access-control-allow-headers"), Some("x-token"));
    assert_eq!(r.header("access-control-max-age"), Some("300"));
    assert_eq!(r.header("x-amzn-requestid"), None, "the function ran");
    let r = api
        .request(
            Method::OPTIONS,
            "/url/web/cors",
            &[
                ("origin", "https://elsewhere.example"),
                ("access-control-request-method", "POST"),
            ],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.header("access-control-allow-origin"), None);
    let r = api
        .request(
            Method::GET,
            "/url/web/cors",
            &[("origin", "https://app.example")],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, 403);

    // An update without Cors keeps it; the function's own CORS headers are replaced.
    let r = put_url(&api, Method::PUT, json!({ "AuthType": "NONE" })).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["Cors"], cors);
    let r = api
        .request(
            Method::GET,
            "/url/web/cors",
            &[("origin", "https://app.example")],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "ok");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(r.header("access-control-expose-headers"), Some("x-total"));
    assert_eq!(r.header("vary"), Some("Origin"));
    let r = api
        .request(
            Method::GET,
            "/url/web/cors",
            &[("origin", "https://elsewhere.example")],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), None);

    // An empty Cors turns it off: the function's headers go through as it sent them.
    let r = put_url(&api, Method::PUT, json!({ "Cors": {} })).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json().get("Cors").is_none(), "{}", r.text());
    let r = api
        .request(
            Method::GET,
            "/url/web/cors",
            &[("origin", "https://app.example")],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
}

async fn add_route(api: &Api, key: &str, function: &str) -> crate::support::Response {
    api.request(
        Method::POST,
        "/ember/v1/routes",
        &[],
        Bytes::from(json!({ "RouteKey": key, "Function": function }).to_string()),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_send_each_method_and_path_to_its_function_with_path_parameters() {
    require_sandbox!();
    let server = Server::start(&[]);
    let api = server.api();
    setup(&api).await;
    let r = add_route(&api, "GET /orders/{id}", "web").await;
    assert_eq!(r.status, 201, "{}", r.text());
    let order_route = r.json()["RouteId"].as_str().unwrap().to_owned();
    assert_eq!(
        add_route(&api, "ANY /files/{proxy+}", "web").await.status,
        201
    );
    assert_eq!(add_route(&api, "GET /orders/{id}", "web").await.status, 409);
    assert_eq!(add_route(&api, "GET orders", "web").await.status, 400);
    assert_eq!(add_route(&api, "GET /x", "missing").await.status, 404);

    let r = api
        .request(Method::GET, "/http/orders/7?full=1", &[], Bytes::new())
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["route"], "GET /orders/{id}");
    assert_eq!(body["params"], json!({ "id": "7" }));
    assert_eq!(body["path"], "/orders/7");
    assert_eq!(body["query"], json!({ "full": "1" }));
    // The method is part of the route: no POST route, and no $default to fall back on.
    let r = api
        .request(Method::POST, "/http/orders/7", &[], Bytes::new())
        .await;
    assert_eq!(r.status, 404);

    let binary: Vec<u8> = (0..=255u8).rev().cycle().take(3000).collect();
    let r = api
        .request(
            Method::PUT,
            "/http/files/a/b/echo",
            &[("content-type", "image/png")],
            Bytes::from(binary.clone()),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("image/png"));
    assert_eq!(r.body, binary);

    let listed = api.get("/ember/v1/routes").await.json();
    assert_eq!(listed["Routes"].as_array().unwrap().len(), 2, "{listed}");
    let gone = api
        .request(
            Method::DELETE,
            &format!("/ember/v1/routes/{order_route}"),
            &[],
            Bytes::new(),
        )
        .await;
    assert_eq!(gone.status, 204);
    let r = api
        .request(Method::GET, "/http/orders/7", &[], Bytes::new())
        .await;
    assert_eq!(r.status, 404);
}
