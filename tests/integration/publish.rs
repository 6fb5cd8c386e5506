//! Safe to publish: stored test cases (`callout test`), the lints of `callout check`, and the
//! publish gate of `callout serve` (startup, uploads, the watcher and the operator's override).

use std::process::{Command, Output};

use serde_json::{Value, json};

use crate::server::{ADMIN_KEY, Served, example_manifest, example_wasm, uploadable_order_status};
use crate::support::*;

fn callout(actions: &std::path::Path, data: &tempfile::TempDir, args: &[&str]) -> Output {
    let config = data.path().join("callout.toml");
    std::fs::write(&config, "[pool]\ntotal_component_instances = 16\ntotal_core_instances = 64\ntotal_memories = 16\ntotal_tables = 32\n").unwrap();
    Command::new(env!("CARGO_BIN_EXE_callout"))
        .arg("--actions")
        .arg(actions)
        .arg("--data-dir")
        .arg(data.path())
        .args(args)
        .env_remove("CALLOUT_LOG")
        .env("CALLOUT_CONFIG", config)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A copy of the example order-status (manifest and cases) in a fresh actions directory.
fn order_status_copy() -> Actions {
    let actions = Actions::new();
    let manifest = actions.add("order-status", &example_manifest("order-status"));
    std::fs::copy(
        example_actions().join("order-status/tests.toml"),
        manifest.with_file_name("tests.toml"),
    )
    .unwrap();
    actions
}

#[test]
fn every_example_action_passes_its_stored_cases() {
    let data = tempfile::tempdir().unwrap();
    let out = callout(example_actions(), &data, &["test"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    for action in ["order-status", "membership-verify", "crm-lead"] {
        assert!(stdout.contains(&format!("ok   {action} / ")), "{stdout}");
    }
    let last = stdout.lines().last().unwrap();
    let passed: usize = last.split(' ').next().unwrap().parse().unwrap();
    assert!(passed >= 9 && last.ends_with("passed, 0 failed"), "{last}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
}

#[test]
fn a_case_that_does_not_hold_fails_with_a_diff_and_a_junit_report() {
    let actions = order_status_copy();
    let tests = actions.path().join("order-status/tests.toml");
    let wrong = std::fs::read_to_string(&tests)
        .unwrap()
        .replace("orders/123456\", headers", "orders/654321\", headers")
        .replace("has shipped with UPS", "has shipped by UPS");
    std::fs::write(&tests, wrong).unwrap();
    let data = tempfile::tempdir().unwrap();
    let junit = data.path().join("report.xml");
    let out = callout(
        actions.path(),
        &data,
        &["test", "order-status", "--junit", junit.to_str().unwrap()],
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAIL order-status / shipped order"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "  request.url\n    - expected: https://orders.example.com/orders/654321\n    + actual:   https://orders.example.com/orders/123456"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("  reply\n"), "{stdout}");
    assert!(
        stdout.contains("ok   order-status / unknown order"),
        "{stdout}"
    );
    assert!(
        stdout.trim_end().ends_with("4 passed, 1 failed"),
        "{stdout}"
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("tests=\"5\" failures=\"1\""), "{xml}");
    assert!(xml.contains("<failure message=\"FAIL order-status / shipped order\">"));
}

#[test]
fn an_action_without_cases_counts_as_a_failure() {
    let actions = Actions::new();
    actions.add("echo", "name = \"echo\"\ncomponent = \"{echo}\"\n");
    let data = tempfile::tempdir().unwrap();
    let out = callout(actions.path(), &data, &["test"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAIL echo (no test cases: it cannot be published; add [[case]] tables to"),
        "{stdout}"
    );
    assert!(
        stdout.trim_end().ends_with("0 passed, 1 failed"),
        "{stdout}"
    );
}

/// A built-in "Send API Request" action with these extra TOML lines.
fn builtin(name: &str, extra: &str) -> String {
    format!("name = \"{name}\"\ncomponent = \"builtin:send-api-request\"\n{extra}\n")
}

const GRANT: &str =
    "[http]\nallow = [\"https://api.example.com/\"]\nmethods = [\"GET\", \"POST\"]\n";
const FALLBACK: &str = "[on_error]\nfallback = \"Sorry, try later.\"\n";

/// One good case and one upstream failure, for the lints that want cases.
const CASES: &str = r#"
[[case]]
name = "ok"
inputs = { id = "7" }
response = { status = 200, body = { item = { name = "mug" } } }
[case.expect]
outcome = "ok"

[[case]]
name = "down"
inputs = { id = "7" }
response = { status = 503 }
[case.expect]
outcome = "server-error"
"#;

const ID_INPUT: &str =
    "[inputs.id]\ntype = \"string\"\nrequired = true\nprompt = \"Which item?\"\n";

fn check(actions: &Actions, extra: &[&str]) -> (bool, String) {
    let data = tempfile::tempdir().unwrap();
    let mut args = vec!["check"];
    args.extend_from_slice(extra);
    let out = callout(actions.path(), &data, &args);
    assert!(
        out.status.success() || text(&out.stderr).contains("check failed: "),
        "{}",
        text(&out.stderr)
    );
    (out.status.success(), text(&out.stdout))
}

/// The findings of `check` with `code`, as lines.
fn findings(out: &str, code: &str) -> Vec<String> {
    out.lines()
        .filter(|l| l.contains(&format!("[{code}]")))
        .map(String::from)
        .collect()
}

#[test]
fn each_classic_mistake_is_caught_by_a_lint_with_file_field_and_fix() {
    let actions = Actions::new();
    // CL001: a template names what nothing provides.
    actions.add(
        "unknown-var",
        &builtin(
            "unknown-var",
            &format!(
                "{GRANT}{FALLBACK}{ID_INPUT}[request]\nurl = \"https://api.example.com/items/{{{{id}}}}?c={{{{customer}}}}\"\n{CASES}"
            ),
        ),
    );
    // CL002: an on-prompt write that requires nothing.
    actions.add(
        "eager-write",
        &builtin(
            "eager-write",
            &format!(
                "[trigger]\nkind = \"on-prompt\"\npatterns = [\"(?i)buy\"]\n{GRANT}{FALLBACK}[inputs.id]\ntype = \"string\"\n[request]\nmethod = \"POST\"\nurl = \"https://api.example.com/orders\"\nbody = {{ id = \"{{{{id}}}}\" }}\n{CASES}"
            ),
        ),
    );
    // CL101 (no error handling), CL103 (no cases).
    actions.add(
        "careless",
        &builtin(
            "careless",
            &format!(
                "{GRANT}{ID_INPUT}[request]\nurl = \"https://api.example.com/items/{{{{id}}}}\"\n"
            ),
        ),
    );
    // CL104: cases, but none where the upstream fails.
    actions.add(
        "sunny",
        &builtin(
            "sunny",
            &format!(
                "{GRANT}{FALLBACK}{ID_INPUT}[request]\nurl = \"https://api.example.com/items/{{{{id}}}}\"\n[[case]]\nname = \"ok\"\ninputs = {{ id = \"7\" }}\nresponse = {{ status = 200, body = {{}} }}\n"
            ),
        ),
    );
    // CL105: a mapping no recorded response contains.
    actions.add(
        "bad-pointer",
        &builtin(
            "bad-pointer",
            &format!(
                "{GRANT}{FALLBACK}{ID_INPUT}[request]\nurl = \"https://api.example.com/items/{{{{id}}}}\"\n[response]\nvariables = {{ item_name = \"/item/name\", item_price = \"/item/price\" }}\n{CASES}"
            ),
        ),
    );
    // CL107: an on-prompt GET with no inputs: static information.
    actions.add(
        "opening-hours",
        &builtin(
            "opening-hours",
            &format!(
                "[trigger]\nkind = \"on-prompt\"\npatterns = [\"(?i)opening hours\"]\n{GRANT}{FALLBACK}[request]\nurl = \"https://api.example.com/hours\"\n[[case]]\nname = \"ok\"\nresponse = {{ status = 200, body = {{ hours = \"9-5\" }} }}\n[[case]]\nname = \"down\"\nresponse = {{ failure = \"timeout\" }}\n"
            ),
        ),
    );
    // CL102 and CL106: a plugin that POSTs text labelled JSON, without a key, with retries on.
    actions.add(
        "sloppy-post",
        r#"name = "sloppy-post"
component = "{echo}"
[http]
allow = ["https://api.example.com/"]
methods = ["POST"]
[on_error.retry]
max = 2
[[case]]
name = "post"
inputs = { message = "hi", url = "https://api.example.com/notes", method = "POST", headers = { content-type = "application/json" }, body = "{note: hi}" }
response = { status = 200, body = {} }
[[case]]
name = "down"
inputs = { message = "hi", url = "https://api.example.com/notes", method = "POST", headers = { content-type = "application/json" }, body = "{note: hi}" }
response = { status = 503 }
"#,
    );
    let (ok, out) = check(&actions, &[]);
    assert!(!ok, "errors fail check:\n{out}");

    // Each code: exactly one finding, of the right severity, naming the file, field and fix.
    let cases: [(&str, &str, &[&str]); 9] = [
        (
            "CL001",
            "error",
            &[
                "unknown-var/action.toml: request.url: {{customer}} is neither a declared input nor a known conversation variable",
                "fix: declare it under [inputs.customer]",
            ],
        ),
        (
            "CL002",
            "error",
            &[
                "eager-write/action.toml: trigger.kind: ",
                "may send POST but requires no input",
                "fix: mark the values it needs required",
            ],
        ),
        (
            "CL101",
            "warning",
            &[
                "careless/action.toml: on_error: ",
                "fix: add [on_error] fallback",
            ],
        ),
        (
            "CL103",
            "warning",
            &["careless/tests.toml: case: ", "fix: add [[case]] tables"],
        ),
        (
            "CL104",
            "warning",
            &[
                "sunny/tests.toml: case: ",
                "fix: add a case whose response is",
            ],
        ),
        (
            "CL105",
            "warning",
            &[
                "bad-pointer/action.toml: response.variables.item_price: \"/item/price\" is in no test case's successful response",
                "fix: fix the pointer",
            ],
        ),
        (
            "CL107",
            "warning",
            &[
                "opening-hours/action.toml: trigger.kind: ",
                "fix: put the information in the agent's instructions",
            ],
        ),
        (
            "CL102",
            "warning",
            &[
                "sloppy-post/action.toml: on_error.retry: retries are on but the POST",
                "fix: send the call's idempotency key",
            ],
        ),
        (
            "CL106",
            "warning",
            &[
                "sloppy-post/action.toml: request.body: for case \"post\" the body sent as JSON is not JSON",
                "fix: build the body as a JSON value",
            ],
        ),
    ];
    for (code, severity, parts) in cases {
        let found = findings(&out, code);
        assert_eq!(found.len(), 1, "{code}:\n{out}");
        assert!(
            found[0].starts_with(&format!("{severity}[{code}] ")),
            "{}",
            found[0]
        );
        for part in parts {
            assert!(
                found[0].contains(part),
                "{code} lacks {part:?}: {}",
                found[0]
            );
        }
    }
    // No lint fires where its mistake is absent: the clean actions are named by none.
    for clean_code in ["CL001", "CL002", "CL105", "CL107"] {
        for line in findings(&out, clean_code) {
            assert!(!line.contains("sunny/"), "{line}");
        }
    }
}

#[test]
fn warnings_pass_check_unless_denied_and_the_examples_are_clean() {
    let actions = Actions::new();
    actions.add(
        "sunny",
        &builtin(
            "sunny",
            &format!(
                "{GRANT}{FALLBACK}{ID_INPUT}[request]\nurl = \"https://api.example.com/items/{{{{id}}}}\"\n[[case]]\nname = \"ok\"\ninputs = {{ id = \"7\" }}\nresponse = {{ status = 200, body = {{}} }}\n"
            ),
        ),
    );
    let (ok, out) = check(&actions, &[]);
    assert!(ok, "a warning alone passes:\n{out}");
    assert!(out.contains("lints: 0 error(s), 1 warning(s)"), "{out}");
    let (ok, out) = check(&actions, &["--deny-warnings"]);
    assert!(!ok, "--deny-warnings fails on it:\n{out}");
    assert!(out.contains("CL104"), "{out}");

    let data = tempfile::tempdir().unwrap();
    let out = callout(example_actions(), &data, &["check", "--deny-warnings"]);
    assert!(
        out.status.success(),
        "the shipped actions are lint-clean: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// The manifest of an uploadable order-status without any case.
fn without_cases(name: &str, description: &str) -> String {
    let mut table: toml::Table =
        toml::from_str(&uploadable_order_status(name, description)).unwrap();
    table.remove("case");
    toml::to_string(&table).unwrap()
}

#[tokio::test]
async fn the_gate_refuses_untested_and_failing_versions_and_the_old_one_keeps_serving() {
    let s = Served::start().await;
    let wasm = example_wasm("order-status");
    // Cases in action.toml: published.
    let r = s
        .upload(
            "order-status-2",
            &uploadable_order_status("order-status-2", "v1"),
            Some(&wasm),
        )
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    // No cases: refused, with the fix.
    let r = s
        .upload(
            "order-status-2",
            &without_cases("order-status-2", "v2"),
            Some(&wasm),
        )
        .await;
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.unwrap();
    let msg = body["message"].as_str().unwrap();
    assert!(
        msg.contains("did not pass the publish gate")
            && msg.contains("it has no test cases")
            && msg.contains("callout test order-status-2"),
        "{msg}"
    );

    // A failing case (in a tests part): refused, naming the case and the field.
    let tests = std::fs::read_to_string(example_actions().join("order-status/tests.toml"))
        .unwrap()
        .replace("has shipped with UPS", "is on its way with UPS");
    let r = s
        .upload_with_tests(
            "order-status-2",
            &without_cases("order-status-2", "v3"),
            Some(&wasm),
            Some(&tests),
        )
        .await;
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.unwrap();
    let msg = body["message"].as_str().unwrap();
    assert!(
        msg.contains(
            "case \"shipped order\" failed (reply: expected \"Order 123456 is on its way with UPS"
        ),
        "{msg}"
    );

    // v1 still serves.
    let detail: Value = s
        .get_json("/v1/actions/order-status-2", crate::server::AGENT_KEY)
        .await;
    assert_eq!(detail["description"], "v1");

    // The same cases, correct, as a tests part: published.
    let tests = std::fs::read_to_string(example_actions().join("order-status/tests.toml")).unwrap();
    let r = s
        .upload_with_tests(
            "order-status-2",
            &without_cases("order-status-2", "v4"),
            Some(&wasm),
            Some(&tests),
        )
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let (_, body) = s
        .invoke("order-status-2", json!({"order_id": "123456"}))
        .await;
    assert_eq!(body["status"], "ok");

    // The verdicts are recorded, newest first, with the version's hash.
    let gate: Value = s
        .get_json("/v1/admin/actions/order-status-2/gate", ADMIN_KEY)
        .await;
    let verdicts = gate["verdicts"].as_array().unwrap();
    let passed: Vec<bool> = verdicts
        .iter()
        .map(|v| v["passed"].as_bool().unwrap())
        .collect();
    assert_eq!(passed, [true, false, false, true], "{gate}");
    assert!(
        verdicts
            .iter()
            .all(|v| v["version"].as_str().unwrap().len() == 64)
    );
    assert_ne!(verdicts[0]["version"], verdicts[3]["version"]);
    assert_eq!(verdicts[0]["cases_passed"], 5);
    s.stop().await;
}

#[tokio::test]
async fn the_watcher_publishes_only_versions_that_pass_and_the_override_is_recorded() {
    let s = Served::start_with("[server]\nwatch_interval_ms = 50\n").await;
    let folder = s.actions.path().join("order-status-2");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::copy(example_wasm("order-status"), folder.join("action.wasm")).unwrap();
    std::fs::write(
        folder.join("action.toml"),
        without_cases("order-status-2", "w1"),
    )
    .unwrap();
    crate::support::wait_until("the untested folder is refused", || async {
        let admin: Value = s.get_json("/v1/admin/actions", ADMIN_KEY).await;
        admin["failures"].as_array().unwrap().iter().any(|f| {
            f["file"] == "order-status-2/action.toml"
                && f["detail"]
                    .as_str()
                    .unwrap()
                    .contains("it has no test cases")
        })
    })
    .await;
    assert!(!s.names().await.contains(&"order-status-2".to_string()));
    s.stop().await;

    // The operator's override: served, and recorded as overridden.
    let s = Served::start_with("[server]\npublish_gate = \"skip\"\n").await;
    let r = s
        .upload(
            "order-status-2",
            &without_cases("order-status-2", "o1"),
            Some(&example_wasm("order-status")),
        )
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let gate: Value = s
        .get_json("/v1/admin/actions/order-status-2/gate", ADMIN_KEY)
        .await;
    let v = &gate["verdicts"][0];
    assert_eq!(
        (v["passed"].clone(), v["overridden"].clone()),
        (json!(false), json!(true)),
        "{gate}"
    );
    assert_eq!(gate["mode"], "skip");
    s.stop().await;
}

/// `callout serve` as a process on `actions`, with `flags`: (the names it serves, its stderr).
async fn serve_and_list(actions: &std::path::Path, flags: &[&str]) -> (Vec<String>, String) {
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("callout.toml");
    std::fs::write(
        &config,
        "[pool]\ntotal_component_instances = 16\ntotal_core_instances = 64\ntotal_memories = 16\ntotal_tables = 32\n\
         [server]\nwatch_interval_ms = 0\n[[server.api_keys]]\nname = \"agent\"\nscope = \"agent\"\nenv = \"CALLOUT_AGENT_KEY\"\n",
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = data.path().join("serve.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_callout"))
        .arg("--actions")
        .arg(actions)
        .arg("--data-dir")
        .arg(data.path())
        .arg("--config")
        .arg(&config)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(flags)
        .env("CALLOUT_AGENT_KEY", crate::server::AGENT_KEY)
        .env("CALLOUT_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let names = loop {
        if let Ok(r) = client
            .get(format!("{url}/v1/actions"))
            .bearer_auth(crate::server::AGENT_KEY)
            .send()
            .await
            && r.status().is_success()
        {
            let list: Value = r.json().await.unwrap();
            break list["actions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["name"].as_str().unwrap().to_string())
                .collect::<Vec<_>>();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "callout serve did not come up: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    child.kill().unwrap();
    child.wait().unwrap();
    (names, std::fs::read_to_string(&log).unwrap())
}

#[tokio::test]
async fn serve_refuses_an_untested_action_at_startup_unless_the_operator_overrides() {
    let actions = order_status_copy();
    actions.add("echo", "name = \"echo\"\ncomponent = \"{echo}\"\n");
    let (names, log) = serve_and_list(actions.path(), &[]).await;
    assert_eq!(names, ["order-status"], "{log}");
    assert!(
        log.contains("not loaded: publish gate refused") && log.contains("it has no test cases"),
        "{log}"
    );
    let (names, log) = serve_and_list(actions.path(), &["--skip-publish-gate"]).await;
    assert_eq!(names, ["echo", "order-status"], "{log}");
    assert!(log.contains("publish gate is SKIPPED"), "{log}");
    assert!(log.contains("serving a version that did not pass"), "{log}");
}
