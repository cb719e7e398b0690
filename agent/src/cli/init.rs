//! `cairn init`: creates a repository.

use anyhow::{Result, bail};
use cairn_repo_format::Repository;
use cairn_repo_format::config::{Config, DEFAULT_CHUNK_AVG, DEFAULT_CHUNK_MAX, DEFAULT_CHUNK_MIN};
use cairn_repo_format::key::KdfParams;

use super::args::InitArgs;
use super::{Ctx, Out, Outcome};

fn chunk_sizes(s: Option<&str>) -> Result<(u32, u32, u32)> {
    let Some(s) = s else {
        return Ok((DEFAULT_CHUNK_MIN, DEFAULT_CHUNK_AVG, DEFAULT_CHUNK_MAX));
    };
    let v: Vec<u32> = s
        .split(',')
        .map(|p| p.trim().parse())
        .collect::<Result<_, _>>()
        .map_err(|_| {
            anyhow::anyhow!("--chunk-sizes {s:?}: expected three byte counts MIN,AVG,MAX")
        })?;
    match v.as_slice() {
        [a, b, c] => Ok((*a, *b, *c)),
        _ => bail!("--chunk-sizes {s:?}: expected three byte counts MIN,AVG,MAX"),
    }
}

pub fn run(ctx: &Ctx, out: &Out, a: InitArgs) -> Result<Outcome> {
    if !(0..=22).contains(&a.compression) {
        bail!(
            "--compression {} is out of range: use 0 (off) to 22",
            a.compression
        );
    }
    if !(1..=512).contains(&a.pack_size) {
        bail!(
            "--pack-size {} MiB is out of range: use 1 to 512",
            a.pack_size
        );
    }
    let config = Config::new(
        chunk_sizes(a.chunk_sizes.as_deref())?,
        a.compression,
        a.pack_size << 20,
    );
    config.chunker.validate()?;
    let loc = ctx.location()?;
    let mut kdf = KdfParams::default();
    if let Some(m) = a.kdf_memory {
        kdf.m_cost = m;
        kdf.t_cost = 1;
    }
    let (backend, note) = loc.open_for_init(&ctx.server)?;
    if let Some(n) = &note {
        out.info(n);
    }
    if backend.head("config")?.is_some() {
        return Err(cairn_repo_format::RepoError::AlreadyInitialized {
            location: backend.location(),
        }
        .into());
    }
    let pw = ctx.password(true)?;
    let repo = Repository::init(backend, pw.as_bytes(), config, kdf)?;
    if out.json {
        println!(
            "{}",
            serde_json::json!({"message_type": "initialized", "id": repo.config().id, "repository": repo.backend().location()})
        );
    } else {
        out.info(format!(
            "created cairn repository {} at {}",
            repo.config().id.short(),
            repo.backend().location()
        ));
        out.info("Please note that knowledge of your password is required to access the repository: losing it means the data is irrecoverably lost.");
    }
    Ok(Outcome::Success)
}
