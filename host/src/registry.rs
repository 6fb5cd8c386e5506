//! All loaded actions by name, loaded from a directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{LoadError, LoadErrorKind};
use crate::plugin::{Plugin, Runtime};

/// Name → action. Actions that failed to load are kept as errors beside the good ones: one bad
/// action never stops the others.
///
/// A registry is a value: changing the set of actions at run time means building a new one
/// ([`Registry::with`], [`Registry::without`]) and publishing it through [`Actions`], so a call
/// that already holds an `Arc<Plugin>` finishes on the version it started with.
#[derive(Default, Clone)]
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
        let manifests: Vec<PathBuf> = action_folders(dir)?
            .into_iter()
            .map(|f| f.join("action.toml"))
            .collect();
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
                    self.failures.push(
                        LoadError::new(
                            LoadErrorKind::Manifest,
                            manifest,
                            format!(
                                "name = {:?} is already used by {}; give each action its own name",
                                plugin.name(),
                                existing.manifest().path.display()
                            ),
                        )
                        .for_manifest(manifest),
                    );
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

    /// A copy with `plugin` added, or replacing the action of the same name, and any recorded
    /// failure of its manifest dropped.
    pub fn with(&self, plugin: Arc<Plugin>) -> Self {
        let mut next = self.clone();
        let manifest = plugin.manifest().path.clone();
        next.failures
            .retain(|f| Some(f.action_folder()) != manifest.parent());
        next.plugins.insert(plugin.name().to_string(), plugin);
        next
    }

    /// A copy without the action `name`, and without failures recorded for files in `folder`
    /// (when given).
    pub fn without(&self, name: Option<&str>, folder: Option<&Path>) -> Self {
        let mut next = self.clone();
        if let Some(name) = name {
            next.plugins.remove(name);
        }
        if let Some(folder) = folder {
            next.failures.retain(|f| f.action_folder() != folder);
        }
        next
    }

    /// A copy that records `error` as the failure of the action in `folder`, replacing an
    /// earlier failure there. A loaded version of that action (if any) stays loaded.
    pub fn with_failure(&self, folder: &Path, error: LoadError) -> Self {
        let mut next = self.without(None, Some(folder));
        next.failures.push(error);
        next
    }
}

/// The action folders of `dir`: `<dir>/*/` holding an `action.toml`, one level deep, in name
/// order (symlinked folders included); `target/` and hidden folders (staging folders of
/// uploads included) are skipped.
///
/// # Errors
/// When `dir` itself cannot be read.
pub fn action_folders(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        anyhow::anyhow!(
            "cannot read the actions directory {} ({e}); pass --actions <dir>",
            dir.display()
        )
    })?;
    let mut folders: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n != "target" && !n.starts_with('.')
        })
        .map(|e| e.path())
        // `is_dir` follows symlinks: a linked action folder is loaded like a real one.
        .filter(|p| p.is_dir() && p.join("action.toml").is_file())
        .collect();
    folders.sort();
    Ok(folders)
}

/// The current set of actions of a running host, swapped as a whole when actions are added,
/// replaced or removed.
///
/// Readers take a [`Actions::snapshot`] (an `Arc` clone under a short read lock) and use it
/// for the whole request; writers publish a new [`Registry`]. In-flight calls keep the
/// `Arc<Plugin>` they started with, so a replaced version lives until its last call ends.
pub struct Actions {
    current: std::sync::RwLock<Arc<Registry>>,
    changed: tokio::sync::watch::Sender<()>,
}

impl Default for Actions {
    fn default() -> Self {
        Self::new(Registry::default())
    }
}

impl Actions {
    /// Starts with `registry`.
    pub fn new(registry: impl Into<Arc<Registry>>) -> Self {
        Self {
            current: std::sync::RwLock::new(registry.into()),
            changed: tokio::sync::watch::Sender::new(()),
        }
    }

    /// A receiver marked changed at every [`Actions::publish`] (MCP clients are told that the
    /// tool list changed).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<()> {
        self.changed.subscribe()
    }

    /// The actions now.
    pub fn snapshot(&self) -> Arc<Registry> {
        // A poisoned lock only means a writer panicked between two complete registries; the
        // value inside is still a whole registry.
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Publishes `next` as the current set.
    pub fn publish(&self, next: Registry) {
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(next);
        self.changed.send_replace(());
    }
}
