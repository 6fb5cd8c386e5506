//! `callout audit`: the recorded outbound requests of actions, newest first.

use super::GlobalArgs;
use crate::audit::{AuditEvent, AuditLog, AuditQuery, DB_FILE, Decision};

/// Arguments of `callout audit`.
#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// Only this action's requests.
    #[arg(long)]
    pub action: Option<String>,
    /// Only requests the policy denied.
    #[arg(long)]
    pub denied: bool,
    /// At most this many requests, newest first (0: 100).
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Print a JSON array of events instead of lines.
    #[arg(long)]
    pub json: bool,
}

impl AuditArgs {
    /// Prints one line per recorded request, or a JSON array with `--json`.
    ///
    /// A data dir without an audit database is not an error: nothing has been recorded yet.
    ///
    /// # Errors
    /// When the database cannot be read.
    pub async fn run(self, global: &GlobalArgs) -> anyhow::Result<()> {
        let path = global.data_dir.join(DB_FILE);
        if !path.exists() {
            println!("no audit records yet ({} does not exist)", path.display());
            return Ok(());
        }
        let query = AuditQuery {
            action: self.action,
            decision: self.denied.then_some(Decision::Denied),
            limit: self.limit,
            since_ms: None,
        };
        // SQLite may wait on a busy lock: keep that off the async workers.
        let events = tokio::task::spawn_blocking(move || AuditLog::query(&path, &query)).await??;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&events)?);
            return Ok(());
        }
        if events.is_empty() {
            println!("no matching audit records");
            return Ok(());
        }
        let width = events.iter().map(|e| e.action.len()).max().unwrap_or(0);
        for e in &events {
            println!("{}", line(e, width));
        }
        Ok(())
    }
}

/// One event as a line: time, action, method, decision, outcome, duration, bytes, URL last
/// (the only column of unbounded width).
fn line(e: &AuditEvent, width: usize) -> String {
    let outcome = match (e.status, e.reason.as_deref()) {
        (Some(s), Some(r)) => format!("{s} {r}"),
        (Some(s), None) => s.to_string(),
        (None, Some(r)) => r.to_owned(),
        (None, None) => "-".to_owned(),
    };
    let url = match (e.origin.as_str(), e.path.as_str()) {
        ("", "") => "-".to_owned(),
        ("", path) => format!("(unparsed) {path}"),
        (origin, path) => format!("{origin}{path}"),
    };
    format!(
        "{}  {:width$}  {:7}  {:8}  {:20}  {:>6}.{:03} ms  out {} B  in {} B  {url}",
        rfc3339_utc(e.at_ms),
        e.action,
        e.method,
        e.decision.as_str(),
        outcome,
        e.duration_us / 1000,
        e.duration_us % 1000,
        e.bytes_out,
        e.bytes_in,
    )
}

/// `ms` since the Unix epoch as RFC 3339 in UTC with milliseconds: `2026-04-14T09:03:12.345Z`.
fn rfc3339_utc(ms: u64) -> String {
    let secs = ms / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// The proleptic Gregorian (year, month, day) of `days` since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // March-based month, [0, 11]
    let d = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    let y = yoe + era * 400 + i64::from(m <= 2);
    // Both are in range by construction.
    (
        y,
        u32::try_from(m).unwrap_or(1),
        u32::try_from(d).unwrap_or(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_utc(1_709_164_799_999), "2024-02-28T23:59:59.999Z");
        assert_eq!(rfc3339_utc(1_709_251_200_000), "2024-03-01T00:00:00.000Z");
        assert_eq!(rfc3339_utc(1_776_157_392_345), "2026-04-14T09:03:12.345Z");
        assert_eq!(rfc3339_utc(4_102_444_800_000), "2100-01-01T00:00:00.000Z");
    }

    #[test]
    fn civil_from_days_matches_a_day_by_day_walk() {
        let month_len = |y: i64, m: u32| match m {
            2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        let (mut y, mut m, mut d) = (1970i64, 1u32, 1u32);
        for days in 0..200_000 {
            assert_eq!(civil_from_days(days), (y, m, d), "day {days}");
            d += 1;
            if d > month_len(y, m) {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
    }

    #[test]
    fn a_line_shows_every_column() {
        let e = AuditEvent {
            at_ms: 1_776_157_392_345,
            action: "order-status".into(),
            conversation_id: None,
            method: "GET".into(),
            origin: "https://api.example.com:443".into(),
            path: "/orders/1".into(),
            decision: Decision::Denied,
            reason: Some("host-not-allowed".into()),
            status: None,
            duration_us: 12_345,
            bytes_out: 0,
            bytes_in: 0,
        };
        let l = line(&e, 12);
        assert_eq!(
            l,
            "2026-04-14T09:03:12.345Z  order-status  GET      denied    host-not-allowed          \
             12.345 ms  out 0 B  in 0 B  https://api.example.com:443/orders/1"
        );
    }
}
