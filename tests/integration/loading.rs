//! Bad inputs are rejected with the file, the field and the fix; good actions stay loaded.

use callout::{LoadErrorKind, Registry};
use serde_json::json;

use crate::support::*;

const ECHO: &str = "name = \"echo\"\ncomponent = \"{echo}\"\n";

/// Loads a directory holding one good echo action and `bad` (a manifest in folder "bad"), and
/// returns the single failure's message after checking the good one still works.
async fn the_failure(bad: &str, extra: impl FnOnce(&Actions)) -> (LoadErrorKind, String) {
    let actions = Actions::new();
    actions.add("good", ECHO);
    actions.add("bad", bad);
    extra(&actions);
    let (rt, _data) = runtime();
    let reg = Registry::load_dir(&rt, actions.path()).await.unwrap();
    assert_eq!(reg.failures().len(), 1, "failures: {:#?}", reg.failures());
    let good = reg.get("echo").expect("the good action is still loaded");
    let report = call(&good, json!({"message": "still here"})).await;
    assert_eq!(
        report.result.expect("good call succeeds").data["message"],
        "still here"
    );
    let f = &reg.failures()[0];
    (f.kind, f.to_string())
}

fn assert_mentions(message: &str, wants: &[&str]) {
    for w in wants {
        assert!(message.contains(w), "error message lacks {w:?}:\n{message}");
    }
}

#[tokio::test]
async fn garbage_wasm_is_rejected_naming_the_file() {
    let (kind, msg) = the_failure("name = \"bad\"\ncomponent = \"garbage.wasm\"\n", |a| {
        std::fs::write(
            a.path().join("bad/garbage.wasm"),
            b"this is not wasm at all",
        )
        .unwrap();
    })
    .await;
    assert_eq!(kind, LoadErrorKind::Component);
    assert_mentions(
        &msg,
        &[
            "invalid component",
            "bad/garbage.wasm",
            "not a WebAssembly file",
            "wasm32-wasip2",
        ],
    );
}

#[tokio::test]
async fn core_module_is_rejected_with_the_component_fix() {
    let (kind, msg) = the_failure("name = \"bad\"\ncomponent = \"core.wasm\"\n", |a| {
        std::fs::write(a.path().join("bad/core.wasm"), b"\0asm\x01\0\0\0").unwrap();
    })
    .await;
    assert_eq!(kind, LoadErrorKind::Component);
    assert_mentions(
        &msg,
        &[
            "core.wasm",
            "core WebAssembly module, not a component",
            "wasm-tools component new",
        ],
    );
}

#[tokio::test]
async fn truncated_component_is_rejected_as_not_compiling() {
    let (kind, msg) = the_failure("name = \"bad\"\ncomponent = \"cut.wasm\"\n", |a| {
        let bytes = std::fs::read(wasm("echo")).unwrap();
        std::fs::write(a.path().join("bad/cut.wasm"), &bytes[..bytes.len() / 2]).unwrap();
    })
    .await;
    assert_eq!(kind, LoadErrorKind::Component);
    assert_mentions(&msg, &["cut.wasm", "does not compile"]);
}

#[tokio::test]
async fn wrong_world_is_rejected_naming_the_missing_export() {
    let (kind, msg) = the_failure("name = \"bad\"\ncomponent = \"{wrong_world}\"\n", |_| {}).await;
    assert_eq!(kind, LoadErrorKind::Component);
    assert_mentions(
        &msg,
        &[
            "wrong_world.wasm",
            "does not implement the callout:plugin/action-plugin world",
            "callout:plugin/action@0.1.0",
        ],
    );
}

#[tokio::test]
async fn unknown_manifest_key_is_rejected() {
    let (kind, msg) = the_failure(
        "name = \"bad\"\ncomponent = \"{echo}\"\n[limits]\nmemroy_mb = 5\n",
        |_| {},
    )
    .await;
    assert_eq!(kind, LoadErrorKind::Manifest);
    assert_mentions(
        &msg,
        &[
            "invalid manifest",
            "bad/action.toml",
            "unknown field",
            "memroy_mb",
            "memory_mb",
        ],
    );
}

#[tokio::test]
async fn manifest_naming_an_undeclared_input_is_rejected() {
    let (kind, msg) = the_failure(
        "name = \"bad\"\ncomponent = \"{echo}\"\n[inputs.order_id]\nprompt = \"Which order?\"\n",
        |_| {},
    )
    .await;
    assert_eq!(kind, LoadErrorKind::Contradiction);
    assert_mentions(
        &msg,
        &[
            "bad/action.toml",
            "inputs.order_id",
            "declares no input \"order_id\"",
            "message",
        ],
    );
}

#[tokio::test]
async fn manifest_widening_an_input_is_rejected() {
    // echo declares message with maxLength 200 and count with maximum 10.
    let (kind, msg) = the_failure(
        "name = \"bad\"\ncomponent = \"{echo}\"\n[inputs.message]\nmax_length = 500\n",
        |_| {},
    )
    .await;
    assert_eq!(kind, LoadErrorKind::Contradiction);
    assert_mentions(
        &msg,
        &["inputs.message.max_length = 500 widens", "at most 200"],
    );
}

#[tokio::test]
async fn manifest_narrowing_an_input_is_applied_to_the_schema() {
    let actions = Actions::new();
    actions.add(
        "echo",
        "name = \"echo\"\ncomponent = \"{echo}\"\n[inputs.count]\nmaximum = 3\nrequired = true\nprompt = \"How many?\"\n",
    );
    let (rt, _data) = runtime();
    let reg = load_all(&rt, &actions).await;
    let echo = reg.get("echo").unwrap();
    let schema = &echo.descriptor().input_schema;
    assert_eq!(schema["properties"]["count"]["maximum"], 3);
    assert_eq!(schema["properties"]["count"]["x-prompt"], "How many?");
    assert_eq!(schema["required"], json!(["message", "count"]));
}

#[tokio::test]
async fn missing_component_names_the_build_command() {
    let (kind, msg) = the_failure(
        "name = \"bad\"\ncomponent = \"target/wasm32-wasip2/release/bad.wasm\"\n",
        |a| {
            std::fs::write(
                a.path().join("bad/Cargo.toml"),
                "[package]\nname = \"bad\"\n",
            )
            .unwrap();
        },
    )
    .await;
    assert_eq!(kind, LoadErrorKind::MissingComponent);
    assert_mentions(
        &msg,
        &[
            "bad.wasm",
            "named by component in",
            "cargo build --release --target wasm32-wasip2",
        ],
    );
}

#[tokio::test]
async fn memory_above_the_pool_maximum_is_rejected_by_check() {
    // The test pool's largest memory is 128 MiB.
    let (kind, msg) = the_failure(
        "name = \"bad\"\ncomponent = \"{echo}\"\n[limits]\nmemory_mb = 256\n",
        |_| {},
    )
    .await;
    assert_eq!(kind, LoadErrorKind::Manifest);
    assert_mentions(
        &msg,
        &[
            "limits.memory_mb = 256 is out of range",
            "1 to 128",
            "pool.max_memory_mb",
        ],
    );
}

#[tokio::test]
async fn duplicate_names_keep_the_first_action() {
    let (kind, msg) = the_failure("name = \"echo\"\ncomponent = \"{echo}\"\n", |_| {}).await;
    assert_eq!(kind, LoadErrorKind::Manifest);
    assert_mentions(
        &msg,
        &["name = \"echo\" is already used by", "good/action.toml"],
    );
}

#[tokio::test]
async fn deployment_config_override_reaches_the_plugin_and_the_allowlist() {
    let actions = Actions::new();
    actions.add(
        "echo",
        "name = \"echo\"\ncomponent = \"{echo}\"\n[config]\ngreeting = \"from action.toml\"\n\
         base_url = \"https://api.example.com\"\n[http]\nallow = [\"{{config.base_url}}\"]\n",
    );
    let data = tempfile::tempdir().unwrap();
    let mut options = callout::RuntimeOptions::new(data.path());
    let mut config = small_pool_config();
    let over = callout::HostConfig::parse(
        "[actions.echo.config]\ngreeting = \"from callout.toml\"\nbase_url = \"https://orders.example.org\"\n",
    )
    .unwrap();
    config.actions = over.actions;
    options.config = config;
    let rt = callout::Runtime::new(options).unwrap();
    let reg = load_all(&rt, &actions).await;
    let echo = reg.get("echo").unwrap();
    assert_eq!(
        echo.manifest().http.allow.entries()[0].origin(),
        "https://orders.example.org:443"
    );
    let out = call(&echo, json!({"message": "hi"})).await.result.unwrap();
    assert_eq!(out.data["greeting"], "from callout.toml");
}

#[tokio::test]
async fn a_symlinked_action_folder_is_loaded() {
    let real = Actions::new();
    real.add("echo", "name = \"echo\"\ncomponent = \"{echo}\"\n");
    let actions = Actions::new();
    std::os::unix::fs::symlink(real.path().join("echo"), actions.path().join("echo")).unwrap();
    let (rt, _data) = runtime();
    let reg = Registry::load_dir(&rt, actions.path()).await.unwrap();
    assert!(reg.get("echo").is_some(), "{:#?}", reg.failures());
}
