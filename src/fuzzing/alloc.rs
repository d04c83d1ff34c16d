//! A counting global allocator: the fuzz targets and the corpus replay install it so that an
//! entry point can assert the largest single allocation a parser made (no input may make the
//! station allocate more than the largest frame it accepts).
//!
//! It counts only on the thread that asked, only while asked, and otherwise is the system
//! allocator. Where it is not installed, [`largest_allocation`] says so (`None`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

/// The system allocator, noting the largest allocation made while [`largest_allocation`] runs.
/// Install it with `#[global_allocator] static A: Counting = Counting;`.
pub struct Counting;

static INSTALLED: AtomicBool = AtomicBool::new(false);

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = ARMED.try_with(|armed| {
        if armed.get() {
            INSTALLED.store(true, Ordering::Relaxed);
            let _ = LARGEST.try_with(|m| m.set(m.get().max(size)));
        }
    });
}

// SAFETY: every call is passed unchanged to the system allocator; the bookkeeping touches only
// const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Run `f` and return its result with the largest single allocation it made on this thread, or
/// `None` when [`Counting`] is not the global allocator (or `f` allocated nothing).
pub fn largest_allocation<R>(f: impl FnOnce() -> R) -> (R, Option<usize>) {
    LARGEST.with(|m| m.set(0));
    ARMED.with(|a| a.set(true));
    let r = f();
    ARMED.with(|a| a.set(false));
    let largest = LARGEST.with(Cell::get);
    let counted = INSTALLED.load(Ordering::Relaxed) && largest > 0;
    (r, counted.then_some(largest))
}
