//! `cutover edge plan` and `cutover edge apply`.
//!
//! Both use the split written in the config file for `weight_from`
//! records (a running cutover uses its live split instead).

use std::io::Write;
use std::time::Duration;

use cutover_config::edge::EdgeConfig;
use serde::Serialize;

use super::aws::EdgeClients;
use super::plan::{compute_plan, config_split, Action, Plan, PlanItem};
use super::EdgeError;

/// Exit code: AWS matches the config.
pub const EXIT_NOTHING_TO_DO: i32 = 0;
/// Exit code of `plan`: something would change.
pub const EXIT_CHANGES_PENDING: i32 = 2;

/// `cutover edge plan`: read the actual state, print the difference as a
/// table (or JSON with `json`), and return the exit code: 0 when nothing
/// would change, 2 when something would. Clients come from the standard
/// AWS chain.
pub async fn plan_command(
    cfg: &EdgeConfig,
    json: bool,
    out: &mut impl Write,
) -> Result<i32, EdgeError> {
    let clients = EdgeClients::from_env(cfg).await;
    plan_with(&clients, cfg, json, out).await
}

/// [`plan_command`] with given clients.
pub async fn plan_with(
    clients: &EdgeClients,
    cfg: &EdgeConfig,
    json: bool,
    out: &mut impl Write,
) -> Result<i32, EdgeError> {
    let plan = read_plan(clients, cfg).await?;
    if json {
        #[derive(Serialize)]
        struct Json<'a> {
            changes_pending: bool,
            items: &'a [PlanItem],
        }
        serde_json::to_writer_pretty(
            &mut *out,
            &Json {
                changes_pending: plan.changes_pending(),
                items: &plan.items,
            },
        )
        .map_err(std::io::Error::from)?;
        writeln!(out)?;
    } else {
        write_table(&plan, out)?;
        write_summary(&plan, out, "would change")?;
    }
    Ok(if plan.changes_pending() {
        EXIT_CHANGES_PENDING
    } else {
        EXIT_NOTHING_TO_DO
    })
}

/// `cutover edge apply`: print the plan, make it true (bounded by
/// `timeout`, including waiting for Route 53 INSYNC), print what was done.
/// Returns 0.
pub async fn apply_command(
    cfg: &EdgeConfig,
    timeout: Duration,
    out: &mut impl Write,
) -> Result<i32, EdgeError> {
    let clients = EdgeClients::from_env(cfg).await;
    apply_with(&clients, cfg, timeout, out).await
}

/// [`apply_command`] with given clients.
pub async fn apply_with(
    clients: &EdgeClients,
    cfg: &EdgeConfig,
    timeout: Duration,
    out: &mut impl Write,
) -> Result<i32, EdgeError> {
    let plan = read_plan(clients, cfg).await?;
    write_table(&plan, out)?;
    if !plan.changes_pending() {
        write_summary(&plan, out, "would change")?;
        return Ok(EXIT_NOTHING_TO_DO);
    }
    writeln!(out)?;
    out.flush()?;
    for line in clients.apply(&plan, timeout).await? {
        writeln!(out, "{line}")?;
    }
    write_summary(&plan, out, "changed")?;
    Ok(EXIT_NOTHING_TO_DO)
}

async fn read_plan(clients: &EdgeClients, cfg: &EdgeConfig) -> Result<Plan, EdgeError> {
    let actual = clients.read_actual(cfg).await?;
    let split = config_split(cfg);
    Ok(compute_plan(cfg, &actual, &split))
}

/// The plan as an aligned table: KIND ID ACTUAL DESIRED ACTION, with notes
/// under the items they concern.
pub fn write_table(plan: &Plan, out: &mut impl Write) -> std::io::Result<()> {
    let rows: Vec<[String; 5]> = plan
        .items
        .iter()
        .map(|i| {
            [
                i.kind.as_str().to_string(),
                i.id.clone(),
                i.actual.clone().unwrap_or_else(|| "-".to_string()),
                i.desired.clone().unwrap_or_else(|| "-".to_string()),
                i.action.as_str().to_string(),
            ]
        })
        .collect();
    let header = ["KIND", "ID", "ACTUAL", "DESIRED", "ACTION"].map(str::to_string);
    let mut widths = header.clone().map(|h| h.len());
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |out: &mut dyn Write, cells: &[String; 5]| -> std::io::Result<()> {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
            if i == 4 {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        writeln!(out, "{}", s.trim_end())
    };
    line(out, &header)?;
    for (r, item) in rows.iter().zip(&plan.items) {
        line(out, r)?;
        if let Some(n) = &item.note {
            writeln!(out, "    note: {n}")?;
        }
    }
    Ok(())
}

fn write_summary(plan: &Plan, out: &mut impl Write, verb: &str) -> std::io::Result<()> {
    let count = |a: Action| plan.items.iter().filter(|i| i.action == a).count();
    let n = plan.items.len() - count(Action::None);
    if n == 0 {
        return writeln!(
            out,
            "\nNothing to do: AWS matches the config ({} item(s)).",
            plan.items.len()
        );
    }
    let parts: Vec<String> = [Action::Create, Action::Update, Action::Move]
        .into_iter()
        .filter(|a| count(*a) > 0)
        .map(|a| format!("{} {}", count(a), a.as_str()))
        .collect();
    writeln!(
        out,
        "\n{n} of {} item(s) {verb}: {}.",
        plan.items.len(),
        parts.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::plan::{ItemKind, PlanItem};

    #[test]
    fn table_is_aligned_and_has_notes_and_summary() {
        let plan = Plan {
            items: vec![
                PlanItem {
                    kind: ItemKind::Record,
                    id: "Z1 www.example.com. A".into(),
                    actual: None,
                    desired: Some("ALIAS lb. (zone Z2)".into()),
                    action: Action::Create,
                    note: None,
                    change: None,
                },
                PlanItem {
                    kind: ItemKind::ElasticIp,
                    id: "eipalloc-1".into(),
                    actual: Some("i-a".into()),
                    desired: Some("i-b".into()),
                    action: Action::Move,
                    note: Some("i-a unhealthy: refused".into()),
                    change: None,
                },
            ],
        };
        let mut out = Vec::new();
        write_table(&plan, &mut out).unwrap();
        write_summary(&plan, &mut out, "would change").unwrap();
        let s = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(
            lines[0],
            "KIND        ID                     ACTUAL  DESIRED              ACTION"
        );
        assert_eq!(
            lines[1],
            "record      Z1 www.example.com. A  -       ALIAS lb. (zone Z2)  create"
        );
        assert_eq!(
            lines[2],
            "elastic_ip  eipalloc-1             i-a     i-b                  move"
        );
        assert_eq!(lines[3], "    note: i-a unhealthy: refused");
        assert_eq!(lines[5], "2 of 2 item(s) would change: 1 create, 1 move.");
    }
}
