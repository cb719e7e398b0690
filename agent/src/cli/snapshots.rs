//! `cairn snapshots`: lists snapshots, oldest first.

use anyhow::Result;
use cairn_engine::select;

use super::args::FilterArgs;
use super::{Ctx, Out, Outcome, bytes};

pub fn run(ctx: &Ctx, out: &Out, a: FilterArgs) -> Result<Outcome> {
    let repo = ctx.open()?;
    let list = select::list_with(&repo, &a.to_filter()?, &mut |id, e| {
        super::skip_damaged_snapshot(ctx, id, e)
    })?;
    if out.json {
        let v: Vec<_> = list
            .iter()
            .map(|(id, s)| {
                let mut j = serde_json::to_value(s).expect("serializable");
                j["id"] = serde_json::json!(id);
                j["short_id"] = serde_json::json!(id.short());
                j
            })
            .collect();
        println!("{}", serde_json::Value::Array(v));
        return Ok(Outcome::Success);
    }
    println!(
        "{:<8}  {:<19}  {:<16}  {:<20}  {:>12}  paths",
        "ID", "Time", "Host", "Tags", "Size"
    );
    println!("{}", "-".repeat(100));
    for (id, s) in &list {
        let labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!(
            "{:<8}  {:<19}  {:<16}  {:<20}  {:>12}  {}{}",
            id.short(),
            s.time
                .with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S"),
            s.hostname,
            s.tags.join(","),
            bytes(s.summary.bytes_total),
            s.paths.join(" "),
            if labels.is_empty() {
                String::new()
            } else {
                format!("  [{}]", labels.join(" "))
            }
        );
    }
    println!("{} snapshots", list.len());
    Ok(Outcome::Success)
}
