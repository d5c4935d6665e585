//! `cutover ctl`: a small client of the admin API.

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use std::time::Duration;

use crate::cli::{ChangeArgs, CtlArgs, CtlCommand};

#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("bad argument: {0}")]
    Usage(String),
    #[error("cannot reach the admin API at {url}: {message} (set --admin or CUTOVER_ADMIN)")]
    Unreachable { url: String, message: String },
    #[error("{0}")]
    Api(String),
}

/// How long a ctl command waits for the admin API's answer.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

async fn call(
    args: &CtlArgs,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Result<(StatusCode, Value), CtlError> {
    call_within(args, method, path, body, CALL_TIMEOUT).await
}

fn url(args: &CtlArgs, path: &str) -> String {
    format!("{}{}", args.admin.trim_end_matches('/'), path)
}

/// One admin API call; `limit` bounds the wait for the response head.
async fn call_within(
    args: &CtlArgs,
    method: Method,
    path: &str,
    body: Option<Value>,
    limit: Duration,
) -> Result<(StatusCode, Value), CtlError> {
    let url = url(args, path);
    let unreachable = |message: String| CtlError::Unreachable {
        url: url.clone(),
        message,
    };
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = Request::builder()
        .method(method)
        .uri(&url)
        .header("content-type", "application/json");
    if let Some(t) = token(args)? {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = req
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| CtlError::Usage(format!("bad admin URL `{url}`: {e}")))?;
    let resp = tokio::time::timeout(limit, client.request(req))
        .await
        .map_err(|_| unreachable(format!("no answer within {}", humantime_secs(limit))))?
        .map_err(|e| unreachable(cutover_proxy::error::error_chain(&e)))?;
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| unreachable(e.to_string()))?
        .to_bytes();
    let v: Value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| json!({ "error": String::from_utf8_lossy(&bytes) }));
    Ok((status, v))
}

/// The bearer token: from `--token-file`, else `--token` (with a warning:
/// it shows in `ps`), else `$CUTOVER_TOKEN`; none without any.
fn token(args: &CtlArgs) -> Result<Option<String>, CtlError> {
    if let Some(path) = &args.token_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| CtlError::Usage(format!("--token-file {}: {e}", path.display())))?;
        let t = text
            .strip_suffix("\r\n")
            .or_else(|| text.strip_suffix('\n'))
            .unwrap_or(&text);
        if t.trim().is_empty() {
            return Err(CtlError::Usage(format!(
                "--token-file {}: the file is empty",
                path.display()
            )));
        }
        return Ok(Some(t.to_string()));
    }
    if let Some(t) = &args.token {
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| {
            eprintln!("warning: --token shows in `ps` and shell history; use --token-file or CUTOVER_TOKEN");
        });
        return Ok(Some(t.clone()));
    }
    Ok(std::env::var("CUTOVER_TOKEN")
        .ok()
        .filter(|t| !t.is_empty()))
}

/// `--expect-generation N` or `N@RUN_ID`.
fn expect(value: &str) -> Result<(u64, Option<&str>), CtlError> {
    let (n, run) = match value.split_once('@') {
        Some((n, run)) if !run.is_empty() => (n, Some(run)),
        Some(_) => {
            return Err(CtlError::Usage(format!(
                "--expect-generation `{value}`: nothing after `@`; write N or N@RUN_ID"
            )))
        }
        None => (value, None),
    };
    let n = n.parse().map_err(|_| {
        CtlError::Usage(format!(
            "--expect-generation `{value}`: write N or N@RUN_ID, like 7 or 7@{}",
            "3f9c2a61b0d4e875"
        ))
    })?;
    Ok((n, run))
}

/// `30s`, `2s`, `0.5s`: a limit as the user would write it.
fn humantime_secs(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

fn change_body(mut body: Value, c: &ChangeArgs) -> Result<Value, CtlError> {
    if let Some(r) = &c.reason {
        body["reason"] = json!(r);
    }
    if let Some(g) = &c.expect_generation {
        let (n, run) = expect(g)?;
        body["expect_generation"] = json!(n);
        if let Some(run) = run {
            body["expect_run_id"] = json!(run);
        }
    }
    Ok(body)
}

/// `"force": true` on a change body when asked for.
fn forced(mut body: Value, force: bool) -> Value {
    if force {
        body["force"] = json!(true);
    }
    body
}

fn parse_weights(pairs: &[String]) -> Result<serde_json::Map<String, Value>, CtlError> {
    let mut m = serde_json::Map::new();
    for p in pairs {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| CtlError::Usage(format!("`{p}` is not POOL=WEIGHT, like blue=90")))?;
        let w: i64 = v.parse().map_err(|_| {
            CtlError::Usage(format!("weight `{v}` for pool `{k}` is not a whole number"))
        })?;
        m.insert(k.to_string(), json!(w));
    }
    Ok(m)
}

/// `ctl health`: GET /readyz within `timeout`. Ok (exit 0) only for a 200
/// that says `ready`; anything else is an error whose one line says why
/// (exit 1). /readyz rather than /healthz: the question a health check
/// asks is "should this instance get traffic", which is what /readyz
/// answers (503 once shutdown has begun, where /healthz stays 200; today
/// the admin listener also stops accepting at that moment, so a new check
/// is refused either way), and what the edge sync's `health_url` uses.
async fn health(args: &CtlArgs, timeout: &str) -> Result<String, CtlError> {
    let limit = cutover_config::parse_duration(timeout)
        .map_err(|e| CtlError::Usage(format!("--timeout: {e}")))?;
    let url = url(args, "/readyz");
    // The limit covers the whole exchange, body included.
    let (status, v) = tokio::time::timeout(
        limit,
        call_within(args, Method::GET, "/readyz", None, limit),
    )
    .await
    .map_err(|_| CtlError::Unreachable {
        url: url.clone(),
        message: format!("no answer within {}", humantime_secs(limit)),
    })??;
    let said = v
        .get("status")
        .or_else(|| v.get("error"))
        .and_then(|s| s.as_str())
        .unwrap_or("")
        .trim()
        .to_string();
    if status == StatusCode::OK && said == "ready" {
        return Ok(if args.json {
            serde_json::to_string_pretty(&v).unwrap_or_default()
        } else {
            format!("ready ({url})")
        });
    }
    let said = said.lines().next().unwrap_or("").chars().take(200);
    Err(CtlError::Api(format!(
        "not ready: {url} answered {} {} ({})",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        said.collect::<String>()
    )))
}

/// Runs one ctl command; returns what to print.
pub async fn run(args: &CtlArgs) -> Result<String, CtlError> {
    let (method, path, body) = match &args.command {
        CtlCommand::Health { timeout } => return health(args, timeout).await,
        CtlCommand::Status => (Method::GET, "/v1/status".to_string(), None),
        CtlCommand::Audit {
            service,
            limit,
            since,
        } => (
            Method::GET,
            audit_path(service.as_deref(), *limit, since.as_deref()),
            None,
        ),
        CtlCommand::Reload => (Method::POST, "/v1/reload".to_string(), None),
        CtlCommand::Split {
            service,
            weights,
            change,
            force,
        } => (
            Method::PUT,
            format!("/v1/services/{service}/split"),
            Some(forced(
                change_body(json!({ "split": parse_weights(weights)? }), change)?,
                *force,
            )),
        ),
        CtlCommand::Drain { service } => {
            (Method::GET, format!("/v1/services/{service}/drain"), None)
        }
        CtlCommand::Switch {
            service,
            pool,
            change,
            force,
            ..
        } => (
            Method::POST,
            format!("/v1/services/{service}/switch"),
            Some(forced(change_body(json!({ "to": pool }), change)?, *force)),
        ),
        CtlCommand::Rollback { service, change } => (
            Method::POST,
            format!("/v1/services/{service}/rollback"),
            Some(change_body(json!({}), change)?),
        ),
    };
    let (status, v) = call(args, method, &path, body).await?;
    if !status.is_success() {
        let msg = v
            .get("error")
            .and_then(|e| e.as_str())
            .unwrap_or("request failed");
        return Err(CtlError::Api(format!(
            "{} {}: {msg}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        )));
    }
    let shown = if args.json {
        serde_json::to_string_pretty(&v).unwrap_or_default()
    } else {
        match &args.command {
            CtlCommand::Status => format_status(&v),
            CtlCommand::Audit { .. } => format_audit(&v),
            CtlCommand::Drain { .. } => format_drain(&v),
            CtlCommand::Reload => format_reload(&v),
            _ => format_change(&v),
        }
    };
    if let CtlCommand::Switch {
        service,
        wait_drained: true,
        timeout,
        ..
    } = &args.command
    {
        // Show the switch now; the wait that follows shows a progress bar.
        println!("{shown}");
        return wait_drained(args, service, &v, timeout.as_deref()).await;
    }
    Ok(shown)
}

/// A reload's report: the generation, one line per change, and what
/// needs a restart.
fn format_reload(v: &Value) -> String {
    let lines = |key: &str| -> Vec<String> {
        v[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|l| l.as_str())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    };
    let (changes, restart) = (lines("changes"), lines("needs_restart"));
    let mut out = if changes.is_empty() {
        format!(
            "config reloaded: nothing changed (generation {})",
            v["generation"]
        )
    } else {
        format!(
            "config reloaded: generation {}, {} change(s)",
            v["generation"],
            changes.len()
        )
    };
    for c in changes {
        out.push_str(&format!("\n  {c}"));
    }
    for r in restart {
        out.push_str(&format!("\n  needs a restart (not applied): {r}"));
    }
    out
}

fn split_str(v: &Value) -> String {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, w)| format!("{k}={w}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

fn format_change(v: &Value) -> String {
    if v["changed"] == json!(false) {
        format!(
            "{}: already {} (generation {}, nothing changed)",
            v["service"].as_str().unwrap_or("?"),
            split_str(&v["split"]),
            v["generation"]
        )
    } else {
        let ramp = v["slow_start"]
            .as_str()
            .map(|w| format!(", ramping in over {w}"))
            .unwrap_or_default();
        format!(
            "{}: {} -> {} (generation {}{ramp})",
            v["service"].as_str().unwrap_or("?"),
            split_str(&v["previous"]),
            split_str(&v["split"]),
            v["generation"]
        )
    }
}

/// `10.0.1.10:8080`, `10.0.1.10:8080 (down since ...: connect refused)`
/// or `10.0.1.10:8080 (ejected until ...: 5 consecutive failures: ...)`.
fn backend_line(b: &Value) -> String {
    let addr = b["addr"].as_str().unwrap_or("?");
    let (reason, since) = (
        b["reason"].as_str().unwrap_or("?"),
        b["since"].as_str().unwrap_or("?"),
    );
    match b["state"].as_str() {
        Some("down") => match b["ejected_until"].as_str() {
            Some(until) => {
                format!("{addr} (down since {since}: {reason}; also ejected until {until})")
            }
            None => format!("{addr} (down since {since}: {reason})"),
        },
        Some("ejected") => format!(
            "{addr} (ejected until {}: {reason})",
            b["until"].as_str().unwrap_or("?")
        ),
        _ if b["warming"] == json!(true) => format!(
            "{addr} (warming up: weight {:.2} of {})",
            b["effective_weight"].as_f64().unwrap_or(0.0),
            b["weight"]
        ),
        _ => addr.to_string(),
    }
}

fn format_status(v: &Value) -> String {
    let mut out = match v["run_id"].as_str() {
        Some(run) => format!(
            "generation {g} (run {run}; a change that must not outlive it: --expect-generation {g}@{run})\n",
            g = v["generation"]
        ),
        None => format!("generation {}\n", v["generation"]),
    };
    for s in v["services"].as_array().into_iter().flatten() {
        let slow = s["slow_start"]
            .as_str()
            .map(|w| format!(", slow start {w}"))
            .unwrap_or_default();
        out.push_str(&format!(
            "\nservice {}  (sticky {}, drain timeout {}{slow})\n",
            s["name"].as_str().unwrap_or("?"),
            s["sticky"].as_str().unwrap_or("?"),
            s["drain_timeout"].as_str().unwrap_or("?")
        ));
        if let Some(progress) = s["ramp"]["progress"].as_f64() {
            let paused = if s["ramp"]["paused"] == json!(true) {
                ", paused: a pool it raises has no backend up"
            } else {
                ""
            };
            out.push_str(&format!(
                "  ramping to the split: {:.0}% of the way{paused}\n",
                progress * 100.0
            ));
        }
        out.push_str(&format!(
            "  {:<12} {:>7} {:>7} {:>7} {:>10} {:>9}  backends\n",
            "pool", "weight", "share", "now", "in-flight", "available"
        ));
        for p in s["pools"].as_array().into_iter().flatten() {
            let list = p["backends"].as_array().map(Vec::as_slice).unwrap_or(&[]);
            let backends: Vec<String> = list.iter().map(backend_line).collect();
            let available = format!("{}/{}", p["available"], list.len());
            out.push_str(&format!(
                "  {:<12} {:>7} {:>6.1}% {:>6.1}% {:>10} {:>9}  {}\n",
                p["name"].as_str().unwrap_or("?"),
                p["weight"].to_string(),
                p["share"].as_f64().unwrap_or(0.0) * 100.0,
                p["effective_share"].as_f64().unwrap_or(0.0) * 100.0,
                p["in_flight"].to_string(),
                available,
                backends.join(", ")
            ));
        }
        let ls: Vec<String> = s["listeners"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|l| match l["pool"].as_str() {
                Some(p) => format!("{} (preview: {p})", l["listen"].as_str().unwrap_or("?")),
                None => l["listen"].as_str().unwrap_or("?").to_string(),
            })
            .collect();
        out.push_str(&format!("  listeners: {}\n", ls.join(", ")));
    }
    if let Some(c) = v.get("last_change").filter(|c| !c.is_null()) {
        out.push_str(&format!(
            "\nlast change: generation {} at {} by {}: {} {} -> {}{}\n",
            c["generation"],
            c["at"].as_str().unwrap_or("?"),
            c["actor"].as_str().or(c["who"].as_str()).unwrap_or("?"),
            c["service"].as_str().unwrap_or("?"),
            pairs_str(&c["previous"]),
            pairs_str(&c["split"]),
            c["reason"]
                .as_str()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        ));
    }
    out.trim_end().to_string()
}

fn pairs_str(v: &Value) -> String {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some(format!("{}={}", p.get(0)?.as_str()?, p.get(1)?)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `/v1/audit?...` for `ctl audit`'s flags (values percent-encoded where
/// they need it).
fn audit_path(service: Option<&str>, limit: usize, since: Option<&str>) -> String {
    let enc = |v: &str| {
        v.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b':' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    let mut q = vec![format!("limit={limit}")];
    if let Some(s) = service {
        q.push(format!("service={}", enc(s)));
    }
    if let Some(t) = since {
        q.push(format!("since={}", enc(t)));
    }
    format!("/v1/audit?{}", q.join("&"))
}

/// `ctl audit`: one row per entry, newest first.
fn format_audit(v: &Value) -> String {
    let entries = v["entries"].as_array().cloned().unwrap_or_default();
    if entries.is_empty() {
        return "no audit entries".into();
    }
    let cell = |c: &Value, k: &str| c[k].as_str().unwrap_or("-").to_string();
    let mut out = format!(
        "{:<24} {:>5}  {:<8} {:<9} {:<13} {:<14} {:<21}  what\n",
        "time", "gen", "service", "action", "result", "actor", "source"
    );
    for c in &entries {
        let result = format!("{} {}", cell(c, "result"), c["status"]);
        let what = match (c["split"].is_array(), c["detail"].as_str()) {
            (true, _) => format!(
                "{} -> {}{}{}",
                pairs_str(&c["previous"]),
                pairs_str(&c["split"]),
                c["reason"]
                    .as_str()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default(),
                if c["forced"] == json!(true) {
                    "  FORCED"
                } else {
                    ""
                }
            ),
            (false, Some(d)) => d.to_string(),
            (false, None) => c["reason"].as_str().unwrap_or("").to_string(),
        };
        out.push_str(&format!(
            "{:<24} {:>5}  {:<8} {:<9} {:<13} {:<14} {:<21}  {what}\n",
            cell(c, "at"),
            c["generation"].to_string(),
            cell(c, "service"),
            cell(c, "action"),
            result,
            cell(c, "actor"),
            cell(c, "source"),
        ));
    }
    out.trim_end().to_string()
}

fn format_drain(v: &Value) -> String {
    let mut out = format!(
        "{}  (generation {})\n  {:<12} {:>7} {:>10} {:>13} {:>17}  drained\n",
        v["service"].as_str().unwrap_or("?"),
        v["generation"],
        "pool",
        "weight",
        "in-flight",
        "tunnels open",
        "tunnels draining"
    );
    for p in v["pools"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  {:<12} {:>7} {:>10} {:>13} {:>17}  {}\n",
            p["pool"].as_str().unwrap_or("?"),
            p["weight"].to_string(),
            p["in_flight"].to_string(),
            p["tunnels_open"].to_string(),
            p["tunnels_draining"].to_string(),
            if p["drained"] == json!(true) {
                "yes"
            } else {
                "no"
            }
        ));
    }
    out.trim_end().to_string()
}

/// The pools a change took all traffic from (weight > 0 before, 0 after).
fn emptied_pools(outcome: &Value) -> Vec<String> {
    outcome["previous"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(name, w)| {
            w.as_u64().unwrap_or(0) > 0 && outcome["split"][name.as_str()].as_u64() == Some(0)
        })
        .map(|(name, _)| name.clone())
        .collect()
}

/// How long `--wait-drained` follows: `--timeout`, else the service's slow
/// start window and drain timeout (from the status) plus 5 s.
async fn drain_limit(
    args: &CtlArgs,
    service: &str,
    timeout: Option<&str>,
) -> Result<std::time::Duration, CtlError> {
    if let Some(t) = timeout {
        return cutover_config::parse_duration(t)
            .map_err(|e| CtlError::Usage(format!("--timeout: {e}")));
    }
    let (_, status) = call(args, Method::GET, "/v1/status", None).await?;
    let svc = status["services"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["name"] == service)
        .cloned()
        .unwrap_or_default();
    let duration = |key: &str| {
        svc[key]
            .as_str()
            .and_then(|d| cutover_config::parse_duration(d).ok())
    };
    let drain_timeout = duration("drain_timeout").unwrap_or(std::time::Duration::from_secs(30));
    // A pool that a slow start empties gets traffic until the ramp ends.
    let ramp = duration("slow_start").unwrap_or_default();
    Ok(ramp
        .saturating_add(drain_timeout)
        .saturating_add(std::time::Duration::from_secs(5)))
}

/// `ctl switch --wait-drained`: after the switch, follow the pools that lost
/// all their traffic with a progress line until they are empty (Ok) or the
/// deadline passes (Err with what is left, so the exit code is 1).
async fn wait_drained(
    args: &CtlArgs,
    service: &str,
    outcome: &Value,
    timeout: Option<&str>,
) -> Result<String, CtlError> {
    let old = emptied_pools(outcome);
    if old.is_empty() {
        return Ok("no pool lost all its traffic: nothing to drain".into());
    }
    let limit = drain_limit(args, service, timeout).await?;
    let deadline = cutover_proxy::time::later_tokio(tokio::time::Instant::now(), limit);
    let bar = indicatif::ProgressBar::new_spinner();
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{spinner} draining {prefix} [{elapsed}]: {msg}")
    {
        bar.set_style(style);
    }
    bar.set_prefix(old.join(", "));
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    loop {
        let (status, v) = call(
            args,
            Method::GET,
            &format!("/v1/services/{service}/drain?wait=1s"),
            None,
        )
        .await?;
        if !status.is_success() {
            bar.finish_and_clear();
            return Err(CtlError::Api(format!(
                "drain status: {}",
                v["error"].as_str().unwrap_or("failed")
            )));
        }
        let pools: Vec<&Value> = v["pools"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| old.iter().any(|o| p["pool"] == o.as_str()))
            .collect();
        let left: Vec<String> = pools
            .iter()
            .map(|p| {
                format!(
                    "{}: {} in flight, {} tunnels open, {} draining",
                    p["pool"].as_str().unwrap_or("?"),
                    p["in_flight"],
                    p["tunnels_open"],
                    p["tunnels_draining"]
                )
            })
            .collect();
        bar.set_message(left.join("; "));
        if pools.iter().all(|p| p["drained"] == json!(true)) {
            bar.finish_and_clear();
            return Ok(format!("{} drained", old.join(", ")));
        }
        if tokio::time::Instant::now() >= deadline {
            bar.finish_and_clear();
            return Err(CtlError::Api(format!(
                "not drained after {:.1}s; left: {}",
                limit.as_secs_f64(),
                left.join("; ")
            )));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_prints_available_backends_and_why_one_is_down_or_ejected() {
        let v = serde_json::json!({
            "generation": 2,
            "services": [{
                "name": "web", "sticky": "none", "drain_timeout": "30s",
                "pools": [{
                    "name": "blue", "weight": 100, "share": 1.0, "in_flight": 0, "available": 1,
                    "backends": [
                        {"addr": "10.0.1.10:8080", "state": "up"},
                        {"addr": "10.0.1.11:8080", "state": "down", "reason": "connect refused",
                         "since": "2026-11-29T21:00:00Z"},
                        {"addr": "10.0.1.12:8080", "state": "ejected",
                         "reason": "5 consecutive failures: connect refused",
                         "since": "2026-11-29T21:00:01.250Z", "until": "2026-11-29T21:00:11.250Z"}
                    ]
                }],
                "listeners": []
            }]
        });
        let out = format_status(&v);
        assert!(out.contains("available"), "{out}");
        assert!(out.contains(" 1/3 "), "{out}");
        assert!(
            out.contains(
                "10.0.1.10:8080, 10.0.1.11:8080 (down since 2026-11-29T21:00:00Z: connect refused), \
                 10.0.1.12:8080 (ejected until 2026-11-29T21:00:11.250Z: 5 consecutive failures: connect refused)"
            ),
            "{out}"
        );
    }

    #[test]
    fn status_prints_configured_and_effective_shares_during_a_slow_start() {
        let v = serde_json::json!({
            "generation": 3,
            "services": [{
                "name": "web", "sticky": "none", "drain_timeout": "30s", "slow_start": "30s",
                "ramp": {"progress": 0.25, "paused": false},
                "pools": [
                    {"name": "blue", "weight": 50, "share": 0.5, "effective_share": 0.875,
                     "in_flight": 0, "available": 1,
                     "backends": [{"addr": "10.0.1.10:8080", "state": "up", "weight": 1, "effective_weight": 1.0}]},
                    {"name": "green", "weight": 50, "share": 0.5, "effective_share": 0.125,
                     "in_flight": 0, "available": 1,
                     "backends": [{"addr": "10.0.2.10:8080", "state": "up", "weight": 2,
                                   "effective_weight": 0.5, "warming": true}]}
                ],
                "listeners": []
            }]
        });
        let out = format_status(&v);
        assert!(out.contains("slow start 30s"), "{out}");
        assert!(
            out.contains("ramping to the split: 25% of the way\n"),
            "{out}"
        );
        assert!(out.contains("  50.0%   87.5% "), "{out}");
        assert!(out.contains("  50.0%   12.5% "), "{out}");
        assert!(
            out.contains("10.0.2.10:8080 (warming up: weight 0.50 of 2)"),
            "{out}"
        );
        let change = serde_json::json!({
            "service": "web", "generation": 3, "changed": true, "slow_start": "30s",
            "split": {"blue": 50, "green": 50}, "previous": {"blue": 100, "green": 0}
        });
        assert_eq!(
            format_change(&change),
            "web: blue=100 green=0 -> blue=50 green=50 (generation 3, ramping in over 30s)"
        );
    }
}
