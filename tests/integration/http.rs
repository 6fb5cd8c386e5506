//! The outbound-http import against a real server on loopback. Every test targets only
//! 127.0.0.1 (or `localhost`), so a broken policy cannot send a packet off the machine.

use callout::{Failure, Secrets};
use serde_json::{Value, json};

use crate::support::*;

/// An echo action granted `allow` (TOML array body) with `extra` manifest lines, loaded with
/// dev-loopback for `dev` and the secret `DEMO_TOKEN` = "s3cret-token-value".
async fn echo_with(
    allow: &str,
    extra: &str,
    dev: &[String],
) -> (
    callout::Registry,
    callout::Runtime,
    tempfile::TempDir,
    Actions,
) {
    let actions = Actions::new();
    actions.add(
        "echo",
        &format!("name = \"echo\"\ncomponent = \"{{echo}}\"\n[http]\nallow = [{allow}]\n{extra}"),
    );
    let mut secrets = Secrets::default();
    secrets.insert("DEMO_TOKEN", "s3cret-token-value");
    let (rt, data) = runtime_with(dev, secrets);
    let reg = load_all(&rt, &actions).await;
    (reg, rt, data, actions)
}

fn denial_code(f: Failure) -> String {
    match f {
        Failure::Denied { code, .. } => code,
        other => panic!("expected a denial, got {other:?}"),
    }
}

#[tokio::test]
async fn granted_dev_loopback_request_is_sent_and_answered() {
    let server = TestServer::start().await;
    let (reg, ..) = echo_with(&format!("\"{}\"", server.url()), "", &[server.host_port()]).await;
    let out = call(
        &reg.get("echo").unwrap(),
        json!({"message": "m", "url": format!("{}/orders/1?x=1", server.url())}),
    )
    .await
    .result
    .unwrap();
    assert_eq!(out.data["http"]["status"], 200);
    let body: Value = serde_json::from_str(out.data["http"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["path"], "/orders/1");
    let got = server.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].method, "GET");
    assert_eq!(got[0].uri, "/orders/1?x=1");
}

#[tokio::test]
async fn post_body_and_headers_arrive_as_the_plugin_sent_them() {
    let server = TestServer::start().await;
    let allow = format!(
        "{{ url = \"{}/v1/leads\", methods = [\"POST\"] }}",
        server.url()
    );
    let (reg, ..) = echo_with(&allow, "", &[server.host_port()]).await;
    let body = r#"{"name":"Ada","email":"ada@example.com"}"#;
    let r = call(
        &reg.get("echo").unwrap(),
        json!({"message": "m", "method": "POST", "url": format!("{}/v1/leads", server.url()),
               "headers": {"content-type": "application/json", "idempotency-key": "k-1"}, "body": body}),
    )
    .await;
    assert_eq!(r.result.unwrap().data["http"]["status"], 200);
    assert!(
        r.requests[0].repeatable,
        "a POST with an Idempotency-Key is safe to repeat"
    );
    let got = &server.received()[0];
    assert_eq!((got.method.as_str(), got.body.as_str()), ("POST", body));
    assert_eq!(got.headers["idempotency-key"], "k-1");
    assert_eq!(got.headers["content-type"], "application/json");
}

#[tokio::test]
async fn ungranted_loopback_port_is_denied_and_nothing_arrives() {
    let granted = TestServer::start().await;
    let other = TestServer::start().await;
    // Both ports are dev-loopback; only the first is granted: dev-loopback grants nothing.
    let (reg, ..) = echo_with(
        &format!("\"{}\"", granted.url()),
        "",
        &[granted.host_port(), other.host_port()],
    )
    .await;
    let r = call(
        &reg.get("echo").unwrap(),
        json!({"message": "m", "url": format!("{}/x", other.url())}),
    )
    .await;
    assert_eq!(denial_code(r.result.unwrap_err()), "host-not-allowed");
    assert!(
        other.received().is_empty(),
        "a denied request reached the server"
    );
}

#[tokio::test]
async fn granted_loopback_without_dev_loopback_is_blocked() {
    let server = TestServer::start().await;
    let (reg, ..) = echo_with(&format!("\"{}\"", server.url()), "", &[]).await;
    let r = call(
        &reg.get("echo").unwrap(),
        json!({"message": "m", "url": format!("{}/x", server.url())}),
    )
    .await;
    assert_eq!(denial_code(r.result.unwrap_err()), "blocked-network");
    assert!(server.received().is_empty());
}

#[tokio::test]
async fn localhost_without_dev_loopback_is_denied() {
    let server = TestServer::start().await;
    let url = format!("http://localhost:{}", server.addr.port());
    let (reg, ..) = echo_with(&format!("\"{url}\""), "", &[]).await;
    let r = call(
        &reg.get("echo").unwrap(),
        json!({"message": "m", "url": format!("{url}/x")}),
    )
    .await;
    assert_eq!(denial_code(r.result.unwrap_err()), "blocked-network");
    assert!(server.received().is_empty());
}

#[tokio::test]
async fn localhost_with_dev_loopback_resolves_to_loopback_only() {
    let server = TestServer::start().await;
    let url = format!("http://localhost:{}", server.addr.port());
    let (reg, ..) = echo_with(
        &format!("\"{url}\""),
        "",
        &[format!("localhost:{}", server.addr.port())],
    )
    .await;
    let r = call(
        &reg.get("echo").unwrap(),
        json!({"message": "m", "url": format!("{url}/x")}),
    )
    .await;
    assert_eq!(r.result.unwrap().data["http"]["status"], 200);
    assert_eq!(server.received().len(), 1);
}

#[tokio::test]
async fn method_and_path_outside_the_grant_are_denied() {
    let server = TestServer::start().await;
    let allow = format!(
        "{{ url = \"{}/v1/orders/\", methods = [\"GET\"] }}",
        server.url()
    );
    let (reg, ..) = echo_with(&allow, "", &[server.host_port()]).await;
    let echo = reg.get("echo").unwrap();
    let post = call(
        &echo,
        json!({"message": "m", "method": "POST", "url": format!("{}/v1/orders/1", server.url())}),
    )
    .await;
    assert_eq!(denial_code(post.result.unwrap_err()), "method-not-allowed");
    let escape = call(
        &echo,
        json!({"message": "m", "url": format!("{}/v1/orders/../admin", server.url())}),
    )
    .await;
    assert_eq!(denial_code(escape.result.unwrap_err()), "path-not-allowed");
    assert!(server.received().is_empty());
    let ok = call(
        &echo,
        json!({"message": "m", "url": format!("{}/v1/orders/7", server.url())}),
    )
    .await;
    assert_eq!(ok.result.unwrap().data["http"]["status"], 200);
}

#[tokio::test]
async fn secret_is_filled_in_only_for_its_bound_host() {
    let server = TestServer::start().await;
    let other = TestServer::start().await;
    let extra = format!(
        "[secrets.DEMO_TOKEN]\nfrom = \"env:DEMO_TOKEN\"\nhosts = [\"{}\"]\n",
        server.url()
    );
    let allow = format!("\"{}\", \"{}\"", server.url(), other.url());
    let (reg, ..) = echo_with(&allow, &extra, &[server.host_port(), other.host_port()]).await;
    let echo = reg.get("echo").unwrap();
    let headers = json!({"authorization": "Bearer {{secret.DEMO_TOKEN}}"});
    let ok = call(
        &echo,
        json!({"message": "m", "url": format!("{}/me", server.url()), "headers": headers}),
    )
    .await;
    assert_eq!(ok.result.unwrap().data["http"]["status"], 200);
    assert_eq!(
        server.received()[0].headers["authorization"],
        "Bearer s3cret-token-value"
    );

    let wrong_host = call(
        &echo,
        json!({"message": "m", "url": format!("{}/me", other.url()), "headers": headers}),
    )
    .await;
    assert_eq!(
        denial_code(wrong_host.result.unwrap_err()),
        "secret-not-allowed"
    );
    assert!(other.received().is_empty());

    let unknown = call(
        &echo,
        json!({"message": "m", "url": format!("{}/me", server.url()), "headers": {"x-key": "{{secret.OTHER}}"}}),
    )
    .await;
    assert_eq!(denial_code(unknown.result.unwrap_err()), "secret-unknown");

    let in_url = call(
        &echo,
        json!({"message": "m", "url": format!("{}/me?k={{{{secret.DEMO_TOKEN}}}}", server.url())}),
    )
    .await;
    assert_eq!(
        denial_code(in_url.result.unwrap_err()),
        "secret-not-allowed"
    );
    assert_eq!(
        server.received().len(),
        1,
        "only the allowed request arrived"
    );
}

#[tokio::test]
async fn dry_run_records_the_rendered_request_with_secrets_redacted_and_sends_nothing() {
    let server = TestServer::start().await;
    let extra = format!(
        "[secrets.DEMO_TOKEN]\nfrom = \"env:DEMO_TOKEN\"\nhosts = [\"{}\"]\n",
        server.url()
    );
    let allow = format!("{{ url = \"{}\", methods = [\"POST\"] }}", server.url());
    let (reg, ..) = echo_with(&allow, &extra, &[server.host_port()]).await;
    let mut c = callout::Call::tool(obj(json!({
        "message": "m", "method": "POST", "url": format!("{}/leads", server.url()),
        "headers": {"authorization": "Bearer {{secret.DEMO_TOKEN}}", "content-type": "application/json"},
        "body": "{\"name\":\"Ada\"}"
    })));
    c.dry_run = true;
    let r = reg.get("echo").unwrap().invoke(c).await;
    assert_eq!(r.result.unwrap().data["http"], "dry-run");
    assert_eq!(r.recorded.len(), 1);
    let rec = &r.recorded[0];
    assert_eq!(rec.method, "POST");
    assert_eq!(rec.url, format!("{}/leads", server.url()));
    assert!(rec.headers.contains(&(
        "authorization".into(),
        "Bearer {{secret.DEMO_TOKEN}}".into()
    )));
    assert_eq!(rec.body.as_deref(), Some("{\"name\":\"Ada\"}"));
    assert!(
        !format!("{rec:?}").contains("s3cret"),
        "the secret value leaked into the record"
    );
    assert!(server.received().is_empty(), "dry-run sent a request");
}

#[tokio::test]
async fn response_over_the_cap_is_refused_while_reading() {
    let server = TestServer::start().await;
    let (reg, ..) = echo_with(
        &format!("\"{}\"", server.url()),
        "max_response_bytes = 1000\n",
        &[server.host_port()],
    )
    .await;
    let echo = reg.get("echo").unwrap();
    let big = call(
        &echo,
        json!({"message": "m", "url": format!("{}/big/5000", server.url())}),
    )
    .await;
    match big.result.unwrap_err() {
        Failure::Upstream { message, .. } => assert!(message.contains("1000 bytes"), "{message}"),
        other => panic!("expected an upstream protocol failure, got {other:?}"),
    }
    let small = call(
        &echo,
        json!({"message": "m", "url": format!("{}/big/900", server.url())}),
    )
    .await;
    assert_eq!(
        small.result.unwrap().data["http"]["body"]
            .as_str()
            .unwrap()
            .len(),
        900
    );
}

#[tokio::test]
async fn slow_upstream_times_out_at_the_action_timeout() {
    let server = TestServer::start().await;
    let (reg, ..) = echo_with(
        &format!("\"{}\"", server.url()),
        "timeout_ms = 200\n",
        &[server.host_port()],
    )
    .await;
    let r = call(
        &reg.get("echo").unwrap(),
        json!({"message": "m", "url": format!("{}/slow/3000", server.url())}),
    )
    .await;
    match r.result.unwrap_err() {
        Failure::Upstream { kind, .. } => assert_eq!(kind, callout::call::UpstreamKind::Timeout),
        other => panic!("expected an upstream timeout, got {other:?}"),
    }
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let server = TestServer::start().await;
    let (reg, ..) = echo_with(&format!("\"{}\"", server.url()), "", &[server.host_port()]).await;
    let r = call(
        &reg.get("echo").unwrap(),
        json!({"message": "m", "url": format!("{}/redirect", server.url())}),
    )
    .await;
    let out = r.result.unwrap();
    assert_eq!(out.data["http"]["status"], 302);
    assert_eq!(out.data["http"]["headers"]["location"], "/json");
    assert_eq!(server.received().len(), 1, "the redirect was followed");
}

#[tokio::test]
async fn upstream_statuses_reach_the_plugin_and_map_to_typed_failures() {
    let server = TestServer::start().await;
    let (reg, ..) = echo_with(&format!("\"{}\"", server.url()), "", &[server.host_port()]).await;
    let echo = reg.get("echo").unwrap();
    let r = call(
        &echo,
        json!({"message": "m", "url": format!("{}/status/503", server.url())}),
    )
    .await;
    assert!(matches!(
        r.result.unwrap_err(),
        Failure::Upstream {
            status: Some(503),
            ..
        }
    ));
    let r = call(
        &echo,
        json!({"message": "m", "url": format!("{}/status/429", server.url())}),
    )
    .await;
    assert!(matches!(
        r.result.unwrap_err(),
        Failure::Upstream {
            status: Some(429),
            retry_after_ms: Some(7000),
            ..
        }
    ));
    let r = call(
        &echo,
        json!({"message": "m", "url": format!("{}/status/404", server.url())}),
    )
    .await;
    assert!(matches!(r.result.unwrap_err(), Failure::NotFound { .. }));
}

#[tokio::test]
async fn hop_by_hop_and_injected_headers_are_refused() {
    let server = TestServer::start().await;
    let (reg, ..) = echo_with(&format!("\"{}\"", server.url()), "", &[server.host_port()]).await;
    let echo = reg.get("echo").unwrap();
    for headers in [
        json!({"host": "evil.example"}),
        json!({"transfer-encoding": "chunked"}),
        json!({"x-a": "1\r\nx-b: 2"}),
    ] {
        let r = call(
            &echo,
            json!({"message": "m", "url": format!("{}/x", server.url()), "headers": headers}),
        )
        .await;
        assert_eq!(
            denial_code(r.result.unwrap_err()),
            "bad-header",
            "{headers}"
        );
    }
    assert!(server.received().is_empty());
}
