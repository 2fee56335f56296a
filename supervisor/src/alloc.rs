//! The binary's global allocator: the system's, keeping a few freed blocks
//! of 128 to 256 KiB for reuse.
//!
//! musl's `malloc` (the binary is static, on musl) maps every block above
//! 128 KiB afresh with `mmap` and unmaps it on `free`, so each one costs
//! two system calls and a page fault per 4 KiB touched. The SFTP mode
//! allocates such blocks several times per request (a write request's
//! body, a read's data, the packet around it); reusing them halves the
//! server's CPU time. At most [`SLOTS`] blocks (1 MiB) are kept.

use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

/// Blocks larger than this (musl's threshold for `mmap`) are kept...
const MIN_SIZE: usize = 128 * 1024;
/// ... up to this size, which is the size they are all allocated with.
const BLOCK_SIZE: usize = 256 * 1024;
/// The most alignment a kept block offers (what `malloc` gives).
const ALIGN: usize = 16;
/// How many freed blocks are kept.
pub const SLOTS: usize = 4;

/// What a kept block is.
#[repr(C, align(16))]
struct Block([u8; BLOCK_SIZE]);
const BLOCK: Layout = Layout::new::<Block>();

/// [`System`], with a small cache of freed blocks of 128–256 KiB (see the
/// module's docs).
pub struct BlockCache {
    slots: [AtomicPtr<u8>; SLOTS],
}

impl Default for BlockCache {
    fn default() -> Self {
        Self::new()
    }
}

impl BlockCache {
    /// An empty cache.
    pub const fn new() -> Self {
        Self { slots: [const { AtomicPtr::new(ptr::null_mut()) }; SLOTS] }
    }

    /// Whether blocks for `layout` come from the cache (and are
    /// [`BLOCK_SIZE`] bytes long whatever `layout` says).
    fn cached(layout: &Layout) -> bool {
        layout.size() > MIN_SIZE && layout.size() <= BLOCK_SIZE && layout.align() <= ALIGN
    }

    /// A kept block, or null.
    fn take(&self) -> *mut u8 {
        for slot in &self.slots {
            let p = slot.swap(ptr::null_mut(), Ordering::AcqRel);
            if !p.is_null() {
                return p;
            }
        }
        ptr::null_mut()
    }

    /// Keeps `p` if a slot is free; false if not.
    fn keep(&self, p: *mut u8) -> bool {
        self.slots.iter().any(|slot| slot.compare_exchange(ptr::null_mut(), p, Ordering::AcqRel, Ordering::Relaxed).is_ok())
    }
}

// SAFETY: every block handed out for a cached layout is BLOCK_SIZE bytes
// from System with ALIGN alignment, so it serves any cached layout; a kept
// block is owned by its slot alone (taken with an atomic swap), and goes
// back to System with the layout it was allocated with. Other layouts go
// to System unchanged.
unsafe impl GlobalAlloc for BlockCache {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !Self::cached(&layout) {
            // SAFETY: the caller's contract, passed on
            return unsafe { System.alloc(layout) };
        }
        let p = self.take();
        if !p.is_null() {
            return p;
        }
        // SAFETY: BLOCK has a non-zero size
        unsafe { System.alloc(BLOCK) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !Self::cached(&layout) {
            // SAFETY: the caller's contract, passed on
            return unsafe { System.alloc_zeroed(layout) };
        }
        let p = self.take();
        if !p.is_null() {
            // SAFETY: p is a kept block of BLOCK_SIZE >= layout.size() bytes
            unsafe { ptr::write_bytes(p, 0, layout.size()) };
            return p;
        }
        // SAFETY: BLOCK has a non-zero size
        unsafe { System.alloc_zeroed(BLOCK) }
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        if !Self::cached(&layout) {
            // SAFETY: p came from System with this layout
            unsafe { System.dealloc(p, layout) };
        } else if !self.keep(p) {
            // SAFETY: cached blocks are allocated as BLOCK
            unsafe { System.dealloc(p, BLOCK) };
        }
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees that new_size, rounded up to the
        // alignment, does not overflow isize
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (Self::cached(&layout), Self::cached(&new_layout)) {
            // SAFETY: the caller's contract, passed on
            (false, false) => unsafe { System.realloc(p, layout, new_size) },
            // the block is BLOCK_SIZE long and stays in the cached class
            (true, true) => p,
            _ => {
                // SAFETY: new_layout is valid (above) and non-zero in size
                // or not cached (and then System's contract applies)
                let q = unsafe { self.alloc(new_layout) };
                if !q.is_null() {
                    // SAFETY: both blocks hold at least the smaller size,
                    // and they are distinct allocations
                    unsafe {
                        ptr::copy_nonoverlapping(p, q, layout.size().min(new_size));
                        self.dealloc(p, layout);
                    }
                }
                q
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn layout(size: usize) -> Layout {
        Layout::from_size_align(size, 8).unwrap()
    }

    #[test]
    fn the_block_layout_is_as_documented() {
        assert_eq!((BLOCK.size(), BLOCK.align()), (BLOCK_SIZE, ALIGN));
    }

    #[test]
    fn blocks_are_reused_and_the_cache_is_bounded() {
        let cache = BlockCache::new();
        let big = layout(200 * 1024);
        // SAFETY: a valid, non-zero layout
        let blocks: Vec<*mut u8> = (0..SLOTS + 2).map(|_| unsafe { cache.alloc(big) }).collect();
        assert!(blocks.iter().all(|p| !p.is_null()));
        for &p in &blocks {
            // SAFETY: allocated above with this layout, freed once
            unsafe {
                p.write_bytes(0xab, big.size());
                cache.dealloc(p, big);
            }
        }
        // SLOTS of them are kept, and come back
        let kept: Vec<*mut u8> = (0..SLOTS).map(|_| cache.take()).collect();
        assert!(kept.iter().all(|p| !p.is_null() && blocks.contains(p)));
        assert!(cache.take().is_null());
        for p in kept {
            assert!(cache.keep(p));
        }

        // SAFETY: valid layouts; each block is used within its size and
        // freed with the layout it has at the time
        unsafe {
            let z = cache.alloc_zeroed(big);
            assert!(std::slice::from_raw_parts(z, big.size()).iter().all(|&b| b == 0));
            let s = cache.alloc(layout(1000));
            s.write_bytes(7, 1000);
            let grown = cache.realloc(s, layout(1000), 150 * 1024);
            assert_eq!(*grown.add(999), 7);
            let same = cache.realloc(grown, layout(150 * 1024), 250 * 1024);
            assert_eq!(same, grown);
            let huge = cache.realloc(same, layout(250 * 1024), 1024 * 1024);
            assert_eq!(*huge.add(999), 7);
            cache.dealloc(huge, layout(1024 * 1024));
            cache.dealloc(z, big);
            loop {
                let p = cache.take();
                if p.is_null() {
                    break;
                }
                System.dealloc(p, BLOCK);
            }
        }
    }
}
