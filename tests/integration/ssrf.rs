//! SSRF: a corpus of forbidden destinations sent end to end through a real action.
//!
//! These tests take the allowlist out of the picture on purpose: the action is granted
//! `"*://*:*"` (behind callout.toml's `http.insecure_allow_any_host`), so only the
//! blocked-network guard stands between the corpus and the network. That is only safe where a
//! broken guard cannot reach anything, so every test here is `#[ignore]`d and runs from
//! `tests/run-netns-tests.sh`, inside a fresh network namespace whose only interface is `lo`;
//! each test first checks that and fails (not skips) when run anywhere else.
//!
//! How a leak would show:
//! - every corpus URL that names a loopback or local address uses the port of a *canary*
//!   listener bound to every local address (`[::]`, dual stack, or `0.0.0.0`), which records any
//!   connection and answers `200 canary`. The namespace script also puts a few of the corpus's
//!   private addresses (10.0.0.1, 169.254.169.254, fd00::1, ...) on `lo`, so a request that
//!   slipped past the guard to them reaches the canary too instead of failing to connect;
//! - names resolve through a fake resolver injected with `RuntimeOptions::lookup`, which never
//!   asks real DNS and answers only the names listed here;
//! - the upstream servers the action is legitimately granted record every request, and the tests
//!   compare that record with the requests they expect.
//!
//! The probe action (tests/plugins/ssrf_probe) sends one request per URL and reports each outcome
//! as data (`denied:<code>`, `status:<n>`, `invalid-request`, `connect`, ...), so one call covers a
//! whole corpus; on a mismatch the test prints the whole table.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use callout::outbound_http::Lookup;
use callout::{Registry, Runtime, RuntimeOptions};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::*;

/// The hop limit granted in the redirect tests (`[http] redirects`).
const REDIRECTS: usize = 3;

/// A public address (example.com's old one): never blocked by the guard, and unreachable inside
/// the namespace, where a request to it fails to connect.
const PUBLIC_V4: &str = "93.184.216.34";
/// A public IPv6 address (Cloudflare's resolver), likewise unreachable in the namespace.
const PUBLIC_V6: &str = "2606:4700:4700::1111";

/// Fails unless this process is in a network namespace whose only interface is `lo`.
///
/// Reads `/sys/class/net`, which shows the namespace of whoever mounted sysfs: the script
/// remounts it inside the new namespace, so outside the script this lists the real interfaces
/// and the test fails here, before it could send anything.
fn assert_loopback_only_namespace() {
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/net")
        .unwrap_or_else(|e| {
            panic!(
                "cannot read /sys/class/net ({e}); the SSRF tests must run in a loopback-only \
                 network namespace: run them with tests/run-netns-tests.sh"
            )
        })
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["lo"],
        "the SSRF tests allow any host and rely on a network namespace whose only interface is \
         lo, but this one has {names:?}; run them with tests/run-netns-tests.sh, never directly"
    );
}

// ---------------------------------------------------------------------------------------------
// Test doubles: a fake resolver, a canary listener, a recording upstream that redirects.
// ---------------------------------------------------------------------------------------------

/// A resolver with fixed answers, a few that change between lookups, and a log of questions.
///
/// Unknown names fail as "not found": nothing here ever asks real DNS.
#[derive(Default)]
struct FakeDns {
    fixed: HashMap<String, Vec<IpAddr>>,
    /// Name → (first answer, every later answer).
    rebinding: HashMap<String, (Vec<IpAddr>, Vec<IpAddr>)>,
    asked: Mutex<Vec<String>>,
}

impl FakeDns {
    /// The resolver every test uses: names for each class of forbidden answer.
    fn corpus() -> Arc<FakeDns> {
        let mut dns = FakeDns::default();
        for (name, answers) in [
            ("loopback.ssrf.test", &["127.0.0.1"][..]),
            ("private.ssrf.test", &["10.1.2.3"]),
            ("metadata.ssrf.test", &["169.254.169.254"]),
            ("ula.ssrf.test", &["fd00::1"]),
            ("v6-loopback.ssrf.test", &["::1"]),
            ("mapped.ssrf.test", &["::ffff:127.0.0.1"]),
            ("nat64.ssrf.test", &["64:ff9b::a9fe:a9fe"]),
            (
                "all-blocked.ssrf.test",
                &["127.0.0.1", "10.0.0.1", "::1", "fe80::1", "169.254.169.254"],
            ),
            // Real-world names that point at loopback or the metadata service.
            ("localtest.me", &["127.0.0.1"]),
            ("127.0.0.1.nip.io", &["127.0.0.1"]),
            ("metadata.google.internal", &["169.254.169.254"]),
            // A blocked and a public answer, in both orders, and for IPv6.
            ("mixed.ssrf.test", &["127.0.0.1", PUBLIC_V4]),
            ("mixed-public-first.ssrf.test", &[PUBLIC_V4, "127.0.0.1"]),
            ("mixed-v6.ssrf.test", &["::1", PUBLIC_V6]),
        ] {
            dns.fixed.insert(name.into(), ips(answers));
        }
        dns.rebinding.insert(
            "rebind.ssrf.test".into(),
            (ips(&[PUBLIC_V4]), ips(&["127.0.0.1"])),
        );
        Arc::new(dns)
    }

    /// How many times `name` was looked up.
    fn times_asked(&self, name: &str) -> usize {
        self.asked
            .lock()
            .unwrap()
            .iter()
            .filter(|n| *n == name)
            .count()
    }

    fn answer(&self, host: &str) -> io::Result<Vec<IpAddr>> {
        let name = host.trim_end_matches('.').to_ascii_lowercase();
        let earlier = self.times_asked(&name);
        self.asked.lock().unwrap().push(name.clone());
        if let Some(answers) = self.fixed.get(&name) {
            return Ok(answers.clone());
        }
        if let Some((first, later)) = self.rebinding.get(&name) {
            return Ok(if earlier == 0 { first } else { later }.clone());
        }
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{name:?} is not a name the SSRF tests' fake resolver knows"),
        ))
    }
}

impl Lookup for FakeDns {
    fn lookup(&self, host: &str) -> Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>> {
        let answer = self.answer(host);
        Box::pin(async move { answer })
    }
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

/// A TCP listener on every local address at one port that records each connection and answers
/// any request with `200 canary`. The corpus aims at its port, so a leak is a recorded hit.
struct Canary {
    port: u16,
    hits: Arc<Mutex<Vec<String>>>,
}

impl Canary {
    async fn start() -> Canary {
        let mut listeners = Vec::new();
        // `[::]` is dual stack on Linux (net.ipv6.bindv6only = 0): it also takes IPv4
        // connections, 127.0.0.1 and 0.0.0.0 included. Without IPv6, listen on 0.0.0.0 only.
        let port = match TcpListener::bind("[::]:0").await {
            Ok(v6) => {
                let port = v6.local_addr().unwrap().port();
                listeners.push(v6);
                // Where `[::]` is IPv6-only, IPv4 needs a listener of its own at the same port.
                if let Ok(v4) = TcpListener::bind(("0.0.0.0", port)).await {
                    listeners.push(v4);
                }
                port
            }
            Err(_) => {
                let v4 = TcpListener::bind("0.0.0.0:0").await.unwrap();
                let port = v4.local_addr().unwrap().port();
                listeners.push(v4);
                port
            }
        };
        let hits: Arc<Mutex<Vec<String>>> = Arc::default();
        for listener in listeners {
            let hits = hits.clone();
            tokio::spawn(async move {
                while let Ok((mut stream, peer)) = listener.accept().await {
                    let local = stream
                        .local_addr()
                        .map_or_else(|_| "?".into(), |a| a.to_string());
                    let index = {
                        let mut hits = hits.lock().unwrap();
                        hits.push(format!("connection from {peer} to {local}"));
                        hits.len() - 1
                    };
                    let hits = hits.clone();
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 2048];
                        let n = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf))
                            .await
                            .ok()
                            .and_then(Result::ok)
                            .unwrap_or(0);
                        let first_line = String::from_utf8_lossy(&buf[..n])
                            .lines()
                            .next()
                            .unwrap_or("")
                            .to_string();
                        hits.lock().unwrap()[index].push_str(&format!(": {first_line:?}"));
                        let _ = stream
                            .write_all(
                                b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\nconnection: close\r\n\r\n\
                                  canary",
                            )
                            .await;
                    });
                }
            });
        }
        Canary { port, hits }
    }

    /// Asserts that nothing connected, after giving a leaked connection time to be accepted.
    async fn assert_untouched(&self, context: &str) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let hits = self.hits.lock().unwrap().clone();
        assert!(
            hits.is_empty(),
            "{context}: a forbidden request reached the canary listener on port {}:\n{}",
            self.port,
            hits.join("\n")
        );
    }
}

/// A granted upstream on 127.0.0.1 that records every request (path and query) and answers
/// `redirect(path, ...)` paths with a redirect, `/chain/N` with 302 to `/chain/N+1` forever, and
/// anything else with `200 ok`.
struct Upstream {
    addr: SocketAddr,
    state: UpstreamState,
}

#[derive(Clone, Default)]
struct UpstreamState {
    redirects: Arc<Mutex<HashMap<String, (u16, String)>>>,
    received: Arc<Mutex<Vec<String>>>,
}

impl Upstream {
    async fn start() -> Upstream {
        let state = UpstreamState::default();
        let app = Router::new()
            .fallback(upstream_handler)
            .with_state(state.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Upstream { addr, state }
    }

    /// Makes `path` answer `status` with `Location: location`.
    fn redirect(&self, path: &str, status: u16, location: &str) {
        self.state
            .redirects
            .lock()
            .unwrap()
            .insert(path.into(), (status, location.into()));
    }

    /// `127.0.0.1:PORT`, as `--dev-loopback` takes it.
    fn host_port(&self) -> String {
        self.addr.to_string()
    }

    /// `http://127.0.0.1:PORT`.
    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The paths (with query) received so far, in order.
    fn received(&self) -> Vec<String> {
        self.state.received.lock().unwrap().clone()
    }
}

async fn upstream_handler(State(state): State<UpstreamState>, uri: Uri) -> Response {
    state.received.lock().unwrap().push(uri.to_string());
    let path = uri.path();
    let redirect = state.redirects.lock().unwrap().get(path).cloned();
    if let Some((status, location)) = redirect {
        let status = StatusCode::from_u16(status).unwrap();
        return (status, [(header::LOCATION, location)], "moved").into_response();
    }
    if let Some(n) = path
        .strip_prefix("/chain/")
        .and_then(|n| n.parse::<u32>().ok())
    {
        let next = format!("/chain/{}", n + 1);
        return (StatusCode::FOUND, [(header::LOCATION, next)], "again").into_response();
    }
    (StatusCode::OK, "ok").into_response()
}

// ---------------------------------------------------------------------------------------------
// The action under test and the outcome table.
// ---------------------------------------------------------------------------------------------

/// The probe action loaded in a runtime with the insecure any-host flag, `dns` as the resolver
/// and `dev` as dev-loopback entries; `allow` is the body of the `http.allow` array, `extra`
/// more `[http]` lines, and `answerable` the upstreams that may answer a request.
struct Probe {
    registry: Registry,
    /// Origins (`http://127.0.0.1:PORT/`) of the upstreams allowed to answer.
    answerable: Vec<String>,
    _runtime: Runtime,
    _data: tempfile::TempDir,
    _actions: Actions,
}

impl Probe {
    async fn load(
        allow: &str,
        extra: &str,
        dev: &[String],
        answerable: &[&Upstream],
        dns: &Arc<FakeDns>,
    ) -> Probe {
        let actions = Actions::new();
        let component = wasm("ssrf_probe");
        actions.add(
            "ssrf-probe",
            &format!(
                "name = \"ssrf-probe\"\ncomponent = {component:?}\n\n[http]\nallow = [{allow}]\n\
                 timeout_ms = 3000\n{extra}\n[limits]\ndeadline_ms = 120000\n",
                component = path_str(&component)
            ),
        );
        let data = tempfile::tempdir().unwrap();
        let mut options = RuntimeOptions::new(data.path());
        options.config = small_pool_config();
        options.config.http.insecure_allow_any_host = true;
        options.dev_loopback = dev.to_vec();
        let lookup: Arc<dyn Lookup> = dns.clone();
        options.lookup = Some(lookup);
        let runtime = Runtime::new(options).unwrap();
        let registry = load_all(&runtime, &actions).await;
        Probe {
            registry,
            answerable: answerable.iter().map(|u| format!("{}/", u.url())).collect(),
            _runtime: runtime,
            _data: data,
            _actions: actions,
        }
    }

    /// Sends every case's URL (with `headers`, if any) in one call, asserts each outcome (see
    /// [`assert_outcomes`]), then that the host's own request log agrees.
    async fn run(&self, context: &str, cases: &[Case], headers: Option<Value>) {
        let urls: Vec<&str> = cases.iter().map(|c| c.url.as_str()).collect();
        let mut inputs = json!({ "urls": urls });
        if let Some(headers) = headers {
            inputs["headers"] = headers;
        }
        let report = call(&self.registry.get("ssrf-probe").unwrap(), inputs).await;
        let out = match report.result {
            Ok(out) => out,
            Err(failure) => panic!("the probe action failed as a whole: {failure:?}"),
        };
        let results = out.data["results"]
            .as_array()
            .expect("data.results")
            .clone();
        assert_eq!(
            results.len(),
            cases.len(),
            "one result per URL: {results:#?}"
        );
        let rows: Vec<Row> = cases
            .iter()
            .zip(&results)
            .map(|(case, r)| Row {
                url: case.url.clone(),
                expect: case.expect.clone(),
                outcome: r["outcome"].as_str().unwrap_or("?").to_string(),
                message: r["message"].as_str().unwrap_or("").to_string(),
            })
            .collect();
        assert_outcomes(context, &rows);
        // The host logs every request a call made, refused or not, each redirect hop included:
        // whatever was answered (a status there) must have gone to a granted upstream, and every
        // status the plugin saw must have been answered.
        let answered: Vec<String> = report
            .requests
            .iter()
            .filter(|r| r.result.parse::<u16>().is_ok())
            .map(|r| r.target.clone())
            .collect();
        let strays: Vec<&String> = answered
            .iter()
            .filter(|target| {
                !self
                    .answerable
                    .iter()
                    .any(|o| target.starts_with(o.as_str()))
            })
            .collect();
        assert!(
            strays.is_empty(),
            "the host's request log shows answered requests to other than the granted upstreams \
             {:?}: {strays:?}\n{:#?}",
            self.answerable,
            report.requests
        );
        let statuses = results
            .iter()
            .filter(|r| r["outcome"].as_str().unwrap_or("").starts_with("status:"))
            .count();
        assert!(
            answered.len() >= statuses,
            "the plugin saw {statuses} answers but the host logged {}: {:#?} vs {results:#?}",
            answered.len(),
            report.requests
        );
    }
}

fn path_str(path: &Path) -> String {
    path.to_str().expect("a UTF-8 path").to_string()
}

/// What a URL of the corpus must come to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expect {
    /// Refused by the policy with exactly this denial code.
    Denied(&'static str),
    /// Refused as malformed (`invalid-request`).
    Invalid,
    /// Refused with some denial code, we do not pin which.
    AnyDenial,
    /// Anything but an answer: the request may have been tried against a public address (which
    /// fails to connect in the namespace), but never answered.
    NotAnswered,
    /// Answered with this status (the granted control requests).
    Status(u16),
}

impl Expect {
    fn accepts(&self, outcome: &str) -> bool {
        match self {
            Expect::Denied(code) => outcome.strip_prefix("denied:") == Some(code),
            Expect::Invalid => outcome == "invalid-request",
            Expect::AnyDenial => outcome.starts_with("denied:"),
            Expect::NotAnswered => !outcome.starts_with("status:") && outcome != "dry-run",
            Expect::Status(status) => outcome == format!("status:{status}"),
        }
    }
}

struct Case {
    url: String,
    expect: Expect,
}

fn case(url: impl Into<String>, expect: Expect) -> Case {
    Case {
        url: url.into(),
        expect,
    }
}

struct Row {
    url: String,
    expect: Expect,
    outcome: String,
    message: String,
}

/// Fails with the whole table when any outcome differs from its expectation.
fn assert_outcomes(context: &str, rows: &[Row]) {
    let wrong = rows
        .iter()
        .filter(|r| !r.expect.accepts(&r.outcome))
        .count();
    if wrong == 0 {
        return;
    }
    let width = rows
        .iter()
        .map(|r| r.url.chars().count())
        .max()
        .unwrap_or(0);
    let mut table = String::new();
    for r in rows {
        let mark = if r.expect.accepts(&r.outcome) {
            "  "
        } else {
            "✗ "
        };
        let message: String = r.message.chars().take(140).collect();
        table.push_str(&format!(
            "{mark}{:width$}  {:<28} expected {:<30} {message}\n",
            r.url,
            r.outcome,
            format!("{:?}", r.expect),
        ));
    }
    panic!(
        "{context}: {wrong} of {} URLs had the wrong outcome (✗):\n{table}",
        rows.len()
    );
}

const BLOCKED: Expect = Expect::Denied("blocked-network");
const SCHEME: Expect = Expect::Denied("scheme-not-allowed");

// ---------------------------------------------------------------------------------------------
// The tests.
// ---------------------------------------------------------------------------------------------

/// Every spelling of a forbidden destination is refused with the right reason, and nothing
/// reaches the canary; a granted dev-loopback request in the same call still goes through.
#[tokio::test]
#[ignore = "runs only inside a loopback-only network namespace: tests/run-netns-tests.sh"]
async fn forbidden_destinations_are_refused_whatever_their_spelling() {
    assert_loopback_only_namespace();
    let canary = Canary::start().await;
    let granted = Upstream::start().await;
    let dns = FakeDns::corpus();
    let probe = Probe::load(
        &format!("\"{}\", \"*://*:*\"", granted.url()),
        "",
        &[granted.host_port()],
        &[&granted],
        &dns,
    )
    .await;
    let p = canary.port;
    let cases = vec![
        // The control: granted and dev-loopback listed, so it must be answered.
        case(format!("{}/control", granted.url()), Expect::Status(200)),
        // Loopback, in every IPv4 spelling the URL standard decodes.
        case(format!("http://127.0.0.1:{p}/"), BLOCKED),
        case(format!("https://127.0.0.1:{p}/"), BLOCKED),
        case(format!("http://127.1:{p}/"), BLOCKED),
        case(format!("http://0x7f.1:{p}/"), BLOCKED),
        case(format!("http://0x7f.0x0.0x0.0x1:{p}/"), BLOCKED),
        case(format!("http://0x7f000001:{p}/"), BLOCKED),
        case(format!("http://2130706433:{p}/"), BLOCKED),
        case(format!("http://017700000001:{p}/"), BLOCKED),
        case(format!("http://0177.0.0.1:{p}/"), BLOCKED),
        case(format!("http://127.255.255.254:{p}/"), BLOCKED),
        case(format!("http://127.0.0.1.:{p}/"), BLOCKED),
        case(format!("http://%31%32%37.0.0.1:{p}/"), BLOCKED),
        case(
            format!("http://127\u{3002}0\u{3002}0\u{3002}1:{p}/"),
            BLOCKED,
        ),
        case(
            format!("http://\u{2460}\u{2461}\u{2466}.\u{24ea}.\u{24ea}.\u{2460}:{p}/"),
            BLOCKED,
        ),
        case(format!("http:127.0.0.1:{p}/"), BLOCKED),
        case(format!("http:/\\127.0.0.1:{p}/"), BLOCKED),
        // Loopback, IPv6 and IPv6 forms embedding IPv4 loopback.
        case(format!("http://[::1]:{p}/"), BLOCKED),
        case(format!("http://[0:0:0:0:0:0:0:1]:{p}/"), BLOCKED),
        case(format!("http://[::ffff:127.0.0.1]:{p}/"), BLOCKED),
        case(format!("http://[0:0:0:0:0:ffff:7f00:1]:{p}/"), BLOCKED),
        case(format!("http://[::ffff:0:127.0.0.1]:{p}/"), BLOCKED),
        case(format!("http://[::127.0.0.1]:{p}/"), BLOCKED),
        // Loopback by name: refused by name, never looked up.
        case(format!("http://localhost:{p}/"), BLOCKED),
        case(format!("http://LOCALHOST.:{p}/"), BLOCKED),
        case(format!("http://foo.localhost:{p}/"), BLOCKED),
        case(format!("http://localhost\u{3002}:{p}/"), BLOCKED),
        case(
            format!(
                "http://\u{24db}\u{24de}\u{24d2}\u{24d0}\u{24db}\u{24d7}\u{24de}\u{24e2}\u{24e3}:{p}/"
            ),
            BLOCKED,
        ),
        // The unspecified address, which Linux connects to the local host. `0` is decoded to
        // 0.0.0.0 by the URL standard (checked against url 2.5).
        case(format!("http://0.0.0.0:{p}/"), BLOCKED),
        case(format!("http://0:{p}/"), BLOCKED),
        case(format!("http://[::]:{p}/"), BLOCKED),
        // Private networks.
        case(format!("http://10.0.0.1:{p}/"), BLOCKED),
        case(format!("http://0xa.0.0.1:{p}/"), BLOCKED),
        case(format!("http://172.16.0.1:{p}/"), BLOCKED),
        case(format!("http://192.168.1.1:{p}/"), BLOCKED),
        case(format!("http://[::ffff:10.0.0.1]:{p}/"), BLOCKED),
        // Link-local and the cloud metadata service.
        case("http://169.254.169.254/latest/meta-data/", BLOCKED),
        case(
            format!("http://169.254.169.254:{p}/latest/meta-data/"),
            BLOCKED,
        ),
        case(
            format!("http://2852039166:{p}/computeMetadata/v1/"),
            BLOCKED,
        ),
        case(format!("http://[::ffff:a9fe:a9fe]:{p}/"), BLOCKED),
        case(format!("http://[fe80::1]:{p}/"), BLOCKED),
        // Other special-purpose IPv4 ranges.
        case(format!("http://100.64.0.1:{p}/"), BLOCKED),
        case(format!("http://198.18.0.1:{p}/"), BLOCKED),
        case(format!("http://192.0.2.1:{p}/"), BLOCKED),
        case(format!("http://224.0.0.1:{p}/"), BLOCKED),
        case(format!("http://255.255.255.255:{p}/"), BLOCKED),
        case(format!("http://240.0.0.1:{p}/"), BLOCKED),
        // Special-purpose IPv6 ranges and forms embedding a blocked IPv4 address.
        case(format!("http://[fd00::1]:{p}/"), BLOCKED),
        case(format!("http://[fec0::1]:{p}/"), BLOCKED),
        case(format!("http://[ff02::1]:{p}/"), BLOCKED),
        case(format!("http://[2001:db8::1]:{p}/"), BLOCKED),
        case(format!("http://[64:ff9b::a9fe:a9fe]:{p}/"), BLOCKED),
        case(format!("http://[2002:7f00:1::]:{p}/"), BLOCKED),
        case(format!("http://[2001::1]:{p}/"), BLOCKED),
        // Names whose every answer is blocked: the guarded resolver refuses them.
        case(format!("http://loopback.ssrf.test:{p}/"), BLOCKED),
        case(format!("http://LOOPBACK.SSRF.TEST.:{p}/"), BLOCKED),
        case(format!("http://private.ssrf.test:{p}/"), BLOCKED),
        case(
            format!("http://metadata.ssrf.test:{p}/latest/meta-data/"),
            BLOCKED,
        ),
        case(format!("http://ula.ssrf.test:{p}/"), BLOCKED),
        case(format!("http://v6-loopback.ssrf.test:{p}/"), BLOCKED),
        case(format!("http://mapped.ssrf.test:{p}/"), BLOCKED),
        case(format!("http://nat64.ssrf.test:{p}/"), BLOCKED),
        case(format!("http://all-blocked.ssrf.test:{p}/"), BLOCKED),
        case(format!("https://loopback.ssrf.test:{p}/"), BLOCKED),
        case(format!("http://localtest.me:{p}/"), BLOCKED),
        case(format!("http://127.0.0.1.nip.io:{p}/"), BLOCKED),
        case(
            "http://metadata.google.internal/computeMetadata/v1/",
            BLOCKED,
        ),
        // Userinfo is refused as malformed, whatever the host.
        case(format!("http://user:pass@127.0.0.1:{p}/"), Expect::Invalid),
        case(format!("http://evil.com@127.0.0.1:{p}/"), Expect::Invalid),
        case(
            format!("http://user@loopback.ssrf.test:{p}/"),
            Expect::Invalid,
        ),
        // Schemes other than http and https.
        case("file:///etc/passwd", SCHEME),
        case(
            format!("gopher://127.0.0.1:{p}/_GET%20/%20HTTP/1.0"),
            SCHEME,
        ),
        case(format!("ftp://127.0.0.1:{p}/"), SCHEME),
        case(format!("dict://127.0.0.1:{p}/info"), SCHEME),
        case(format!("ws://127.0.0.1:{p}/"), SCHEME),
        case("data:text/plain,hello", SCHEME),
        // Unparseable or relative.
        case(format!("http://[::1:{p}/"), Expect::Invalid),
        case(format!("http://[::1%25lo]:{p}/"), Expect::Invalid),
        case("http://127.0.0.1:99999/", Expect::Invalid),
        case(format!("//127.0.0.1:{p}/"), Expect::Invalid),
        case(format!("http://localhost%00:{p}/"), Expect::Invalid),
    ];
    let forbidden = cases.len() - 1;
    assert!(forbidden >= 40, "the corpus shrank to {forbidden} URLs");
    probe.run("forbidden destinations", &cases, None).await;
    canary.assert_untouched("forbidden destinations").await;
    assert_eq!(
        granted.received(),
        ["/control"],
        "the granted upstream got something other than the control request"
    );
    for name in ["localhost", "foo.localhost"] {
        assert_eq!(
            dns.times_asked(name),
            0,
            "{name} was looked up, not refused by name"
        );
    }
    assert!(
        dns.times_asked("loopback.ssrf.test") > 0,
        "the injected resolver was never asked: RuntimeOptions::lookup is not in use"
    );
}

/// A header that would redirect the request to another virtual host is refused even where the
/// destination itself is granted.
#[tokio::test]
#[ignore = "runs only inside a loopback-only network namespace: tests/run-netns-tests.sh"]
async fn host_headers_cannot_point_a_granted_request_elsewhere() {
    assert_loopback_only_namespace();
    let canary = Canary::start().await;
    let granted = Upstream::start().await;
    let dns = FakeDns::corpus();
    let probe = Probe::load(
        &format!("\"{}\", \"*://*:*\"", granted.url()),
        "",
        &[granted.host_port()],
        &[&granted],
        &dns,
    )
    .await;
    let p = canary.port;
    for headers in [
        json!({"Host": format!("169.254.169.254:{p}")}),
        json!({"host": "localhost"}),
        json!({"x-a": format!("1\r\nHost: 127.0.0.1:{p}")}),
        json!({"Connection": "upgrade", "Upgrade": "h2c"}),
        json!({"Proxy-Authorization": "Basic Zm9vOmJhcg=="}),
    ] {
        let cases = [
            case(format!("{}/h", granted.url()), Expect::Denied("bad-header")),
            case(format!("http://loopback.ssrf.test:{p}/"), Expect::AnyDenial),
        ];
        probe
            .run(&format!("headers {headers}"), &cases, Some(headers.clone()))
            .await;
    }
    canary.assert_untouched("bad headers").await;
    assert!(granted.received().is_empty(), "{:?}", granted.received());
}

/// Names with a blocked and a public answer may only be tried at the public address, and a
/// resolver that answers public first and loopback afterwards (DNS rebinding) never gets a
/// request to loopback: the connection goes to the address that was checked.
#[tokio::test]
#[ignore = "runs only inside a loopback-only network namespace: tests/run-netns-tests.sh"]
async fn mixed_and_rebinding_answers_never_reach_loopback() {
    assert_loopback_only_namespace();
    let canary = Canary::start().await;
    let dns = FakeDns::corpus();
    let probe = Probe::load("\"*://*:*\"", "", &[], &[], &dns).await;
    let p = canary.port;
    // In the namespace the public addresses are unreachable, so these end in `connect` (or at
    // worst a timeout). A status would mean the blocked answer was used: the canary answers it.
    let cases = [
        case(format!("http://mixed.ssrf.test:{p}/"), Expect::NotAnswered),
        case(
            format!("http://mixed-public-first.ssrf.test:{p}/"),
            Expect::NotAnswered,
        ),
        case(
            format!("http://mixed-v6.ssrf.test:{p}/"),
            Expect::NotAnswered,
        ),
        case(
            format!("http://rebind.ssrf.test:{p}/first"),
            Expect::NotAnswered,
        ),
        case(
            format!("http://rebind.ssrf.test:{p}/second"),
            Expect::NotAnswered,
        ),
        case(
            format!("http://rebind.ssrf.test:{p}/third"),
            Expect::NotAnswered,
        ),
        case(
            format!("https://rebind.ssrf.test:{p}/fourth"),
            Expect::NotAnswered,
        ),
    ];
    probe.run("mixed and rebinding answers", &cases, None).await;
    for name in [
        "mixed.ssrf.test",
        "mixed-public-first.ssrf.test",
        "mixed-v6.ssrf.test",
    ] {
        assert!(dns.times_asked(name) > 0, "{name} was never looked up");
    }
    assert!(
        dns.times_asked("rebind.ssrf.test") > 0,
        "the rebinding name was never looked up"
    );
    canary.assert_untouched("mixed and rebinding answers").await;
}

/// With redirects on, every hop is checked like a first request: the guard refuses hops to
/// metadata, loopback and private addresses and to names that resolve there, even though the
/// first request was granted and went to a dev-loopback upstream.
#[tokio::test]
#[ignore = "runs only inside a loopback-only network namespace: tests/run-netns-tests.sh"]
async fn redirects_to_forbidden_targets_are_refused_at_the_hop() {
    assert_loopback_only_namespace();
    let canary = Canary::start().await;
    let up = Upstream::start().await;
    let dns = FakeDns::corpus();
    let probe = Probe::load(
        &format!("\"{}\", \"*://*:*\"", up.url()),
        &format!("redirects = {REDIRECTS}\n"),
        &[up.host_port()],
        &[&up],
        &dns,
    )
    .await;
    let p = canary.port;
    let hops: &[(&str, u16, String, Expect)] = &[
        (
            "/r/metadata",
            302,
            "http://169.254.169.254/latest/meta-data/".into(),
            BLOCKED,
        ),
        (
            "/r/metadata-port",
            302,
            format!("http://169.254.169.254:{p}/latest/meta-data/"),
            BLOCKED,
        ),
        // Loopback, but not a dev-loopback port: blocked even though the origin was loopback.
        (
            "/r/other-port",
            307,
            format!("http://127.0.0.1:{p}/"),
            BLOCKED,
        ),
        ("/r/private", 302, format!("http://10.0.0.1:{p}/"), BLOCKED),
        (
            "/r/name",
            302,
            format!("http://loopback.ssrf.test:{p}/"),
            BLOCKED,
        ),
        (
            "/r/metadata-name",
            301,
            "http://metadata.google.internal/".into(),
            BLOCKED,
        ),
        (
            "/r/mapped",
            308,
            format!("http://[::ffff:127.0.0.1]:{p}/"),
            BLOCKED,
        ),
        (
            "/r/decimal",
            303,
            format!("http://2130706433:{p}/"),
            BLOCKED,
        ),
        (
            "/r/localhost",
            302,
            format!("http://localhost:{p}/"),
            BLOCKED,
        ),
        (
            "/r/scheme-relative",
            302,
            format!("//127.0.0.1:{p}/"),
            BLOCKED,
        ),
        (
            "/r/https-loopback",
            302,
            format!("https://127.0.0.1:{p}/"),
            BLOCKED,
        ),
        // A hop to another scheme gets that target's denial.
        ("/r/file", 302, "file:///etc/passwd".into(), SCHEME),
        (
            "/r/gopher",
            302,
            format!("gopher://127.0.0.1:{p}/_x"),
            SCHEME,
        ),
        // A redirect into a chain longer than the hop limit.
        (
            "/r/long",
            302,
            "/chain/0".into(),
            Expect::Denied("too-many-redirects"),
        ),
        // The control: a granted hop on the same upstream is followed and answered.
        ("/r/ok", 302, "/landing".into(), Expect::Status(200)),
    ];
    for (path, status, location, _) in hops {
        up.redirect(path, *status, location);
    }
    let cases: Vec<Case> = hops
        .iter()
        .map(|(path, _, _, expect)| case(format!("{}{path}", up.url()), expect.clone()))
        .collect();
    probe
        .run(&format!("redirects (limit {REDIRECTS})"), &cases, None)
        .await;
    canary.assert_untouched("redirects").await;

    // The upstream saw each first request once and the control's landing page; of the chain,
    // `/r/long` and the REDIRECTS hops followed from it (`/chain/0` to `/chain/{REDIRECTS - 1}`),
    // after which the next hop was refused without being sent.
    let mut want: Vec<String> = hops.iter().map(|(path, ..)| path.to_string()).collect();
    want.push("/landing".into());
    want.extend((0..REDIRECTS).map(|n| format!("/chain/{n}")));
    want.sort();
    let mut got = up.received();
    got.sort();
    assert_eq!(
        got, want,
        "the upstream received other requests than the granted ones"
    );
}

/// Redirects do not widen the grants: a hop to a destination the action was not granted is
/// `host-not-allowed`, even when it is a dev-loopback port or a public address.
#[tokio::test]
#[ignore = "runs only inside a loopback-only network namespace: tests/run-netns-tests.sh"]
async fn redirects_do_not_widen_the_grants() {
    assert_loopback_only_namespace();
    let canary = Canary::start().await;
    let up = Upstream::start().await;
    let dns = FakeDns::corpus();
    let p = canary.port;
    // The canary's port is dev-loopback listed too: only the grants stand in the way.
    let probe = Probe::load(
        &format!("\"{}\"", up.url()),
        &format!("redirects = {REDIRECTS}\n"),
        &[up.host_port(), format!("127.0.0.1:{p}")],
        &[&up],
        &dns,
    )
    .await;
    let not_granted = Expect::Denied("host-not-allowed");
    let hops: &[(&str, u16, String, Expect)] = &[
        (
            "/r/dev-port",
            302,
            format!("http://127.0.0.1:{p}/"),
            not_granted.clone(),
        ),
        (
            "/r/public",
            302,
            format!("http://{PUBLIC_V4}/"),
            not_granted.clone(),
        ),
        (
            "/r/name",
            307,
            format!("http://mixed.ssrf.test:{p}/"),
            not_granted.clone(),
        ),
        (
            "/r/metadata",
            302,
            "http://169.254.169.254/".into(),
            not_granted.clone(),
        ),
        ("/r/ok", 302, "/landing".into(), Expect::Status(200)),
    ];
    for (path, status, location, _) in hops {
        up.redirect(path, *status, location);
    }
    let cases: Vec<Case> = hops
        .iter()
        .map(|(path, _, _, expect)| case(format!("{}{path}", up.url()), expect.clone()))
        .collect();
    probe.run("redirects and grants", &cases, None).await;
    canary.assert_untouched("redirects and grants").await;
    let mut want: Vec<String> = hops.iter().map(|(path, ..)| path.to_string()).collect();
    want.push("/landing".into());
    want.sort();
    let mut got = up.received();
    got.sort();
    assert_eq!(got, want);
    assert_eq!(
        dns.times_asked("mixed.ssrf.test"),
        0,
        "a hop that is not granted was looked up"
    );
}

/// Without `redirects` in the manifest, a redirect comes back to the plugin as it is, even one
/// pointing at a forbidden target, and is not followed.
#[tokio::test]
#[ignore = "runs only inside a loopback-only network namespace: tests/run-netns-tests.sh"]
async fn redirects_are_not_followed_by_default() {
    assert_loopback_only_namespace();
    let canary = Canary::start().await;
    let up = Upstream::start().await;
    let dns = FakeDns::corpus();
    let probe = Probe::load(
        &format!("\"{}\", \"*://*:*\"", up.url()),
        "",
        &[up.host_port()],
        &[&up],
        &dns,
    )
    .await;
    let p = canary.port;
    up.redirect("/r/loopback", 302, &format!("http://127.0.0.1:{p}/"));
    up.redirect("/r/relative", 307, "/landing");
    let cases = [
        case(format!("{}/r/loopback", up.url()), Expect::Status(302)),
        case(format!("{}/r/relative", up.url()), Expect::Status(307)),
    ];
    probe.run("redirects off", &cases, None).await;
    canary.assert_untouched("redirects off").await;
    assert_eq!(up.received(), ["/r/loopback", "/r/relative"]);
}
