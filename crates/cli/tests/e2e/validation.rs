//! Every kind of bad input gets its documented 4xx, and nothing is stored for it.

use std::io::Write;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};

use crate::support::{KITCHEN, Server, zip_files};

fn good_zip() -> Vec<u8> {
    zip_files(&[("app.py", KITCHEN.as_bytes(), 0o644)])
}

/// A zip with a symbolic link entry.
fn zip_with_link(name: &str, target: &str) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default();
    zip.start_file("app.py", opts).unwrap();
    zip.write_all(KITCHEN.as_bytes()).unwrap();
    zip.add_symlink(name, target, opts).unwrap();
    zip.finish().unwrap().into_inner()
}

/// A zip whose entries are written with exactly these names (no normalisation).
fn zip_named(names: &[&str]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for name in names {
        zip.start_file(*name, zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.write_all(b"x = 1\n").unwrap();
    }
    zip.finish().unwrap().into_inner()
}

/// Marks every entry of a zip as encrypted (general-purpose flag bit 0), as a ZipCrypto
/// archive would be.
fn mark_encrypted(mut zip: Vec<u8>) -> Vec<u8> {
    let mut i = 0;
    while i + 4 <= zip.len() {
        match &zip[i..i + 4] {
            b"PK\x03\x04" => zip[i + 6] |= 1,
            b"PK\x01\x02" => zip[i + 8] |= 1,
            _ => {}
        }
        i += 1;
    }
    zip
}

/// One highly compressible entry: 64 MB of zeros in ~64 KB.
fn zip_bomb() -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    zip.start_file("bomb.bin", opts).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..64 {
        zip.write_all(&zeros).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

/// Many small, modestly compressed entries adding up to more than 250 MB unpacked.
fn zip_too_large_unpacked() -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    let zeros = vec![0u8; 1 << 20];
    for i in 0..260 {
        zip.start_file(format!("f{i}.bin"), opts).unwrap();
        zip.write_all(&zeros).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

fn create_body(name: &str, zip: &[u8], extra: Value) -> Value {
    let mut body = json!({
        "FunctionName": name,
        "Runtime": "python3",
        "Handler": "app.handler",
        "Code": { "ZipFile": BASE64.encode(zip) },
    });
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

#[tokio::test(flavor = "multi_thread")]
async fn each_bad_create_request_gets_its_documented_error_and_stores_nothing() {
    crate::require_sandbox!();
    let server = Server::start(&[]);
    let api = server.api();
    let zip = good_zip();
    let provided_no_bootstrap = zip_files(&[("main.sh", b"#!/bin/sh\n", 0o755)]);
    let provided_not_executable = zip_files(&[("bootstrap", b"#!/bin/sh\n", 0o644)]);
    let big_env = json!({ "Variables": { "BIG": "v".repeat(4100) } });

    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (
            "name with a space",
            create_body("bad name", &zip, json!({})),
            400,
            "InvalidParameterValueException",
        ),
        (
            "name too long",
            create_body(&"a".repeat(65), &zip, json!({})),
            400,
            "InvalidParameterValueException",
        ),
        (
            "memory too small",
            create_body("f", &zip, json!({ "MemorySize": 64 })),
            400,
            "InvalidParameterValueException",
        ),
        (
            "memory too large",
            create_body("f", &zip, json!({ "MemorySize": 10241 })),
            400,
            "InvalidParameterValueException",
        ),
        (
            "timeout zero",
            create_body("f", &zip, json!({ "Timeout": 0 })),
            400,
            "InvalidParameterValueException",
        ),
        (
            "timeout too long",
            create_body("f", &zip, json!({ "Timeout": 901 })),
            400,
            "InvalidParameterValueException",
        ),
        (
            "ephemeral too small",
            create_body("f", &zip, json!({ "EphemeralStorage": { "Size": 256 } })),
            400,
            "InvalidParameterValueException",
        ),
        (
            "ephemeral too large",
            create_body("f", &zip, json!({ "EphemeralStorage": { "Size": 20000 } })),
            400,
            "InvalidParameterValueException",
        ),
        (
            "env key invalid",
            create_body(
                "f",
                &zip,
                json!({ "Environment": { "Variables": { "1BAD": "x" } } }),
            ),
            400,
            "InvalidParameterValueException",
        ),
        (
            "env key reserved",
            create_body(
                "f",
                &zip,
                json!({ "Environment": { "Variables": { "AWS_REGION": "x" } } }),
            ),
            400,
            "InvalidParameterValueException",
        ),
        (
            "env too large",
            create_body("f", &zip, json!({ "Environment": big_env })),
            400,
            "InvalidParameterValueException",
        ),
        (
            "unknown runtime",
            create_body("f", &zip, json!({ "Runtime": "cobol85" })),
            400,
            "InvalidParameterValueException",
        ),
        (
            "handler without function",
            create_body("f", &zip, json!({ "Handler": "app" })),
            400,
            "InvalidParameterValueException",
        ),
        (
            "handler climbing out",
            create_body("f", &zip, json!({ "Handler": "../app.handler" })),
            400,
            "InvalidParameterValueException",
        ),
        (
            "unknown field",
            create_body("f", &zip, json!({ "Colour": "red" })),
            400,
            "InvalidParameterValueException",
        ),
        (
            "arm64",
            create_body("f", &zip, json!({ "Architectures": ["arm64"] })),
            400,
            "InvalidParameterValueException",
        ),
        (
            "no code",
            json!({ "FunctionName": "f", "Runtime": "python3", "Handler": "app.handler", "Code": {} }),
            400,
            "InvalidParameterValueException",
        ),
        (
            "not base64",
            json!({ "FunctionName": "f", "Runtime": "python3", "Handler": "app.handler", "Code": { "ZipFile": "***" } }),
            400,
            "InvalidParameterValueException",
        ),
        (
            "not a zip",
            create_body("f", b"definitely not a zip", json!({})),
            400,
            "InvalidParameterValueException",
        ),
        (
            "path traversal",
            create_body("f", &zip_named(&["app.py", "../evil.py"]), json!({})),
            400,
            "InvalidParameterValueException",
        ),
        (
            "nested traversal",
            create_body("f", &zip_named(&["app.py", "a/../../evil.py"]), json!({})),
            400,
            "InvalidParameterValueException",
        ),
        (
            "absolute path",
            create_body("f", &zip_named(&["app.py", "/etc/evil"]), json!({})),
            400,
            "InvalidParameterValueException",
        ),
        (
            "duplicate entry",
            create_body("f", &zip_named(&["app.py", "./app.py"]), json!({})),
            400,
            "InvalidParameterValueException",
        ),
        (
            "absolute link",
            create_body("f", &zip_with_link("passwd", "/etc/passwd"), json!({})),
            400,
            "InvalidParameterValueException",
        ),
        (
            "link climbing out",
            create_body("f", &zip_with_link("up", "../../../etc"), json!({})),
            400,
            "InvalidParameterValueException",
        ),
        (
            "encrypted entry",
            create_body("f", &mark_encrypted(good_zip()), json!({})),
            400,
            "InvalidParameterValueException",
        ),
        (
            "zip bomb",
            create_body("f", &zip_bomb(), json!({})),
            400,
            "InvalidParameterValueException",
        ),
        (
            "too large unpacked",
            create_body("f", &zip_too_large_unpacked(), json!({})),
            400,
            "InvalidParameterValueException",
        ),
        (
            "provided without bootstrap",
            create_body(
                "f",
                &provided_no_bootstrap,
                json!({ "Runtime": "provided" }),
            ),
            400,
            "InvalidParameterValueException",
        ),
        (
            "provided bootstrap not executable",
            create_body(
                "f",
                &provided_not_executable,
                json!({ "Runtime": "provided.al2" }),
            ),
            400,
            "InvalidParameterValueException",
        ),
    ];
    for (what, body, status, error_type) in &cases {
        let r = api
            .request(
                hyper::Method::POST,
                "/2015-03-31/functions",
                &[],
                serde_json::to_vec(body).unwrap(),
            )
            .await;
        assert_eq!(r.status, *status, "{what}: {}", r.text());
        assert_eq!(r.error_type(), *error_type, "{what}: {}", r.text());
        let message = r.json()["message"].as_str().unwrap_or_default().to_owned();
        assert!(
            message.len() > 10,
            "{what}: the message does not say what to fix: {message:?}"
        );
    }

    // A zip over 50 MB (incompressible, so it stays large).
    let mut noise = vec![0u8; 51 * 1024 * 1024];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for byte in noise.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *byte = x as u8;
    }
    let body = create_body("f", &noise, json!({}));
    let r = api
        .request(
            hyper::Method::POST,
            "/2015-03-31/functions",
            &[],
            serde_json::to_vec(&body).unwrap(),
        )
        .await;
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(r.error_type(), "RequestEntityTooLargeException");

    // Nothing was stored: no function, no package, nothing written outside the package dir.
    assert_eq!(
        api.get("/2015-03-31/functions").await.json()["Functions"],
        json!([])
    );
    let code = server.data_dir.join("artifacts/code");
    assert_eq!(
        std::fs::read_dir(&code).unwrap().count(),
        0,
        "packages were kept"
    );
    assert_eq!(
        std::fs::read_dir(server.data_dir.join("artifacts/tmp"))
            .unwrap()
            .count(),
        0
    );
    assert!(
        !server.data_dir.join("artifacts/evil.py").exists()
            && !server.data_dir.join("evil.py").exists()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_updates_and_unknown_functions_are_refused_clearly() {
    crate::require_sandbox!();
    let server = Server::start(&[]);
    let api = server.api();
    api.create_kitchen("f", json!({})).await;
    let r = api
        .create(
            "f",
            &good_zip(),
            json!({ "Runtime": "python3", "Handler": "app.handler" }),
        )
        .await;
    assert_eq!(
        (r.status, r.error_type()),
        (409, "ResourceConflictException")
    );
    let r = api
        .update_configuration("f", json!({ "MemorySize": 99999 }))
        .await;
    assert_eq!(
        (r.status, r.error_type()),
        (400, "InvalidParameterValueException")
    );
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("between 128 and 10240 MB")
    );
    let r = api
        .update_configuration("f", json!({ "RevisionId": "stale" }))
        .await;
    assert_eq!(
        (r.status, r.error_type()),
        (412, "PreconditionFailedException")
    );
    let r = api
        .update_configuration("nope", json!({ "Timeout": 5 }))
        .await;
    assert_eq!(
        (r.status, r.error_type()),
        (404, "ResourceNotFoundException")
    );
    let r = api.get("/2015-03-31/functions/nope").await;
    assert_eq!(
        (r.status, r.error_type()),
        (404, "ResourceNotFoundException")
    );
    let r = api
        .invoke_with("f", json!({}), &[("x-amz-invocation-type", "Sideways")])
        .await;
    assert_eq!(
        (r.status, r.error_type()),
        (400, "InvalidParameterValueException")
    );
    let r = api
        .invoke_with("f", json!({}), &[("x-amz-invocation-type", "DryRun")])
        .await;
    assert_eq!(r.status, 204);
    let r = api
        .invoke_with("f", json!({}), &[("x-amz-client-context", "bm90IGpzb24=")])
        .await;
    assert_eq!(
        (r.status, r.error_type()),
        (400, "InvalidParameterValueException"),
        "{}",
        r.text()
    );
    // A hostile package is refused on update too, and leaves nothing behind.
    let traversal = BASE64.encode(zip_named(&["app.py", "../evil.py"]));
    let r = api
        .request(
            hyper::Method::PUT,
            "/2015-03-31/functions/f/code",
            &[],
            serde_json::to_vec(&json!({ "ZipFile": traversal })).unwrap(),
        )
        .await;
    assert_eq!(
        (r.status, r.error_type()),
        (400, "InvalidParameterValueException")
    );
    assert_eq!(
        std::fs::read_dir(server.data_dir.join("artifacts/code"))
            .unwrap()
            .count(),
        1
    );
    let r = api.get("/2015-03-31/nothing-here").await;
    assert_eq!(
        (r.status, r.error_type()),
        (404, "UnknownOperationException")
    );
    // The refused update changed nothing.
    assert_eq!(
        api.get("/2015-03-31/functions/f/configuration")
            .await
            .json()["MemorySize"],
        128
    );
}
