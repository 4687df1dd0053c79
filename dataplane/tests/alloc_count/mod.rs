//! Counts calls into the C allocator by interposing `malloc` and friends,
//! which Rust's system allocator and aws-lc's `OPENSSL_malloc` both end in.
//! Included with `mod alloc_count;` by each test binary that proves a path
//! allocates nothing; the interposition applies to that whole process.

use std::cell::Cell;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering};

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}
static TOTAL: AtomicU64 = AtomicU64::new(0);

const ENOMEM: i32 = 12;

fn count() {
    TOTAL.fetch_add(1, Ordering::Relaxed);
    // try_with: the allocator also runs while thread-locals are torn down.
    let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
}

/// Allocations made so far by the calling thread.
pub fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

/// Allocations made so far by every thread of the process.
#[allow(dead_code)]
pub fn total_allocations() -> u64 {
    TOTAL.load(Ordering::Relaxed)
}

extern "C" {
    fn __libc_malloc(size: usize) -> *mut c_void;
    fn __libc_calloc(n: usize, size: usize) -> *mut c_void;
    fn __libc_realloc(ptr: *mut c_void, size: usize) -> *mut c_void;
    fn __libc_memalign(align: usize, size: usize) -> *mut c_void;
}

#[no_mangle]
unsafe extern "C" fn malloc(size: usize) -> *mut c_void {
    count();
    __libc_malloc(size)
}

#[no_mangle]
unsafe extern "C" fn calloc(n: usize, size: usize) -> *mut c_void {
    count();
    __libc_calloc(n, size)
}

#[no_mangle]
unsafe extern "C" fn realloc(ptr: *mut c_void, size: usize) -> *mut c_void {
    count();
    __libc_realloc(ptr, size)
}

#[no_mangle]
unsafe extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    count();
    __libc_memalign(align, size)
}

#[no_mangle]
unsafe extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    count();
    __libc_memalign(align, size)
}

#[no_mangle]
unsafe extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> i32 {
    count();
    let p = __libc_memalign(align, size);
    if p.is_null() {
        return ENOMEM;
    }
    *out = p;
    0
}
