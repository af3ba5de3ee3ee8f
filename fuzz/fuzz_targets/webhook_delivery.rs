//! Whatever a webhook sender puts in the body and the signature headers, reading the
//! delivery never panics; and a delivery signed with the secret is refused only for what
//! its body says (not JSON, no ref), never for its signature.
#![no_main]

use flotilla_hub::http::webhook::{Delivery, Provider, Refusal, read_delivery};
use flotilla_telemetry::hyper::HeaderMap;
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;

const SECRET: &str = "fuzz-secret";

fuzz_target!(|input: (u8, String, &[u8])| {
    let (which, signature, body) = input;
    let provider = match which % 3 {
        0 => Provider::GitHub,
        1 => Provider::GitLab,
        _ => Provider::Gitea,
    };
    // Hostile headers: whatever signature the fuzzer makes up.
    let mut headers = HeaderMap::new();
    for name in ["x-hub-signature-256", "x-gitea-signature", "x-gitlab-token"] {
        if let Ok(v) = signature.parse() {
            headers.insert(name, v);
        }
    }
    let _ = read_delivery(provider, SECRET, &headers, body);

    // The same body, correctly signed.
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("any key size");
    mac.update(body);
    let sig = hex::encode(mac.finalize().into_bytes());
    let mut signed = HeaderMap::new();
    let (name, value) = match provider {
        Provider::GitHub => ("x-hub-signature-256", format!("sha256={sig}")),
        Provider::Gitea => ("x-gitea-signature", sig),
        Provider::GitLab => ("x-gitlab-token", SECRET.to_string()),
    };
    signed.insert(name, value.parse().expect("hex is a valid header value"));
    match read_delivery(provider, SECRET, &signed, body) {
        Ok(Delivery::Push { repos, .. }) => assert!(repos.len() <= 5),
        Ok(Delivery::Ping) | Err(Refusal::NotJson(_)) | Err(Refusal::NoRef) => {}
        Err(other) => panic!("a correctly signed delivery was refused: {other}"),
    }
});
