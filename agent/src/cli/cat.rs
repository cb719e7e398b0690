//! `cairn cat KIND [ID]`: prints one repository object, decrypted, for inspection.

use std::io::Write;

use anyhow::{Context, Result, anyhow, bail};
use cairn_engine::select;
use cairn_repo_format::key::KeyFile;
use cairn_repo_format::pack::PackEntry;
use cairn_repo_format::{BlobType, FileKind, Id, Opened, Repository};

use super::args::CatArgs;
use super::{Ctx, Out, Outcome};

fn entry_json(e: &PackEntry) -> serde_json::Value {
    serde_json::json!({"type": e.ty.name(), "id": e.id, "offset": e.offset, "length": e.length,
        "raw_length": e.raw_length, "compressed": e.compression as u8 != 0})
}

/// Resolves a full id or a unique prefix among the objects of `kind`.
fn resolve(repo: &Repository<Opened>, kind: FileKind, spec: &str) -> Result<Id> {
    if let Ok(id) = Id::from_hex(spec) {
        return Ok(id);
    }
    let lower = spec.to_ascii_lowercase();
    let mut found = Vec::new();
    repo.backend().list(kind.prefix(), &mut |o| {
        if let Some(id) = kind.id_of(&o.path)
            && id.to_hex().starts_with(&lower)
        {
            found.push(id);
        }
    })?;
    match found.as_slice() {
        [id] => Ok(*id),
        [] => bail!(
            "no {} object matches {spec:?}",
            kind.prefix().trim_end_matches('/')
        ),
        _ => bail!("{spec:?} is ambiguous; give more digits"),
    }
}

fn blob_id(spec: &str) -> Result<Id> {
    Id::from_hex(spec).map_err(|e| anyhow!("{e}: blob and tree ids must be given in full"))
}

pub fn run(ctx: &Ctx, _out: &Out, a: CatArgs) -> Result<Outcome> {
    let need_id = || {
        a.id.clone()
            .ok_or_else(|| anyhow!("cat {} needs an ID", a.kind))
    };
    let repo = ctx.open()?;
    let mut stdout = std::io::stdout().lock();
    let value = match a.kind.as_str() {
        "config" => serde_json::to_value(repo.config())?,
        "snapshot" => {
            let (id, snap) = select::resolve(
                &repo,
                &need_id()?,
                &Default::default(),
                &mut super::report_damaged(ctx),
            )?;
            let mut v = serde_json::to_value(snap)?;
            v["id"] = serde_json::json!(id);
            v
        }
        "key" => {
            let id = resolve(&repo, FileKind::Key, &need_id()?)?;
            let bytes = repo.backend().get(&FileKind::Key.path(&id), None)?;
            serde_json::to_value(
                serde_json::from_slice::<KeyFile>(&bytes).context("malformed key file")?,
            )?
        }
        "index" => {
            let id = resolve(&repo, FileKind::Index, &need_id()?)?;
            let mut packs = Vec::new();
            repo.read_index_file(&FileKind::Index.path(&id), |pack, entries| {
                packs.push(serde_json::json!({"id": pack, "blobs": entries.iter().map(entry_json).collect::<Vec<_>>()}));
            })?;
            serde_json::json!({ "packs": packs })
        }
        "pack" => {
            let id = resolve(&repo, FileKind::Pack, &need_id()?)?;
            let entries = repo.read_pack_header(&id)?;
            serde_json::json!({"id": id, "blobs": entries.iter().map(entry_json).collect::<Vec<_>>()})
        }
        "tree" => {
            let repo = repo.load_index()?;
            cairn_engine::open::report_skipped(&repo, ctx.cx());
            serde_json::to_value(repo.load_tree(&blob_id(&need_id()?)?)?)?
        }
        "blob" => {
            let repo = repo.load_index()?;
            cairn_engine::open::report_skipped(&repo, ctx.cx());
            let data = repo.load_blob(BlobType::Data, &blob_id(&need_id()?)?)?;
            stdout.write_all(&data)?;
            return Ok(Outcome::Success);
        }
        other => {
            bail!("cannot cat {other:?}: use config, snapshot, tree, blob, index, pack or key")
        }
    };
    writeln!(stdout, "{}", serde_json::to_string_pretty(&value)?)?;
    Ok(Outcome::Success)
}
