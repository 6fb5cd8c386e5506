//! The compile cache: each component is compiled once and kept, serialized, on disk.
//!
//! - Key: BLAKE3 of the engine's compatibility hash (wasmtime version, target, settings, host
//!   version) and of the component's bytes, so a changed engine never loads a stale artifact.
//!   The artifact lives in `<key>.cwasm`, exactly as [`Engine::precompile_component`] wrote it.
//! - Integrity: deserializing an artifact runs native code, so each artifact has a tag in
//!   `<key>.tag`: a keyed BLAKE3 MAC of the artifact made with a key kept in the data dir
//!   (`cache.key`, mode 0600, created on first use). A planted or tampered artifact, or one
//!   without its tag, fails the check and is recompiled, never deserialized.
//! - Mapped, not copied: a verified artifact is mapped from the file ([`Component::deserialize_file`]),
//!   so its code and its memory images are shared page cache instead of a private copy per load
//!   (and no copy-on-write image has to be written to a memfd). To close the time-of-check gap,
//!   the file is opened once: the tag is checked over the bytes read from that open file, and
//!   wasmtime maps the same inode through `/proc/self/fd`, so renaming another file into place
//!   afterwards changes nothing. Artifacts are written read-only (0400) in a 0700 directory, so
//!   no other user can change the mapped inode in place. (A process running as the same user
//!   can, but it can also read `cache.key`; it is outside what the tag protects against.)
//!   Where `/proc` is missing, the verified bytes are deserialized from memory instead.
//! - Sharing: files are written to a temporary file and renamed into place (the tag first, then
//!   the artifact), so processes that share a cache directory never see a half-written artifact.
//! - The directory is created with mode 0700.
//!
//! Why BLAKE3 and not SHA-256: a load hashes the component (200 KB for a small Rust action) and
//! authenticates the artifact (600 KB); with SHA-256 and HMAC-SHA256 that was 0.43 ms of a
//! cached load, a third of it (docs/performance.md).

use std::hash::Hasher;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

const MAGIC: &[u8] = b"callout-cwasm-2\n";
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

/// Feeds `Hash` output into BLAKE3, so the engine's compatibility hash is stable and wide.
struct Blake3Hasher(blake3::Hasher);

impl Hasher for Blake3Hasher {
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
        let mut h = Blake3Hasher(blake3::Hasher::new());
        std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut h);
        h.0.update(env!("CARGO_PKG_VERSION").as_bytes());
        Ok(Self {
            dir: dir.to_path_buf(),
            key,
            engine_id: h.0.finalize().into(),
        })
    }

    /// The identity of `wasm` for this engine: BLAKE3 of the engine's compatibility id and the
    /// bytes. It names the artifact's file, and identifies the component in the publish gate's
    /// version hash (so the bytes are hashed once per load).
    pub fn digest(&self, wasm: &[u8]) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        h.update(&self.engine_id);
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
        let t0 = std::time::Instant::now();
        let digest = self.digest(wasm);
        let path = self.path_for(&digest);
        let t_digest = t0.elapsed();
        let status = match self.load_verified(engine, &path) {
            Cached::Loaded(component, read_us, verify_us) => {
                tracing::debug!(
                    component_bytes = wasm.len(),
                    digest_us = t_digest.as_micros() as u64,
                    read_us,
                    verify_us,
                    deserialize_us = ((t0.elapsed() - t_digest).as_micros() as u64)
                        .saturating_sub(read_us + verify_us),
                    "cache hit timings"
                );
                return Ok((component, CacheStatus::Hit, digest));
            }
            Cached::Absent | Cached::Unusable => CacheStatus::Miss,
            Cached::Forged => CacheStatus::Rejected,
        };
        let artifact = engine.precompile_component(wasm)?;
        if let Err(e) = self.store(&path, &artifact) {
            tracing::warn!(path = %path.display(), "could not write the compile cache: {e}");
        }
        // SAFETY: `artifact` was produced just now by this engine.
        let component = unsafe { Component::deserialize(engine, &artifact)? };
        Ok((component, status, digest))
    }

    /// Opens, authenticates and maps the artifact at `path`.
    fn load_verified(&self, engine: &Engine, path: &Path) -> Cached {
        let Ok(mut file) = std::fs::File::open(path) else {
            return Cached::Absent;
        };
        let t0 = std::time::Instant::now();
        let mut artifact = Vec::new();
        let tag = std::fs::read(tag_path(path));
        if let Err(e) = file.read_to_end(&mut artifact) {
            tracing::warn!(path = %path.display(), "cannot read the cached artifact, recompiling: {e}");
            return Cached::Unusable;
        }
        let read_us = t0.elapsed().as_micros() as u64;
        let authentic = tag.is_ok_and(|t| self.verify(&t, &artifact));
        let verify_us = t0.elapsed().as_micros() as u64 - read_us;
        if !authentic {
            tracing::warn!(path = %path.display(), "cached artifact failed authentication (planted, tampered or missing its tag); recompiling and replacing it");
            return Cached::Forged;
        }
        // SAFETY (both branches): the bytes carry a valid tag made with this data dir's key, so
        // they were written by this cache from `Engine::precompile_component` output, and the key
        // includes the engine's compatibility hash, so they match this engine. The mapped file
        // is the inode those bytes were read from (`/proc/self/fd` reopens the open file, not
        // the path), written read-only by this cache; see the module docs.
        let loaded = match proc_fd_path(&file) {
            Some(fd_path) => unsafe { Component::deserialize_file(engine, fd_path) },
            None => unsafe { Component::deserialize(engine, &artifact) },
        };
        match loaded {
            Ok(c) => Cached::Loaded(c, read_us, verify_us),
            Err(e) => {
                tracing::warn!(path = %path.display(), "cached artifact unusable, recompiling: {e}");
                Cached::Unusable
            }
        }
    }

    fn tag(&self, artifact: &[u8]) -> [u8; TAG_LEN] {
        let mut mac = blake3::Hasher::new_keyed(&self.key);
        mac.update(MAGIC);
        mac.update(&self.engine_id);
        mac.update(artifact);
        mac.finalize().into()
    }

    fn verify(&self, tag_file: &[u8], artifact: &[u8]) -> bool {
        let Some(tag) = tag_file.strip_prefix(MAGIC) else {
            return false;
        };
        let Ok(tag) = <[u8; TAG_LEN]>::try_from(tag) else {
            return false;
        };
        // `blake3::Hash`'s equality is constant-time.
        blake3::Hash::from(tag) == blake3::Hash::from(self.tag(artifact))
    }

    fn store(&self, path: &Path, artifact: &[u8]) -> std::io::Result<()> {
        let mut tag = MAGIC.to_vec();
        tag.extend_from_slice(&self.tag(artifact));
        // The tag first: a crash between the two leaves a tag without an artifact (a miss),
        // never an artifact without its tag.
        self.write_read_only(&tag_path(path), &tag)?;
        self.write_read_only(path, artifact)
    }

    fn write_read_only(&self, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
        tmp.write_all(bytes)?;
        tmp.as_file().sync_data()?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            tmp.as_file()
                .set_permissions(std::fs::Permissions::from_mode(0o400))?;
        }
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    }
}

/// What [`CompileCache::load_verified`] found.
enum Cached {
    /// A valid artifact, deserialized; with the microseconds spent reading and verifying it.
    Loaded(Component, u64, u64),
    /// No artifact.
    Absent,
    /// An authentic artifact that could not be read or deserialized.
    Unusable,
    /// An artifact whose tag is missing or wrong.
    Forged,
}

/// `<key>.tag` beside `<key>.cwasm`.
fn tag_path(artifact: &Path) -> PathBuf {
    artifact.with_extension("tag")
}

/// `/proc/self/fd/<n>` for an open file, where the platform has it: opening it reopens the same
/// inode, whatever has been renamed over the original path since.
fn proc_fd_path(file: &std::fs::File) -> Option<PathBuf> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let p = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        p.exists().then_some(p)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = file;
        None
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
