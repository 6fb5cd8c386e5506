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
    let ok = call(
        &echo,
        json!({"message": "m", "url": format!("{}/me", server.url()), "bearer_secret": "DEMO_TOKEN"}),
    )
    .await;
    assert_eq!(ok.result.unwrap().data["http"]["status"], 200);
    assert_eq!(
        server.received()[0].headers["authorization"],
        "Bearer s3cret-token-value"
    );

    let wrong_host = call(
        &echo,
        json!({"message": "m", "url": format!("{}/me", other.url()), "bearer_secret": "DEMO_TOKEN"}),
    )
    .await;
    assert_eq!(
        denial_code(wrong_host.result.unwrap_err()),
        "secret-not-allowed"
    );
    assert!(other.received().is_empty());

    let unknown = call(
        &echo,
        json!({"message": "m", "url": format!("{}/me", server.url()), "bearer_secret": "OTHER"}),
    )
    .await;
    assert_eq!(denial_code(unknown.result.unwrap_err()), "secret-unknown");

    // Header values only by default: the query and the body need the manifest's say-so.
    for place in ["query_secret", "body_secret"] {
        let r = call(
            &echo,
            json!({"message": "m", "method": "GET", "url": format!("{}/me", server.url()), place: "DEMO_TOKEN"}),
        )
        .await;
        match r.result.unwrap_err() {
            callout::Failure::Denied { code, message } => {
                assert_eq!(code, "secret-not-allowed");
                assert!(message.contains("secrets.DEMO_TOKEN.in"), "{message}");
            }
            other => panic!("{place}: expected a denial, got {other:?}"),
        }
    }
    assert_eq!(
        server.received().len(),
        1,
        "only the allowed request arrived"
    );
}

#[tokio::test]
async fn secrets_fill_the_query_and_body_only_where_the_manifest_lists_them() {
    let server = TestServer::start().await;
    let extra = format!(
        "[secrets.DEMO_TOKEN]\nfrom = \"env:DEMO_TOKEN\"\nhosts = [\"{}\"]\nin = [\"query\", \"body\"]\n",
        server.url()
    );
    let allow = format!(
        "{{ url = \"{}\", methods = [\"GET\", \"POST\"] }}",
        server.url()
    );
    let (reg, ..) = echo_with(&allow, &extra, &[server.host_port()]).await;
    let echo = reg.get("echo").unwrap();
    let q = call(&echo, json!({"message": "m", "url": format!("{}/q?a=1", server.url()), "query_secret": "DEMO_TOKEN"})).await;
    assert_eq!(q.result.unwrap().data["http"]["status"], 200);
    let b = call(&echo, json!({"message": "m", "method": "POST", "url": format!("{}/b", server.url()), "body_secret": "DEMO_TOKEN"})).await;
    assert_eq!(b.result.unwrap().data["http"]["status"], 200);
    // Listing query and body took the header away (in replaces the default).
    let h = call(&echo, json!({"message": "m", "url": format!("{}/h", server.url()), "bearer_secret": "DEMO_TOKEN"})).await;
    assert_eq!(denial_code(h.result.unwrap_err()), "secret-not-allowed");
    let got = server.received();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].uri, "/q?a=1&token=s3cret-token-value");
    assert_eq!(got[1].body, r#"{"token":"s3cret-token-value"}"#);
}

#[tokio::test]
async fn a_users_words_can_never_call_up_a_secret() {
    let server = TestServer::start().await;
    let extra = format!(
        "[secrets.DEMO_TOKEN]\nfrom = \"env:DEMO_TOKEN\"\nhosts = [\"{}\"]\nin = [\"header\", \"body\"]\n",
        server.url()
    );
    let allow = format!("{{ url = \"{}\", methods = [\"POST\"] }}", server.url());
    let (reg, ..) = echo_with(&allow, &extra, &[server.host_port()]).await;
    let echo = reg.get("echo").unwrap();
    // The plugin copies a lead's name, typed by the user, into the body it sends, and into a
    // header. Both places may hold the secret, and the destination is bound, yet the user's
    // placeholder must not become the secret.
    for lead in [
        json!({"message": "m", "method": "POST", "url": format!("{}/leads", server.url()),
               "body": "{\"name\":\"{{secret.DEMO_TOKEN}}\"}"}),
        json!({"message": "m", "method": "POST", "url": format!("{}/leads", server.url()),
               "headers": {"x-lead-name": "{{secret.DEMO_TOKEN}}"}}),
    ] {
        let r = call(&echo, lead.clone()).await;
        match r.result.unwrap_err() {
            callout::Failure::Denied { code, message } => {
                assert_eq!(code, "secret-not-allowed", "{lead}");
                assert!(
                    message.contains("a user's words can never call up a secret"),
                    "{message}"
                );
            }
            other => panic!("expected a denial for {lead}, got {other:?}"),
        }
    }
    // In the conversation's variables too.
    let mut c = callout::Call::tool(obj(json!({"message": "m", "method": "POST",
        "url": format!("{}/leads", server.url()), "bearer_secret": "DEMO_TOKEN"})));
    c.variables = obj(json!({"lead": {"name": "{{secret.DEMO_TOKEN}}"}}));
    let r = reg.get("echo").unwrap().invoke(c).await;
    assert!(
        matches!(r.result, Err(callout::Failure::Denied { .. })),
        "{:?}",
        r.result
    );
    assert!(
        server.received().is_empty(),
        "a request carrying the user's placeholder was sent"
    );
}

#[tokio::test]
async fn an_upstream_echoing_the_secret_back_shows_the_plugin_only_a_redaction_marker() {
    let server = TestServer::start().await;
    let extra = format!(
        "[secrets.DEMO_TOKEN]\nfrom = \"env:DEMO_TOKEN\"\nhosts = [\"{}\"]\n",
        server.url()
    );
    let (reg, ..) = echo_with(
        &format!("\"{}\"", server.url()),
        &extra,
        &[server.host_port()],
    )
    .await;
    let r = call(
        &reg.get("echo").unwrap(),
        json!({"message": "m", "url": format!("{}/echo-headers", server.url()), "bearer_secret": "DEMO_TOKEN"}),
    )
    .await;
    let out = r.result.unwrap();
    let seen = out.data.to_string();
    assert!(
        !seen.contains("s3cret-token-value"),
        "the plugin saw the secret: {seen}"
    );
    assert_eq!(
        out.data["http"]["headers"]["x-echo-authorization"],
        "Bearer [redacted]"
    );
    assert!(
        out.data["http"]["body"]
            .as_str()
            .unwrap()
            .contains("Bearer [redacted]"),
        "{seen}"
    );
    // The upstream did get the real value.
    assert_eq!(
        server.received()[0].headers["authorization"],
        "Bearer s3cret-token-value"
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
        "headers": {"content-type": "application/json"}, "bearer_secret": "DEMO_TOKEN",
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

#[tokio::test]
async fn redirects_when_enabled_are_followed_hop_by_hop_and_each_hop_is_checked() {
    let server = TestServer::start().await;
    let other = TestServer::start().await;
    let (reg, ..) = echo_with(
        &format!("\"{}\"", server.url()),
        "redirects = 2\n",
        &[server.host_port(), other.host_port()],
    )
    .await;
    let echo = reg.get("echo").unwrap();
    // An allowed hop is followed: the plugin sees the final answer.
    let ok = call(
        &echo,
        json!({"message": "m", "url": format!("{}/redirect", server.url())}),
    )
    .await;
    assert_eq!(ok.result.unwrap().data["http"]["status"], 200);
    assert_eq!(
        server
            .received()
            .iter()
            .map(|r| r.uri.as_str())
            .collect::<Vec<_>>(),
        ["/redirect", "/json"]
    );
    let cases = [
        // to a dev-loopback port the action does not grant
        (format!("{}/x", other.url()), "host-not-allowed"),
        // to loopback addresses and ports the action does not grant (tests outside the
        // network namespace only ever name loopback: see ssrf.rs for the metadata service,
        // private ranges and the rest)
        (
            "http://127.0.0.2:9/latest/meta-data/".to_string(),
            "host-not-allowed",
        ),
        ("http://localhost:1/".to_string(), "host-not-allowed"),
        // to a non-HTTP scheme
        ("file:///etc/passwd".to_string(), "scheme-not-allowed"),
        // a chain longer than the limit
        (
            "/redirect-to?to=/redirect-to%3Fto%3D/redirect".to_string(),
            "too-many-redirects",
        ),
    ];
    for (to, code) in cases {
        let url = format!("{}/redirect-to?to={}", server.url(), url_escape(&to));
        let r = call(&echo, json!({"message": "m", "url": url})).await;
        match r.result.unwrap_err() {
            Failure::Denied { code: got, message } => {
                assert_eq!(got, code, "redirect to {to}: {message}");
                if code != "too-many-redirects" {
                    assert!(message.starts_with("redirect to "), "{message}");
                }
            }
            other => panic!("redirect to {to}: expected {code}, got {other:?}"),
        }
    }
    assert!(
        other.received().is_empty(),
        "a forbidden hop reached the other server"
    );
}

fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn too_many_response_headers_are_refused() {
    let server = TestServer::start().await;
    let (reg, ..) = echo_with(
        &format!("\"{}\"", server.url()),
        "max_response_headers = 10\n",
        &[server.host_port()],
    )
    .await;
    let echo = reg.get("echo").unwrap();
    let r = call(
        &echo,
        json!({"message": "m", "url": format!("{}/many-headers/30", server.url())}),
    )
    .await;
    match r.result.unwrap_err() {
        Failure::Upstream { message, .. } => {
            assert!(message.contains("http.max_response_headers"), "{message}")
        }
        other => panic!("expected a protocol failure, got {other:?}"),
    }
    let r = call(
        &echo,
        json!({"message": "m", "url": format!("{}/many-headers/2", server.url())}),
    )
    .await;
    assert_eq!(r.result.unwrap().data["http"]["status"], 200);
}

#[tokio::test]
async fn concurrent_requests_of_an_action_are_capped_across_its_calls() {
    let server = TestServer::start().await;
    let (reg, ..) = echo_with(
        &format!("\"{}\"", server.url()),
        "max_concurrent = 1\n",
        &[server.host_port()],
    )
    .await;
    let echo = reg.get("echo").unwrap();
    let slow = {
        let echo = echo.clone();
        let url = format!("{}/slow/1500", server.url());
        tokio::spawn(async move { call(&echo, json!({"message": "m", "url": url})).await })
    };
    // Give the slow call time to take the only slot, then ask with a short timeout.
    while server.received().is_empty() {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let r = call(
        &echo,
        json!({"message": "m", "url": format!("{}/x", server.url()), "timeout_ms": 200}),
    )
    .await;
    assert_eq!(denial_code(r.result.unwrap_err()), "too-many-requests");
    assert_eq!(
        slow.await.unwrap().result.unwrap().data["http"]["status"],
        200
    );
    // The slot is free again.
    let r = call(
        &echo,
        json!({"message": "m", "url": format!("{}/x", server.url())}),
    )
    .await;
    assert_eq!(r.result.unwrap().data["http"]["status"], 200);
}

#[tokio::test]
async fn any_host_needs_the_operators_flag_and_the_guard_still_blocks_loopback() {
    let actions = Actions::new();
    actions.add(
        "echo",
        "name = \"echo\"\ncomponent = \"{echo}\"\n[http]\nallow = [\"*://*:*\"]\n",
    );
    let (rt, _d) = runtime();
    let reg = callout::Registry::load_dir(&rt, actions.path())
        .await
        .unwrap();
    assert!(
        reg.failures()[0]
            .to_string()
            .contains("http.insecure_allow_any_host"),
        "{}",
        reg.failures()[0]
    );

    let server = TestServer::start().await;
    let data = tempfile::tempdir().unwrap();
    let mut o = callout::RuntimeOptions::new(data.path());
    o.config = small_pool_config();
    o.config.http.insecure_allow_any_host = true;
    let rt = callout::Runtime::new(o).unwrap();
    let reg = load_all(&rt, &actions).await;
    let r = call(
        &reg.get("echo").unwrap(),
        json!({"message": "m", "url": format!("{}/x", server.url())}),
    )
    .await;
    assert_eq!(denial_code(r.result.unwrap_err()), "blocked-network");
    assert!(server.received().is_empty());
}

#[tokio::test]
async fn secrets_file_must_be_private_and_fills_file_secrets() {
    use std::os::unix::fs::PermissionsExt;
    let server = TestServer::start().await;
    let actions = Actions::new();
    actions.add(
        "echo",
        &format!(
            "name = \"echo\"\ncomponent = \"{{echo}}\"\n[http]\nallow = [\"{u}\"]\n[secrets.API_KEY]\nfrom = \"file:api_key\"\nhosts = [\"{u}\"]\n",
            u = server.url()
        ),
    );
    let data = tempfile::tempdir().unwrap();
    let file = data.path().join("secrets.toml");
    std::fs::write(&file, "api_key = \"from-the-file-1234\"\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let options = || {
        let mut o = callout::RuntimeOptions::new(data.path());
        o.config = small_pool_config();
        o.dev_loopback = vec![server.host_port()];
        o
    };
    let err = callout::Runtime::new(options())
        .err()
        .expect("a world-readable secrets file is refused");
    assert!(err.to_string().contains("chmod 600"), "{err}");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let rt = callout::Runtime::new(options()).unwrap();
    let reg = load_all(&rt, &actions).await;
    let r = call(
        &reg.get("echo").unwrap(),
        json!({"message": "m", "url": format!("{}/k", server.url()), "bearer_secret": "API_KEY"}),
    )
    .await;
    assert_eq!(r.result.unwrap().data["http"]["status"], 200);
    assert_eq!(
        server.received()[0].headers["authorization"],
        "Bearer from-the-file-1234"
    );
}

#[tokio::test]
async fn every_attempt_allowed_or_denied_is_audited_without_its_query() {
    let server = TestServer::start().await;
    let actions = Actions::new();
    actions.add(
        "echo",
        &format!(
            "name = \"echo\"\ncomponent = \"{{echo}}\"\n[http]\nallow = [\"{}/ok/\"]\n",
            server.url()
        ),
    );
    let data = tempfile::tempdir().unwrap();
    let mut o = callout::RuntimeOptions::new(data.path());
    o.config = small_pool_config();
    o.dev_loopback = vec![server.host_port()];
    let rt = callout::Runtime::new(o).unwrap();
    let reg = load_all(&rt, &actions).await;
    let echo = reg.get("echo").unwrap();
    let mut c = callout::Call::tool(obj(
        json!({"message": "m", "url": format!("{}/ok/1?email=ada@example.com", server.url())}),
    ));
    c.conversation_id = Some("conv-7".into());
    assert!(echo.invoke(c).await.result.is_ok());
    let denied = call(
        &echo,
        json!({"message": "m", "url": format!("{}/admin?x=1", server.url())}),
    )
    .await;
    assert_eq!(denial_code(denied.result.unwrap_err()), "path-not-allowed");
    rt.flush_audit();
    drop(reg);
    let events = callout::audit::AuditLog::query(
        &data.path().join(callout::audit::DB_FILE),
        &Default::default(),
    )
    .unwrap();
    assert_eq!(events.len(), 2, "{events:#?}");
    let (denied, allowed) = (&events[0], &events[1]);
    assert_eq!(allowed.decision, callout::audit::Decision::Allowed);
    assert_eq!(
        (allowed.status, allowed.path.as_str()),
        (Some(200), "/ok/1")
    );
    assert_eq!(allowed.conversation_id.as_deref(), Some("conv-7"));
    assert_eq!(
        allowed.origin,
        server.url(),
        "the origin carries its explicit port"
    );
    assert!(allowed.bytes_in > 0);
    assert_eq!(denied.decision, callout::audit::Decision::Denied);
    assert_eq!(denied.reason.as_deref(), Some("path-not-allowed"));
    assert_eq!(denied.path, "/admin");
    let all = format!("{events:?}");
    assert!(
        !all.contains("email=") && !all.contains("x=1"),
        "a query string reached the audit log: {all}"
    );
}
