//! Test helpers: building the test plugins once per run, temporary action directories, runtimes
//! with a small pool, and a recording HTTP server on loopback.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::routing::any;
use callout::{Call, CallReport, HostConfig, Plugin, Registry, Runtime, RuntimeOptions, Secrets};
use serde_json::{Map, Value, json};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Builds tests/plugins once per test run and returns the folder holding the `.wasm` files.
pub fn plugins_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| build_wasm_workspace(&repo().join("tests/plugins")))
}

/// Builds the example actions in plugins/ once per test run (where their action.toml files
/// expect them) and returns the plugins/ folder, ready to use as `--actions`.
pub fn example_actions() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        build_wasm_workspace(&repo().join("plugins"));
        repo().join("plugins")
    })
}

/// Builds the Python and JavaScript example actions (`plugins/python/*`, `plugins/js/*`) once
/// per test run with `callout build`, and returns their folders' parents. Needs the tools
/// `./dev setup` installs (`.venv` with componentize-py, `node_modules` with componentize-js).
pub fn polyglot_actions() -> &'static [PathBuf] {
    static DIRS: OnceLock<Vec<PathBuf>> = OnceLock::new();
    DIRS.get_or_init(|| {
        let parents = vec![repo().join("plugins/python"), repo().join("plugins/js")];
        let lock_dir = repo().join("target");
        std::fs::create_dir_all(&lock_dir).unwrap();
        let lock = std::fs::File::create(lock_dir.join(".polyglot-build.lock")).unwrap();
        lock.lock().unwrap();
        for parent in &parents {
            for entry in std::fs::read_dir(parent).unwrap() {
                let dir = entry.unwrap().path();
                if !dir.join("action.toml").is_file() {
                    continue;
                }
                let out = Command::new(env!("CARGO_BIN_EXE_callout"))
                    .arg("build")
                    .arg(&dir)
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "callout build {} failed (run ./dev setup for componentize-py and \
                     componentize-js):\n{}{}",
                    dir.display(),
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        lock.unlock().unwrap();
        parents
    })
}

/// Makes `options` use one compile cache for the whole test run (`target/test-compile-cache`,
/// one key), so a large Python or JavaScript component is compiled once per run, not once per
/// test. The cache authenticates artifacts with a key kept in the data dir; each test's data
/// dir gets a copy of the shared key.
pub fn share_compile_cache(options: &mut RuntimeOptions) {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let dir = repo().join("target/test-compile-cache");
        std::fs::create_dir_all(dir.join("artifacts")).unwrap();
        let key = dir.join("cache.key");
        if !key.is_file() {
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes).unwrap();
            let tmp = dir.join(format!("cache.key.{}", std::process::id()));
            std::fs::write(&tmp, bytes).unwrap();
            // Two test processes may race here; the first rename wins, both use the winner.
            let _ = std::fs::hard_link(&tmp, &key);
            std::fs::remove_file(&tmp).unwrap();
        }
        dir
    });
    std::fs::create_dir_all(&options.data_dir).unwrap();
    std::fs::copy(dir.join("cache.key"), options.data_dir.join("cache.key")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            options.data_dir.join("cache.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
    }
    options.cache_dir = Some(dir.join("artifacts"));
}

/// Runs `cargo build --release --target wasm32-wasip2` in the cargo workspace `ws`.
///
/// A `OnceLock` per workspace makes the build happen once per process; a file lock makes
/// concurrent test processes (nextest, two `cargo test`s) wait for each other instead of racing
/// in one target dir. The nested cargo gets its own target dir (`ws/target`) and a clean
/// environment for RUSTFLAGS, so the host's flags never leak into the wasm build and the outer
/// cargo's lock is not contended.
fn build_wasm_workspace(ws: &Path) -> PathBuf {
    let target = ws.join("target");
    std::fs::create_dir_all(&target).unwrap();
    let lock = std::fs::File::create(target.join(".build.lock")).unwrap();
    lock.lock().unwrap();
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target)
        .current_dir(ws)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .output()
        .expect("run cargo to build wasm plugins");
    lock.unlock().unwrap();
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("wasm32-wasip2")
            && (stderr.contains("not installed") || stderr.contains("can't find crate"))
        {
            panic!(
                "the wasm32-wasip2 target is missing: run `rustup target add wasm32-wasip2`\n{stderr}"
            );
        }
        panic!("building {} failed:\n{stderr}", ws.display());
    }
    target.join("wasm32-wasip2/release")
}

/// The path of a built test plugin, e.g. `wasm("echo")`.
pub fn wasm(name: &str) -> PathBuf {
    plugins_dir().join(format!("{name}.wasm"))
}

/// A temporary actions directory with one sub-folder per action.
pub struct Actions {
    /// Keeps the directory alive.
    pub dir: tempfile::TempDir,
}

impl Actions {
    /// An empty actions directory.
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Writes `<dir>/<folder>/action.toml` with `manifest`, where `{echo}`, `{hostile}` and
    /// `{wrong_world}` stand for the built plugins' paths. Returns the manifest's path.
    pub fn add(&self, folder: &str, manifest: &str) -> PathBuf {
        let d = self.dir.path().join(folder);
        std::fs::create_dir_all(&d).unwrap();
        let mut text = manifest.to_string();
        for name in ["echo", "hostile", "wrong_world"] {
            text = text.replace(&format!("{{{name}}}"), &wasm(name).display().to_string());
        }
        let p = d.join("action.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// A host config with a small pool, so many runtimes can exist at once in one test process.
pub fn small_pool_config() -> HostConfig {
    HostConfig::parse(
        "[pool]\ntotal_component_instances = 16\ntotal_core_instances = 64\ntotal_memories = 16\n\
         total_tables = 32\nmax_memory_mb = 128\n",
    )
    .unwrap()
}

/// A runtime with a small pool, a fresh data dir, and these dev-loopback entries and secrets.
pub fn runtime_with(dev_loopback: &[String], secrets: Secrets) -> (Runtime, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    let mut options = RuntimeOptions::new(data.path());
    options.config = small_pool_config();
    options.dev_loopback = dev_loopback.to_vec();
    options.secrets = secrets;
    (Runtime::new(options).unwrap(), data)
}

/// A runtime without dev-loopback or secrets.
pub fn runtime() -> (Runtime, tempfile::TempDir) {
    runtime_with(&[], Secrets::default())
}

/// Loads `actions` and returns the registry, asserting nothing failed.
pub async fn load_all(runtime: &Runtime, actions: &Actions) -> Registry {
    let reg = Registry::load_dir(runtime, actions.path()).await.unwrap();
    assert!(
        reg.failures().is_empty(),
        "unexpected load failures: {:#?}",
        reg.failures()
    );
    reg
}

/// Calls `plugin` as a tool with `inputs`.
pub async fn call(plugin: &Plugin, inputs: Value) -> CallReport {
    plugin.invoke(Call::tool(obj(inputs))).await
}

/// The JSON object in `v`.
pub fn obj(v: Value) -> Map<String, Value> {
    v.as_object().expect("a JSON object").clone()
}

/// A request the test server received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub uri: String,
    pub headers: HashMap<String, String>,
    pub body: String,
}

/// An HTTP server on an ephemeral loopback port that records every request.
///
/// Routes: `/json` (200 with a JSON echo), `/status/{code}`, `/slow/{ms}`, `/big/{bytes}`,
/// `/redirect` (302 to /json); anything else 200 "ok".
pub struct TestServer {
    pub addr: std::net::SocketAddr,
    pub received: Arc<Mutex<Vec<Received>>>,
}

impl TestServer {
    /// Starts the server on 127.0.0.1:0.
    pub async fn start() -> Self {
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let app = Router::new()
            .route("/status/{code}", any(status))
            .route("/slow/{ms}", any(slow))
            .route("/big/{bytes}", any(big))
            .route(
                "/redirect",
                any(|| async { (StatusCode::FOUND, [("location", "/json")], "moved") }),
            )
            .route("/redirect-to", any(redirect_to))
            .route("/echo-headers", any(echo_headers))
            .route("/many-headers/{n}", any(many_headers))
            .fallback(any(fallback))
            .layer(axum::middleware::from_fn_with_state(
                received.clone(),
                record,
            ))
            .with_state(());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, received }
    }

    /// `127.0.0.1:PORT`, as `--dev-loopback` takes it.
    pub fn host_port(&self) -> String {
        self.addr.to_string()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The requests received so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

async fn record(
    State(received): State<Arc<Mutex<Vec<Received>>>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 16 << 20)
        .await
        .unwrap_or_default();
    received.lock().unwrap().push(Received {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect(),
        body: String::from_utf8_lossy(&bytes).into_owned(),
    });
    next.run(axum::extract::Request::from_parts(
        parts,
        axum::body::Body::from(bytes),
    ))
    .await
}

async fn fallback(method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> impl IntoResponse {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    axum::Json(json!({
        "method": method.as_str(),
        "path": uri.path(),
        "authorization_seen": !auth.is_empty(),
        "body_len": body.len(),
    }))
}

/// 302 (or `?status=`) to `?to=`: redirects anywhere, for the redirect tests.
async fn redirect_to(
    axum::extract::Query(q): axum::extract::Query<HashMap<String, String>>,
) -> impl IntoResponse {
    let code = q.get("status").and_then(|s| s.parse().ok()).unwrap_or(302);
    let to = q.get("to").cloned().unwrap_or_else(|| "/json".into());
    (
        StatusCode::from_u16(code).unwrap(),
        [("location", to)],
        "moved",
    )
}

/// Echoes the request's authorization header back, in a header and in the body.
async fn echo_headers(headers: HeaderMap) -> impl IntoResponse {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (
        [("x-echo-authorization", auth.clone())],
        format!("you sent authorization: {auth}"),
    )
}

/// Answers with `n` extra headers.
async fn many_headers(UrlPath(n): UrlPath<usize>) -> impl IntoResponse {
    let mut h = HeaderMap::new();
    for i in 0..n {
        h.insert(
            axum::http::HeaderName::from_bytes(format!("x-h{i}").as_bytes()).unwrap(),
            "v".parse().unwrap(),
        );
    }
    (h, "many")
}

async fn status(UrlPath(code): UrlPath<u16>) -> impl IntoResponse {
    let code = StatusCode::from_u16(code).unwrap_or(StatusCode::IM_A_TEAPOT);
    (code, [("retry-after", "7")], format!("status {code}"))
}

async fn slow(UrlPath(ms): UrlPath<u64>) -> impl IntoResponse {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    "slow"
}

async fn big(UrlPath(bytes): UrlPath<usize>) -> impl IntoResponse {
    vec![b'x'; bytes]
}

/// Polls `check` every 50 ms until it holds; panics naming `what` after 30 s.
pub async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}

/// How many of `action`'s calls got their instance from `source` (`spare`, `reused` or
/// `fresh`), read from a rendering of the metrics (`GET /metrics`, or `Metrics::render`).
pub fn instances_counted(metrics_text: &str, action: &str, source: &str) -> Option<u64> {
    let series =
        format!("callout_action_instances_total{{action=\"{action}\",source=\"{source}\"}} ");
    metrics_text
        .lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .and_then(|n| n.trim().parse().ok())
}

/// Starts a call of the test plugin `hostile` (loaded with no spare) that spins until its
/// deadline, and returns once the call has taken its instance: the pool slot it holds stays
/// taken until the deadline. Await the handle before any assertion that may fail, so a failing
/// test does not leave the loop running.
pub async fn spin_holding_a_slot(
    runtime: &Runtime,
    hostile: Arc<Plugin>,
) -> tokio::task::JoinHandle<CallReport> {
    let spinning = tokio::spawn(async move { call(&hostile, json!({"mode": "loop"})).await });
    wait_until("the spinning call has its instance", || async {
        instances_counted(&runtime.metrics().render(), "hostile", "fresh") == Some(1)
    })
    .await;
    // Counted just before instantiating: give it the moment to take the slot.
    tokio::time::sleep(Duration::from_millis(50)).await;
    spinning
}
