//! The outgoing datagram queue: a fixed set of reusable buffers the core
//! writes protected packets into and the I/O engine sends from.
//!
//! The core fills one queue while the engine may still have another in
//! flight; [`super::Sfu::swap_transmits`] exchanges them without copying, so
//! no buffer is written before the send that reads it has completed.

use std::net::SocketAddr;

/// Size of every queue buffer: an Ethernet MTU's worth of UDP payload plus
/// room for the RTX header growth and the largest SRTP/SRTCP trailer.
pub const TRANSMIT_BUF_LEN: usize = 2048;

/// One datagram to send.
#[derive(Debug)]
pub struct Transmit {
    /// Local address to send from (the worker socket the leg uses).
    pub local: SocketAddr,
    /// Destination.
    pub remote: SocketAddr,
    len: usize,
    buf: Box<[u8]>,
}

impl Transmit {
    /// The datagram's bytes.
    pub fn data(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Its length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it is empty (never for a queued datagram).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A bounded queue of reusable datagram buffers, all allocated up front.
#[derive(Debug)]
pub struct TransmitQueue {
    slots: Vec<Transmit>,
    len: usize,
}

impl TransmitQueue {
    /// A queue of `capacity` buffers of [`TRANSMIT_BUF_LEN`] bytes.
    pub fn new(capacity: usize) -> Self {
        let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
        let slots = (0..capacity)
            .map(|_| Transmit {
                local: unspecified,
                remote: unspecified,
                len: 0,
                buf: vec![0u8; TRANSMIT_BUF_LEN].into_boxed_slice(),
            })
            .collect();
        Self { slots, len: 0 }
    }

    /// How many datagrams it holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many datagrams it can hold.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// The queued datagrams, in the order they were produced.
    pub fn as_slice(&self) -> &[Transmit] {
        &self.slots[..self.len]
    }

    /// Forgets every queued datagram; the buffers stay for reuse.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Lets `fill` write a datagram into the next free buffer; `fill` returns
    /// the length written, or `None` to give the buffer back. Returns false
    /// without calling `fill` when the queue is full.
    pub(crate) fn push_with<E>(
        &mut self,
        local: SocketAddr,
        remote: SocketAddr,
        fill: impl FnOnce(&mut [u8]) -> Result<usize, E>,
    ) -> Result<bool, E> {
        let Some(slot) = self.slots.get_mut(self.len) else {
            return Ok(false);
        };
        let len = fill(&mut slot.buf)?;
        slot.local = local;
        slot.remote = remote;
        slot.len = len;
        self.len += 1;
        Ok(true)
    }
}
