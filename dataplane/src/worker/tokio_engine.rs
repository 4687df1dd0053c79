//! The baseline engine: the same core behind a tokio `UdpSocket`.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{io_err, Shared, WorkerConfig, WorkerError};
use crate::sfu::{Sfu, TransmitQueue, TRANSMIT_BUF_LEN};

/// Most datagrams read without waiting before the queue is sent.
const BATCH: usize = 64;
/// Longest sleep, so commands and stop are seen promptly.
const MAX_WAIT: Duration = Duration::from_millis(10);

pub(crate) fn run(
    socket: std::net::UdpSocket,
    local: SocketAddr,
    _config: &WorkerConfig,
    mut sfu: Sfu,
    shared: Shared,
    ready: mpsc::SyncSender<Result<(), WorkerError>>,
) -> Result<(), WorkerError> {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(WorkerError::Io {
                what: "building the tokio runtime",
                source: e,
            }));
            return Ok(());
        }
    };
    runtime.block_on(async move {
        let setup = socket
            .set_nonblocking(true)
            .map_err(io_err("set_nonblocking"))
            .and_then(|()| {
                tokio::net::UdpSocket::from_std(socket).map_err(io_err("tokio UdpSocket"))
            });
        let socket = match setup {
            Ok(s) => s,
            Err(e) => {
                let _ = ready.send(Err(e));
                return Ok(());
            }
        };
        let _ = ready.send(Ok(()));
        let mut buf = vec![0u8; TRANSMIT_BUF_LEN];
        let mut sending = TransmitQueue::new(sfu.config().queue_capacity);
        let counters = &shared.counters;
        let mut drops_read = Instant::now();
        while !shared.stop.load(Ordering::Relaxed) {
            shared.drain_commands(&mut sfu);
            let deadline = sfu.poll_timeout().min(Instant::now() + MAX_WAIT);
            let first = tokio::select! {
                r = socket.recv_from(&mut buf) => Some(r),
                () = tokio::time::sleep_until(deadline.into()) => None,
                // A command or stop: handled at the top of the loop.
                () = shared.wake.notify.notified() => None,
            };
            let mut received = 0u64;
            let mut rx_bytes = 0u64;
            if let Some(result) = first {
                let now = Instant::now();
                if let Ok((n, from)) = result {
                    handle(&shared, &mut sfu, now, local, from, &mut buf[..n]);
                    received += 1;
                    rx_bytes += n as u64;
                }
                while received < BATCH as u64 {
                    match socket.try_recv_from(&mut buf) {
                        Ok((n, from)) => {
                            handle(&shared, &mut sfu, now, local, from, &mut buf[..n]);
                            received += 1;
                            rx_bytes += n as u64;
                        }
                        Err(_) => break,
                    }
                }
            }
            let now = Instant::now();
            if now >= sfu.poll_timeout() {
                sfu.handle_timeout(now);
            }
            sfu.swap_transmits(&mut sending);
            let mut sent = 0u64;
            let mut tx_bytes = 0u64;
            let mut errors = 0u64;
            for t in sending.as_slice() {
                match socket.send_to(t.data(), t.remote).await {
                    Ok(n) => {
                        sent += 1;
                        tx_bytes += n as u64;
                    }
                    Err(_) => errors += 1,
                }
            }
            sending.clear();
            counters.rx_datagrams.fetch_add(received, Ordering::Relaxed);
            counters.rx_bytes.fetch_add(rx_bytes, Ordering::Relaxed);
            counters.tx_bytes.fetch_add(tx_bytes, Ordering::Relaxed);
            counters.tx_datagrams.fetch_add(sent, Ordering::Relaxed);
            counters.tx_messages.fetch_add(sent, Ordering::Relaxed);
            counters.tx_errors.fetch_add(errors, Ordering::Relaxed);
            counters
                .tx_failed_datagrams
                .fetch_add(errors, Ordering::Relaxed);
            counters.batches.fetch_add(1, Ordering::Relaxed);
            super::poll_socket_drops(&socket, counters, &mut drops_read, now);
        }
        Ok(())
    })
}

/// Punts STUN/DTLS to the control plane, gives everything else to the core.
fn handle(
    shared: &Shared,
    sfu: &mut Sfu,
    now: Instant,
    local: SocketAddr,
    remote: SocketAddr,
    datagram: &mut [u8],
) {
    if super::is_punted(datagram) {
        shared.punt(local, remote, datagram, now);
    } else {
        sfu.handle_datagram(now, local, remote, datagram);
    }
}
