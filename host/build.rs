//! Builds the built-in "Send API Request" plugin (plugins/send-api-request) for wasm32-wasip2,
//! through a nested cargo into OUT_DIR, so the `callout` binary embeds it and a clean clone needs
//! no extra step. It reruns only when the plugin, the SDK or the WIT change.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap().to_path_buf();
    let plugins = root.join("plugins");
    for watched in [
        "plugins/send-api-request",
        "plugins/Cargo.toml",
        "plugins/Cargo.lock",
        "guest-sdk/src",
        "guest-sdk/Cargo.toml",
        "wit",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let target_dir = out.join("wasm-target");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--quiet",
            "--target",
            "wasm32-wasip2",
            "-p",
            "send_api_request",
            "--target-dir",
        ])
        .arg(&target_dir)
        .current_dir(&plugins)
        // The host's flags and target settings must not leak into the wasm build.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_PROFILE_RELEASE_DEBUG")
        .status()
        .expect("run cargo to build the built-in send-api-request plugin");
    if !status.success() {
        panic!(
            "building the built-in plugin plugins/send-api-request failed; if the wasm32-wasip2 \
             target is missing, run `rustup target add wasm32-wasip2` (./dev does it)"
        );
    }
    let wasm = target_dir.join("wasm32-wasip2/release/send_api_request.wasm");
    std::fs::copy(&wasm, out.join("send_api_request.wasm")).expect("copy the built-in plugin");
}
