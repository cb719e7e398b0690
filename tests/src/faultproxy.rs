//! A fault-injecting loopback TCP proxy, put between `cairn` and Azurite. On a schedule fixed by
//! a seed, a new connection is forwarded faithfully, dropped at once, answered with `503`,
//! stalled before it is forwarded, or forwarded and then cut short after a few hundred
//! kilobytes of response. Faults hit requests wherever they fall: listing, heads, ranged
//! reads, uploads.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::Rng;

/// What happened to connections, for the test to assert that faults really occurred.
#[derive(Default, Debug)]
pub struct FaultCounts {
    /// Connections forwarded without a fault.
    pub clean: AtomicU64,
    /// Connections closed before any reply.
    pub dropped: AtomicU64,
    /// Connections answered with 503.
    pub unavailable: AtomicU64,
    /// Connections delayed before forwarding.
    pub stalled: AtomicU64,
    /// Connections whose response was cut short.
    pub cut: AtomicU64,
}

/// A running proxy; stops when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
    /// Fault counters.
    pub counts: Arc<FaultCounts>,
}

enum Fault {
    None,
    Drop,
    Unavailable,
    Stall,
    Cut(u64),
}

impl FaultProxy {
    /// Proxies to `upstream`; about `fault_percent` of connections get a fault.
    pub fn start(upstream: SocketAddr, seed: u64, fault_percent: u64) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(FaultCounts::default());
        let accept = {
            let (stop, counts) = (stop.clone(), counts.clone());
            std::thread::spawn(move || {
                let mut rng = Rng::new(seed);
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(client) = conn else { continue };
                    let roll = rng.next_u64() % 100;
                    let fault = if roll >= fault_percent {
                        Fault::None
                    } else {
                        match rng.next_u64() % 4 {
                            0 => Fault::Drop,
                            1 => Fault::Unavailable,
                            2 => Fault::Stall,
                            _ => Fault::Cut(1000 + rng.next_u64() % 400_000),
                        }
                    };
                    let counts = counts.clone();
                    std::thread::spawn(move || serve(client, upstream, fault, &counts));
                }
            })
        };
        FaultProxy {
            addr,
            stop,
            accept: Some(accept),
            counts,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Faults injected so far.
    pub fn faults(&self) -> u64 {
        let c = &self.counts;
        [&c.dropped, &c.unavailable, &c.stalled, &c.cut]
            .iter()
            .map(|a| a.load(Ordering::SeqCst))
            .sum()
    }
}

/// Reads until the end of the request head (or EOF), so that a reply lands after a request.
fn read_head(client: &mut TcpStream) {
    let mut buf = [0u8; 4096];
    let mut seen = Vec::new();
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        match client.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

fn serve(mut client: TcpStream, upstream: SocketAddr, fault: Fault, counts: &FaultCounts) {
    let limit = match fault {
        Fault::Drop => {
            counts.dropped.fetch_add(1, Ordering::SeqCst);
            read_head(&mut client);
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
        Fault::Unavailable => {
            counts.unavailable.fetch_add(1, Ordering::SeqCst);
            read_head(&mut client);
            let _ = client.write_all(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
        Fault::Stall => {
            counts.stalled.fetch_add(1, Ordering::SeqCst);
            // A slow network, not a dead one: the request goes through late (latency being
            // the fault injected, this sleep is the fault itself, not a synchronisation).
            std::thread::sleep(Duration::from_millis(300));
            u64::MAX
        }
        Fault::Cut(n) => {
            counts.cut.fetch_add(1, Ordering::SeqCst);
            n
        }
        Fault::None => {
            counts.clean.fetch_add(1, Ordering::SeqCst);
            u64::MAX
        }
    };
    let Ok(server) = TcpStream::connect(upstream) else {
        return;
    };
    let (mut c_read, mut s_write) = match (client.try_clone(), server.try_clone()) {
        (Ok(c), Ok(s)) => (c, s),
        _ => return,
    };
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut c_read, &mut s_write);
        let _ = s_write.shutdown(Shutdown::Write);
    });
    let mut s_read = server;
    let mut sent = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match s_read.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let take = (limit - sent).min(n as u64) as usize;
        if client.write_all(&buf[..take]).is_err() {
            break;
        }
        sent += take as u64;
        if sent >= limit {
            break;
        }
    }
    let _ = client.shutdown(Shutdown::Both);
    let _ = s_read.shutdown(Shutdown::Both);
    let _ = up.join();
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}
