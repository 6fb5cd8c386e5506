//! Fuzzes URL parsing and allowlist matching: `AllowEntry::parse`, `Target::parse` and
//! `AllowList::check`, the pure code that decides where an action's request may go.
//!
//! Input: UTF-8 text; up to the first newline it is an `http.allow` entry, after it a request
//! URL (no newline: the whole input is tried as both). Invariants, besides never panicking:
//! - an allowed target's host is neither a blocked IP literal nor `localhost`/`*.localhost`
//!   (no dev-loopback entries are given), and the route is the guarded client;
//! - an allowed target is covered (origin and path) by the entry and its method granted;
//! - the checked path never holds a `..` segment (`/../` inside or `/..` at the end);
//! - the URL that would be sent, parsed again, is the same target that was checked;
//! - every URL is also checked against the operator's insecure any-host entry `*://*:*`, which
//!   leaves only the blocked-network check in the way: the same invariants hold for it.

#![no_main]

use libfuzzer_sys::fuzz_target;

// Mounted at the crate root so its `super::` and `crate::policy::` paths resolve as in the host.
#[path = "../../src/policy/mod.rs"]
#[allow(dead_code, unused_imports)]
mod policy;

use policy::allow::ANY_HOST;
use policy::{
    AllowEntry, AllowList, Decision, DevLoopback, Method, Route, Target, TargetHost, is_blocked,
};

/// The denial codes `AllowList::check` may answer with.
const CHECK_CODES: &[&str] = &[
    "host-not-allowed",
    "path-not-allowed",
    "method-not-allowed",
    "blocked-network",
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (spec, url) = text.split_once('\n').unwrap_or((text, text));

    let entry = AllowEntry::parse(spec, &Method::ALL);
    let target = match Target::parse(url) {
        Ok(target) => target,
        Err(_) => return,
    };
    check_target(&target);

    let any = AllowEntry::parse_with(ANY_HOST, &Method::ALL, true)
        .expect("the any-host entry parses when the operator allows it");
    check_decision(&any, &target);
    if let Ok(entry) = entry {
        check_decision(&entry, &target);
    }
});

/// Invariants of a parsed target on its own.
fn check_target(target: &Target) {
    assert!(
        target.scheme == "http" || target.scheme == "https",
        "scheme {:?} became a target",
        target.scheme
    );
    let path = &target.path;
    assert!(
        !path.contains("/../") && !path.ends_with("/..") && path != "..",
        "path {path:?} keeps a dot-dot segment"
    );
    assert!(
        !path.contains("/./") && !path.ends_with("/."),
        "path {path:?} keeps a dot segment"
    );
    assert_eq!(
        path,
        target.url.path(),
        "the checked path is not the path sent"
    );
    assert!(target.url.fragment().is_none(), "a fragment would be sent");
    assert!(
        target.url.username().is_empty() && target.url.password().is_none(),
        "userinfo would be sent"
    );
    // What leaves the host is `target.url`: read back, it must be the target that was checked.
    let again = Target::parse(target.url.as_str())
        .unwrap_or_else(|e| panic!("the URL to send {:?} does not parse again: {e}", target.url));
    assert_eq!(
        (&again.scheme, &again.host, again.port, &again.path),
        (&target.scheme, &target.host, target.port, &target.path),
        "the URL to send {:?} is not the target that was checked",
        target.url.as_str()
    );
}

/// Invariants of `AllowList::check` for one entry and one target.
fn check_decision(entry: &AllowEntry, target: &Target) {
    let list = AllowList::new(vec![entry.clone()]);
    match list.check(Method::Get, target, &DevLoopback::default()) {
        Decision::Allow(route) => {
            assert_eq!(route, Route::Guarded, "dev-loopback route without entries");
            match &target.host {
                TargetHost::Ip(ip) => assert!(
                    !is_blocked(*ip),
                    "blocked address {ip} allowed by {entry:?} for {:?}",
                    target.url.as_str()
                ),
                TargetHost::Domain(name) => {
                    let name = name.trim_end_matches('.').to_ascii_lowercase();
                    assert!(
                        name != "localhost" && !name.ends_with(".localhost"),
                        "{name:?} allowed by {entry:?}"
                    );
                }
            }
            assert!(
                entry.matches_origin(target) && entry.matches_path(target),
                "{entry:?} allowed {:?} without covering it",
                target.url.as_str()
            );
            assert!(entry.allows_method(Method::Get));
        }
        Decision::Deny(denial) => {
            assert!(
                CHECK_CODES.contains(&denial.code),
                "unexpected denial code {:?}",
                denial.code
            );
            if entry.covers(target)
                && !matches!(&target.host, TargetHost::Ip(ip) if is_blocked(*ip))
            {
                assert_eq!(
                    denial.code,
                    "blocked-network",
                    "{entry:?} covers {:?} but it was denied: {denial}",
                    target.url.as_str()
                );
            }
        }
    }
}
