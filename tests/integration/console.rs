//! The web console over real HTTP: sign-in, the form's server-side validation, Test (dry run,
//! mock and live against the demo back end), Save through the publish gate, and the new action
//! answering in a conversation. The same flows run in headless Chromium in tests/browser/.

use reqwest::StatusCode;
use serde_json::Value;

use crate::server::{ADMIN_KEY, AGENT_KEY, Served};

/// `application/x-www-form-urlencoded`, as a browser sends a form.
fn encoded<K: AsRef<str>, V: AsRef<str>>(fields: &[(K, V)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in fields {
        s.append_pair(k.as_ref(), v.as_ref());
    }
    s.finish()
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Signs in with `key`: the status and the session cookie (`name=value`), if any.
async fn sign_in(s: &Served, key: &str) -> (StatusCode, Option<String>, String) {
    let r = no_redirects()
        .post(format!("{}/console/login", s.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(encoded(&[("key", key)]))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let cookie = r
        .headers()
        .get("set-cookie")
        .map(|c| c.to_str().unwrap().split(';').next().unwrap().to_string());
    (status, cookie, r.text().await.unwrap())
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The text of the element with `id` (up to its closing tag), unescaped.
fn by_id(html: &str, id: &str) -> Option<String> {
    let start = html.find(&format!("id=\"{id}\""))?;
    let open_end = start + html[start..].find('>')? + 1;
    let close = open_end + html[open_end..].find("</")?;
    Some(unescape(&html[open_end..close]))
}

/// The `value` of the hidden input named `name`, unescaped.
fn hidden(html: &str, name: &str) -> Option<String> {
    let at = html.find(&format!("name=\"{name}\" value=\""))?;
    let rest = &html[at + name.len() + 15..];
    Some(unescape(&rest[..rest.find('"')?]))
}

struct Console<'a> {
    s: &'a Served,
    cookie: String,
}

impl Console<'_> {
    async fn get(&self, path: &str) -> (StatusCode, String) {
        let r = no_redirects()
            .get(format!("{}{path}", self.s.url))
            .header("cookie", &self.cookie)
            .send()
            .await
            .unwrap();
        (r.status(), r.text().await.unwrap())
    }

    async fn post(
        &self,
        path: &str,
        form: &[(String, String)],
    ) -> (StatusCode, Option<String>, String) {
        let r = no_redirects()
            .post(format!("{}{path}", self.s.url))
            .header("cookie", &self.cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(encoded(form))
            .send()
            .await
            .unwrap();
        let location = r
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_string());
        (r.status(), location, r.text().await.unwrap())
    }
}

/// The form of a no-code order lookup against the demo back end at `base`.
fn order_lookup(name: &str, base: &str) -> Vec<(String, String)> {
    [
        ("name", name.to_string()),
        ("description", "Track an order".into()),
        ("trigger", "on-prompt".into()),
        ("patterns", "(?i)track".into()),
        ("method", "GET".into()),
        ("url", format!("{base}/orders/{{{{order_id}}}}")),
        ("header-name-1", "Authorization".into()),
        ("header-value-1", "Bearer ".into()),
        ("header-secret-1", "ORDERS_TOKEN".into()),
        ("header-name-2", String::new()),
        ("header-value-2", String::new()),
        ("header-secret-2", String::new()),
        ("input-name-1", "order_id".into()),
        ("input-type-1", "string".into()),
        ("input-pattern-1", "^[0-9]{6}$".into()),
        ("input-prompt-1", "What is your order number?".into()),
        ("input-required-1", "on".into()),
        ("input-sample-1", "123456".into()),
        ("var-name-1", "order_state".into()),
        ("var-pointer-1", "/status".into()),
        ("reply", "Your order is {{order_state}}.".into()),
        (
            "fallback",
            "Sorry, the order system is not answering.".into(),
        ),
        ("mock-status", "200".into()),
        ("mock-body", "{\"status\": \"packed\"}".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn with(form: &[(String, String)], changes: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut f: Vec<(String, String)> = form
        .iter()
        .filter(|(k, _)| !changes.iter().any(|(c, _)| c == k))
        .cloned()
        .collect();
    f.extend(changes.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    f
}

#[tokio::test]
async fn the_console_needs_an_admin_session_and_refuses_cross_site_posts() {
    let s = Served::start().await;
    let r = no_redirects()
        .get(format!("{}/console", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/console/login");

    let (status, cookie, body) = sign_in(&s, AGENT_KEY).await;
    assert_eq!((status, cookie), (StatusCode::FORBIDDEN, None));
    assert!(
        body.contains("role=\"alert\"") && body.contains("not an admin key"),
        "{body}"
    );
    let (status, cookie, _) = sign_in(&s, "wrong-key-wrong-key-wrong").await;
    assert_eq!((status, cookie), (StatusCode::UNAUTHORIZED, None));

    let (status, cookie, _) = sign_in(&s, ADMIN_KEY).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let c = Console {
        s: &s,
        cookie: cookie.unwrap(),
    };
    let (status, html) = c.get("/console").await;
    assert_eq!(status, StatusCode::OK);
    for action in ["order-status", "membership-verify", "crm-lead"] {
        assert!(
            html.contains(&format!("<tr data-action=\"{action}\">")),
            "{html}"
        );
    }
    assert!(html.contains("<td class=\"status\">loaded</td>"));

    // Another site's form post is refused even with the cookie.
    let r = no_redirects()
        .post(format!("{}/console/logout", s.url))
        .header("cookie", &c.cookie)
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(c.get("/console").await.0, StatusCode::OK, "still signed in");

    let (status, location, _) = c.post("/console/logout", &[]).await;
    assert_eq!(
        (status, location.as_deref()),
        (StatusCode::SEE_OTHER, Some("/console/login"))
    );
    assert_eq!(
        c.get("/console").await.0,
        StatusCode::SEE_OTHER,
        "signed out"
    );
    s.stop().await;
}

#[tokio::test]
async fn a_request_is_validated_tested_saved_through_the_gate_and_answers_in_a_conversation() {
    let s = Served::start().await;
    let (_, cookie, _) = sign_in(&s, ADMIN_KEY).await;
    let c = Console {
        s: &s,
        cookie: cookie.unwrap(),
    };
    let base = s.backend.url();
    let form = order_lookup("track-order", &base);

    // Server-side validation: each bad field is marked and named in the summary.
    let bad = with(
        &form,
        &[
            ("name", "Bad Name!"),
            ("url", "not a url"),
            ("op", "dry-run"),
        ],
    );
    let (status, _, html) = c.post("/console/actions/draft", &bad).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        html.contains("<div id=\"error-summary\" role=\"alert\""),
        "{html}"
    );
    assert!(html.contains("<li><a href=\"#name\">"), "{html}");
    assert!(html.contains("<li><a href=\"#url\">"), "{html}");
    assert!(
        html.contains("id=\"name\" name=\"name\" value=\"Bad Name!\""),
        "values are kept"
    );
    assert!(
        html.contains("aria-describedby=\"name-error name-hint\" aria-invalid=\"true\""),
        "{html}"
    );
    assert!(by_id(&html, "name-error").unwrap().contains("lower-case"));
    assert!(by_id(&html, "url-error").unwrap().contains("not a URL"));

    // Dry run: the exact request, the secret as its placeholder.
    let (status, _, html) = c
        .post("/console/actions/draft", &with(&form, &[("op", "dry-run")]))
        .await;
    assert_eq!(status, StatusCode::OK, "{html}");
    let request = by_id(&html, "request").unwrap();
    assert!(
        request.starts_with(&format!("GET {base}/orders/123456\n")),
        "{request}"
    );
    assert!(
        request.contains("Authorization: Bearer {{secret.ORDERS_TOKEN}}"),
        "{request}"
    );
    assert!(
        !request.contains(s.backend.token()),
        "the secret is never shown"
    );
    assert!(s.backend.received().is_empty(), "a dry run sends nothing");

    // Mock: the reply the user would see; kept as a test case.
    let (_, _, html) = c
        .post("/console/actions/draft", &with(&form, &[("op", "mock")]))
        .await;
    assert_eq!(by_id(&html, "user-reply").unwrap(), "Your order is packed.");
    assert_eq!(by_id(&html, "response-status").unwrap(), "200");
    let mock_case = hidden(&html, "pending").unwrap();

    // A mocked 503: the error message.
    let (_, _, html) = c
        .post(
            "/console/actions/draft",
            &with(
                &form,
                &[
                    ("op", "mock"),
                    ("mock-status", "503"),
                    ("mock-body", "down"),
                ],
            ),
        )
        .await;
    assert_eq!(
        by_id(&html, "user-reply").unwrap(),
        "Sorry, the order system is not answering."
    );
    assert!(by_id(&html, "outcome").unwrap().starts_with("upstream"));
    let down_case = hidden(&html, "pending").unwrap();

    // Live: sent to the demo back end, its answer shown.
    let (_, _, html) = c
        .post("/console/actions/draft", &with(&form, &[("op", "live")]))
        .await;
    assert_eq!(by_id(&html, "response-status").unwrap(), "200", "{html}");
    assert!(
        by_id(&html, "response-body")
            .unwrap()
            .contains("\"status\": \"shipped\"")
    );
    assert_eq!(
        by_id(&html, "user-reply").unwrap(),
        "Your order is shipped."
    );
    assert_eq!(s.backend.received().len(), 1);
    assert!(
        s.backend.received()[0].authorized,
        "the host filled the secret in"
    );
    let live_case = hidden(&html, "pending").unwrap();

    // Keep as test case: the draft carries it.
    let (_, _, html) = c
        .post(
            "/console/actions/draft",
            &with(&form, &[("op", "accept"), ("pending", &live_case)]),
        )
        .await;
    assert!(
        by_id(&html, "cases").unwrap().contains("live 200"),
        "{html}"
    );

    // Save without any kept case: refused by the publish gate.
    let (status, _, html) = c
        .post("/console/actions/draft", &with(&form, &[("op", "save")]))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        html.contains("publish gate") && html.contains("no test cases"),
        "{html}"
    );
    assert!(!s.names().await.contains(&"track-order".to_string()));

    // Save with the three kept exchanges: published.
    let mut saved = with(&form, &[("op", "save")]);
    for case in [&mock_case, &down_case, &live_case] {
        saved.push(("case".into(), case.clone()));
    }
    let (status, location, html) = c.post("/console/actions/draft", &saved).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{html}");
    assert_eq!(location.as_deref(), Some("/console/actions/track-order"));
    let (_, page) = c.get("/console/actions/track-order").await;
    assert!(
        by_id(&page, "gate")
            .unwrap()
            .starts_with("passed: 3 test case(s) passed"),
        "{page}"
    );
    assert!(s.names().await.contains(&"track-order".to_string()));
    let folder = s.actions.path().join("track-order");
    let tests = std::fs::read_to_string(folder.join("tests.toml")).unwrap();
    assert_eq!(tests.matches("[[case]]").count(), 3, "{tests}");

    // It answers in a conversation (the console's own page).
    let (_, html) = c.get("/console/chat").await;
    let id = hidden(&html, "id").unwrap();
    let (_, _, html) = c
        .post(
            "/console/chat",
            &[
                ("id".to_string(), id),
                (
                    "message".to_string(),
                    "I want to track my order".to_string(),
                ),
                ("values".to_string(), "order_id=123456".to_string()),
                ("op".to_string(), "send".to_string()),
            ],
        )
        .await;
    assert!(
        html.contains("<li class=\"action-reply\"><span class=\"who\">Action:</span> Your order is shipped.</li>"),
        "{html}"
    );

    // Edit shows the saved request again.
    let (_, html) = c.get("/console/actions/track-order/edit").await;
    assert!(
        html.contains(&format!("value=\"{base}/orders/{{{{order_id}}}}\"")),
        "{html}"
    );
    assert!(
        html.contains("<option value=\"ORDERS_TOKEN\" selected>"),
        "{html}"
    );
    assert!(
        !html.contains("id=\"unshown\""),
        "the form shows all it wrote"
    );
    let gate: Value = s
        .get_json("/v1/admin/actions/track-order/gate", ADMIN_KEY)
        .await;
    assert_eq!(gate["verdicts"][0]["passed"], true);

    // A hand-written version with settings the form lacks: Edit says which a save would drop.
    let mut table: toml::Table =
        toml::from_str(&std::fs::read_to_string(folder.join("action.toml")).unwrap()).unwrap();
    let extra: toml::Table = toml::from_str(
        "[response]\nnot_found = [404]\nreply = \"Your order is {{order_state}}.\"\n[response.variables]\norder_state = \"/status\"\n\
         [on_error]\nfallback = \"Sorry.\"\n[on_error.retry]\nmax = 1\n\
         [[case]]\nname = \"ok\"\ninputs = { order_id = \"123456\" }\nresponse = { status = 200, body = { status = \"shipped\" } }\n[case.expect]\noutcome = \"ok\"\n\
         [[case]]\nname = \"down\"\ninputs = { order_id = \"123456\" }\nresponse = { status = 503 }\n[case.expect]\noutcome = \"server-error\"\n",
    )
    .unwrap();
    table.extend(extra);
    let r = s
        .upload("track-order", &toml::to_string(&table).unwrap(), None)
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let (_, html) = c.get("/console/actions/track-order/edit").await;
    let notice = by_id(&html, "unshown").unwrap_or_default();
    assert!(
        html.contains("response.not_found") && html.contains("on_error.retry"),
        "{notice}{html}"
    );
    s.stop().await;
}
