//! AWS Signature Version 4, as the AWS CLI and SDKs sign Lambda requests.
//!
//! [`verify`] checks a request against the secret of the access key it names; [`sign`]
//! produces the headers for a request (the `ember` CLI uses it, so it is a client of the
//! same rules). Both build the one canonical request: the method; the path exactly as
//! sent, URI-encoded once more (the SDKs encode an ARN's `:` as `%3A` in the path and then
//! sign `%253A`); the query, decoded, re-encoded and sorted; the signed headers, lowercase
//! and trimmed; and the SHA-256 of the body.

use std::time::{Duration, SystemTime};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// How far a request's `X-Amz-Date` may be from the server's clock.
pub const MAX_SKEW: Duration = Duration::from_secs(15 * 60);

/// Why a request's signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("the request is not signed; sign it with an access key from `ember keys create`")]
    Missing,
    #[error("the Authorization header is not an AWS4-HMAC-SHA256 signature: {0}")]
    Malformed(&'static str),
    #[error("the security token included in the request is invalid: no access key {0:?} exists")]
    UnknownKey(String),
    #[error("the credential scope must be {expected} (got {got})")]
    Scope { expected: String, got: String },
    #[error(
        "signature expired: the request's X-Amz-Date {0} is more than 15 minutes from the server's clock"
    )]
    Expired(String),
    #[error(
        "the request signature we calculated does not match the signature you provided; check the access key's secret and the signing method"
    )]
    Mismatch,
}

/// The parts of a request that are signed.
pub struct SignedRequest<'a> {
    pub method: &'a str,
    /// The path as sent on the wire (percent-encoded).
    pub path: &'a str,
    /// The raw query string, without `?`.
    pub query: &'a str,
    /// Every header (name, value).
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

/// AWS's URI encoding: everything but `A-Z a-z 0-9 - _ . ~` (and `/` when `keep_slash`).
fn uri_encode(text: &[u8], keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for &b in text {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| {
            (
                uri_encode(k.as_bytes(), false),
                uri_encode(v.as_bytes(), false),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn canonical_request(req: &SignedRequest<'_>, signed_headers: &[&str]) -> String {
    let mut headers = String::new();
    for name in signed_headers {
        let values: Vec<String> = req
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    let payload = match header(req.headers, "x-amz-content-sha256") {
        Some(hash) => hash.to_owned(),
        None => hex::encode(Sha256::digest(req.body)),
    };
    format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        req.method,
        uri_encode(req.path.as_bytes(), true),
        canonical_query(req.query),
        headers,
        signed_headers.join(";"),
        payload
    )
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    let k = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k = hmac(&k, region.as_bytes());
    let k = hmac(&k, service.as_bytes());
    hmac(&k, b"aws4_request")
}

fn string_to_sign(amz_date: &str, scope: &str, canonical: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    )
}

/// `YYYYMMDDTHHMMSSZ` of a moment.
pub fn amz_date(t: SystemTime) -> String {
    let stamp = ember_core::time::lambda_timestamp(t); // 2019-08-14T22:26:11.234+0000
    format!(
        "{}{}{}T{}{}{}Z",
        &stamp[0..4],
        &stamp[5..7],
        &stamp[8..10],
        &stamp[11..13],
        &stamp[14..16],
        &stamp[17..19]
    )
}

fn parse_amz_date(text: &str) -> Option<SystemTime> {
    if text.len() != 16 || !text.ends_with('Z') || text.as_bytes()[8] != b'T' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| text.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (h, mi, s) = (num(9..11)?, num(11..13)?, num(13..15)?);
    // Civil date to days since the epoch (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if mo > 2 { mo - 3 } else { mo + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = u64::try_from(days * 86_400 + h * 3600 + mi * 60 + s).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// Checks a signed request; `secret_of` looks up an access key's secret. Returns the key id.
pub fn verify(
    req: &SignedRequest<'_>,
    region: &str,
    service: &str,
    now: SystemTime,
    secret_of: impl Fn(&str) -> Option<String>,
) -> Result<String, AuthError> {
    let auth = header(req.headers, "authorization").ok_or(AuthError::Missing)?;
    let rest = auth
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or(AuthError::Malformed("it must start with AWS4-HMAC-SHA256"))?;
    let mut credential = None;
    let mut signed = None;
    let mut signature = None;
    for part in rest.split(',') {
        match part.trim().split_once('=') {
            Some(("Credential", v)) => credential = Some(v),
            Some(("SignedHeaders", v)) => signed = Some(v),
            Some(("Signature", v)) => signature = Some(v),
            _ => {}
        }
    }
    let credential = credential.ok_or(AuthError::Malformed("Credential is missing"))?;
    let signed: Vec<&str> = signed
        .ok_or(AuthError::Malformed("SignedHeaders is missing"))?
        .split(';')
        .collect();
    let signature = signature.ok_or(AuthError::Malformed("Signature is missing"))?;
    let (key_id, scope) = credential
        .split_once('/')
        .ok_or(AuthError::Malformed("Credential has no scope"))?;
    let scope_parts: Vec<&str> = scope.split('/').collect();
    let [date, scope_region, scope_service, "aws4_request"] = scope_parts.as_slice() else {
        return Err(AuthError::Malformed(
            "the credential scope must be DATE/REGION/SERVICE/aws4_request",
        ));
    };
    if *scope_region != region || *scope_service != service {
        return Err(AuthError::Scope {
            expected: format!("{region}/{service}"),
            got: format!("{scope_region}/{scope_service}"),
        });
    }
    if !signed.contains(&"host") {
        return Err(AuthError::Malformed("SignedHeaders must include host"));
    }
    let amz =
        header(req.headers, "x-amz-date").ok_or(AuthError::Malformed("X-Amz-Date is missing"))?;
    let when =
        parse_amz_date(amz).ok_or(AuthError::Malformed("X-Amz-Date is not YYYYMMDDTHHMMSSZ"))?;
    let skew = now
        .duration_since(when)
        .or_else(|e| Ok::<_, ()>(e.duration()))
        .unwrap_or_default();
    if skew > MAX_SKEW || !amz.starts_with(date) {
        return Err(AuthError::Expired(amz.to_owned()));
    }
    let secret = secret_of(key_id).ok_or_else(|| AuthError::UnknownKey(key_id.to_owned()))?;
    let canonical = canonical_request(req, &signed);
    let to_sign = string_to_sign(amz, scope, &canonical);
    let expected = hex::decode(signature).map_err(|_| AuthError::Mismatch)?;
    let mut mac = HmacSha256::new_from_slice(&signing_key(&secret, date, region, service))
        .expect("any key length");
    mac.update(to_sign.as_bytes());
    mac.verify_slice(&expected)
        .map_err(|_| AuthError::Mismatch)?;
    Ok(key_id.to_owned())
}

/// The headers to add to a request to sign it: `X-Amz-Date` and `Authorization`.
/// `req.headers` must already hold `host`.
pub fn sign(
    req: &SignedRequest<'_>,
    key_id: &str,
    secret: &str,
    region: &str,
    service: &str,
    now: SystemTime,
) -> Vec<(String, String)> {
    let amz = amz_date(now);
    let date = &amz[..8];
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let mut headers = req.headers.to_vec();
    headers.push(("x-amz-date".into(), amz.clone()));
    let signed = ["host", "x-amz-date"];
    let canonical = canonical_request(
        &SignedRequest {
            headers: &headers,
            ..*req
        },
        &signed,
    );
    let signature = hex::encode(hmac(
        &signing_key(secret, date, region, service),
        string_to_sign(&amz, &scope, &canonical).as_bytes(),
    ));
    vec![
        ("x-amz-date".into(), amz),
        (
            "authorization".into(),
            format!(
                "AWS4-HMAC-SHA256 Credential={key_id}/{scope}, SignedHeaders={}, Signature={signature}",
                signed.join(";")
            ),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of AWS's Signature Version 4 documentation ("GET /?Param2=value2&Param1=value1"
    /// to example.amazonaws.com, service "service", 2015-08-30T12:36:00Z).
    #[test]
    fn matches_the_reference_signature_from_the_aws_test_suite() {
        let headers = vec![
            ("Host".to_owned(), "example.amazonaws.com".to_owned()),
            ("X-Amz-Date".to_owned(), "20150830T123600Z".to_owned()),
        ];
        let req = SignedRequest {
            method: "GET",
            path: "/",
            query: "Param2=value2&Param1=value1",
            headers: &headers,
            body: b"",
        };
        let canonical = canonical_request(&req, &["host", "x-amz-date"]);
        let to_sign = string_to_sign(
            "20150830T123600Z",
            "20150830/us-east-1/service/aws4_request",
            &canonical,
        );
        let key = signing_key(
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            "20150830",
            "us-east-1",
            "service",
        );
        assert_eq!(
            hex::encode(hmac(&key, to_sign.as_bytes())),
            "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"
        );
    }

    fn request_headers(extra: &[(String, String)]) -> Vec<(String, String)> {
        let mut h = vec![("host".to_owned(), "127.0.0.1:9000".to_owned())];
        h.extend_from_slice(extra);
        h
    }

    #[test]
    fn a_signed_request_verifies_and_any_change_breaks_it() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let path = "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A000000000000%3Afunction%3Af/invocations";
        let base = request_headers(&[]);
        let req = SignedRequest {
            method: "POST",
            path,
            query: "Qualifier=live",
            headers: &base,
            body: b"{}",
        };
        let added = sign(&req, "AKID", "secret", "us-east-1", "lambda", now);
        let headers = request_headers(&added);
        let signed = SignedRequest {
            headers: &headers,
            ..req
        };
        let lookup = |k: &str| (k == "AKID").then(|| "secret".to_owned());
        assert_eq!(
            verify(&signed, "us-east-1", "lambda", now, lookup),
            Ok("AKID".into())
        );
        let tampered = SignedRequest {
            body: b"{\"x\":1}",
            ..signed
        };
        assert_eq!(
            verify(&tampered, "us-east-1", "lambda", now, lookup),
            Err(AuthError::Mismatch)
        );
        let other_query = SignedRequest {
            query: "Qualifier=2",
            ..signed
        };
        assert_eq!(
            verify(&other_query, "us-east-1", "lambda", now, lookup),
            Err(AuthError::Mismatch)
        );
        let wrong_secret = |_: &str| Some("nope".to_owned());
        assert_eq!(
            verify(&signed, "us-east-1", "lambda", now, wrong_secret),
            Err(AuthError::Mismatch)
        );
        assert_eq!(
            verify(&signed, "us-east-1", "lambda", now, |_| None),
            Err(AuthError::UnknownKey("AKID".into()))
        );
        let later = now + Duration::from_secs(16 * 60);
        assert!(matches!(
            verify(&signed, "us-east-1", "lambda", later, lookup),
            Err(AuthError::Expired(_))
        ));
        assert!(matches!(
            verify(&signed, "eu-west-1", "lambda", now, lookup),
            Err(AuthError::Scope { .. })
        ));
        let unsigned = SignedRequest {
            headers: &base,
            ..signed
        };
        assert_eq!(
            verify(&unsigned, "us-east-1", "lambda", now, lookup),
            Err(AuthError::Missing)
        );
    }

    #[test]
    fn amz_dates_round_trip() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160);
        assert_eq!(amz_date(t), "20150830T123600Z");
        assert_eq!(parse_amz_date("20150830T123600Z"), Some(t));
        assert_eq!(parse_amz_date("2015-08-30"), None);
    }
}
