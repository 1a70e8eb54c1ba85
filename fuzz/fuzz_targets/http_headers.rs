//! What a client puts in its headers: the bearer token (only the one configured token is let in,
//! and only with the role it has) and, in open mode, the Content-Type, Host and Origin of an
//! action.
#![no_main]

use hashsink_daemon::auth::{Role, TokenFile, Tokens};
use hashsink_daemon::http::open_mode_refusal;
use libfuzzer_sys::fuzz_target;

/// `hashsink token`'s output for the token "fuzz-token-0123456789".
const TOKEN: &str = "fuzz-token-0123456789";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let tokens = Tokens::new(
        &[TokenFile {
            name: "ops".into(),
            role: Role::Operator,
            sha256: hashsink_daemon::auth::hash_of(TOKEN),
        }],
        &|i| format!("token {i}"),
    )
    .expect("a valid token table");
    let mut parts = text.splitn(4, '\n');
    let mut next = || parts.next().unwrap_or("");
    let (authorization, content_type, host, origin) = (next(), next(), next(), next());
    for needs in [Role::Viewer, Role::Operator, Role::Admin] {
        if let Ok((actor, role)) = tokens.caller(Some(authorization), needs) {
            assert_eq!(
                authorization.strip_prefix("Bearer ").map(str::trim),
                Some(TOKEN)
            );
            assert_eq!((actor.as_str(), role), ("operator:ops", Role::Operator));
            assert!(needs <= Role::Operator);
        }
    }
    let mut request = axum::http::Request::builder()
        .method("POST")
        .uri("/api/v1/shed");
    for (name, value) in [
        ("content-type", content_type),
        ("host", host),
        ("origin", origin),
    ] {
        if axum::http::HeaderValue::from_str(value).is_ok() {
            request = request.header(name, value);
        }
    }
    if let Ok(request) = request.body(axum::body::Body::empty()) {
        if open_mode_refusal(&request).is_none() {
            assert!(
                content_type
                    .trim()
                    .to_ascii_lowercase()
                    .starts_with("application/json")
            );
        }
    }
});
