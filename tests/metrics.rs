//! `/metrics` over real HTTP: valid Prometheus text (version 0.0.4) whose series move with traffic.

mod common;

use std::collections::BTreeMap;

use common::{http_get, try_http, TestServer};
use convene_signaling::Role;

/// Parses the Prometheus text format strictly enough to catch a malformed exposition: every
/// sample belongs to a family declared by `# TYPE` (histograms by their `_bucket`, `_sum` and
/// `_count` series), names and labels are well formed, values are numbers. Returns each
/// series (name with its labels, as written) and its value.
fn parse_prometheus(text: &str) -> BTreeMap<String, f64> {
    fn valid_name(name: &str) -> bool {
        let mut chars = name.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut series = BTreeMap::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kind, name, tail) = (parts.next(), parts.next(), parts.next());
            let name = name.unwrap_or_else(|| panic!("comment without a name: {line}"));
            assert!(valid_name(name), "bad name in {line}");
            match kind {
                Some("HELP") => {}
                Some("TYPE") => {
                    let kind = tail.unwrap_or("");
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                        "{line}"
                    );
                    assert!(
                        types.insert(name.to_string(), kind.to_string()).is_none(),
                        "family declared twice: {line}"
                    );
                }
                _ => panic!("unknown comment: {line}"),
            }
            continue;
        }
        let (key, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value: {line}")),
        };
        let name = match key.split_once('{') {
            Some((name, labels)) => {
                let labels = labels
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels: {line}"));
                for label in labels.split(',') {
                    let (k, v) = label
                        .split_once('=')
                        .unwrap_or_else(|| panic!("bad label: {line}"));
                    assert!(valid_name(k), "bad label name: {line}");
                    assert!(
                        v.len() >= 2 && v.starts_with('"') && v.ends_with('"'),
                        "unquoted label value: {line}"
                    );
                }
                name
            }
            None => key,
        };
        assert!(valid_name(name), "bad metric name: {line}");
        let family = [
            name,
            name.trim_end_matches("_bucket"),
            name.trim_end_matches("_sum"),
            name.trim_end_matches("_count"),
        ]
        .into_iter()
        .find(|f| types.contains_key(*f))
        .unwrap_or_else(|| panic!("sample outside any declared family: {line}"));
        if family != name {
            assert_eq!(types[family], "histogram", "{line}");
        }
        series.insert(key.to_string(), value);
    }
    series
}

async fn scrape(t: &TestServer) -> BTreeMap<String, f64> {
    let (status, head, body) = try_http("GET", &format!("{}/metrics", t.http()), None, &[], "")
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        common::header(&head, "content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    parse_prometheus(&body)
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_move_with_traffic() {
    let t = TestServer::start().await;
    let before = scrape(&t).await;
    for name in [
        "convene_sessions",
        "convene_rooms",
        "convene_join_seconds_count",
        "convene_command_seconds_count",
        "convene_fanout_seconds_count",
        "convene_slow_reader_closes_total",
        "convene_rate_limited_total",
        "convene_sfu_datagrams_in_total",
        "convene_sfu_frames_forwarded_total",
        "convene_sfu_datagrams_out_total",
    ] {
        assert!(before.contains_key(name), "{name} missing: {before:#?}");
    }
    assert_eq!(before["convene_sessions"], 0.0);
    let healthz = "convene_http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"}";
    let healthz_before = before.get(healthz).copied().unwrap_or(0.0);

    let _ana = t.join("r", Role::Participant, "ana").await;
    let _ben = t.join("r", Role::Participant, "ben").await;
    for _ in 0..3 {
        assert_eq!(
            http_get(&format!("{}/healthz", t.http()), None, &[])
                .await
                .0,
            200
        );
    }
    let after = scrape(&t).await;
    assert_eq!(after["convene_sessions"], 2.0);
    assert_eq!(after["convene_rooms"], 1.0);
    // Other tests in this binary may join too: the counts move by at least ours.
    assert!(
        after["convene_join_seconds_count"] >= before["convene_join_seconds_count"] + 2.0,
        "{after:#?}"
    );
    assert!(after["convene_join_seconds_sum"] > before["convene_join_seconds_sum"]);
    assert_eq!(after[healthz], healthz_before + 3.0);
    // A join to a room that does not exist yet is slower than a microsecond, and the
    // buckets are cumulative: +Inf holds every observation.
    assert_eq!(
        after["convene_join_seconds_bucket{le=\"+Inf\"}"],
        after["convene_join_seconds_count"]
    );
    // Raw paths never become labels (they hold room names): the route template does.
    let (status, _) = http_get(
        &format!("{}/api/v1/rooms/secret-room/questions", t.http()),
        None,
        &[],
    )
    .await;
    assert_eq!(status, 401);
    let text = http_get(&format!("{}/metrics", t.http()), None, &[])
        .await
        .1;
    assert!(!text.contains("secret-room"), "{text}");
    assert!(
        text.contains("route=\"/api/v1/rooms/{room}/questions\",status=\"401\""),
        "{text}"
    );
}
