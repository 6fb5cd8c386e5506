//! `callout serve`: one process serving the actions to agents over REST (with an OpenAPI
//! document) and MCP, with an admin API and a watcher that change actions while it runs.
//!
//! Routes and scopes:
//! - public: `GET /healthz`, `GET /openapi.json`;
//! - agent keys (and admin keys): `GET /metrics`, `/v1/actions...`, `/v1/conversations...`,
//!   `/mcp`;
//! - admin keys only: `/v1/admin/...`.
//!
//! The server binds to loopback unless `server.public = true`. On SIGINT or SIGTERM it stops
//! accepting, lets requests in flight finish for up to `server.shutdown_grace_ms`, and stops
//! the watcher.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post, put};
use tokio_util::sync::CancellationToken;

use crate::chat::Chat;
use crate::config::{KeyScope, ServerSettings};
use crate::delivery::Deliverer;
use crate::plugin::Runtime;
use crate::registry::Actions;

pub mod api;
pub mod auth;
pub mod console;
pub mod draft;
pub mod error;
pub mod loader;
pub mod mcp_backend;

use auth::Keys;
use error::ApiError;
use loader::Loader;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The engine, HTTP machinery and metrics.
    pub runtime: Arc<Runtime>,
    /// The actions now.
    pub actions: Arc<Actions>,
    /// Conversations.
    pub chat: Arc<Chat>,
    /// The outbox and its delivery workers.
    pub deliverer: Arc<Deliverer>,
    /// Uploads, removals and rescans.
    pub loader: Arc<Loader>,
    /// The API keys.
    pub keys: Arc<Keys>,
    /// Cancelled when the server shuts down (MCP sessions end with it).
    pub shutdown: CancellationToken,
    /// The data dir (the database, the console's history).
    pub data_dir: std::path::PathBuf,
    /// Signed-in console browsers.
    pub console: Arc<console::Sessions>,
}

/// Everything the server needs, built by [`Server::start`].
pub struct Server {
    state: AppState,
    settings: ServerSettings,
}

impl Server {
    /// Loads every action of `actions_dir` and opens the conversation store in `data_dir`.
    ///
    /// # Errors
    /// No API key configured (or one that cannot be read), an unreadable actions directory,
    /// or a database that cannot be opened.
    pub async fn start(
        runtime: Arc<Runtime>,
        actions_dir: std::path::PathBuf,
        data_dir: &std::path::Path,
        keys: Keys,
    ) -> anyhow::Result<Self> {
        let settings = runtime.config().server.clone();
        if keys.is_empty() {
            anyhow::bail!(
                "callout serve needs at least one API key: add to callout.toml\n\n  [[server.api_keys]]\n  name = \"agent\"\n  scope = \"agent\"\n  env = \"CALLOUT_AGENT_KEY\"\n\nand export CALLOUT_AGENT_KEY (e.g. `openssl rand -hex 24`)"
            );
        }
        let actions = Arc::new(Actions::default());
        let gate = Arc::new(crate::gate::Gate::open(
            &data_dir.join(crate::audit::DB_FILE),
            settings.publish_gate,
        )?);
        let loader = Arc::new(Loader::new(
            runtime.clone(),
            actions_dir,
            actions.clone(),
            gate,
        ));
        let report = loader.scan(false).await?;
        for f in &report.failed {
            tracing::warn!("{f}");
        }
        let deliverer = Arc::new(Deliverer::open(
            &runtime,
            &data_dir.join(crate::audit::DB_FILE),
            actions.clone(),
        )?);
        let chat = Arc::new(Chat::open(
            &data_dir.join(crate::audit::DB_FILE),
            actions.clone(),
            deliverer.clone(),
        )?);
        Ok(Self {
            state: AppState {
                runtime,
                actions,
                chat,
                deliverer,
                loader,
                keys: Arc::new(keys),
                shutdown: CancellationToken::new(),
                data_dir: data_dir.to_path_buf(),
                console: Arc::new(console::Sessions::default()),
            },
            settings,
        })
    }

    /// The shared state (tests drive the router with it).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The router: every route, auth, metrics and JSON errors.
    pub fn router(&self) -> Router {
        router(
            self.state.clone(),
            (self.settings.max_upload_mb as usize).saturating_mul(1 << 20),
            self.settings.public,
        )
    }

    /// Serves on `listener` until `stop` is cancelled (or SIGINT/SIGTERM when
    /// `signals`), then shuts down gracefully within `server.shutdown_grace_ms`.
    ///
    /// # Errors
    /// When the listener fails.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        stop: CancellationToken,
        signals: bool,
    ) -> anyhow::Result<()> {
        let state = self.state.clone();
        if self.settings.watch_interval_ms > 0 {
            tokio::spawn(state.loader.clone().watch(
                Duration::from_millis(self.settings.watch_interval_ms),
                state.shutdown.clone(),
            ));
        }
        if signals {
            let stop = stop.clone();
            tokio::spawn(async move {
                wait_for_signal().await;
                tracing::info!("shutting down: no new requests; finishing the ones in flight");
                stop.cancel();
            });
        }
        // The delivery workers stop after the server: requests in flight may still enqueue.
        let workers_stop = CancellationToken::new();
        let workers = tokio::spawn(state.deliverer.clone().run(workers_stop.clone()));
        let app = self.router();
        let shutdown = state.shutdown.clone();
        let grace = Duration::from_millis(self.settings.shutdown_grace_ms);
        let stopping = stop.clone();
        let server = axum::serve(listener, app).with_graceful_shutdown(async move {
            stopping.cancelled().await;
            // Long-lived MCP streams end now, so they do not hold the shutdown open.
            shutdown.cancel();
        });
        let started = tokio::select! {
            r = server => { r?; tokio::time::Instant::now() }
            () = async { stop.cancelled().await; tokio::time::sleep(grace).await } => {
                tracing::warn!(
                    grace_ms = grace.as_millis() as u64,
                    "requests still in flight after the grace period; stopping anyway"
                );
                tokio::time::Instant::now()
            }
        };
        // Workers finish the attempts they have in hand (within the rest of the grace period);
        // an attempt cut off is not recorded, and is made again after a restart when its lease
        // runs out.
        workers_stop.cancel();
        if tokio::time::timeout_at(started + grace, workers)
            .await
            .is_err()
        {
            tracing::warn!(
                "delivery attempts still in flight at shutdown; they are retried after a restart"
            );
        }
        tracing::info!("stopped");
        Ok(())
    }

    /// Binds the listen address of `server.listen` (or `listen`), refusing a non-loopback one
    /// unless `server.public` is set.
    ///
    /// # Errors
    /// A malformed or refused address, or one that cannot be bound.
    pub async fn bind(&self, listen: Option<&str>) -> anyhow::Result<tokio::net::TcpListener> {
        let text = listen.unwrap_or(&self.settings.listen);
        let addr: SocketAddr = text.parse().map_err(|e| {
            anyhow::anyhow!("listen address {text:?} is not host:port ({e}); e.g. 127.0.0.1:8080")
        })?;
        if !addr.ip().is_loopback() && !self.settings.public {
            anyhow::bail!(
                "listen address {addr} is not loopback; the server binds to loopback unless callout.toml sets [server] public = true (put TLS in front of it)"
            );
        }
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// The whole router over `state`; uploads up to `max_upload` bytes; `public` lets `/mcp` take
/// any `Host` name (otherwise loopback names only, against DNS rebinding).
pub fn router(state: AppState, max_upload: usize, public: bool) -> Router {
    let agent = Router::new()
        .route("/metrics", get(api::metrics))
        .route("/v1/actions", get(api::list_actions))
        .route("/v1/actions/{name}", get(api::get_action))
        .route("/v1/actions/{name}/invoke", post(api::invoke))
        .route("/v1/actions/{name}/test", post(api::test))
        .route("/v1/conversations/{id}", get(api::get_conversation))
        .route("/v1/conversations/{id}/messages", post(api::message))
        .route("/v1/conversations/{id}/end", post(api::end))
        .route_service("/mcp", mcp_backend::service(&state, public))
        .route_layer(middleware::from_fn_with_state(
            (state.clone(), KeyScope::Agent),
            require,
        ));
    let admin = Router::new()
        .route("/v1/admin/actions", get(api::admin_list))
        .route(
            "/v1/admin/actions/{name}",
            put(api::admin_put).delete(api::admin_delete),
        )
        .route("/v1/admin/actions/{name}/gate", get(api::admin_gate))
        .route("/v1/admin/reload", post(api::admin_reload))
        .route("/v1/admin/outbox", get(api::outbox_list))
        .route("/v1/admin/outbox/purge", post(api::outbox_purge))
        .route("/v1/admin/outbox/{id}", get(api::outbox_show))
        .route("/v1/admin/outbox/{id}/retry", post(api::outbox_retry))
        .layer(DefaultBodyLimit::max(max_upload))
        .route_layer(middleware::from_fn_with_state(
            (state.clone(), KeyScope::Admin),
            require,
        ));
    Router::new()
        .route("/healthz", get(api::health))
        .route("/openapi.json", get(api::openapi))
        .merge(agent)
        .merge(admin)
        .merge(console::routes(&state))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), count))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not-found",
        "no such route; GET /openapi.json lists them",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "this route does not take that method; GET /openapi.json lists them",
    )
}

/// Checks the bearer key and its scope; the caller goes into the request's extensions.
async fn require(
    State((state, needed)): State<(AppState, KeyScope)>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let presented = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(auth::bearer);
    let Some(caller) = presented.and_then(|k| state.keys.check(k)) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send an API key as Authorization: Bearer <key>",
        ));
    };
    if caller.scope < needed {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this key's scope is agent; the admin API needs an admin key",
        ));
    }
    req.extensions_mut().insert(caller);
    Ok(next.run(req).await)
}

/// Counts each request by route template and status.
async fn count(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let resp = next.run(req).await;
    state
        .runtime
        .metrics()
        .record_api(&route, resp.status().as_u16());
    resp
}
