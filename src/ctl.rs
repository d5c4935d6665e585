//! `cutover ctl`: a small client of the admin API.

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

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

async fn call(
    args: &CtlArgs,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Result<(StatusCode, Value), CtlError> {
    let url = format!("{}{}", args.admin.trim_end_matches('/'), path);
    let unreachable = |message: String| CtlError::Unreachable {
        url: url.clone(),
        message,
    };
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = Request::builder()
        .method(method)
        .uri(&url)
        .header("content-type", "application/json");
    if let Some(t) = &args.token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = req
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| CtlError::Usage(format!("bad admin URL `{url}`: {e}")))?;
    let resp = tokio::time::timeout(std::time::Duration::from_secs(30), client.request(req))
        .await
        .map_err(|_| unreachable("no answer within 30s".into()))?
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

fn change_body(mut body: Value, c: &ChangeArgs) -> Value {
    if let Some(r) = &c.reason {
        body["reason"] = json!(r);
    }
    if let Some(g) = c.expect_generation {
        body["expect_generation"] = json!(g);
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

/// Runs one ctl command; returns what to print.
pub async fn run(args: &CtlArgs) -> Result<String, CtlError> {
    let (method, path, body) = match &args.command {
        CtlCommand::Status => (Method::GET, "/v1/status".to_string(), None),
        CtlCommand::Audit => (Method::GET, "/v1/audit".to_string(), None),
        CtlCommand::Split {
            service,
            weights,
            change,
        } => (
            Method::PUT,
            format!("/v1/services/{service}/split"),
            Some(change_body(
                json!({ "split": parse_weights(weights)? }),
                change,
            )),
        ),
        CtlCommand::Switch {
            service,
            pool,
            change,
        } => (
            Method::POST,
            format!("/v1/services/{service}/switch"),
            Some(change_body(json!({ "to": pool }), change)),
        ),
        CtlCommand::Rollback { service, change } => (
            Method::POST,
            format!("/v1/services/{service}/rollback"),
            Some(change_body(json!({}), change)),
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
    if args.json {
        return Ok(serde_json::to_string_pretty(&v).unwrap_or_default());
    }
    Ok(match &args.command {
        CtlCommand::Status => format_status(&v),
        CtlCommand::Audit => format_audit(&v),
        _ => format_change(&v),
    })
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
        format!(
            "{}: {} -> {} (generation {})",
            v["service"].as_str().unwrap_or("?"),
            split_str(&v["previous"]),
            split_str(&v["split"]),
            v["generation"]
        )
    }
}

fn format_status(v: &Value) -> String {
    let mut out = format!("generation {}\n", v["generation"]);
    for s in v["services"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "\nservice {}  (sticky {}, drain timeout {})\n",
            s["name"].as_str().unwrap_or("?"),
            s["sticky"].as_str().unwrap_or("?"),
            s["drain_timeout"].as_str().unwrap_or("?")
        ));
        out.push_str(&format!(
            "  {:<12} {:>7} {:>7} {:>10}  backends\n",
            "pool", "weight", "share", "in-flight"
        ));
        for p in s["pools"].as_array().into_iter().flatten() {
            let backends: Vec<String> = p["backends"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|b| b["addr"].as_str().unwrap_or("?").to_string())
                .collect();
            out.push_str(&format!(
                "  {:<12} {:>7} {:>6.1}% {:>10}  {}\n",
                p["name"].as_str().unwrap_or("?"),
                p["weight"].to_string(),
                p["share"].as_f64().unwrap_or(0.0) * 100.0,
                p["in_flight"].to_string(),
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
            c["who"].as_str().unwrap_or("?"),
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

fn format_audit(v: &Value) -> String {
    let entries = v["entries"].as_array().cloned().unwrap_or_default();
    if entries.is_empty() {
        return "no changes yet".into();
    }
    entries
        .iter()
        .map(|c| {
            format!(
                "{:>5}  {}  {:<8} {:<10} {} -> {}  by {}{}",
                c["generation"].to_string(),
                c["at"].as_str().unwrap_or("?"),
                c["service"].as_str().unwrap_or("?"),
                c["action"].as_str().unwrap_or("?"),
                pairs_str(&c["previous"]),
                pairs_str(&c["split"]),
                c["who"].as_str().unwrap_or("?"),
                c["reason"]
                    .as_str()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}
