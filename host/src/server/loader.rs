//! Changing actions while the server runs: uploads and removals through the admin API, and a
//! watcher over the actions directory. Both follow the same rules:
//!
//! - a new version is loaded (manifest checked, component compiled, `describe()` cross-checked)
//!   **before** it replaces the old one;
//! - a version that does not load is rejected with the reason, recorded as the action's
//!   failure, and the old version keeps serving;
//! - the swap publishes a new [`Registry`] through [`Actions`]; calls in flight hold the
//!   `Arc<Plugin>` they started with and finish on it.
//!
//! - a version that loads is published only when it passes the publish gate
//!   ([`crate::gate`]): its test cases and the lints. A version that does not is rejected like
//!   one that does not load.
//!
//! Changes are serialized by one lock, so an upload and a scan never interleave.
//!
//! The watcher polls (default every second, `server.watch_interval_ms`) instead of using
//! inotify: it works the same on every platform and file system (network and container
//! mounts included), it has no watch limits to exhaust, and it compares cheap fingerprints
//! (size and modification time of `action.toml` and of its component). A change is acted on
//! only once its fingerprint has been the same for two scans in a row, so a file that is
//! still being written is never loaded half-way.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::error::{LoadError, LoadErrorKind};
use crate::gate::Gate;
use crate::plugin::{Plugin, Runtime};
use crate::registry::{Actions, Registry, action_folders};

/// Size and modification time of an action's files.
type Fingerprint = Vec<(u64, Option<SystemTime>)>;

#[derive(Default)]
struct Seen {
    /// Folder → the fingerprint acted on last, and the action name it produced (if it loaded).
    applied: BTreeMap<PathBuf, (Fingerprint, Option<String>)>,
    /// Folder → the fingerprint seen at the previous scan, not yet acted on.
    pending: BTreeMap<PathBuf, Fingerprint>,
}

/// What a scan changed.
#[derive(Debug, Default, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ScanReport {
    /// Actions loaded for the first time.
    pub added: Vec<String>,
    /// Actions replaced by a new version.
    pub replaced: Vec<String>,
    /// Actions removed (their folder is gone).
    pub removed: Vec<String>,
    /// Folders whose new version did not load, with why (an old version keeps serving).
    pub failed: Vec<String>,
}

impl ScanReport {
    fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.replaced.is_empty()
            && self.removed.is_empty()
            && self.failed.is_empty()
    }
}

/// Why an upload or a removal was refused.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// The request is wrong (a bad name, a missing part, a component path outside the folder).
    #[error("{0}")]
    BadRequest(String),
    /// The new version does not load; the old one keeps serving.
    #[error("{0}")]
    Rejected(String),
    /// No such action.
    #[error("no action named {0:?}")]
    NotFound(String),
    /// The file system failed.
    #[error("{0}")]
    Io(String),
}

/// Loads, replaces and removes actions of one directory at run time.
pub struct Loader {
    runtime: Arc<Runtime>,
    dir: PathBuf,
    actions: Arc<Actions>,
    gate: Arc<Gate>,
    seen: tokio::sync::Mutex<Seen>,
}

impl Loader {
    /// A loader for `dir`, publishing into `actions` the versions `gate` admits. Nothing is
    /// loaded until [`Loader::scan`] (the first scan loads every action at once).
    pub fn new(
        runtime: Arc<Runtime>,
        dir: PathBuf,
        actions: Arc<Actions>,
        gate: Arc<Gate>,
    ) -> Self {
        Self {
            runtime,
            dir,
            actions,
            gate,
            seen: tokio::sync::Mutex::new(Seen::default()),
        }
    }

    /// The publish gate.
    pub fn gate(&self) -> &Arc<Gate> {
        &self.gate
    }

    /// Runs the gate on `plugin`, given the conversation variables `known` across the
    /// deployment ([`known_variables`]).
    async fn admit(
        &self,
        plugin: &Plugin,
        known: &std::collections::BTreeSet<String>,
    ) -> Result<(), LoadError> {
        let verdict = self.gate.check(plugin, known).await;
        if crate::gate::admits(&verdict) {
            Ok(())
        } else {
            tracing::warn!(action = plugin.name(), "{}", verdict.message());
            Err(crate::gate::load_error(plugin, &verdict))
        }
    }

    /// The actions directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Scans the directory and applies what changed. With `settle` (the watcher), a change is
    /// applied only when it looked the same at the previous scan; without (the first load, the
    /// reload endpoint), at once.
    ///
    /// # Errors
    /// Only when the directory itself cannot be read.
    pub async fn scan(&self, settle: bool) -> anyhow::Result<ScanReport> {
        let mut seen = self.seen.lock().await;
        let folders = action_folders(&self.dir)?;
        let mut report = ScanReport::default();
        let mut registry = (*self.actions.snapshot()).clone();

        // Folders that disappeared: their action goes too.
        let gone: Vec<PathBuf> = seen
            .applied
            .keys()
            .filter(|f| !folders.contains(f))
            .cloned()
            .collect();
        for folder in gone {
            if let Some((_, name)) = seen.applied.remove(&folder) {
                registry = registry.without(name.as_deref(), Some(&folder));
                if let Some(name) = name {
                    report.removed.push(name);
                }
            }
            seen.pending.remove(&folder);
        }

        // Load every changed folder first, then gate them: a version's lints may rely on the
        // variables another action of the same scan sets.
        let mut loaded = Vec::new();
        for folder in folders {
            let fp = fingerprint(&folder);
            if seen.applied.get(&folder).is_some_and(|(f, _)| *f == fp) {
                seen.pending.remove(&folder);
                continue;
            }
            if settle && seen.pending.get(&folder) != Some(&fp) {
                seen.pending.insert(folder, fp);
                continue;
            }
            seen.pending.remove(&folder);
            let manifest = folder.join("action.toml");
            let result = self.runtime.load(&manifest).await;
            loaded.push((folder, fp, result));
        }
        let mut refused = Vec::new();
        {
            let fresh: Vec<&Plugin> = loaded
                .iter()
                .filter_map(|(_, _, r)| r.as_ref().ok())
                .collect();
            let known = known_variables(&registry, &fresh);
            for (i, (_, _, result)) in loaded.iter().enumerate() {
                if let Ok(plugin) = result
                    && let Err(e) = self.admit(plugin, &known).await
                {
                    refused.push((i, e));
                }
            }
        }
        for (i, e) in refused {
            loaded[i].2 = Err(e);
        }
        for (folder, fp, result) in loaded {
            let old_name = seen.applied.get(&folder).and_then(|(_, n)| n.clone());
            match result {
                Ok(plugin) => match claim(&registry, &folder, plugin) {
                    Ok(plugin) => {
                        let name = plugin.name().to_string();
                        if old_name.as_deref().is_some_and(|o| o != name) {
                            registry = registry.without(old_name.as_deref(), None);
                        }
                        if registry.get(&name).is_some() {
                            report.replaced.push(name.clone());
                        } else {
                            report.added.push(name.clone());
                        }
                        tracing::info!(action = %name, folder = %folder.display(), "loaded");
                        registry = registry.with(plugin);
                        seen.applied.insert(folder, (fp, Some(name)));
                    }
                    Err(e) => {
                        report.failed.push(e.to_string());
                        registry = registry.with_failure(&folder, e);
                        seen.applied.insert(folder, (fp, old_name));
                    }
                },
                Err(e) => {
                    tracing::warn!("{e}; the previous version (if any) keeps serving");
                    report.failed.push(e.to_string());
                    registry = registry.with_failure(&folder, e);
                    seen.applied.insert(folder, (fp, old_name));
                }
            }
        }
        if !report.is_empty() {
            self.actions.publish(registry);
        }
        Ok(report)
    }

    /// Runs [`Loader::scan`] every `interval` until `stop` is cancelled.
    pub async fn watch(
        self: Arc<Self>,
        interval: Duration,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            match self.scan(true).await {
                Ok(r) if !r.is_empty() => tracing::info!(?r, "actions directory changed"),
                Ok(_) => {}
                Err(e) => tracing::warn!("cannot scan the actions directory: {e}"),
            }
        }
    }

    /// Installs a new action, or a new version of `name`: the manifest and the component are
    /// written to a staging folder, loaded from there, and only when they load is the folder
    /// swapped in and the new version published.
    ///
    /// `component` is the file's bytes; it is stored under the manifest's `component` path,
    /// which for uploads must be a plain file name in the action's folder. A `builtin:`
    /// manifest takes no component.
    ///
    /// # Errors
    /// [`ChangeError::BadRequest`] for a bad name or part, [`ChangeError::Rejected`] when the
    /// version does not load (the old one keeps serving), [`ChangeError::Io`] on a file system
    /// failure.
    pub async fn install(
        &self,
        name: &str,
        manifest: &[u8],
        component: Option<&[u8]>,
        tests: Option<&[u8]>,
    ) -> Result<Arc<Plugin>, ChangeError> {
        crate::manifest::check_name(name).map_err(ChangeError::BadRequest)?;
        let text = std::str::from_utf8(manifest)
            .map_err(|_| ChangeError::BadRequest("the manifest is not UTF-8 text".into()))?;
        let table: toml::Table = toml::from_str(text).map_err(|e| {
            ChangeError::Rejected(format!(
                "action.toml is not valid TOML: {}",
                crate::config::one_line(&e.to_string())
            ))
        })?;
        let component_field = table
            .get("component")
            .and_then(toml::Value::as_str)
            .ok_or_else(|| {
                ChangeError::Rejected(
                    "action.toml has no `component`; set it to the component's file name, or builtin:NAME".into(),
                )
            })?
            .to_string();
        let builtin = component_field.starts_with("builtin:");
        if !builtin && !is_plain_file_name(&component_field) {
            return Err(ChangeError::BadRequest(format!(
                "component = {component_field:?}: an uploaded action keeps its component in its own folder; set component to a file name such as \"action.wasm\""
            )));
        }
        match (builtin, component) {
            (false, None) => {
                return Err(ChangeError::BadRequest(format!(
                    "the upload has no component part; send the file named by component = {component_field:?}"
                )));
            }
            (true, Some(_)) => {
                return Err(ChangeError::BadRequest(format!(
                    "component = {component_field:?} is built in; send no component part"
                )));
            }
            _ => {}
        }

        let mut seen = self.seen.lock().await;
        let staging = self.dir.join(format!(".staging-{name}-{}", nonce()));
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(&staging)?;
            std::fs::write(staging.join("action.toml"), manifest)?;
            if let Some(bytes) = component {
                std::fs::write(staging.join(&component_field), bytes)?;
            }
            if let Some(bytes) = tests {
                std::fs::write(staging.join(crate::cases::TESTS_FILE), bytes)?;
            }
            Ok(())
        };
        if let Err(e) = write() {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(ChangeError::Io(format!(
                "cannot write the upload to {}: {e}",
                self.dir.display()
            )));
        }
        // Checked and compiled before anything is replaced.
        let staged = match self.runtime.load(&staging.join("action.toml")).await {
            Ok(p) => p,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&staging);
                return Err(ChangeError::Rejected(
                    e.to_string().replace(&*staging.to_string_lossy(), name),
                ));
            }
        };
        if staged.name() != name {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(ChangeError::BadRequest(format!(
                "the manifest's name is {:?} but the upload is for {name:?}; upload it to /v1/admin/actions/{}",
                staged.name(),
                staged.name()
            )));
        }
        // Gated before anything is replaced; the final folder holds the same bytes, so the
        // verdict recorded here (by content hash) is the one that version keeps.
        let registry = self.actions.snapshot();
        if let Err(e) = self
            .admit(&staged, &known_variables(&registry, &[&staged]))
            .await
        {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(ChangeError::Rejected(
                e.detail.replace(&*staging.to_string_lossy(), name),
            ));
        }
        let folder = match registry.get(name) {
            Some(existing) => existing
                .manifest()
                .path
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| self.dir.join(name)),
            None => self.dir.join(name),
        };
        // Swap the folders: the old one aside, the staged one in, the old one deleted.
        let aside = self.dir.join(format!(".old-{name}-{}", nonce()));
        let had_old = folder.exists();
        let swap = || -> std::io::Result<()> {
            if had_old {
                std::fs::rename(&folder, &aside)?;
            }
            if let Err(e) = std::fs::rename(&staging, &folder) {
                if had_old {
                    let _ = std::fs::rename(&aside, &folder);
                }
                return Err(e);
            }
            Ok(())
        };
        if let Err(e) = swap() {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(ChangeError::Io(format!(
                "cannot move the new version into {}: {e}",
                folder.display()
            )));
        }
        // Loaded again from its final place (the compile cache makes this quick), so its
        // paths are the real ones.
        let plugin = match self.runtime.load(&folder.join("action.toml")).await {
            Ok(p) => Arc::new(p),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&folder);
                if had_old {
                    let _ = std::fs::rename(&aside, &folder);
                }
                return Err(ChangeError::Rejected(e.to_string()));
            }
        };
        if had_old {
            let _ = std::fs::remove_dir_all(&aside);
        }
        let next = self.actions.snapshot().with(plugin.clone());
        self.actions.publish(next);
        seen.pending.remove(&folder);
        seen.applied.insert(
            folder.clone(),
            (fingerprint(&folder), Some(name.to_string())),
        );
        tracing::info!(action = name, "installed through the admin API");
        Ok(plugin)
    }

    /// Removes the action `name`: its folder is deleted and it stops being served (calls in
    /// flight finish).
    ///
    /// # Errors
    /// [`ChangeError::NotFound`] for an unknown action, [`ChangeError::Io`] when its folder
    /// cannot be removed (it then keeps serving).
    pub async fn remove(&self, name: &str) -> Result<(), ChangeError> {
        let mut seen = self.seen.lock().await;
        let registry = self.actions.snapshot();
        let plugin = registry
            .get(name)
            .ok_or_else(|| ChangeError::NotFound(name.to_string()))?;
        let folder = plugin
            .manifest()
            .path
            .parent()
            .map(Path::to_path_buf)
            .ok_or_else(|| ChangeError::Io(format!("action {name} has no folder")))?;
        if folder.starts_with(&self.dir) && folder != self.dir {
            let aside = self.dir.join(format!(".removed-{name}-{}", nonce()));
            std::fs::rename(&folder, &aside)
                .map_err(|e| ChangeError::Io(format!("cannot remove {}: {e}", folder.display())))?;
            let _ = std::fs::remove_dir_all(&aside);
        }
        self.actions
            .publish(registry.without(Some(name), Some(&folder)));
        seen.applied.remove(&folder);
        seen.pending.remove(&folder);
        tracing::info!(action = name, "removed through the admin API");
        Ok(())
    }
}

/// The conversation variables known across `registry` with the `fresh` versions in place of
/// theirs (see [`crate::lint::known_variables`]), read once for a whole scan or upload.
fn known_variables(registry: &Registry, fresh: &[&Plugin]) -> std::collections::BTreeSet<String> {
    let replaced: Vec<&str> = fresh.iter().map(|p| p.name()).collect();
    let all: Vec<&Plugin> = registry
        .plugins()
        .map(|p| &**p)
        .filter(|p| !replaced.contains(&p.name()))
        .chain(fresh.iter().copied())
        .collect();
    let cases: Vec<Vec<crate::cases::Case>> = all
        .iter()
        .map(|p| crate::cases::load(p).unwrap_or_default())
        .collect();
    crate::lint::known_variables(all.iter().copied().zip(cases.iter().map(Vec::as_slice)))
}

/// Refuses a plugin whose name another folder's action already has.
fn claim(registry: &Registry, folder: &Path, plugin: Plugin) -> Result<Arc<Plugin>, LoadError> {
    if let Some(existing) = registry.get(plugin.name()) {
        let existing_folder = existing.manifest().path.parent();
        if existing_folder != Some(folder) {
            return Err(LoadError::new(
                LoadErrorKind::Manifest,
                &plugin.manifest().path,
                format!(
                    "name = {:?} is already used by {}; give each action its own name",
                    plugin.name(),
                    existing.manifest().path.display()
                ),
            ));
        }
    }
    Ok(Arc::new(plugin))
}

fn stat(path: &Path) -> (u64, Option<SystemTime>) {
    std::fs::metadata(path)
        .map(|m| (m.len(), m.modified().ok()))
        .unwrap_or((0, None))
}

/// The manifest's size and time, and its component's (when the manifest names a file).
fn fingerprint(folder: &Path) -> Fingerprint {
    let manifest = folder.join("action.toml");
    let mut fp = vec![stat(&manifest)];
    let component = std::fs::read_to_string(&manifest)
        .ok()
        .and_then(|t| toml::from_str::<toml::Table>(&t).ok())
        .and_then(|t| {
            t.get("component")
                .and_then(|c| c.as_str().map(String::from))
        });
    if let Some(c) = component.filter(|c| !c.starts_with("builtin:")) {
        let p = Path::new(&c);
        let path = if p.is_absolute() {
            p.to_path_buf()
        } else {
            folder.join(p)
        };
        fp.push(stat(&path));
    }
    fp
}

fn is_plain_file_name(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.starts_with('.') && !s.contains(['/', '\\', '\0'])
}

fn nonce() -> String {
    let mut b = [0u8; 6];
    // A failed random source only makes the staging name less unique; the pid keeps it apart
    // from other processes.
    let _ = getrandom::fill(&mut b);
    format!("{}-{}", std::process::id(), hex::encode(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn component_file_names_stay_in_the_folder() {
        assert!(is_plain_file_name("action.wasm"));
        for bad in ["../x.wasm", "/etc/x", "a/b.wasm", ".hidden", ""] {
            assert!(!is_plain_file_name(bad), "{bad}");
        }
    }
}
