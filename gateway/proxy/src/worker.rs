//! Thread-per-core workers: each an OS thread with a current-thread tokio runtime, its own
//! SO_REUSEPORT listener sockets, upstream pools and metric handles. A connection lives and
//! dies on the worker that accepted it; nothing on the request path crosses threads.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::LocalSet;

use crate::http::{self, ConnInfo};
use crate::live::Shared;
use crate::telemetry::LocalMetrics;
use crate::upstream::pool::Pools;

/// Everything one worker owns, shared by its connections.
pub struct WorkerCtx {
    /// Process-wide state.
    pub shared: Arc<Shared>,
    /// This worker's upstream connections.
    pub pools: Pools,
    /// This worker's metric handles.
    pub metrics: LocalMetrics,
    /// Worker index.
    pub id: usize,
    /// Downstream connections open on this worker.
    pub open_conns: std::cell::Cell<usize>,
    /// This worker's wasm VMs.
    pub vms: crate::wasm::vms::WorkerVms,
}

/// An address to listen on, as a listener of the snapshot asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenAddr {
    /// Socket address to bind.
    pub addr: SocketAddr,
}

/// Binds a listening socket with SO_REUSEPORT, so every worker can bind the same port and the
/// kernel spreads connections across them.
pub fn bind_reuseport(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// The addresses the current snapshot listens on (`bind_override` replaces `0.0.0.0`).
/// Only plain-HTTP listeners are served so far; HTTPS, TLS and TCP listeners are skipped with
/// a warning rather than served as plain text.
pub fn listen_addrs(shared: &Shared, bind_override: Option<IpAddr>) -> Vec<ListenAddr> {
    let live = shared.live.load();
    live.snapshot
        .listeners
        .iter()
        .filter(|l| {
            let http = l.protocol == meshgate_config::snapshot::ListenerProtocol::Http;
            if !http {
                tracing::warn!(listener = %l.name, protocol = ?l.protocol, "listener not served: only plain HTTP listeners are served so far");
            }
            http
        })
        .filter_map(|l| {
            let ip: IpAddr = match bind_override {
                Some(ip) => ip,
                None => l.address.parse().ok()?,
            };
            Some(ListenAddr {
                addr: SocketAddr::new(ip, l.port),
            })
        })
        .collect()
}

/// Handle to the running workers.
pub struct Workers {
    threads: Vec<std::thread::JoinHandle<()>>,
    shutdown: watch::Sender<bool>,
}

impl Workers {
    /// Starts `n` workers serving `addrs`. Every worker binds its own socket per address; the
    /// first bind error is returned before any worker starts accepting.
    pub fn start(n: usize, addrs: &[ListenAddr], shared: Arc<Shared>) -> io::Result<Workers> {
        let mut sockets = Vec::new();
        for _ in 0..n {
            let mut mine = Vec::new();
            for a in addrs {
                let l = bind_reuseport(a.addr).map_err(|e| {
                    io::Error::new(e.kind(), format!("cannot listen on {}: {e}", a.addr))
                })?;
                mine.push(l);
            }
            sockets.push(mine);
        }
        let (shutdown, rx) = watch::channel(false);
        let mut threads = Vec::new();
        for (id, mine) in sockets.into_iter().enumerate() {
            let shared = shared.clone();
            let rx = rx.clone();
            let t = std::thread::Builder::new()
                .name(format!("meshgate-worker-{id}"))
                .spawn(move || run_worker(id, mine, shared, rx))?;
            threads.push(t);
        }
        Ok(Workers { threads, shutdown })
    }

    /// Stops accepting, lets connections finish their requests up to `deadline`, then
    /// returns when every worker has stopped.
    pub fn shutdown(self, deadline: Duration) {
        let _ = self.shutdown.send(true);
        let until = std::time::Instant::now() + deadline;
        for t in self.threads {
            while !t.is_finished() && std::time::Instant::now() < until {
                std::thread::sleep(Duration::from_millis(20));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

fn run_worker(
    id: usize,
    sockets: Vec<std::net::TcpListener>,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(worker = id, error = %e, "cannot start worker runtime");
            return;
        }
    };
    let local = LocalSet::new();
    let ctx = Rc::new(WorkerCtx {
        shared,
        pools: Pools::default(),
        metrics: LocalMetrics::default(),
        id,
        open_conns: std::cell::Cell::new(0),
        vms: Default::default(),
    });
    local.block_on(&rt, async move {
        let mut accepts = Vec::new();
        for s in sockets {
            match TcpListener::from_std(s) {
                Ok(l) => accepts.push(tokio::task::spawn_local(accept_loop(
                    l,
                    ctx.clone(),
                    shutdown.clone(),
                ))),
                Err(e) => tracing::error!(worker = id, error = %e, "cannot register listener"),
            }
        }
        for a in accepts {
            let _ = a.await;
        }
        // Accepting has stopped; connections finish their requests and close (the caller
        // bounds how long this may take).
        while ctx.open_conns.get() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        crate::wasm::filter::Chain::drop_spares();
    });
}

async fn accept_loop(l: TcpListener, ctx: Rc<WorkerCtx>, mut shutdown: watch::Receiver<bool>) {
    let local_port = l.local_addr().map(|a| a.port()).unwrap_or(0);
    loop {
        tokio::select! {
            r = l.accept() => match r {
                Ok((stream, peer)) => {
                    let local = stream
                        .local_addr()
                        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], local_port)));
                    let info = ConnInfo { peer, local_port, local };
                    let ctx = ctx.clone();
                    let stop = shutdown.clone();
                    ctx.open_conns.set(ctx.open_conns.get() + 1);
                    tokio::task::spawn_local(async move {
                        http::serve(stream, info, ctx.clone(), stop).await;
                        ctx.open_conns.set(ctx.open_conns.get() - 1);
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            },
            _ = wait_true(&mut shutdown) => return,
        }
    }
}

/// Resolves once the watched flag is true (or its sender is gone).
pub async fn wait_true(rx: &mut watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}
