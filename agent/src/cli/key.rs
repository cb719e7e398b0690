//! `cairn key list|add|remove|passwd`: key files, one per password.

use anyhow::{Result, bail};
use cairn_repo_format::key::KdfParams;

use super::args::{KeyCommand, NewPassword};
use super::{Ctx, Out, Outcome};

pub fn run(ctx: &Ctx, out: &Out, cmd: KeyCommand) -> Result<Outcome> {
    let repo = ctx.open()?;
    match cmd {
        KeyCommand::List => {
            let keys = repo.keys()?;
            if out.json {
                let v: Vec<_> = keys
                    .iter()
                    .map(|(id, k)| match k {
                        Ok(k) => serde_json::json!({
                            "id": id, "current": id == repo.key_id(), "username": k.username,
                            "host": k.host, "created": k.created,
                        }),
                        Err(e) => serde_json::json!({ "id": id, "error": e.to_string() }),
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(v));
            } else {
                println!(" {:<8}  {:<12}  {:<16}  created", "ID", "User", "Host");
                for (id, k) in &keys {
                    let mark = if id == repo.key_id() { '*' } else { ' ' };
                    match k {
                        Ok(k) => println!(
                            "{mark}{:<8}  {:<12}  {:<16}  {}",
                            id.short(),
                            k.username,
                            k.host,
                            k.created
                                .with_timezone(&chrono::Local)
                                .format("%Y-%m-%d %H:%M:%S")
                        ),
                        Err(e) => println!("{mark}{:<8}  unreadable: {e}", id.short()),
                    }
                }
            }
        }
        KeyCommand::Add(NewPassword { new_password_file }) => {
            let pw = ctx.new_password(new_password_file.as_deref())?;
            let id = repo.add_key(pw.as_bytes(), KdfParams::default())?;
            report(out, "added", &id);
        }
        KeyCommand::Passwd(NewPassword { new_password_file }) => {
            let pw = ctx.new_password(new_password_file.as_deref())?;
            let id = repo.add_key(pw.as_bytes(), KdfParams::default())?;
            // The new key is stored before the old one goes: the repository stays openable.
            let old = *repo.key_id();
            repo.backend()
                .delete(&cairn_repo_format::FileKind::Key.path(&old))?;
            report(out, "password changed: new key", &id);
        }
        KeyCommand::Remove { id } => {
            let lower = id.to_ascii_lowercase();
            if lower.is_empty() || !lower.bytes().all(|b| b.is_ascii_hexdigit()) {
                bail!("{id:?} is not a key id; see `cairn key list`");
            }
            let ids: Vec<_> = repo
                .ids(cairn_repo_format::FileKind::Key)?
                .into_iter()
                .filter(|k| k.to_hex().starts_with(&lower))
                .collect();
            let target = match ids.as_slice() {
                [one] => *one,
                [] => bail!("no key {id:?} in this repository; see `cairn key list`"),
                _ => bail!("key id prefix {id:?} is ambiguous; give more digits"),
            };
            repo.remove_key(&target)?;
            report(out, "removed key", &target);
        }
    }
    Ok(Outcome::Success)
}

fn report(out: &Out, what: &str, id: &cairn_repo_format::Id) {
    if out.json {
        println!("{}", serde_json::json!({ "result": what, "id": id }));
    } else {
        out.info(format!("{what} {}", id.short()));
    }
}
