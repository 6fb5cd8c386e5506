//! The web console at `/console`: add, test and save a "Send API Request" in the browser, see
//! every action's status and last calls, talk to the actions in a conversation, and look at the
//! outbox and the audit log.
//!
//! - Server-rendered HTML with one small script and one stylesheet, both embedded in the
//!   binary: no CDN, no build step, and every page works without the script (which only adds
//!   in-page messages for the browser's own validation).
//! - Sign-in takes an **admin** API key once and keeps a random session id in an `HttpOnly`,
//!   `SameSite=Strict` cookie scoped to `/console` (12 h). A form post from another origin is
//!   refused (403). The key itself is never stored in the browser.
//! - The form is a [`Draft`]: it travels with every post (the page keeps no server state), the
//!   Test buttons load it into a scratch folder and call it (dry run, mocked response or live,
//!   through the same policy as any call), and Save goes through the admin API's installer and
//!   the publish gate ([`crate::gate`]), with the exchanges the builder kept as its test cases.
//!   Each saved version is also copied under `<data dir>/console-history/<name>/`.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde_json::{Map, Value};

use super::AppState;
use super::draft::{self, Draft, FieldErrors, MIN_ROWS};
use crate::call::{Call, MockResponse, Trigger};
use crate::config::KeyScope;

/// The session cookie's name.
const COOKIE: &str = "callout_console";
/// How long a session lasts.
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

const CSS: &str = include_str!("../../assets/console.css");
const JS: &str = include_str!("../../assets/console.js");

/// Signed-in browsers: session id → (the key's name, when it started).
#[derive(Default)]
pub struct Sessions {
    live: Mutex<HashMap<String, (String, Instant)>>,
}

impl Sessions {
    fn start(&self, key_name: &str) -> String {
        let mut b = [0u8; 32];
        // Without randomness no session can be made safely: refuse to sign in.
        getrandom::fill(&mut b).expect("the system's random source");
        let id = hex::encode(b);
        let mut live = self
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        live.retain(|_, (_, t)| t.elapsed() < SESSION_TTL);
        live.insert(id.clone(), (key_name.to_string(), Instant::now()));
        id
    }

    fn check(&self, id: &str) -> Option<String> {
        let live = self
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        live.get(id)
            .filter(|(_, t)| t.elapsed() < SESSION_TTL)
            .map(|(n, _)| n.clone())
    }

    fn end(&self, id: &str) {
        self.live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(id);
    }
}

/// The console's routes (the caller merges them into the server's router).
pub fn routes(state: &AppState) -> Router<AppState> {
    let private = Router::new()
        .route("/console", get(actions_page))
        .route("/console/actions/new", get(new_page))
        .route("/console/actions/draft", post(draft_post))
        .route("/console/actions/{name}", get(action_page))
        .route("/console/actions/{name}/edit", get(edit_page))
        .route("/console/chat", get(chat_page).post(chat_post))
        .route("/console/outbox", get(outbox_page))
        .route("/console/outbox/{id}/retry", post(outbox_retry))
        .route("/console/audit", get(audit_page))
        .route("/console/logout", post(logout))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            signed_in,
        ));
    Router::new()
        .route("/console/login", get(login_page).post(login_post))
        .route(
            "/console/assets/console.css",
            get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], CSS) }),
        )
        .route(
            "/console/assets/console.js",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                    JS,
                )
            }),
        )
        .merge(private)
        .layer(axum::middleware::from_fn(same_origin_posts))
}

fn cookie_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

async fn signed_in(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let ok = cookie_of(req.headers()).is_some_and(|id| state.console.check(&id).is_some());
    if ok {
        next.run(req).await
    } else {
        Redirect::to("/console/login").into_response()
    }
}

/// Refuses a POST whose `Origin` is another site (the cookie is `SameSite=Strict` too).
async fn same_origin_posts(req: Request, next: Next) -> Response {
    if req.method() == axum::http::Method::POST {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok());
        let origin = req
            .headers()
            .get(header::ORIGIN)
            .and_then(|h| h.to_str().ok());
        if let (Some(origin), Some(host)) = (origin, host) {
            let origin_host = origin.split_once("://").map(|(_, h)| h).unwrap_or(origin);
            if origin != "null" && origin_host != host {
                return (
                    StatusCode::FORBIDDEN,
                    "a console form posted from another site was refused",
                )
                    .into_response();
            }
        }
    }
    next.run(req).await
}

/// HTML-escapes `s` (text and attribute values).
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

fn page(title: &str, signed_in: bool, body: &str) -> Html<String> {
    let nav = if signed_in {
        "<nav aria-label=\"Console\"><ul>\
         <li><a href=\"/console\">Actions</a></li>\
         <li><a href=\"/console/actions/new\">Add new API request</a></li>\
         <li><a href=\"/console/chat\">Conversation</a></li>\
         <li><a href=\"/console/outbox\">Outbox</a></li>\
         <li><a href=\"/console/audit\">Audit</a></li>\
         <li><form method=\"post\" action=\"/console/logout\"><button type=\"submit\" class=\"link\">Sign out</button></form></li>\
         </ul></nav>"
    } else {
        ""
    };
    Html(format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · Callout console</title>\
         <link rel=\"stylesheet\" href=\"/console/assets/console.css\">\
         <script src=\"/console/assets/console.js\" defer></script></head>\
         <body><header><p class=\"brand\">Callout console</p>{nav}</header>\
         <main id=\"main\">{body}</main></body></html>",
        esc(title)
    ))
}

fn summary(errors: &FieldErrors, intro: &str) -> String {
    if errors.is_empty() {
        return String::new();
    }
    let mut s = format!(
        "<div id=\"error-summary\" role=\"alert\" tabindex=\"-1\"><h2>{}</h2><ul>",
        esc(intro)
    );
    for (field, msg) in errors {
        if field.is_empty() {
            let _ = write!(s, "<li>{}</li>", esc(msg));
        } else {
            let _ = write!(s, "<li><a href=\"#{}\">{}</a></li>", esc(field), esc(msg));
        }
    }
    s.push_str("</ul></div>");
    s
}

// ---------------------------------------------------------------- sign-in

#[derive(serde::Deserialize)]
struct LoginForm {
    #[serde(default)]
    key: String,
}

fn login_html(error: Option<&str>) -> Html<String> {
    let errors: FieldErrors = error
        .map(|e| vec![("key".to_string(), e.to_string())])
        .unwrap_or_default();
    let invalid = if error.is_some() {
        " aria-invalid=\"true\" aria-describedby=\"key-error\""
    } else {
        ""
    };
    let field_error = error
        .map(|e| format!("<p id=\"key-error\" class=\"field-error\">{}</p>", esc(e)))
        .unwrap_or_default();
    page(
        "Sign in",
        false,
        &format!(
            "<h1>Sign in</h1>{}\
             <form method=\"post\" action=\"/console/login\">\
             <p><label for=\"key\">Admin API key</label>\
             <input id=\"key\" name=\"key\" type=\"password\" autocomplete=\"current-password\" required{invalid}>{field_error}</p>\
             <p class=\"hint\">An admin key from callout.toml <code>[[server.api_keys]]</code>. It is checked once; the browser keeps only a session cookie.</p>\
             <p><button type=\"submit\">Sign in</button></p></form>",
            summary(&errors, "Not signed in")
        ),
    )
}

async fn login_page() -> Html<String> {
    login_html(None)
}

async fn login_post(State(state): State<AppState>, Form(f): Form<LoginForm>) -> Response {
    match state.keys.check(f.key.trim()) {
        Some(c) if c.scope == KeyScope::Admin => {
            let id = state.console.start(&c.key_name);
            tracing::info!(key = %c.key_name, "console sign-in");
            (
                [(
                    header::SET_COOKIE,
                    format!(
                        "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/console; Max-Age={}",
                        SESSION_TTL.as_secs()
                    ),
                )],
                Redirect::to("/console"),
            )
                .into_response()
        }
        Some(_) => (
            StatusCode::FORBIDDEN,
            login_html(Some(
                "That is not an admin key: the console needs a key with scope = \"admin\".",
            )),
        )
            .into_response(),
        None => (
            StatusCode::UNAUTHORIZED,
            login_html(Some(
                "That is not an admin key of this server; check callout.toml [[server.api_keys]].",
            )),
        )
            .into_response(),
    }
}

async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(id) = cookie_of(&headers) {
        state.console.end(&id);
    }
    (
        [(
            header::SET_COOKIE,
            format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/console; Max-Age=0"),
        )],
        Redirect::to("/console/login"),
    )
        .into_response()
}

// ---------------------------------------------------------------- actions

fn ms_text(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Waits until the audit events recorded so far are readable (the writer batches them for up
/// to 10 ms); a page calls it once before its [`last_calls`].
async fn flush_audit(state: &AppState) {
    let runtime = state.runtime.clone();
    let _ = tokio::task::spawn_blocking(move || runtime.flush_audit()).await;
}

/// The newest audit events (of `action`, when given); without `tests`, the dry runs and
/// mocked requests of tests (the publish gate's included) are left out.
async fn last_calls(
    state: &AppState,
    action: Option<String>,
    limit: usize,
    tests: bool,
) -> Vec<crate::audit::AuditEvent> {
    let db = state.data_dir.join(crate::audit::DB_FILE);
    let events = tokio::task::spawn_blocking(move || {
        crate::audit::AuditLog::query(
            &db,
            &crate::audit::AuditQuery {
                action,
                decision: None,
                limit: if tests { limit } else { limit * 20 },
                since_ms: None,
            },
        )
        .unwrap_or_default()
    })
    .await
    .unwrap_or_default();
    events
        .into_iter()
        .filter(|e| tests || e.decision != crate::audit::Decision::DryRun)
        .take(limit)
        .collect()
}

fn call_text(e: &crate::audit::AuditEvent) -> String {
    let result = match (e.status, &e.reason) {
        (Some(s), _) => s.to_string(),
        (None, Some(r)) => r.clone(),
        (None, None) => String::new(),
    };
    format!(
        "{} {} {}{} → {} ({})",
        ms_text(e.at_ms),
        e.method,
        e.origin,
        e.path,
        result,
        e.decision.as_str()
    )
}

async fn actions_page(State(state): State<AppState>) -> Html<String> {
    flush_audit(&state).await;
    let reg = state.actions.snapshot();
    let mut rows = String::new();
    for p in reg.plugins() {
        let calls = last_calls(&state, Some(p.name().to_string()), 3, false).await;
        let calls_html = if calls.is_empty() {
            "none yet".to_string()
        } else {
            format!(
                "<ul>{}</ul>",
                calls
                    .iter()
                    .map(|c| format!("<li>{}</li>", esc(&call_text(c))))
                    .collect::<String>()
            )
        };
        let _ = write!(
            rows,
            "<tr data-action=\"{n}\"><th scope=\"row\"><a href=\"/console/actions/{n}\">{n}</a></th>\
             <td class=\"status\">loaded</td><td class=\"trigger\">{t}</td><td class=\"last-calls\">{calls_html}</td></tr>",
            n = esc(p.name()),
            t = esc(p.manifest().raw.trigger.kind.as_str()),
        );
    }
    let dir = state.loader.dir().to_string_lossy().to_string();
    for f in reg.failures() {
        let folder = f
            .action_folder()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let detail = f.to_string().replace(&dir, ".");
        let _ = write!(
            rows,
            "<tr data-action=\"{n}\"><th scope=\"row\">{n}</th><td class=\"status\">failed: {d}</td><td class=\"trigger\">-</td><td class=\"last-calls\">-</td></tr>",
            n = esc(&folder),
            d = esc(&detail),
        );
    }
    page(
        "Actions",
        true,
        &format!(
            "<h1>Actions</h1><p><a class=\"button\" href=\"/console/actions/new\">Add new API request</a></p>\
             <table id=\"actions\"><caption>Every action of this server, and its last outbound calls</caption>\
             <thead><tr><th scope=\"col\">Action</th><th scope=\"col\">Status</th><th scope=\"col\">Trigger</th><th scope=\"col\">Last calls</th></tr></thead>\
             <tbody>{rows}</tbody></table>"
        ),
    )
}

/// The secrets the console offers: those declared by the loaded actions, with their sources.
fn declared_secrets(state: &AppState) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for p in state.actions.snapshot().plugins() {
        for (name, s) in &p.manifest().secrets {
            out.entry(name.clone())
                .or_insert_with(|| s.source.to_string());
        }
    }
    out
}

async fn action_page(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    let reg = state.actions.snapshot();
    let Some(plugin) = reg.get(&name) else {
        return (
            StatusCode::NOT_FOUND,
            page(
                "Not found",
                true,
                &format!(
                    "<h1>No action {}</h1><p><a href=\"/console\">Back to the actions</a></p>",
                    esc(&name)
                ),
            ),
        )
            .into_response();
    };
    let gate = state.loader.gate().clone();
    let n = name.clone();
    let verdicts = tokio::task::spawn_blocking(move || gate.history(&n, 20))
        .await
        .unwrap_or_default();
    let current = crate::gate::version(&plugin).unwrap_or_default();
    let latest = verdicts.iter().find(|v| v.version == current);
    let gate_html = match latest {
        Some(v) if v.passed => format!(
            "passed: {} test case(s) passed, version {}",
            v.cases_passed,
            crate::gate::short(&v.version)
        ),
        Some(v) if v.overridden => format!(
            "overridden by the operator (did not pass: {})",
            v.reasons.join("; ")
        ),
        Some(v) => format!("did not pass: {}", v.reasons.join("; ")),
        None => "no verdict recorded".into(),
    };
    let mut versions = String::new();
    for v in &verdicts {
        let _ = write!(
            versions,
            "<li>{} · version <code>{}</code> · {}{}</li>",
            esc(&ms_text(v.at_ms)),
            esc(crate::gate::short(&v.version)),
            if v.passed {
                "passed"
            } else if v.overridden {
                "overridden"
            } else {
                "refused"
            },
            if v.version == current {
                " (serving)"
            } else {
                ""
            }
        );
    }
    let history = history_list(&state, &name);
    let cases = crate::cases::load(&plugin).unwrap_or_default();
    let cases_html: String = cases
        .iter()
        .map(|c| format!("<li>{}</li>", esc(&c.name)))
        .collect();
    flush_audit(&state).await;
    let calls = last_calls(&state, Some(name.clone()), 10, false).await;
    let calls_html: String = calls
        .iter()
        .map(|c| format!("<li>{}</li>", esc(&call_text(c))))
        .collect();
    let edit = if plugin.manifest().builtin.is_some() {
        format!(
            "<p><a class=\"button\" href=\"/console/actions/{}/edit\">Edit this API request</a></p>",
            esc(&name)
        )
    } else {
        "<p>A code plugin: change it in its source and upload a new version.</p>".into()
    };
    let m = plugin.manifest();
    page(
        &name,
        true,
        &format!(
            "<h1>{n}</h1><p>{d}</p>{edit}\
             <h2>Publish gate</h2><p id=\"gate\">{g}</p>\
             <h2>Versions</h2><ol id=\"versions\">{versions}</ol>{history}\
             <h2>Test cases</h2><ul id=\"test-cases\">{cases_html}</ul>\
             <h2>Trigger</h2><p>{t}</p>\
             <h2>Last calls</h2><ul id=\"calls\">{calls_html}</ul>",
            n = esc(&name),
            d = esc(&plugin.descriptor().description),
            g = esc(&gate_html),
            t = esc(m.raw.trigger.kind.as_str()),
        ),
    )
    .into_response()
}

fn history_dir(state: &AppState, name: &str) -> std::path::PathBuf {
    state.data_dir.join("console-history").join(name)
}

fn history_list(state: &AppState, name: &str) -> String {
    let Ok(entries) = std::fs::read_dir(history_dir(state, name)) else {
        return String::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names.reverse();
    if names.is_empty() {
        return String::new();
    }
    format!(
        "<p>Saved from the console ({} version(s)), each kept in the data dir under <code>console-history/{}/</code>: {}</p>",
        names.len(),
        esc(name),
        esc(&names.join(", "))
    )
}

async fn new_page(State(state): State<AppState>) -> Html<String> {
    form_page(
        &state,
        &Draft::new(),
        &Vec::new(),
        None,
        "Add new API request",
    )
}

async fn edit_page(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    let reg = state.actions.snapshot();
    match reg.get(&name) {
        Some(p) if p.manifest().builtin.is_some() => {
            let cases = crate::cases::load(&p).unwrap_or_default();
            form_page_with(
                &state,
                &Draft::from_manifest(p.manifest(), cases),
                &Vec::new(),
                None,
                &format!("Edit {name}"),
                &draft::unshown_settings(p.manifest()),
            )
            .into_response()
        }
        _ => Redirect::to("/console").into_response(),
    }
}

// ---------------------------------------------------------------- the form

fn attr_invalid(errors: &FieldErrors, id: &str) -> (String, String) {
    match errors.iter().find(|(f, _)| f == id) {
        Some((_, m)) => (
            format!(" aria-invalid=\"true\" aria-describedby=\"{id}-error\""),
            format!("<p id=\"{id}-error\" class=\"field-error\">{}</p>", esc(m)),
        ),
        None => (String::new(), String::new()),
    }
}

fn text_field(errors: &FieldErrors, id: &str, label: &str, value: &str, extra: &str) -> String {
    let (mut a, e) = attr_invalid(errors, id);
    // One aria-describedby, naming the hint and the error both (a second attribute would be
    // ignored by the browser).
    let mut extra = extra.to_string();
    if !a.is_empty() && extra.contains("aria-describedby=\"") {
        extra = extra.replace(
            "aria-describedby=\"",
            &format!("aria-describedby=\"{id}-error "),
        );
        a = " aria-invalid=\"true\"".to_string();
    }
    format!(
        "<p class=\"field\"><label for=\"{id}\">{}</label><input id=\"{id}\" name=\"{id}\" value=\"{}\"{extra}{a}>{e}</p>",
        esc(label),
        esc(value)
    )
}

fn area_field(errors: &FieldErrors, id: &str, label: &str, value: &str, hint: &str) -> String {
    let (a, e) = attr_invalid(errors, id);
    let hint_html = if hint.is_empty() {
        String::new()
    } else {
        format!("<span class=\"hint\" id=\"{id}-hint\">{}</span>", esc(hint))
    };
    let (a, described) = match (hint.is_empty(), a.is_empty()) {
        (true, _) => (a, String::new()),
        (false, true) => (a, format!(" aria-describedby=\"{id}-hint\"")),
        (false, false) => (
            " aria-invalid=\"true\"".to_string(),
            format!(" aria-describedby=\"{id}-error {id}-hint\""),
        ),
    };
    format!(
        "<p class=\"field\"><label for=\"{id}\">{}</label>{hint_html}<textarea id=\"{id}\" name=\"{id}\" rows=\"4\"{described}{a}>{}</textarea>{e}</p>",
        esc(label),
        esc(value)
    )
}

fn select_field(
    errors: &FieldErrors,
    id: &str,
    label: &str,
    value: &str,
    options: &[(String, String)],
) -> String {
    let (a, e) = attr_invalid(errors, id);
    let opts: String = options
        .iter()
        .map(|(v, t)| {
            format!(
                "<option value=\"{}\"{}>{}</option>",
                esc(v),
                if v == value { " selected" } else { "" },
                esc(t)
            )
        })
        .collect();
    format!(
        "<p class=\"field\"><label for=\"{id}\">{}</label><select id=\"{id}\" name=\"{id}\"{a}>{opts}</select>{e}</p>",
        esc(label)
    )
}

struct TestView {
    request: String,
    response: Option<MockResponse>,
    outcome: String,
    reply: String,
    mode: &'static str,
}

fn form_page(
    state: &AppState,
    d: &Draft,
    errors: &FieldErrors,
    test: Option<&TestView>,
    title: &str,
) -> Html<String> {
    form_page_with(state, d, errors, test, title, &[])
}

/// As [`form_page`], with `unshown`: settings of the action the form cannot show, which a save
/// from the form would drop (named in a notice at the top).
fn form_page_with(
    state: &AppState,
    d: &Draft,
    errors: &FieldErrors,
    test: Option<&TestView>,
    title: &str,
    unshown: &[String],
) -> Html<String> {
    let secrets: Vec<String> = declared_secrets(state).into_keys().collect();
    let mut h = String::new();
    let _ = write!(h, "<h1>{}</h1>", esc(title));
    h.push_str(&summary(errors, "Please fix these fields"));
    if !unshown.is_empty() {
        let _ = write!(
            h,
            "<div id=\"unshown\" class=\"notice\" role=\"status\"><p>This action uses settings the form does not show: {}. Saving it from this form drops them; edit its action.toml instead to keep them.</p></div>",
            esc(&unshown.join(", "))
        );
    }
    h.push_str("<form id=\"action-form\" method=\"post\" action=\"/console/actions/draft\">");
    // What and when.
    h.push_str("<fieldset><legend>Action</legend>");
    h.push_str(&text_field(errors, "name", "Name", &d.name, " required pattern=\"[a-z0-9][a-z0-9\\-]{0,63}\" autocomplete=\"off\" aria-describedby=\"name-hint\""));
    h.push_str("<p class=\"hint\" id=\"name-hint\">Lower-case letters, digits and -, like <code>track-order</code>.</p>");
    h.push_str(&text_field(
        errors,
        "description",
        "Description",
        &d.description,
        "",
    ));
    h.push_str("</fieldset>");
    let (ta, te) = attr_invalid(errors, "trigger-on-prompt");
    let _ = write!(
        h,
        "<fieldset><legend>Trigger</legend>\
         <p><input type=\"radio\" id=\"trigger-on-prompt\" name=\"trigger\" value=\"on-prompt\"{}{ta}> <label for=\"trigger-on-prompt\">Based on prompt</label></p>\
         <p><input type=\"radio\" id=\"trigger-chat-end\" name=\"trigger\" value=\"chat-end\"{}> <label for=\"trigger-chat-end\">When chat ends</label></p>{te}",
        if d.trigger != "chat-end" {
            " checked"
        } else {
            ""
        },
        if d.trigger == "chat-end" {
            " checked"
        } else {
            ""
        },
    );
    h.push_str(&text_field(
        errors,
        "intents",
        "Intents (comma-separated)",
        &d.intents,
        "",
    ));
    h.push_str(&area_field(errors, "patterns", "Message patterns (one regular expression per line)", &d.patterns, "Based on prompt: the request is sent once a pattern or intent matches and every required input is collected."));
    h.push_str("</fieldset>");
    // The request.
    h.push_str("<fieldset><legend>Request</legend>");
    let methods: Vec<(String, String)> = draft::METHODS
        .iter()
        .map(|m| (m.to_string(), m.to_string()))
        .collect();
    h.push_str(&select_field(
        errors, "method", "Method", &d.method, &methods,
    ));
    h.push_str(&text_field(
        errors,
        "url",
        "Endpoint URL",
        &d.url,
        " required aria-describedby=\"url-hint\"",
    ));
    h.push_str("<p class=\"hint\" id=\"url-hint\">Variables in double braces: <code>https://api.example.com/orders/{{order_id}}</code>. The action may reach this host and path only.</p>");
    h.push_str("</fieldset><fieldset><legend>Headers</legend>");
    let mut secret_opts = vec![(String::new(), "(none)".to_string())];
    secret_opts.extend(secrets.iter().map(|s| (s.clone(), s.clone())));
    for i in 0..d.headers.len().max(MIN_ROWS - 1) + 1 {
        let row = d.headers.get(i).cloned().unwrap_or_default();
        let n = i + 1;
        h.push_str("<div class=\"row\">");
        h.push_str(&text_field(
            errors,
            &format!("header-name-{n}"),
            &format!("Header name {n}"),
            &row.name,
            "",
        ));
        h.push_str(&text_field(
            errors,
            &format!("header-value-{n}"),
            &format!("Header value {n}"),
            &row.value,
            "",
        ));
        h.push_str(&select_field(
            errors,
            &format!("header-secret-{n}"),
            &format!("Secret for header {n}"),
            &row.secret,
            &secret_opts,
        ));
        h.push_str("</div>");
    }
    h.push_str("<p class=\"hint\">A chosen secret is appended to the value (e.g. value <code>Bearer </code>); the host fills it in when sending, and no page ever shows it.</p>");
    h.push_str("</fieldset><fieldset><legend>Body</legend>");
    h.push_str(&area_field(errors, "body", "Body template (JSON)", &d.body, "JSON; variables inside strings, like {\"email\": \"{{email}}\"}. A string that is exactly one variable keeps the value's type."));
    h.push_str("</fieldset><fieldset><legend>Inputs</legend>");
    let types: Vec<(String, String)> = draft::TYPES
        .iter()
        .map(|m| (m.to_string(), m.to_string()))
        .collect();
    for i in 0..d.inputs.len().max(MIN_ROWS - 1) + 1 {
        let row = d.inputs.get(i).cloned().unwrap_or_else(|| draft::InputRow {
            kind: "string".into(),
            ..Default::default()
        });
        let n = i + 1;
        h.push_str("<div class=\"row\">");
        h.push_str(&text_field(
            errors,
            &format!("input-name-{n}"),
            &format!("Input name {n}"),
            &row.name,
            "",
        ));
        h.push_str(&select_field(
            errors,
            &format!("input-type-{n}"),
            &format!("Type of input {n}"),
            &row.kind,
            &types,
        ));
        h.push_str(&text_field(
            errors,
            &format!("input-pattern-{n}"),
            &format!("Pattern of input {n}"),
            &row.pattern,
            "",
        ));
        h.push_str(&text_field(
            errors,
            &format!("input-prompt-{n}"),
            &format!("Question for input {n}"),
            &row.prompt,
            "",
        ));
        let _ = write!(
            h,
            "<p class=\"field check\"><input type=\"checkbox\" id=\"input-required-{n}\" name=\"input-required-{n}\"{}> <label for=\"input-required-{n}\">Required input {n}</label></p>",
            if row.required { " checked" } else { "" }
        );
        h.push_str(&text_field(
            errors,
            &format!("input-sample-{n}"),
            &format!("Sample value of input {n}"),
            &row.sample,
            "",
        ));
        h.push_str("</div>");
    }
    h.push_str("</fieldset><fieldset><legend>Response</legend>");
    for i in 0..d.vars.len().max(MIN_ROWS - 1) + 1 {
        let row = d.vars.get(i).cloned().unwrap_or_default();
        let n = i + 1;
        h.push_str("<div class=\"row\">");
        h.push_str(&text_field(
            errors,
            &format!("var-name-{n}"),
            &format!("Variable name {n}"),
            &row.name,
            "",
        ));
        h.push_str(&text_field(
            errors,
            &format!("var-pointer-{n}"),
            &format!("JSON Pointer {n}"),
            &row.pointer,
            "",
        ));
        h.push_str("</div>");
    }
    h.push_str(&text_field(
        errors,
        "reply",
        "Reply template",
        &d.reply,
        " aria-describedby=\"reply-hint\"",
    ));
    h.push_str("<p class=\"hint\" id=\"reply-hint\">What the user sees; may use the variables above and the inputs, like <code>Your order is {{status}}.</code></p>");
    h.push_str(&text_field(
        errors,
        "fallback",
        "Error message",
        &d.fallback,
        " required",
    ));
    h.push_str("</fieldset><fieldset><legend>Test</legend>");
    h.push_str(&text_field(
        errors,
        "mock-status",
        "Mock status",
        &d.mock_status,
        " inputmode=\"numeric\"",
    ));
    h.push_str(&area_field(
        errors,
        "mock-body",
        "Mock response body",
        &d.mock_body,
        "The answer the API would give (JSON or text), for \"Test with mock response\".",
    ));
    h.push_str("<p class=\"buttons\"><button type=\"submit\" name=\"op\" value=\"dry-run\">Dry run</button> \
                <button type=\"submit\" name=\"op\" value=\"mock\">Test with mock response</button> \
                <button type=\"submit\" name=\"op\" value=\"live\">Send live test</button></p></fieldset>");
    for c in &d.cases {
        let _ = write!(
            h,
            "<input type=\"hidden\" name=\"case\" value=\"{}\">",
            esc(&serde_json::to_string(c).unwrap_or_default())
        );
    }
    if !d.cases.is_empty() {
        let _ = write!(
            h,
            "<h2>Test cases kept ({})</h2><ul id=\"cases\">{}</ul>",
            d.cases.len(),
            d.cases
                .iter()
                .map(|c| format!(
                    "<li>{}: {}</li>",
                    esc(&c.name),
                    esc(c.expect.outcome.as_deref().unwrap_or(""))
                ))
                .collect::<String>()
        );
    }
    if let Some(t) = test {
        if let Some(p) = &d.pending {
            let _ = write!(
                h,
                "<input type=\"hidden\" name=\"pending\" value=\"{}\">",
                esc(&serde_json::to_string(p).unwrap_or_default())
            );
        }
        h.push_str("<section id=\"test-result\" aria-live=\"polite\"><h2>Test result</h2>");
        let _ = write!(
            h,
            "<p>Mode: {}</p><h3>Request</h3><pre id=\"request\">{}</pre>",
            t.mode,
            esc(&t.request)
        );
        if let Some(r) = &t.response {
            let headers: String = r
                .headers
                .iter()
                .map(|(k, v)| format!("{k}: {v}\n"))
                .collect();
            let body = match &r.body {
                None => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(v) => serde_json::to_string_pretty(v).unwrap_or_default(),
            };
            let status = match r.failure {
                Some(f) => format!("{f:?}"),
                None => r.status.to_string(),
            };
            let _ = write!(
                h,
                "<h3>Response</h3><p>Status: <span id=\"response-status\">{}</span></p><pre id=\"response-headers\">{}</pre><pre id=\"response-body\">{}</pre>",
                esc(&status),
                esc(&headers),
                esc(&body)
            );
        }
        let _ = write!(
            h,
            "<h3>Outcome</h3><p>Outcome: <span id=\"outcome\">{}</span></p><p>The user would see: <span id=\"user-reply\">{}</span></p>",
            esc(&t.outcome),
            esc(&t.reply)
        );
        if d.pending.is_some() {
            h.push_str("<p><button type=\"submit\" name=\"op\" value=\"accept\">Keep as test case</button> <span class=\"hint\">Saved with the action and run by the publish gate: this exchange must keep giving this result.</span></p>");
        }
        h.push_str("</section>");
    }
    h.push_str("<p class=\"buttons save\"><button type=\"submit\" name=\"op\" value=\"save\" class=\"primary\">Save</button> <span class=\"hint\">Saving publishes the action once its kept test cases pass (the publish gate).</span></p>");
    h.push_str("</form>");
    page(title, true, &h)
}

async fn draft_post(
    State(state): State<AppState>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Response {
    let mut d = Draft::from_fields(&fields);
    let declared = declared_secrets(&state);
    let names: Vec<String> = declared.keys().cloned().collect();
    let title = "Add new API request";
    let mut errors = d.check(&names);
    if let Some(existing) = state.actions.snapshot().get(&d.name)
        && existing.manifest().builtin.is_none()
    {
        errors.push((
            "name".into(),
            format!(
                "An action named {} already exists and is a code plugin; choose another name.",
                d.name
            ),
        ));
    }
    match d.op.as_str() {
        "accept" => {
            if let Some(mut p) = d.pending.take() {
                let base = p.name.clone();
                let mut n = 1;
                while d.cases.iter().any(|c| c.name == p.name) {
                    n += 1;
                    p.name = format!("{base} ({n})");
                }
                d.cases.push(p);
            }
            form_page(&state, &d, &Vec::new(), None, title).into_response()
        }
        "dry-run" | "mock" | "live" => {
            if d.op == "mock" {
                errors.extend(d.check_mock());
            }
            if !errors.is_empty() {
                d.pending = None;
                return (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    form_page(&state, &d, &errors, None, title),
                )
                    .into_response();
            }
            match run_test(&state, &d, &declared).await {
                Ok((view, pending)) => {
                    d.pending = Some(pending);
                    form_page(&state, &d, &Vec::new(), Some(&view), title).into_response()
                }
                Err(msg) => {
                    d.pending = None;
                    (
                        StatusCode::UNPROCESSABLE_ENTITY,
                        form_page(&state, &d, &vec![(String::new(), msg)], None, title),
                    )
                        .into_response()
                }
            }
        }
        _ => {
            if !errors.is_empty() {
                return (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    form_page(&state, &d, &errors, None, title),
                )
                    .into_response();
            }
            match save(&state, &d, &declared).await {
                Ok(()) => Redirect::to(&format!("/console/actions/{}", d.name)).into_response(),
                Err(msg) => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    form_page(&state, &d, &vec![(String::new(), msg)], None, title),
                )
                    .into_response(),
            }
        }
    }
}

/// Loads the draft from a scratch folder and calls it once as the Test button asked.
async fn run_test(
    state: &AppState,
    d: &Draft,
    declared: &BTreeMap<String, String>,
) -> Result<(TestView, crate::cases::Case), String> {
    let manifest = d.manifest(declared)?;
    let scratch = tempfile::Builder::new()
        .prefix("callout-console-")
        .tempdir()
        .map_err(|e| format!("cannot make a scratch folder to test in: {e}"))?;
    let folder = scratch.path().join(&d.name);
    std::fs::create_dir_all(&folder)
        .and_then(|()| std::fs::write(folder.join("action.toml"), &manifest))
        .map_err(|e| format!("cannot write the scratch action: {e}"))?;
    let plugin = state
        .runtime
        .load(&folder.join("action.toml"))
        .await
        .map_err(|e| {
            format!(
                "The request cannot be loaded: {}",
                e.detail.replace(&*scratch.path().to_string_lossy(), ".")
            )
        })?;
    let inputs: Map<String, Value> = d.samples();
    let (mode, mock) = match d.op.as_str() {
        "dry-run" => ("dry run: nothing sent", None),
        "mock" => {
            let body = if d.mock_body.trim().is_empty() {
                None
            } else {
                Some(
                    serde_json::from_str::<Value>(&d.mock_body)
                        .unwrap_or_else(|_| Value::String(d.mock_body.clone())),
                )
            };
            let is_json = matches!(body, Some(Value::Object(_) | Value::Array(_)));
            let mut headers = BTreeMap::new();
            if is_json {
                headers.insert("content-type".to_string(), "application/json".to_string());
            }
            (
                "mock: answered by the mock response, nothing sent",
                Some(MockResponse {
                    status: d.mock_status.trim().parse().unwrap_or(200),
                    headers,
                    body,
                    failure: None,
                }),
            )
        }
        _ => ("live: sent to the endpoint", None),
    };
    let call = Call {
        trigger: Trigger::Test,
        inputs: inputs.clone(),
        dry_run: d.op == "dry-run",
        mock: mock.clone().map(Arc::new),
        capture: d.op == "live",
        ..Call::default()
    };
    let report = plugin.invoke(call).await;
    let request = report
        .recorded
        .first()
        .map(ToString::to_string)
        .unwrap_or_else(|| match &report.result {
            Err(crate::call::Failure::NeedsInput { .. }) => {
                "No request: the inputs are not complete (fill in the sample values).".into()
            }
            _ => "No request was made.".into(),
        });
    let response = match d.op.as_str() {
        "mock" => mock.clone(),
        "live" => report.responses.first().cloned(),
        _ => None,
    };
    let outcome = match &report.result {
        Ok(_) => "ok".to_string(),
        Err(f) => format!("{} ({f})", f.class()),
    };
    let reply = crate::cases::reply_of(&report).unwrap_or_else(|| "(nothing)".into());
    let case_name = match (d.op.as_str(), &response) {
        ("dry-run", _) => "dry run".to_string(),
        (op, Some(r)) => format!("{op} {}", r.status),
        (op, None) => op.to_string(),
    };
    let case_response = if d.op == "dry-run" {
        None
    } else {
        response.clone()
    };
    let pending = draft::case_of(case_name, inputs, case_response, &report);
    Ok((
        TestView {
            request,
            response,
            outcome,
            reply,
            mode,
        },
        pending,
    ))
}

/// Installs the draft as a new version through the loader (and so the publish gate), and
/// keeps a copy of it in the console's history.
async fn save(
    state: &AppState,
    d: &Draft,
    declared: &BTreeMap<String, String>,
) -> Result<(), String> {
    let manifest = d.manifest(declared)?;
    let tests = d.tests_toml()?;
    let plugin = state
        .loader
        .install(&d.name, manifest.as_bytes(), None, Some(tests.as_bytes()))
        .await
        .map_err(|e| match e {
            super::loader::ChangeError::Rejected(m) if m.contains("publish gate") => {
                format!("Not saved: the publish gate refused this version: {m}")
            }
            other => format!("Not saved: {other}"),
        })?;
    let version = crate::gate::version(&plugin).unwrap_or_default();
    let dir = history_dir(state, &d.name).join(format!(
        "{}-{}",
        crate::db::now_ms(),
        crate::gate::short(&version)
    ));
    if let Err(e) = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(dir.join("action.toml"), &manifest))
        .and_then(|()| std::fs::write(dir.join("tests.toml"), &tests))
    {
        tracing::warn!("cannot keep the console history in {}: {e}", dir.display());
    }
    tracing::info!(action = %d.name, "saved from the console");
    Ok(())
}

// ---------------------------------------------------------------- conversation

#[derive(serde::Deserialize, Default)]
struct ChatQuery {
    #[serde(default)]
    id: Option<String>,
}

fn chat_html(
    id: &str,
    conv: Option<&crate::conversations::Conversation>,
    notes: &[String],
    error: Option<&str>,
) -> Html<String> {
    let mut lines = String::new();
    if let Some(c) = conv {
        for m in &c.messages {
            let (class, who) = match m.role {
                crate::call::Role::User => ("user", "You"),
                crate::call::Role::Agent => ("action-reply", "Action"),
                crate::call::Role::System => ("system", "System"),
            };
            let _ = write!(
                lines,
                "<li class=\"{class}\"><span class=\"who\">{who}:</span> {}</li>",
                esc(&m.text)
            );
        }
    }
    let notes_html: String = notes
        .iter()
        .map(|n| format!("<li>{}</li>", esc(n)))
        .collect();
    let ended = conv.is_some_and(|c| c.ended_at_ms.is_some());
    let errors: FieldErrors = error
        .map(|e| vec![("message".to_string(), e.to_string())])
        .unwrap_or_default();
    page(
        "Conversation",
        true,
        &format!(
            "<h1>Conversation</h1>{}<p>Talk to the actions as a user would: on-prompt actions fire when their patterns or intents match and every required input is there.</p>\
             <ol id=\"transcript\" aria-live=\"polite\">{lines}</ol>\
             <ul id=\"turns\">{notes_html}</ul>{}\
             <form method=\"post\" action=\"/console/chat\"><input type=\"hidden\" name=\"id\" value=\"{id}\">\
             <p class=\"field\"><label for=\"message\">Message</label><input id=\"message\" name=\"message\" autocomplete=\"off\"></p>\
             <p class=\"field\"><label for=\"values\">Values (one name=value per line)</label><textarea id=\"values\" name=\"values\" rows=\"3\"></textarea></p>\
             <p class=\"buttons\"><button type=\"submit\" name=\"op\" value=\"send\">Send</button> <button type=\"submit\" name=\"op\" value=\"end\">End chat</button></p></form>\
             <p><a href=\"/console/chat\">Start a new conversation</a></p>",
            summary(&errors, "Not sent"),
            if ended {
                "<p id=\"ended\">This conversation has ended; its chat-end actions went to the outbox.</p>"
            } else {
                ""
            },
            id = esc(id),
        ),
    )
}

async fn chat_page(State(state): State<AppState>, Query(q): Query<ChatQuery>) -> Html<String> {
    let id =
        q.id.filter(|i| crate::conversations::check_id(i).is_ok())
            .unwrap_or_else(|| {
                let mut b = [0u8; 8];
                let _ = getrandom::fill(&mut b);
                format!("console-{}", hex::encode(b))
            });
    let conv = state.chat.store().get(&id).ok().flatten();
    chat_html(&id, conv.as_ref(), &[], None)
}

async fn chat_post(
    State(state): State<AppState>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Response {
    let one = |k: &str| {
        fields
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let id = one("id");
    if crate::conversations::check_id(&id).is_err() {
        return Redirect::to("/console/chat").into_response();
    }
    let mut notes = Vec::new();
    let mut error = None;
    if one("op") == "end" {
        match state.chat.end(&id).await {
            Ok(e) => notes.push(format!(
                "Ended; {} chat-end delivery(ies) in the outbox.",
                e.deliveries.len()
            )),
            Err(e) => error = Some(e.to_string()),
        }
    } else {
        let mut values = Map::new();
        for line in one("values").lines() {
            if let Some((k, v)) = line.split_once('=') {
                let (k, v) = (k.trim(), v.trim());
                if !k.is_empty() && !k.starts_with("callout.") {
                    values.insert(k.to_string(), Value::String(v.to_string()));
                }
            }
        }
        let msg = crate::chat::UserMessage {
            text: one("message"),
            intents: Vec::new(),
            values,
        };
        match state.chat.message(Some(&id), msg).await {
            Ok(r) => {
                for t in &r.turns {
                    notes.push(format!("{}: {}", t.action, t.status));
                }
                if r.turns.is_empty() {
                    notes.push("No action fired for that message.".into());
                }
            }
            Err(e) => error = Some(e.to_string()),
        }
    }
    let conv = state.chat.store().get(&id).ok().flatten();
    chat_html(&id, conv.as_ref(), &notes, error.as_deref()).into_response()
}

// ---------------------------------------------------------------- outbox and audit

async fn outbox_page(State(state): State<AppState>) -> Html<String> {
    let store = state.deliverer.store().clone();
    let listed = tokio::task::spawn_blocking(move || {
        let filter = crate::outbox::ListFilter {
            limit: 100,
            ..Default::default()
        };
        Ok::<_, crate::outbox::OutboxError>((store.list(&filter)?, store.counts()?))
    })
    .await;
    let (rows, counts) = match listed {
        Ok(Ok(x)) => x,
        _ => (Vec::new(), crate::outbox::Counts::default()),
    };
    let mut body = String::new();
    for d in &rows {
        let retry = if d.state == crate::outbox::State::Dead {
            format!(
                "<form method=\"post\" action=\"/console/outbox/{}/retry\"><button type=\"submit\" aria-label=\"Retry delivery {}\">Retry</button></form>",
                d.id, d.id
            )
        } else {
            String::new()
        };
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td class=\"state\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{retry}</td></tr>",
            d.id,
            esc(&d.action),
            esc(d.state.as_str()),
            d.attempts,
            esc(&ms_text(d.updated_at_ms)),
            esc(d.last_error.as_deref().unwrap_or("")),
        );
    }
    page(
        "Outbox",
        true,
        &format!(
            "<h1>Outbox</h1><p>Chat-end deliveries: {} pending, {} in flight, {} retrying, {} done, {} dead.</p>\
             <table id=\"outbox\"><caption>Newest first</caption><thead><tr><th scope=\"col\">Id</th><th scope=\"col\">Action</th><th scope=\"col\">State</th><th scope=\"col\">Attempts</th><th scope=\"col\">Updated</th><th scope=\"col\">Last error</th><th scope=\"col\">Retry</th></tr></thead><tbody>{body}</tbody></table>",
            counts.pending, counts.in_flight, counts.retrying, counts.done, counts.dead
        ),
    )
}

async fn outbox_retry(State(state): State<AppState>, Path(id): Path<i64>) -> Response {
    match state.deliverer.store().retry(id).await {
        Ok(true) => {
            state.deliverer.wake();
            tracing::info!(delivery = id, "retried from the console");
        }
        Ok(false) => {}
        Err(e) => tracing::warn!(delivery = id, "console retry failed: {e}"),
    }
    Redirect::to("/console/outbox").into_response()
}

async fn audit_page(State(state): State<AppState>) -> Html<String> {
    flush_audit(&state).await;
    let events = last_calls(&state, None, 200, true).await;
    let mut body = String::new();
    for e in &events {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{} {}{}</td><td class=\"decision\">{}</td><td class=\"reason\">{}</td><td>{}</td><td>{} ms</td></tr>",
            esc(&ms_text(e.at_ms)),
            esc(&e.action),
            esc(&e.method),
            esc(&e.origin),
            esc(&e.path),
            esc(e.decision.as_str()),
            esc(e.reason.as_deref().unwrap_or("")),
            e.status.map(|s| s.to_string()).unwrap_or_default(),
            e.duration_us / 1000,
        );
    }
    page(
        "Audit",
        true,
        &format!(
            "<h1>Audit</h1><p>Every outbound request of every action, newest first: what the policy decided and why (the query string is never recorded).</p>\
             <table id=\"audit\"><caption>The last 200 outbound requests</caption><thead><tr><th scope=\"col\">Time</th><th scope=\"col\">Action</th><th scope=\"col\">Request</th><th scope=\"col\">Decision</th><th scope=\"col\">Reason</th><th scope=\"col\">Status</th><th scope=\"col\">Duration</th></tr></thead><tbody>{body}</tbody></table>"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_escaped_and_times_are_civil_dates() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(ms_text(0), "1970-01-01 00:00:00 UTC");
        // Checked against Python's datetime.fromtimestamp(..., timezone.utc).
        assert_eq!(ms_text(1_795_779_723_000), "2026-11-27 11:42:03 UTC");
        assert_eq!(ms_text(951_782_400_000), "2000-02-29 00:00:00 UTC");
    }
}
