//! A stop request from SIGINT or SIGTERM: every measurement loop checks it,
//! so an interrupted benchmark unwinds through its drops (namespaces,
//! attachments and rtpengine are removed) instead of dying in place.

use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    REQUESTED.store(true, Ordering::SeqCst);
}

/// Makes SIGINT and SIGTERM set the stop request instead of killing the process.
pub fn install_handler() -> std::io::Result<()> {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        let previous =
            unsafe { libc::signal(signal, on_signal as *const () as libc::sighandler_t) };
        if previous == libc::SIG_ERR {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// True once SIGINT or SIGTERM has arrived (after [`install_handler`]).
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}
