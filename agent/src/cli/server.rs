//! `cairn server`: flags to validated settings, JSON logs, then [`cairn_server::run`].

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::Outcome;
use super::args::ServerArgs;

/// Parses a byte count with an optional K, M, G or T suffix (powers of 1024).
fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => bail!("--max-size {s:?}: use a byte count with K, M, G or T"),
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    let n: u64 = num
        .trim()
        .parse()
        .with_context(|| format!("--max-size {s:?}: not a byte count"))?;
    n.checked_mul(mult)
        .with_context(|| format!("--max-size {s:?}: too large"))
}

fn parse_addr(flag: &str, s: &str) -> Result<SocketAddr> {
    s.parse().with_context(|| {
        format!("{flag} {s:?}: expected HOST:PORT with an IP address, e.g. 0.0.0.0:8443")
    })
}

/// Runs the server until SIGTERM or SIGINT.
pub fn run(a: ServerArgs, storage: Option<String>) -> Result<Outcome> {
    let Some(storage) = storage.filter(|s| !s.is_empty()) else {
        bail!(
            "no storage given: pass -r/--repo (a directory, azure://, s3:// or gs://) or set CAIRN_REPOSITORY"
        );
    };
    let listen = parse_addr("--listen", &a.listen)?;
    let mut settings =
        cairn_server::Settings::new(storage, listen, a.tokens_file, a.receipt_key_file);
    settings.tls = a.tls_cert.zip(a.tls_key);
    settings.max_size = a.max_size.as_deref().map(parse_size).transpose()?;
    settings.metrics_listen = a
        .metrics_listen
        .as_deref()
        .map(|m| parse_addr("--metrics-listen", m))
        .transpose()?;
    if a.max_connections == 0 || a.max_requests == 0 {
        bail!("--max-connections and --max-requests must be at least 1");
    }
    if a.idle_timeout == 0 || a.request_timeout == 0 {
        bail!("--idle-timeout and --request-timeout must be at least 1 second");
    }
    settings.max_connections = a.max_connections;
    settings.max_requests = a.max_requests;
    settings.timeouts.idle = Duration::from_secs(a.idle_timeout);
    settings.timeouts.request = Duration::from_secs(a.request_timeout);
    settings.timeouts.shutdown = Duration::from_secs(a.shutdown_grace);
    tracing_subscriber::fmt()
        .json()
        .with_writer(std::io::stderr)
        .with_current_span(false)
        .init();
    cairn_server::run(settings)?;
    Ok(Outcome::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("100").unwrap(), 100);
        assert_eq!(parse_size("2K").unwrap(), 2048);
        assert_eq!(parse_size("3g").unwrap(), 3 << 30);
        assert!(parse_size("x").is_err());
        assert!(parse_size("5Q").is_err());
        assert!(parse_size("99999999999T").is_err());
    }
}
