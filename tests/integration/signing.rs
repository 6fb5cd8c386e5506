//! Standard Webhooks signing of an action's outbound requests (`[signing]`): the receiver can
//! verify each request with the shared key, the id is the call's idempotency key (the same on
//! every attempt of a delivery), and a plugin cannot forge the headers.

use callout::outbox::signing::SigningSecret;
use callout::{Call, Secrets};
use serde_json::json;

use crate::support::*;

/// The built-in no-code action posting to the test server, signing with HOOK_KEY.
fn manifest(server: &TestServer) -> String {
    format!(
        r#"
name = "signed-hook"
component = "builtin:send-api-request"

[inputs.order_id]
type = "string"
required = true

[request]
method = "POST"
url = "{url}/hooks/order"
headers = {{ webhook-signature = "v1,forged" }}
body = {{ order_id = "{{{{order_id}}}}" }}

[http]
allow = [{{ url = "{url}/hooks/", methods = ["POST"] }}]

[secrets.HOOK_KEY]
from = "env:CALLOUT_TEST_HOOK_KEY"
hosts = ["{url}"]

[signing]
secret = "HOOK_KEY"
"#,
        url = server.url()
    )
}

#[tokio::test]
async fn signed_requests_verify_at_the_receiver_and_keep_their_id_across_attempts() {
    let server = TestServer::start().await;
    let key = SigningSecret::generate().unwrap();
    let mut secrets = Secrets::default();
    secrets.insert("CALLOUT_TEST_HOOK_KEY", key.reveal());
    let (runtime, _data) = runtime_with(&[server.host_port()], secrets);
    let actions = Actions::new();
    actions.add("signed-hook", &manifest(&server));
    let registry = load_all(&runtime, &actions).await;
    let plugin = registry.get("signed-hook").unwrap();

    for attempt in 1..=2 {
        let report = plugin
            .invoke_once(Call {
                inputs: obj(json!({"order_id": "123456"})),
                idempotency_key: Some("delivery-key-0001".into()),
                attempt,
                ..Call::default()
            })
            .await;
        assert!(report.result.is_ok(), "{:?}", report.result);
    }
    let got = server.received();
    assert_eq!(got.len(), 2);
    let now = callout::db::now_ms() / 1000;
    for r in &got {
        assert_eq!(r.headers["webhook-id"], "delivery-key-0001");
        let sig = &r.headers["webhook-signature"];
        assert!(
            !sig.contains("forged"),
            "the plugin's own header was dropped: {sig}"
        );
        key.verify(
            &r.headers["webhook-id"],
            &r.headers["webhook-timestamp"],
            sig,
            r.body.as_bytes(),
            now,
            300,
        )
        .expect("the signature verifies with the shared key");
        // Any change to the body breaks it.
        let tampered = r.body.replace("123456", "654321");
        assert!(
            key.verify(
                &r.headers["webhook-id"],
                &r.headers["webhook-timestamp"],
                sig,
                tampered.as_bytes(),
                now,
                300
            )
            .is_err()
        );
    }
    // Another key does not verify it.
    let other = SigningSecret::generate().unwrap();
    let r = &got[0];
    assert!(
        other
            .verify(
                &r.headers["webhook-id"],
                &r.headers["webhook-timestamp"],
                &r.headers["webhook-signature"],
                r.body.as_bytes(),
                now,
                300
            )
            .is_err()
    );
}

#[tokio::test]
async fn a_signing_secret_that_is_not_declared_is_a_load_error() {
    let server = TestServer::start().await;
    let (runtime, _data) = runtime_with(&[server.host_port()], Secrets::default());
    let actions = Actions::new();
    let text = manifest(&server).replace("secret = \"HOOK_KEY\"", "secret = \"NOPE\"");
    actions.add("signed-hook", &text);
    let registry = callout::Registry::load_dir(&runtime, actions.path())
        .await
        .unwrap();
    assert!(registry.get("signed-hook").is_none());
    let err = registry.failures()[0].to_string();
    assert!(
        err.contains("signing.secret") && err.contains("[secrets.NOPE]"),
        "{err}"
    );
}
