//! `callout build <dir>`: builds an action's component with its language's tool:
//!
//! - Rust (`Cargo.toml`): `cargo build --release --target wasm32-wasip2`;
//! - Python (`app.py`): componentize-py against Callout's WIT;
//! - JavaScript (`action.js`): the componentize-js CLI (SpiderMonkey) against Callout's WIT, or
//!   componentize-qjs (QuickJS) when action.toml says `[build] js_engine = "quickjs"`.
//!
//! The WIT files are compiled into the binary and written to a temporary folder for the
//! Python and JavaScript tools, so a plugin folder builds anywhere. Each tool is found, in this
//! order: `CALLOUT_COMPONENTIZE_PY` / `CALLOUT_COMPONENTIZE_JS` / `CALLOUT_COMPONENTIZE_QJS` (a
//! path), the nearest `.venv/bin/componentize-py` or `node_modules/.bin/componentize-js` (or
//! `-qjs`) above the folder, then above the working directory, then on `PATH`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

use super::{CliError, GlobalArgs};
use crate::manifest::JsEngine;

/// Arguments of `callout build`.
#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// The action's folder (with Cargo.toml, app.py or action.js, and action.toml).
    pub dir: PathBuf,
}

/// Callout's WIT package, as the guest tools need it.
pub const WIT: [(&str, &str); 5] = [
    ("world.wit", include_str!("../../../wit/world.wit")),
    ("action.wit", include_str!("../../../wit/action.wit")),
    (
        "outbound-http.wit",
        include_str!("../../../wit/outbound-http.wit"),
    ),
    ("log.wit", include_str!("../../../wit/log.wit")),
    ("config.wit", include_str!("../../../wit/config.wit")),
];

/// The language of an action folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// A cargo project.
    Rust,
    /// `app.py`.
    Python,
    /// `action.js`.
    Js,
}

/// The guest tool that builds a Python or JavaScript action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tool {
    /// componentize-py.
    Py,
    /// componentize-js (SpiderMonkey).
    Js,
    /// componentize-qjs (QuickJS).
    Qjs,
}

/// What is in `dir`.
pub fn detect(dir: &Path) -> Option<Lang> {
    if dir.join("Cargo.toml").is_file() {
        Some(Lang::Rust)
    } else if dir.join("app.py").is_file() {
        Some(Lang::Python)
    } else if dir.join("action.js").is_file() {
        Some(Lang::Js)
    } else {
        None
    }
}

impl BuildArgs {
    /// Builds the component.
    ///
    /// # Errors
    /// An unknown folder layout, a missing tool (with how to install it), or a failed build
    /// (the tool's output is shown).
    pub async fn run(self, _global: &GlobalArgs) -> anyhow::Result<()> {
        let out = build(&self.dir)?;
        println!("built {}", out.display());
        Ok(())
    }
}

/// Builds the action in `dir` and returns the component's path (the manifest's `component`).
///
/// # Errors
/// As [`BuildArgs::run`].
pub fn build(dir: &Path) -> anyhow::Result<PathBuf> {
    let lang = detect(dir).ok_or_else(|| {
        CliError::Usage(format!(
            "{} has no Cargo.toml, app.py or action.js; create one with `callout new`",
            dir.display()
        ))
    })?;
    let manifest = std::fs::read_to_string(dir.join("action.toml"))
        .map_err(|e| CliError::Usage(format!("cannot read {}/action.toml: {e}", dir.display())))?;
    let table: toml::Table = toml::from_str(&manifest).map_err(|e| {
        CliError::Usage(format!(
            "{}/action.toml: {}",
            dir.display(),
            crate::config::one_line(&e.to_string())
        ))
    })?;
    let engine = match table.get("build") {
        Some(b) => crate::manifest::BuildSpec::deserialize(b.clone())
            .map_err(|e| {
                CliError::Usage(format!(
                    "{}/action.toml: [build]: {}; js_engine is \"spidermonkey\" (the default) or \"quickjs\"",
                    dir.display(),
                    crate::config::one_line(&e.to_string())
                ))
            })?
            .js_engine,
        None => JsEngine::default(),
    };
    let component = table
        .get("component")
        .and_then(toml::Value::as_str)
        .ok_or_else(|| {
            CliError::Usage(format!("{}/action.toml has no component", dir.display()))
        })?;
    // Absolute: the tool runs in `dir`, and `dir` may be relative to here.
    let out = dir
        .canonicalize()
        .map_err(|e| CliError::Usage(format!("cannot use {}: {e}", dir.display())))?
        .join(component);
    // The WIT folder lives until the build is over, then is removed.
    let mut wit: Option<tempfile::TempDir> = None;
    let mut cmd = match lang {
        Lang::Rust => {
            let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
            c.args(["build", "--release", "--target", "wasm32-wasip2"])
                .env_remove("RUSTFLAGS")
                .env_remove("CARGO_ENCODED_RUSTFLAGS")
                .env_remove("CARGO_TARGET_DIR")
                .env_remove("CARGO_BUILD_TARGET");
            c
        }
        Lang::Python | Lang::Js => {
            let tool = match (lang, engine) {
                (Lang::Python, _) => Tool::Py,
                (_, JsEngine::Spidermonkey) => Tool::Js,
                (_, JsEngine::Quickjs) => Tool::Qjs,
            };
            let folder = wit.insert(write_wit()?);
            let mut c = guest_tool(dir, tool)?;
            guest_args(&mut c, tool, folder.path(), &out);
            c
        }
    };
    cmd.current_dir(dir);
    let status = cmd
        .status()
        .map_err(|e| CliError::Usage(format!("cannot run {:?}: {e}", cmd.get_program())))?;
    drop(wit);
    if !status.success() {
        return Err(CliError::Usage(format!(
            "building {} failed ({status}); see the tool's output above",
            dir.display()
        ))
        .into());
    }
    if !out.is_file() {
        return Err(CliError::Usage(format!(
            "the build succeeded but {} is not there; check component in action.toml",
            out.display()
        ))
        .into());
    }
    Ok(out)
}

fn write_wit() -> anyhow::Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new().prefix("callout-wit").tempdir()?;
    for (name, text) in WIT {
        std::fs::write(dir.path().join(name), text)?;
    }
    Ok(dir)
}

/// The nearest `rel` (e.g. `.venv/bin/componentize-py`) in `dir` or a folder above it.
fn find_up(dir: &Path, rel: &str) -> Option<PathBuf> {
    let start = dir.canonicalize().ok()?;
    start.ancestors().map(|a| a.join(rel)).find(|p| p.is_file())
}

fn guest_tool(dir: &Path, tool: Tool) -> anyhow::Result<Command> {
    let (var, local, name, install) = match tool {
        Tool::Py => (
            "CALLOUT_COMPONENTIZE_PY",
            ".venv/bin/componentize-py",
            "componentize-py",
            "pip install componentize-py (the repo's ./dev setup installs it into .venv)",
        ),
        Tool::Js => (
            "CALLOUT_COMPONENTIZE_JS",
            "node_modules/.bin/componentize-js",
            "componentize-js",
            "npm install @bytecodealliance/componentize-js (the repo's ./dev setup runs npm ci)",
        ),
        Tool::Qjs => (
            "CALLOUT_COMPONENTIZE_QJS",
            "node_modules/.bin/componentize-qjs",
            "componentize-qjs",
            "npm install componentize-qjs (the repo's ./dev setup runs npm ci)",
        ),
    };
    if let Some(p) = std::env::var_os(var).filter(|p| !p.is_empty()) {
        return Ok(Command::new(p));
    }
    let cwd = std::env::current_dir().unwrap_or_default();
    if let Some(p) = find_up(dir, local).or_else(|| find_up(&cwd, local)) {
        return Ok(Command::new(p));
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join(name).is_file()))
        .unwrap_or(false);
    if on_path {
        Ok(Command::new(name))
    } else {
        Err(CliError::Usage(format!(
            "{name} is not installed (looked in {local} above {} and on PATH); {install}",
            dir.display()
        ))
        .into())
    }
}

fn guest_args(cmd: &mut Command, tool: Tool, wit: &Path, out: &Path) {
    match tool {
        Tool::Py => {
            cmd.arg("-d")
                .arg(wit)
                .args(["-w", "action-plugin", "componentize", "app", "-o"])
                .arg(out);
        }
        // `--sync`: the host runs without the component model's async ABI
        // (`concurrency_support(false)`).
        Tool::Qjs => {
            cmd.args(["--js", "action.js", "--wit"])
                .arg(wit)
                .args(["--world", "action-plugin", "--sync", "-o"])
                .arg(out);
        }
        Tool::Js => {
            cmd.arg("action.js")
                .arg("--wit")
                .arg(wit)
                .args(["--world-name", "action-plugin"])
                .args(["-d", "stdio", "random", "clocks", "http", "fetch-event"])
                .arg("-o")
                .arg(out);
        }
    }
}
