//! Errors of loading: each names the file, the field and the fix.
//!
//! Call failures of actions are not errors of the host; they are [`crate::call::Failure`]s.

use std::fmt;
use std::path::PathBuf;

/// `callout.toml` could not be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid config {}: {message}", path.display())]
pub struct ConfigError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// What kind of input was rejected while loading an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadErrorKind {
    /// `action.toml` is not valid.
    Manifest,
    /// The component file named by `component` does not exist.
    MissingComponent,
    /// The file is not a usable component (not wasm, a core module, the wrong world, ...).
    Component,
    /// The manifest and the component's `describe()` disagree.
    Contradiction,
    /// The component misbehaved while being described (trap, deadline).
    Describe,
    /// The compile cache could not be used (a directory that cannot be created, say).
    Cache,
    /// The version loads but did not pass the publish gate (its test cases or the lints).
    Gate,
}

impl fmt::Display for LoadErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Manifest => "invalid manifest",
            Self::MissingComponent => "missing component",
            Self::Component => "invalid component",
            Self::Contradiction => "manifest contradicts component",
            Self::Describe => "describe() failed in",
            Self::Cache => "compile cache error for",
            Self::Gate => "publish gate refused",
        })
    }
}

/// One action could not be loaded. The other actions are unaffected.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{kind} {}: {detail}", file.display())]
pub struct LoadError {
    /// What kind of problem.
    pub kind: LoadErrorKind,
    /// The file at fault (the manifest or the component).
    pub file: PathBuf,
    /// The field, the problem and the fix, in one sentence.
    pub detail: String,
    /// The folder of the action's `action.toml`, when known ([`crate::Runtime::load`] sets it
    /// on every error): which action failed, even when `file` is a component elsewhere.
    pub folder: Option<PathBuf>,
}

impl LoadError {
    /// Builds an error about `file`.
    pub fn new(kind: LoadErrorKind, file: impl Into<PathBuf>, detail: impl Into<String>) -> Self {
        Self {
            kind,
            file: file.into(),
            detail: detail.into(),
            folder: None,
        }
    }

    /// The same error, for the action whose `action.toml` is `manifest`.
    pub fn for_manifest(mut self, manifest: &std::path::Path) -> Self {
        self.folder = manifest.parent().map(std::path::Path::to_path_buf);
        self
    }

    /// The failing action's folder: [`LoadError::folder`], else the folder of `file`.
    pub fn action_folder(&self) -> &std::path::Path {
        self.folder
            .as_deref()
            .or_else(|| self.file.parent())
            .unwrap_or(std::path::Path::new(""))
    }
}
