//! A counting allocator for the unit tests: counts the allocations made on one thread (the
//! one whose id is in [`WATCHED`]), so a test can check that a hot path allocates nothing.
//! Every other thread pays one relaxed load per allocation.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

/// The kernel thread id whose allocations are counted; 0 counts none.
pub static WATCHED: AtomicI32 = AtomicI32::new(0);
/// Allocations (and reallocations) made on the watched thread.
pub static COUNT: AtomicU64 = AtomicU64::new(0);
/// Bytes asked for by those allocations.
pub static BYTES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    // No destructor, so it can be read while a thread is being torn down.
    static TID: Cell<i32> = const { Cell::new(0) };
}

fn this_thread() -> i32 {
    TID.try_with(|t| {
        if t.get() == 0 {
            // SAFETY: gettid has no preconditions.
            t.set(unsafe { libc::gettid() });
        }
        t.get()
    })
    .unwrap_or(0)
}

fn count(size: usize) {
    let watched = WATCHED.load(Ordering::Relaxed);
    if watched != 0 && this_thread() == watched {
        COUNT.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(size as u64, Ordering::Relaxed);
    }
}

pub struct Counting;

// SAFETY: every call is passed to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The kernel thread id of this process's thread named `name` (as `/proc` shows it: at most
/// 15 bytes).
pub fn thread_named(name: &str) -> Option<i32> {
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim_end() == name {
            return task.file_name().to_str()?.parse().ok();
        }
    }
    None
}
