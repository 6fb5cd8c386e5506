//! `callout new <name> --lang rust|python|js`: a working action to start from: source,
//! `action.toml`, build configuration, and a `tests.toml` of stored test cases (a found item,
//! an unknown one, a missing input, the upstream failing) that `callout test <name>` runs
//! offline with their recorded responses, so the scaffold asserts real behaviour from the first
//! minute and passes the publish gate as soon as it is built.
//!
//! The templates live in `host/templates/<lang>/` and are compiled into the binary. Writing
//! one replaces `{{name}}`, `{{snake_name}}` and `{{guest_sdk}}` in every file and nothing
//! else, so the `{{config.KEY}}`, `{{secret.NAME}}` and `{{idempotency_key}}` placeholders of
//! manifests, sources and test cases reach the new folder as written.

use std::path::{Path, PathBuf};

use super::{CliError, GlobalArgs};

/// Arguments of `callout new`.
#[derive(Debug, clap::Args)]
pub struct NewArgs {
    /// The action's name: lower-case letters, digits and `-` (e.g. `order-lookup`).
    pub name: String,
    /// rust (the callout-guest SDK), python (componentize-py) or js (componentize-js).
    #[arg(long, default_value = "rust")]
    pub lang: String,
}

/// One language's template: (path in the new folder, text).
type Template = &'static [(&'static str, &'static str)];

const RUST: Template = &[
    (
        "Cargo.toml",
        include_str!("../../templates/rust/Cargo.toml"),
    ),
    (
        "src/lib.rs",
        include_str!("../../templates/rust/src/lib.rs"),
    ),
    (
        "action.toml",
        include_str!("../../templates/rust/action.toml"),
    ),
    ("README.md", include_str!("../../templates/rust/README.md")),
    (
        "tests.toml",
        include_str!("../../templates/rust/tests.toml"),
    ),
];

const PYTHON: Template = &[
    ("app.py", include_str!("../../templates/python/app.py")),
    (
        "action.toml",
        include_str!("../../templates/python/action.toml"),
    ),
    (
        "README.md",
        include_str!("../../templates/python/README.md"),
    ),
    (
        "tests.toml",
        include_str!("../../templates/python/tests.toml"),
    ),
];

const JS: Template = &[
    ("action.js", include_str!("../../templates/js/action.js")),
    (
        "action.toml",
        include_str!("../../templates/js/action.toml"),
    ),
    ("README.md", include_str!("../../templates/js/README.md")),
    ("tests.toml", include_str!("../../templates/js/tests.toml")),
];

/// The languages `--lang` takes, with their templates.
pub const LANGUAGES: [(&str, Template); 3] = [("rust", RUST), ("python", PYTHON), ("js", JS)];

impl NewArgs {
    /// Writes the template into `<actions>/<name>/`.
    ///
    /// # Errors
    /// A bad name or language, or a folder that already exists.
    pub async fn run(self, global: &GlobalArgs) -> anyhow::Result<()> {
        let dir = scaffold(&global.actions, &self.name, &self.lang)?;
        println!("created {} ({})", dir.display(), self.lang);
        println!(
            "next: callout build {}  then  callout check  then  callout test {}",
            dir.display(),
            self.name
        );
        Ok(())
    }
}

/// Writes the `lang` template for action `name` into `<parent>/<name>/` and returns the folder.
///
/// # Errors
/// [`CliError::Usage`] for a bad name or language, or an existing folder; I/O errors.
pub fn scaffold(parent: &Path, name: &str, lang: &str) -> anyhow::Result<PathBuf> {
    crate::manifest::check_name(name).map_err(CliError::Usage)?;
    let template = LANGUAGES
        .iter()
        .find(|(l, _)| *l == lang)
        .map(|(_, t)| *t)
        .ok_or_else(|| {
            let names: Vec<&str> = LANGUAGES.iter().map(|(l, _)| *l).collect();
            CliError::Usage(format!(
                "--lang {lang:?} is not one of {}",
                names.join(", ")
            ))
        })?;
    let dir = parent.join(name);
    if dir.exists() {
        return Err(CliError::Usage(format!(
            "{} already exists; pick another name or remove it",
            dir.display()
        ))
        .into());
    }
    let snake = name.replace('-', "_");
    let guest_sdk = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../guest-sdk")
        .canonicalize()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "../guest-sdk".into());
    for (rel, text) in template {
        let path = dir.join(rel);
        if let Some(p) = path.parent() {
            std::fs::create_dir_all(p)?;
        }
        let text = text
            .replace("{{name}}", name)
            .replace("{{snake_name}}", &snake)
            .replace("{{guest_sdk}}", &guest_sdk);
        std::fs::write(&path, text)?;
    }
    Ok(dir)
}
