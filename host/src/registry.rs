//! All loaded actions by name, loaded from a directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{LoadError, LoadErrorKind};
use crate::plugin::{Plugin, Runtime};

/// Name → action. Actions that failed to load are kept as errors beside the good ones: one bad
/// action never stops the others.
#[derive(Default)]
pub struct Registry {
    plugins: BTreeMap<String, Arc<Plugin>>,
    failures: Vec<LoadError>,
}

impl Registry {
    /// Loads every `<dir>/*/action.toml` (one level deep, in name order; `target/` and hidden
    /// folders are skipped).
    ///
    /// # Errors
    /// Only when `dir` itself cannot be read; problems of single actions are in
    /// [`Registry::failures`].
    pub async fn load_dir(runtime: &Runtime, dir: &Path) -> anyhow::Result<Self> {
        let entries = std::fs::read_dir(dir).map_err(|e| {
            anyhow::anyhow!(
                "cannot read the actions directory {} ({e}); pass --actions <dir>",
                dir.display()
            )
        })?;
        let mut manifests: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter(|e| {
                let n = e.file_name();
                let n = n.to_string_lossy();
                n != "target" && !n.starts_with('.')
            })
            .map(|e| e.path().join("action.toml"))
            .filter(|p| p.is_file())
            .collect();
        manifests.sort();
        let mut registry = Self::default();
        for path in manifests {
            registry.load_one(runtime, &path).await;
        }
        Ok(registry)
    }

    /// Loads one manifest into the registry, recording a failure if it does not load.
    pub async fn load_one(&mut self, runtime: &Runtime, manifest: &Path) {
        match runtime.load(manifest).await {
            Ok(plugin) => {
                if let Some(existing) = self.plugins.get(plugin.name()) {
                    self.failures.push(LoadError::new(
                        LoadErrorKind::Manifest,
                        manifest,
                        format!(
                            "name = {:?} is already used by {}; give each action its own name",
                            plugin.name(),
                            existing.manifest().path.display()
                        ),
                    ));
                    return;
                }
                tracing::debug!(action = plugin.name(), cache = ?plugin.cache_status(), "loaded");
                self.plugins
                    .insert(plugin.name().to_string(), Arc::new(plugin));
            }
            Err(e) => {
                tracing::warn!("{e}");
                self.failures.push(e);
            }
        }
    }

    /// The action called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Plugin>> {
        self.plugins.get(name).cloned()
    }

    /// Loaded actions in name order.
    pub fn plugins(&self) -> impl Iterator<Item = &Arc<Plugin>> {
        self.plugins.values()
    }

    /// Actions that failed to load, with why.
    pub fn failures(&self) -> &[LoadError] {
        &self.failures
    }
}
