//! `callout new` → `callout build` → `callout check` → `callout test <name>` for every
//! language, so the templates cannot rot: each scaffold must build, load, and pass every stored
//! case of the `tests.toml` it ships (a found item, a not-found, a missing input, the upstream
//! failing), the way its README says. One `callout test --mock` run with a recorded response
//! written here keeps the one-off mode covered too.
//!
//! Python and JavaScript need the pinned tools that `./dev setup` installs (`.venv`,
//! `node_modules`); without them these tests fail and say so.

use std::path::Path;
use std::process::{Command, Output};

fn callout(actions: &Path, data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_callout"))
        .arg("--actions")
        .arg(actions)
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env_remove("CALLOUT_LOG")
        // The repository's pinned tools (./dev setup), wherever the scaffold is.
        .env(
            "CALLOUT_COMPONENTIZE_PY",
            crate::support::repo().join(".venv/bin/componentize-py"),
        )
        .env(
            "CALLOUT_COMPONENTIZE_JS",
            crate::support::repo().join("node_modules/.bin/componentize-js"),
        )
        .env(
            "CALLOUT_COMPONENTIZE_QJS",
            crate::support::repo().join("node_modules/.bin/componentize-qjs"),
        )
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `js_engine`: a JavaScript scaffold built with that engine (`[build] js_engine`).
fn scaffold_builds_checks_and_passes_its_own_tests(lang: &str, js_engine: Option<&str>) {
    let root = tempfile::tempdir().unwrap();
    let actions = root.path().join("actions");
    let data = root.path().join("data");
    std::fs::create_dir_all(&actions).unwrap();
    let name = format!("item-lookup-{lang}");

    let out = callout(&actions, &data, &["new", &name, "--lang", lang]);
    assert!(out.status.success(), "new: {}", text(&out.stderr));
    let dir = actions.join(&name);
    assert!(dir.join("action.toml").is_file());
    if let Some(engine) = js_engine {
        let manifest = dir.join("action.toml");
        let text_of = std::fs::read_to_string(&manifest).unwrap();
        // An unknown engine is refused by build, naming the section and the choices.
        std::fs::write(
            &manifest,
            format!("{text_of}\n[build]\njs_engine = \"v8\"\n"),
        )
        .unwrap();
        let out = callout(&actions, &data, &["build", dir.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
        let err = text(&out.stderr);
        assert!(
            err.contains("[build]") && err.contains("\"quickjs\""),
            "{err}"
        );
        std::fs::write(
            &manifest,
            format!("{text_of}\n[build]\njs_engine = \"{engine}\"\n"),
        )
        .unwrap();
    }
    let again = callout(&actions, &data, &["new", &name, "--lang", lang]);
    assert_eq!(
        again.status.code(),
        Some(2),
        "an existing folder is not overwritten"
    );

    let out = callout(&actions, &data, &["build", dir.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "build ({lang}): {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    if let Some(engine) = js_engine {
        // Built by the engine asked for: QuickJS components are ~1.7 MB, SpiderMonkey's ~12 MB.
        let wasm = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "wasm"))
            .expect("the built component");
        let size = std::fs::metadata(&wasm).unwrap().len();
        assert_eq!(engine, "quickjs");
        assert!(size < 4_000_000, "{} is {size} bytes", wasm.display());
    }
    let out = callout(&actions, &data, &["check"]);
    assert!(
        out.status.success(),
        "check ({lang}): {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains(&name), "{}", text(&out.stdout));

    // The stored cases the template ships, run offline through the real component: all pass.
    let cases: toml::Table =
        toml::from_str(&std::fs::read_to_string(dir.join("tests.toml")).unwrap()).unwrap();
    let n = cases["case"].as_array().unwrap().len();
    assert!(n >= 4, "the {lang} template ships {n} cases");
    let out = callout(&actions, &data, &["test", &name]);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "test ({lang}): {stdout}{}",
        text(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("{n} passed, 0 failed")),
        "test ({lang}): {stdout}"
    );
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("ok ")).count(),
        n,
        "{stdout}"
    );

    // One call in --mock mode, answered from a recorded response written here.
    let mock = root.path().join("found.json");
    std::fs::write(
        &mock,
        r#"{"status": 200, "headers": {"content-type": "application/json"}, "body": {"id": "A-1", "name": "a red gadget"}}"#,
    )
    .unwrap();
    let out = callout(
        &actions,
        &data,
        &[
            "test",
            &name,
            "--input",
            r#"{"id": "A-1"}"#,
            "--mock",
            mock.to_str().unwrap(),
        ],
    );
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "test --mock ({lang}): {stdout}{}",
        text(&out.stderr)
    );
    assert!(
        stdout.contains("the user would see: A-1 is a red gadget."),
        "{stdout}"
    );
    // Missing input: nothing is called, the question is asked.
    let out = callout(
        &actions,
        &data,
        &["test", &name, "--input", "{}", "--dry-run"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("inputs: not complete"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn rust_scaffold() {
    scaffold_builds_checks_and_passes_its_own_tests("rust", None);
}

#[test]
fn unknown_languages_and_bad_names_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let out = callout(root.path(), root.path(), &["new", "x", "--lang", "cobol"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("rust"), "{}", text(&out.stderr));
    let out = callout(root.path(), root.path(), &["new", "Bad Name"]);
    assert_eq!(out.status.code(), Some(2));
    let out = callout(
        root.path(),
        root.path(),
        &["build", root.path().to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("callout new"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn python_scaffold() {
    scaffold_builds_checks_and_passes_its_own_tests("python", None);
}

#[test]
fn js_scaffold() {
    scaffold_builds_checks_and_passes_its_own_tests("js", None);
}

/// The same template, built with QuickJS: one source for both engines.
#[test]
fn js_quickjs_scaffold() {
    scaffold_builds_checks_and_passes_its_own_tests("js", Some("quickjs"));
}
