//! The compile cache: hits on reload, and a tampered artifact is never deserialized.

use callout::Registry;
use callout::cache::CacheStatus;
use serde_json::json;
use std::os::unix::fs::PermissionsExt;

use crate::support::*;

#[tokio::test]
async fn second_load_hits_the_cache_and_a_tampered_artifact_is_rejected() {
    let actions = Actions::new();
    actions.add("echo", "name = \"echo\"\ncomponent = \"{echo}\"\n");
    let data = tempfile::tempdir().unwrap();
    let rt = || {
        let mut o = callout::RuntimeOptions::new(data.path());
        o.config = small_pool_config();
        callout::Runtime::new(o).unwrap()
    };

    let first = rt();
    let reg = Registry::load_dir(&first, actions.path()).await.unwrap();
    assert_eq!(reg.get("echo").unwrap().cache_status(), CacheStatus::Miss);
    let second = rt();
    let reg = Registry::load_dir(&second, actions.path()).await.unwrap();
    assert_eq!(reg.get("echo").unwrap().cache_status(), CacheStatus::Hit);

    // Flip one byte of the artifact (past the header): authentication must fail.
    let cache_dir = data.path().join("cache");
    let artifact = std::fs::read_dir(&cache_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .expect("an artifact in the cache");
    // Artifacts and tags are written read-only, so another user cannot change one in place.
    assert_eq!(mode(&artifact), 0o400);
    assert_eq!(mode(&artifact.with_extension("tag")), 0o400);
    let mut bytes = std::fs::read(&artifact).unwrap();
    let i = bytes.len() / 2;
    bytes[i] ^= 0xff;
    std::fs::set_permissions(&artifact, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&artifact, &bytes).unwrap();
    let third = rt();
    let reg = Registry::load_dir(&third, actions.path()).await.unwrap();
    let echo = reg.get("echo").unwrap();
    assert_eq!(echo.cache_status(), CacheStatus::Rejected);
    assert_eq!(
        call(&echo, json!({"message": "ok"}))
            .await
            .result
            .unwrap()
            .data["message"],
        "ok"
    );
    // The replaced artifact is valid again.
    let fourth = rt();
    let reg = Registry::load_dir(&fourth, actions.path()).await.unwrap();
    assert_eq!(reg.get("echo").unwrap().cache_status(), CacheStatus::Hit);

    // An artifact without its tag (planted, say) is never deserialized either.
    std::fs::remove_file(artifact.with_extension("tag")).unwrap();
    let fifth = rt();
    let reg = Registry::load_dir(&fifth, actions.path()).await.unwrap();
    let echo = reg.get("echo").unwrap();
    assert_eq!(echo.cache_status(), CacheStatus::Rejected);
    assert_eq!(
        call(&echo, json!({"message": "tagless"}))
            .await
            .result
            .unwrap()
            .data["message"],
        "tagless"
    );
    let sixth = rt();
    let reg = Registry::load_dir(&sixth, actions.path()).await.unwrap();
    assert_eq!(reg.get("echo").unwrap().cache_status(), CacheStatus::Hit);
}

/// A file's permission bits.
fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn cache_dir_and_key_are_private() {
    let data = tempfile::tempdir().unwrap();
    let mut o = callout::RuntimeOptions::new(data.path().join("d"));
    o.config = small_pool_config();
    let _rt = callout::Runtime::new(o).unwrap();
    assert_eq!(mode(&data.path().join("d/cache")), 0o700);
    assert_eq!(mode(&data.path().join("d/cache.key")), 0o600);
}
