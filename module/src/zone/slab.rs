//! The zone's slab pool as an allocator for its data.

use std::ptr::NonNull;

use ngx::allocator::{AllocError, Allocator};
use ngx::collections::RbTreeMap;
use ngx::core::NgxString;
use ngx::ffi::{ngx_slab_alloc_locked, ngx_slab_free_locked, ngx_slab_pool_t};

/// The slab pool as an allocator for the zone's data: it allocates without taking the pool's
/// mutex, because every use of the data already holds it (see `data::Zone::lock`).
#[derive(Clone)]
pub struct HeldSlab(pub NonNull<ngx_slab_pool_t>);

// SAFETY: allocate and deallocate are nginx's slab functions on a valid pool, called only with
// its mutex held (the zone's data is reachable only through a `Locked` guard, or in the master
// while the zone is being made, before any worker exists); blocks stay valid until freed, and a
// block is aligned to its size rounded up to a power of two (below a page) or to a page, which
// the alignment check below relies on, as ngx's own LockedSlabPool does.
unsafe impl Allocator for HeldSlab {
    fn allocate(&self, layout: std::alloc::Layout) -> Result<NonNull<[u8]>, AllocError> {
        let size = layout.size().max(layout.align()).max(1);
        // SAFETY: as above.
        let block =
            NonNull::new(unsafe { ngx_slab_alloc_locked(self.0.as_ptr(), size) }.cast::<u8>()).ok_or(AllocError)?;
        if block.align_offset(layout.align()) != 0 {
            // SAFETY: the block was just allocated from this pool.
            unsafe { ngx_slab_free_locked(self.0.as_ptr(), block.as_ptr().cast()) };
            return Err(AllocError);
        }
        Ok(NonNull::slice_from_raw_parts(block, layout.size()))
    }

    unsafe fn deallocate(&self, block: NonNull<u8>, _layout: std::alloc::Layout) {
        // SAFETY: the caller gives back a block this allocator gave out, with the mutex held.
        unsafe { ngx_slab_free_locked(self.0.as_ptr(), block.as_ptr().cast()) };
    }
}

pub type Key = NgxString<HeldSlab>;
pub type Map<V> = RbTreeMap<Key, V, HeldSlab>;
