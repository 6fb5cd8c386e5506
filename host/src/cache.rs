//! The compile cache: each component is compiled once and kept, serialized, on disk.
//!
//! - Key: SHA-256 of the component's bytes and of the engine's compatibility hash (wasmtime
//!   version, target, settings), so a changed engine never loads a stale artifact.
//! - Integrity: deserializing an artifact runs native code, so each file carries an HMAC-SHA256
//!   made with a key kept in the data dir (`cache.key`, mode 0600, created on first use). A
//!   planted or tampered file fails the check and is recompiled, never deserialized.
//! - Sharing: files are written to a temporary file and renamed into place, so processes that
//!   share a cache directory never see a half-written artifact.
//! - The directory is created with mode 0700.

use std::hash::Hasher;
use std::io::Write;
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

const MAGIC: &[u8] = b"callout-cwasm-1\n";
const TAG_LEN: usize = 32;

/// What the cache did for one component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CacheStatus {
    /// A valid artifact was loaded; nothing was compiled.
    Hit,
    /// Compiled now and stored.
    Miss,
    /// An artifact was there but failed authentication; it was replaced by a fresh compile.
    Rejected,
}

impl CacheStatus {
    /// `hit`, `miss` or `rejected`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Rejected => "rejected",
        }
    }
}

/// A compile cache in one directory, authenticated with one key.
pub struct CompileCache {
    dir: PathBuf,
    key: [u8; 32],
    engine_id: [u8; 32],
}

/// Feeds `Hash` output into SHA-256, so the engine's compatibility hash is stable and wide.
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

impl CompileCache {
    /// Opens (creating as needed) the cache in `dir`, with its key in `data_dir/cache.key`.
    ///
    /// # Errors
    /// When the directory or the key cannot be created or read.
    pub fn open(engine: &Engine, data_dir: &Path, dir: &Path) -> std::io::Result<Self> {
        create_private_dir(data_dir)?;
        create_private_dir(dir)?;
        let key = load_or_create_key(&data_dir.join("cache.key"))?;
        let mut h = ShaHasher(Sha256::new());
        std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut h);
        h.0.update(env!("CARGO_PKG_VERSION").as_bytes());
        Ok(Self {
            dir: dir.to_path_buf(),
            key,
            engine_id: h.0.finalize().into(),
        })
    }

    /// The identity of `wasm` for this engine: SHA-256 of the engine's compatibility id and the
    /// bytes. It names the artifact's file, and identifies the component in the publish gate's
    /// version hash (so the bytes are hashed once per load).
    pub fn digest(&self, wasm: &[u8]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.engine_id);
        h.update(wasm);
        h.finalize().into()
    }

    /// The file an artifact with `digest` ([`CompileCache::digest`]) lives in.
    pub fn path_for(&self, digest: &[u8; 32]) -> PathBuf {
        self.dir.join(format!("{}.cwasm", hex::encode(digest)))
    }

    /// Returns the compiled component for `wasm`, from the cache when a valid artifact is there,
    /// compiling (and storing) it otherwise, with the bytes' [`CompileCache::digest`].
    ///
    /// # Errors
    /// The compile error of an invalid component. A cache that cannot be written is only
    /// logged: the component is still returned.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        wasm: &[u8],
    ) -> Result<(Component, CacheStatus, [u8; 32]), wasmtime::Error> {
        let digest = self.digest(wasm);
        let path = self.path_for(&digest);
        let mut status = CacheStatus::Miss;
        if let Ok(file) = std::fs::read(&path) {
            match self.verify(&file) {
                Some(artifact) => {
                    // SAFETY: the artifact carries a valid HMAC made with this data dir's key, so
                    // it was written by this cache from `Engine::precompile_component` output;
                    // the key includes the engine's compatibility hash, so it matches this engine.
                    match unsafe { Component::deserialize(engine, artifact) } {
                        Ok(c) => return Ok((c, CacheStatus::Hit, digest)),
                        Err(e) => {
                            tracing::warn!(path = %path.display(), "cached artifact unusable, recompiling: {e}")
                        }
                    }
                }
                None => {
                    tracing::warn!(path = %path.display(), "cached artifact failed authentication (planted or tampered); recompiling and replacing it");
                    status = CacheStatus::Rejected;
                }
            }
        }
        let artifact = engine.precompile_component(wasm)?;
        if let Err(e) = self.store(&path, &artifact) {
            tracing::warn!(path = %path.display(), "could not write the compile cache: {e}");
        }
        // SAFETY: `artifact` was produced just now by this engine.
        let component = unsafe { Component::deserialize(engine, &artifact)? };
        Ok((component, status, digest))
    }

    fn tag(&self, artifact: &[u8]) -> [u8; TAG_LEN] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length works");
        mac.update(MAGIC);
        mac.update(&self.engine_id);
        mac.update(artifact);
        mac.finalize().into_bytes().into()
    }

    fn verify<'a>(&self, file: &'a [u8]) -> Option<&'a [u8]> {
        let rest = file.strip_prefix(MAGIC)?;
        if rest.len() < TAG_LEN {
            return None;
        }
        let (tag, artifact) = rest.split_at(TAG_LEN);
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length works");
        mac.update(MAGIC);
        mac.update(&self.engine_id);
        mac.update(artifact);
        mac.verify_slice(tag).ok()?;
        Some(artifact)
    }

    fn store(&self, path: &Path, artifact: &[u8]) -> std::io::Result<()> {
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
        tmp.write_all(MAGIC)?;
        tmp.write_all(&self.tag(artifact))?;
        tmp.write_all(artifact)?;
        tmp.as_file().sync_data()?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)
}

fn load_or_create_key(path: &Path) -> std::io::Result<[u8; 32]> {
    if let Ok(bytes) = std::fs::read(path) {
        if let Ok(key) = <[u8; 32]>::try_from(bytes.as_slice()) {
            return Ok(key);
        }
        return Err(std::io::Error::other(format!(
            "{} is not a 32-byte key; delete it to make a new one (the cache will be rebuilt)",
            path.display()
        )));
    }
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| std::io::Error::other(e.to_string()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    // tempfile creates the file with mode 0600: the key is readable by this user only.
    tmp.write_all(&key)?;
    tmp.as_file().sync_data()?;
    // Another process may have created the key meanwhile: keep theirs, so both agree.
    match tmp.persist_noclobber(path) {
        Ok(_) => Ok(key),
        Err(_) => {
            let bytes = std::fs::read(path)?;
            <[u8; 32]>::try_from(bytes.as_slice())
                .map_err(|_| std::io::Error::other("cache.key is not 32 bytes"))
        }
    }
}
