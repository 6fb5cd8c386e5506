//! The `callout` binary, run as a real process.

use std::process::{Command, Output};

use serde_json::Value;

use crate::support::*;

fn callout(actions: &Actions, data: &tempfile::TempDir, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_callout"))
        .arg("--actions")
        .arg(actions.path())
        .arg("--data-dir")
        .arg(data.path())
        .args(args)
        .env_remove("CALLOUT_LOG")
        .env("CALLOUT_CONFIG", write_small_pool(data))
        .output()
        .unwrap()
}

fn write_small_pool(data: &tempfile::TempDir) -> std::path::PathBuf {
    let p = data.path().join("callout.toml");
    std::fs::write(&p, "[pool]\ntotal_component_instances = 16\ntotal_core_instances = 64\ntotal_memories = 16\ntotal_tables = 32\n").unwrap();
    p
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn invoke_prints_the_outcome_as_json() {
    let actions = Actions::new();
    actions.add(
        "echo",
        "name = \"echo\"\ncomponent = \"{echo}\"\n[config]\ngreeting = \"hello\"\n",
    );
    let data = tempfile::tempdir().unwrap();
    let out = callout(
        &actions,
        &data,
        &["invoke", "echo", "--input", r#"{"message":"hi"}"#],
    );
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["data"]["message"], "hi");
    assert_eq!(v["data"]["greeting"], "hello");
    assert_eq!(v["reply"], "echo: hi");
}

#[test]
fn invoke_dry_run_prints_every_recorded_request_with_secrets_redacted() {
    let actions = Actions::new();
    actions.add(
        "echo",
        "name = \"echo\"\ncomponent = \"{echo}\"\n[http]\nallow = [{ url = \"http://127.0.0.1:9/v1/\", methods = [\"POST\"] }]\n\
         [secrets.CRM_TOKEN]\nfrom = \"env:CALLOUT_TEST_CRM_TOKEN\"\nhosts = [\"http://127.0.0.1:9\"]\n",
    );
    let data = tempfile::tempdir().unwrap();
    let input = r#"{"message":"hi","method":"POST","url":"http://127.0.0.1:9/v1/leads?src=chat","bearer_secret":"CRM_TOKEN","body":"{\"email\":\"ada@example.com\"}"}"#;
    let out = Command::new(env!("CARGO_BIN_EXE_callout"))
        .args(["--actions"])
        .arg(actions.path())
        .arg("--data-dir")
        .arg(data.path())
        // Loopback only, even though nothing is sent: a broken dry-run must not reach out.
        .args([
            "--dev-loopback",
            "127.0.0.1:9",
            "invoke",
            "echo",
            "--dry-run",
            "--input",
            input,
        ])
        .env("CALLOUT_CONFIG", write_small_pool(&data))
        .env("CALLOUT_TEST_CRM_TOKEN", "tok-must-not-appear")
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "stderr: {stderr}");
    assert!(
        stderr.contains("dry-run: 1 request(s) recorded, none sent"),
        "{stderr}"
    );
    assert!(
        stderr.contains("POST http://127.0.0.1:9/v1/leads?src=chat"),
        "{stderr}"
    );
    assert!(
        stderr.contains("authorization: Bearer {{secret.CRM_TOKEN}}"),
        "{stderr}"
    );
    assert!(
        stderr.contains(r#"{"email":"ada@example.com"}"#),
        "{stderr}"
    );
    let all = format!("{stderr}{}", text(&out.stdout));
    assert!(!all.contains("tok-must-not-appear"), "secret leaked: {all}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["data"]["http"], "dry-run");
}

#[test]
fn invoke_failure_prints_the_error_and_exits_1() {
    let actions = Actions::new();
    actions.add(
        "hostile",
        "name = \"hostile\"\ncomponent = \"{hostile}\"\n[limits]\ndeadline_ms = 200\n",
    );
    let data = tempfile::tempdir().unwrap();
    let out = callout(
        &actions,
        &data,
        &["invoke", "hostile", "--input", r#"{"mode":"loop"}"#],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("error: action hostile failed: deadline of 200 ms exceeded"),
        "{}",
        text(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["class"], "deadline");
}

#[test]
fn unknown_action_and_bad_input_are_usage_errors() {
    let actions = Actions::new();
    actions.add("echo", "name = \"echo\"\ncomponent = \"{echo}\"\n");
    let data = tempfile::tempdir().unwrap();
    let out = callout(&actions, &data, &["invoke", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no action named \"nope\""),
        "{}",
        text(&out.stderr)
    );
    assert!(text(&out.stderr).contains("loaded: [echo]"));
    let out = callout(&actions, &data, &["invoke", "echo", "--input", "[1]"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--input must be a JSON object"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn check_prints_grants_and_fails_on_a_bad_action() {
    let actions = Actions::new();
    actions.add(
        "echo",
        "name = \"echo\"\ncomponent = \"{echo}\"\n[http]\nallow = [\"https://api.example.com/v1/\"]\nmethods = [\"GET\", \"POST\"]\n",
    );
    let data = tempfile::tempdir().unwrap();
    let out = callout(&actions, &data, &["check"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert!(stdout.contains("ok echo"), "{stdout}");
    assert!(stdout.contains("https://api.example.com"), "{stdout}");
    assert!(stdout.contains("POST"), "{stdout}");
    assert!(
        stdout.contains("limits: memory 64 MiB, deadline 10000 ms"),
        "{stdout}"
    );
    assert!(stdout.contains("1 action(s) ok, 0 failed"), "{stdout}");

    actions.add(
        "broken",
        "name = \"broken\"\ncomponent = \"{echo}\"\n[http]\nallow = [\"api.example.com\"]\n",
    );
    let out = callout(&actions, &data, &["check"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("1 action(s) failed to load"), "{stderr}");
    assert!(
        stderr.contains("broken/action.toml: http.allow[0]"),
        "{stderr}"
    );
    assert!(stderr.contains("https://api.example.com"), "{stderr}");
}

#[test]
fn list_shows_actions_and_json_descriptors() {
    let actions = Actions::new();
    actions.add("echo", "name = \"echo\"\ncomponent = \"{echo}\"\n");
    let data = tempfile::tempdir().unwrap();
    let out = callout(&actions, &data, &["list", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["name"], "echo");
    assert_eq!(v[0]["input_schema"]["required"][0], "message");
}

#[test]
fn audit_lists_the_denied_attempt_of_a_previous_invoke() {
    let actions = Actions::new();
    actions.add(
        "echo",
        "name = \"echo\"\ncomponent = \"{echo}\"\n[http]\nallow = [\"http://127.0.0.1:9/ok/\"]\n",
    );
    let data = tempfile::tempdir().unwrap();
    let out = callout(&actions, &data, &["audit"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("no audit records yet"),
        "{}",
        text(&out.stdout)
    );
    // Loopback without --dev-loopback: denied before anything is sent.
    let input = r#"{"message":"m","url":"http://127.0.0.1:9/ok/1?token=abc"}"#;
    let out = callout(&actions, &data, &["invoke", "echo", "--input", input]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let out = callout(&actions, &data, &["audit", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v[0]["action"], "echo");
    assert_eq!(v[0]["decision"], "denied");
    assert_eq!(v[0]["reason"], "blocked-network");
    assert_eq!(v[0]["path"], "/ok/1");
    assert!(
        !v.to_string().contains("token=abc"),
        "the query reached the audit log: {v}"
    );
    let out = callout(&actions, &data, &["audit", "--denied"]);
    assert!(
        text(&out.stdout).contains("blocked-network"),
        "{}",
        text(&out.stdout)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn test_command_dry_run_mock_and_live_show_request_response_and_reply() {
    let server = TestServer::start().await;
    let actions = Actions::new();
    actions.add(
        "echo",
        &format!(
            "name = \"echo\"\ncomponent = \"{{echo}}\"\n[http]\nallow = [{{ url = \"{}\", methods = [\"POST\"] }}]\n",
            server.url()
        ),
    );
    let data = tempfile::tempdir().unwrap();
    let input = format!(
        r#"{{"message":"hi","method":"POST","url":"{}/leads","body":"{{\"a\":1}}"}}"#,
        server.url()
    );
    let host_port = server.host_port();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "--dev-loopback",
            &host_port[..],
            "test",
            "echo",
            "--input",
            &input[..],
        ];
        args.extend_from_slice(extra);
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let actions = actions.path().to_path_buf();
        let data = data.path().to_path_buf();
        std::thread::spawn(move || {
            Command::new(env!("CARGO_BIN_EXE_callout"))
                .arg("--actions")
                .arg(actions)
                .arg("--data-dir")
                .arg(&data)
                .args(&args)
                .output()
                .unwrap()
        })
        .join()
        .unwrap()
    };
    let out = run(&["--dry-run"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains(&format!("POST {}/leads", server.url())),
        "{stdout}"
    );
    assert!(stdout.contains("the user would see: echo: hi"), "{stdout}");

    let mock = data.path().join("created.json");
    std::fs::write(&mock, r#"{"status": 201, "headers": {"content-type": "application/json"}, "body": {"id": "lead_9"}}"#).unwrap();
    let out = run(&["--mock", mock.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("--- mocked response: 201 ---"), "{stdout}");
    assert!(stdout.contains("lead_9"), "{stdout}");

    let timeout = data.path().join("timeout.toml");
    std::fs::write(&timeout, "failure = \"timeout\"\n").unwrap();
    let out = run(&["--mock", timeout.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("\"kind\": \"timeout\""),
        "{}",
        text(&out.stdout)
    );
    assert!(
        server.received().is_empty(),
        "dry-run and mock sent a request"
    );

    let out = run(&["--live"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("--- sent POST"), "{stdout}");
    assert_eq!(server.received().len(), 1);
    assert_eq!(server.received()[0].body, r#"{"a":1}"#);
}

#[test]
fn test_command_refuses_incomplete_inputs_without_calling() {
    let actions = Actions::new();
    actions.add("echo", "name = \"echo\"\ncomponent = \"{echo}\"\n[inputs.message]\nprompt = \"What should I echo?\"\n");
    let data = tempfile::tempdir().unwrap();
    let out = callout(
        &actions,
        &data,
        &["test", "echo", "--input", "{}", "--dry-run"],
    );
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("inputs: not complete, nothing was called"),
        "{stdout}"
    );
    assert!(
        stdout.contains("message is required (ask: What should I echo?)"),
        "{stdout}"
    );
    let out = callout(&actions, &data, &["test", "echo", "--input", "{}"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a mode is required: {}",
        text(&out.stderr)
    );
}

#[test]
fn chat_drives_a_conversation_from_piped_stdin() {
    use std::io::Write;
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_callout"))
        .arg("--actions")
        .arg(example_actions())
        .arg("--data-dir")
        .arg(data.path())
        .args(["chat", "--demo"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Where is my order?\nit is 123456\n/set name Ada Lovelace\n/set email ada@example.com\n/end\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    for want in [
        "agent [order-status needs-input]: What is your 6-digit order number?",
        "agent [order-status ok]: Order 123456 has shipped",
        "(conversation ended; 1 chat-end delivery(ies) in the outbox)",
        "outbox [crm-lead done]: delivered (attempt 1, Idempotency-Key ",
    ] {
        assert!(
            stdout.contains(want),
            "chat output lacks {want:?}:\n{stdout}"
        );
    }

    // The operator's view of the same outbox.
    let outbox = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_callout"))
            .arg("--data-dir")
            .arg(data.path())
            .arg("outbox")
            .args(args)
            .output()
            .unwrap()
    };
    let out = outbox(&["list", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list["counts"]["done"], 1, "{list}");
    let id = list["deliveries"][0]["id"].as_i64().unwrap().to_string();
    assert_eq!(list["deliveries"][0]["action"], "crm-lead");
    let out = outbox(&["show", &id]);
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["attempts"][0]["attempt"], 1, "{shown}");
    assert_eq!(
        shown["delivery"]["payload"]["inputs"]["email"],
        "ada@example.com"
    );
    let out = outbox(&["retry", &id]);
    assert_eq!(out.status.code(), Some(2), "a done delivery is not retried");
    assert!(
        text(&out.stderr).contains("only dead or retrying"),
        "{}",
        text(&out.stderr)
    );
    let out = outbox(&["purge"]);
    assert_eq!(out.status.code(), Some(2));
    let out = outbox(&["purge", "--done"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("purged 1 entries"),
        "{}",
        text(&out.stdout)
    );
    let out = outbox(&["list"]);
    assert!(
        text(&out.stdout).contains("pending 0  in_flight 0  retrying 0  done 0  dead 0"),
        "{}",
        text(&out.stdout)
    );
}

/// `callout tools` over the example actions and the built-in no-code action: every format
/// prints one tool per action, and every OpenAI schema passes the strict-mode checker.
#[test]
fn tools_exports_every_format_and_openai_schemas_follow_strict_rules() {
    let data = tempfile::tempdir().unwrap();
    let run = |format: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_callout"))
            .arg("--actions")
            .arg(example_actions())
            .arg("--data-dir")
            .arg(data.path())
            .args(["tools", "--format", format])
            .env_remove("CALLOUT_LOG")
            .env("CALLOUT_CONFIG", write_small_pool(&data))
            .output()
            .unwrap();
        assert!(out.status.success(), "stderr: {}", text(&out.stderr));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let openai = run("openai");
    let tools = openai.as_array().unwrap();
    assert_eq!(tools.len(), 3);
    for t in tools {
        assert_eq!(t["type"], "function");
        assert_eq!(t["function"]["strict"], true);
        let params = &t["function"]["parameters"];
        let violations = callout::tools::strict_violations(params);
        assert!(
            violations.is_empty(),
            "{}: {violations:#?}",
            t["function"]["name"]
        );
        // Every property is required; optional ones take null.
        let props = params["properties"].as_object().unwrap();
        assert_eq!(params["required"].as_array().unwrap().len(), props.len());
    }
    let crm = tools
        .iter()
        .find(|t| t["function"]["name"] == "crm-lead")
        .unwrap();
    assert_eq!(
        crm["function"]["parameters"]["properties"]["company"]["type"],
        serde_json::json!(["string", "null"])
    );
    let anthropic = run("anthropic");
    assert!(
        anthropic
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["input_schema"]["type"] == "object")
    );
    let mcp = run("mcp");
    assert!(
        mcp.as_array()
            .unwrap()
            .iter()
            .all(|t| t["outputSchema"]["type"] == "object")
    );
    let out = Command::new(env!("CARGO_BIN_EXE_callout"))
        .args(["tools", "--format", "langchain"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("openai, anthropic, mcp"),
        "{}",
        text(&out.stderr)
    );
}
