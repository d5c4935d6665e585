//! The one metrics reader: Prometheus text, from a running cutover's
//! `/metrics` or from a `prometheus::Registry` (encoded to the same text),
//! read by line prefix or by name and labels.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::client::get_once;

/// One scrape of Prometheus text.
#[derive(Debug, Clone)]
pub struct Metrics {
    text: String,
}

/// One sample line: name, labels in the order written, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Metrics {
    pub fn parse(text: impl Into<String>) -> Metrics {
        Metrics { text: text.into() }
    }

    /// Everything `registry` holds, as `/metrics` would show it.
    pub fn from_registry(registry: &prometheus::Registry) -> Metrics {
        use prometheus::Encoder;
        let mut out = Vec::new();
        // Encoding into a Vec fails only on a malformed family name, which
        // the registry refuses at registration.
        let _ = prometheus::TextEncoder::new().encode(&registry.gather(), &mut out);
        Metrics::parse(String::from_utf8_lossy(&out).to_string())
    }

    /// `GET /metrics` on an admin address.
    pub async fn scrape(admin: SocketAddr) -> Result<Metrics, String> {
        let host = admin.to_string();
        let a = get_once(admin, "/metrics", &[("host", &host)]).await?;
        Ok(Metrics::parse(a.body))
    }

    /// The text as scraped.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The value of the first line starting with `line_start` (a metric
    /// name with its labels written out, as `/metrics` prints them).
    pub fn line(&self, line_start: &str) -> Option<f64> {
        self.text
            .lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    /// The metric families the text declares (`# TYPE name type` lines):
    /// name to type.
    pub fn families(&self) -> BTreeMap<String, String> {
        self.text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                Some((it.next()?.to_string(), it.next()?.to_string()))
            })
            .collect()
    }

    /// Every sample line.
    pub fn samples(&self) -> Vec<Sample> {
        self.text.lines().filter_map(parse_sample).collect()
    }

    /// The first sample called `name` that carries all of `labels` (it may
    /// carry others).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples()
            .into_iter()
            .find(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|s| s.value)
    }
}

/// The value of the first line of `admin`'s `/metrics` starting with
/// `line_start`; None when there is no such line or no answer.
pub async fn metric(admin: SocketAddr, line_start: &str) -> Option<f64> {
    Metrics::scrape(admin).await.ok()?.line(line_start)
}

fn parse_sample(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (name, labels, rest) = match line.find('{') {
        Some(open) => {
            let (labels, after) = parse_labels(&line[open + 1..])?;
            (&line[..open], labels, after)
        }
        None => {
            let (name, rest) = line.split_once(' ')?;
            (name, Vec::new(), rest)
        }
    };
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// `k="v",k2="v2"}` and what follows the closing brace.
fn parse_labels(s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    let mut rest = s;
    loop {
        rest = rest.trim_start_matches([',', ' ']);
        if let Some(after) = rest.strip_prefix('}') {
            return Some((labels, after));
        }
        let (key, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break i,
                c => value.push(c),
            }
        };
        labels.push((key.trim().to_string(), value));
        rest = &after[end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP cutover_requests_total Requests.
# TYPE cutover_requests_total counter
cutover_requests_total{code="2xx",pool="blue",service="web"} 3
cutover_requests_total{code="2xx",pool="green",service="web"} 1
cutover_generation 2
weird{v="a\"b,c}"} 1.5
"#;

    #[test]
    fn reads_by_prefix_and_by_name_and_labels() {
        let m = Metrics::parse(TEXT);
        assert_eq!(m.line("cutover_generation"), Some(2.0));
        assert_eq!(
            m.line("cutover_requests_total{code=\"2xx\",pool=\"green\""),
            Some(1.0)
        );
        assert_eq!(
            m.value("cutover_requests_total", &[("pool", "blue")]),
            Some(3.0)
        );
        assert_eq!(m.value("cutover_generation", &[]), Some(2.0));
        assert_eq!(m.value("weird", &[("v", "a\"b,c}")]), Some(1.5));
        assert_eq!(m.value("cutover_requests_total", &[("pool", "teal")]), None);
        assert_eq!(m.samples().len(), 4);
    }

    #[test]
    fn reads_a_registry() {
        let r = prometheus::Registry::new();
        let c = prometheus::IntCounterVec::new(
            prometheus::Opts::new("things_total", "Things."),
            &["kind"],
        )
        .expect("valid counter");
        r.register(Box::new(c.clone())).expect("registered");
        c.with_label_values(&["a"]).inc_by(4);
        c.with_label_values(&["b"]);
        let m = Metrics::from_registry(&r);
        assert_eq!(m.value("things_total", &[("kind", "a")]), Some(4.0));
        assert_eq!(m.value("things_total", &[("kind", "b")]), Some(0.0));
    }
}

/// The metric families a Markdown page documents, by the `## ` section they
/// stand in: table rows whose first cell is a name in backticks and whose
/// second is its type (`| `cutover_x_total` | counter | ... |`).
pub fn documented(markdown: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut section = String::new();
    for line in markdown.lines() {
        if let Some(h) = line.strip_prefix("## ") {
            section = h.trim().to_string();
            continue;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // "| a | b |" splits into ["", "a", "b", ""].
        if cells.len() < 4 || !cells[0].is_empty() {
            continue;
        }
        let Some(name) = cells[1].strip_prefix('`').and_then(|c| c.strip_suffix('`')) else {
            continue;
        };
        out.entry(section.clone())
            .or_default()
            .insert(name.to_string(), cells[2].to_string());
    }
    out
}

#[cfg(test)]
mod doc_tests {
    use super::*;

    #[test]
    fn documented_reads_backticked_rows_by_section_and_families_reads_type_lines() {
        let md = "# M\n\n## Core\n\n| metric | type | labels | what |\n| --- | --- | --- | --- |\n\
                  | `a_total` | counter | x | one |\n| `b` | gauge | | two |\n\nprose `c` | no\n\n\
                  ## Edge\n\n| `e` | gauge | | three |\n";
        let d = documented(md);
        assert_eq!(d.len(), 2);
        assert_eq!(
            d["Core"].get("a_total").map(String::as_str),
            Some("counter")
        );
        assert_eq!(d["Core"].get("b").map(String::as_str), Some("gauge"));
        assert_eq!(d["Edge"].len(), 1);
        let m = Metrics::parse(
            "# HELP a_total x\n# TYPE a_total counter\na_total 1\n# TYPE h histogram\n",
        );
        let f = m.families();
        assert_eq!(f.get("a_total").map(String::as_str), Some("counter"));
        assert_eq!(f.get("h").map(String::as_str), Some("histogram"));
        assert_eq!(f.len(), 2);
    }
}
