//! The reference docs stay honest: every metric family a running cutover
//! exports is documented in docs/metrics.md with its type, and every
//! documented one (the edge section aside: control's edge tests check it)
//! is exported.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this covers the helpers beside them).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use cutover_test_support::*;
use http::StatusCode;

const METRICS_MD: &str = include_str!("../docs/metrics.md");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docs_metrics_md_lists_exactly_the_families_a_running_cutover_exports() {
    let h = Harness::new().start().await;
    // The two families that appear only once something happened: a change
    // request, and an answered admin request.
    let (s, _) = h
        .api("POST", "/v1/services/web/switch", Some(r#"{"to":"green"}"#))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = h.api("GET", "/v1/status", None).await;
    assert_eq!(s, StatusCode::OK);
    let mut conn = Conn::h1(h.proxy).await;
    assert_eq!(
        conn.get("/", &[]).await.map(|a| a.status),
        Ok(StatusCode::OK)
    );

    let mut exported = Metrics::scrape(h.admin)
        .await
        .expect("scrape /metrics")
        .families();
    // The TLS families exist once a listener terminates TLS.
    let dir = tempfile::tempdir().unwrap();
    let pair = tls::TestCa::new("docs CA")
        .leaf(&["docs.test"])
        .write(dir.path(), "docs");
    let with_tls = Harness::new()
        .listener(&tls::listener_table(&[pair], ""))
        .start()
        .await;
    let tls_families = Metrics::scrape(with_tls.admin)
        .await
        .expect("scrape /metrics")
        .families();
    exported.extend(
        tls_families
            .into_iter()
            .filter(|(name, _)| name.starts_with("cutover_tls_")),
    );
    let mut in_docs: BTreeMap<String, String> = BTreeMap::new();
    for (section, families) in documented(METRICS_MD) {
        if section != "Edge sync" {
            in_docs.extend(families);
        }
    }
    assert!(
        in_docs.len() >= 15,
        "docs/metrics.md tables not found: {in_docs:?}"
    );
    let missing: Vec<_> = exported
        .keys()
        .filter(|k| !in_docs.contains_key(*k))
        .collect();
    let stale: Vec<_> = in_docs
        .keys()
        .filter(|k| !exported.contains_key(*k))
        .collect();
    assert!(
        missing.is_empty(),
        "exported but not in docs/metrics.md: {missing:?}"
    );
    assert!(
        stale.is_empty(),
        "in docs/metrics.md but not exported: {stale:?}"
    );
    for (name, kind) in &exported {
        assert_eq!(
            in_docs.get(name),
            Some(kind),
            "docs/metrics.md gives `{name}` another type than /metrics"
        );
    }
}
