//! One allocation per stored value: a key, a value, the version and a cache
//! of the decoded value, behind a one-pointer, reference-counted handle.
//!
//! Written by hand because no crate offers this layout: a thin `Arc` whose
//! header holds a 32-bit count and key length beside the version, the value's
//! length and the decode cache, in 32 bytes. `triomphe::ThinArc` keeps a
//! word-sized count and length apart from the header (40 bytes here), and
//! `arcstr::ArcStr` holds a string alone. At 100,000 keys the 8 bytes a key
//! are a quarter of the payload (`BENCHMARKS.md`, B9).
//!
//! The count is 32 bits: a handle more than `u32::MAX / 2` clones deep
//! aborts the process, as `std::sync::Arc` does past `isize::MAX`.
//!
//! The only `unsafe` code of the workspace: every block says what it relies
//! on, and the tests below exercise clones, drops and reads across threads.
#![allow(
    unsafe_code,
    reason = "a thin shared allocation with a custom header; see the module docs"
)]

use std::alloc::{Layout, alloc, dealloc, handle_alloc_error};
use std::any::Any;
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering, fence};

use once_cell::race::OnceBox;

/// A value decoded once, for the first type asked for, with the validation
/// it passed (`None`: none).
pub(crate) struct Decoded {
    pub(crate) value: Arc<dyn Any + Send + Sync>,
    pub(crate) validator: Option<crate::key::Validator>,
}

/// Where the decoded value goes, once.
pub(crate) type DecodeCache = OnceBox<Decoded>;

const MAX_COUNT: u32 = u32::MAX / 2;

#[repr(C)]
struct Header {
    count: AtomicU32,
    key_len: u32,
    version: u64,
    value_len: usize,
    decoded: DecodeCache,
}

/// The shared allocation: a [`Header`] followed by the key's bytes and then
/// the value's, both UTF-8.
pub(crate) struct Thin {
    ptr: NonNull<Header>,
    _owns: PhantomData<Header>,
}

// SAFETY: the header is `Send + Sync` (an atomic count, plain integers, and a
// `OnceBox` of a `Send + Sync` value) and the text is immutable once written.
unsafe impl Send for Thin {}
// SAFETY: as above; shared access only reads, or goes through atomics.
unsafe impl Sync for Thin {}

/// The header, then the text, with no padding after it: nothing is laid out
/// after an allocation, so its size need not be a multiple of its alignment.
fn layout(text_len: usize) -> Layout {
    let text = Layout::array::<u8>(text_len).expect("a value fits in memory");
    let (layout, offset) = Layout::new::<Header>()
        .extend(text)
        .expect("a value fits in memory");
    debug_assert_eq!(offset, size_of::<Header>());
    layout
}

impl Thin {
    /// Copies `key` and `value` into one new allocation.
    ///
    /// # Panics
    ///
    /// If the key is 4 GiB or longer (keys are at most 1,024 bytes at the
    /// front-end, and far less on every backend's wire), or the two do not fit
    /// in memory.
    pub(crate) fn new(key: &str, value: &str, version: u64) -> Self {
        let key_len = u32::try_from(key.len()).expect("a key is under 4 GiB");
        let text_len = key
            .len()
            .checked_add(value.len())
            .expect("a value fits in memory");
        let layout = layout(text_len);
        // SAFETY: the layout is never zero-sized (the header is 32 bytes).
        let raw = unsafe { alloc(layout) }.cast::<Header>();
        let Some(ptr) = NonNull::new(raw) else {
            handle_alloc_error(layout)
        };
        // SAFETY: `raw` is a fresh allocation of `layout`: a header, then
        // `text_len` bytes starting right after it (see `layout`).
        unsafe {
            raw.write(Header {
                count: AtomicU32::new(1),
                key_len,
                version,
                value_len: value.len(),
                decoded: OnceBox::new(),
            });
            let text = raw.add(1).cast::<u8>();
            std::ptr::copy_nonoverlapping(key.as_ptr(), text, key.len());
            std::ptr::copy_nonoverlapping(value.as_ptr(), text.add(key.len()), value.len());
        }
        Thin {
            ptr,
            _owns: PhantomData,
        }
    }

    fn header(&self) -> &Header {
        // SAFETY: the allocation lives while any handle does.
        unsafe { self.ptr.as_ref() }
    }

    fn text(&self) -> &[u8] {
        let header = self.header();
        let len = header.key_len as usize + header.value_len;
        // SAFETY: `new` wrote `len` bytes right after the header; they never change.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(1).cast::<u8>(), len) }
    }

    pub(crate) fn key(&self) -> &str {
        let (key, _) = self.text().split_at(self.header().key_len as usize);
        // SAFETY: copied from a `&str`.
        unsafe { std::str::from_utf8_unchecked(key) }
    }

    pub(crate) fn value(&self) -> &str {
        let (_, value) = self.text().split_at(self.header().key_len as usize);
        // SAFETY: copied from a `&str`.
        unsafe { std::str::from_utf8_unchecked(value) }
    }

    pub(crate) fn version(&self) -> u64 {
        self.header().version
    }

    pub(crate) fn decoded(&self) -> &DecodeCache {
        &self.header().decoded
    }

    pub(crate) fn ptr_eq(&self, other: &Thin) -> bool {
        self.ptr == other.ptr
    }
}

impl Clone for Thin {
    fn clone(&self) -> Self {
        // Relaxed, as in `std::sync::Arc`: a new handle is made from an
        // existing one, which keeps the allocation alive meanwhile.
        if self.header().count.fetch_add(1, Ordering::Relaxed) > MAX_COUNT {
            std::process::abort();
        }
        Thin {
            ptr: self.ptr,
            _owns: PhantomData,
        }
    }
}

impl Drop for Thin {
    fn drop(&mut self) {
        if self.header().count.fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        // Every other handle's uses happen before the free, as in `std::sync::Arc`.
        fence(Ordering::Acquire);
        let header = self.header();
        let layout = layout(header.key_len as usize + header.value_len);
        // SAFETY: this was the last handle: nothing else reads the allocation.
        unsafe {
            std::ptr::drop_in_place(self.ptr.as_ptr());
            dealloc(self.ptr.as_ptr().cast::<u8>(), layout);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_is_32_bytes() {
        assert_eq!(size_of::<Header>(), 32);
        assert_eq!(size_of::<Thin>(), 8);
        assert_eq!(size_of::<Option<Thin>>(), 8);
    }

    #[test]
    fn a_handle_reads_back_what_it_was_made_of() {
        let thin = Thin::new("kéy", "{\"a\":\"ü\"}", 7);
        assert_eq!(thin.key(), "kéy");
        assert_eq!(thin.value(), "{\"a\":\"ü\"}");
        assert_eq!(thin.version(), 7);
        let empty = Thin::new("", "", 0);
        assert_eq!((empty.key(), empty.value()), ("", ""));
    }

    #[test]
    fn clones_share_one_allocation_and_the_last_frees_it_and_its_cache() {
        let thin = Thin::new("k", "1", 1);
        let value: Arc<dyn Any + Send + Sync> = Arc::new(String::from("decoded"));
        let weak = Arc::downgrade(&value);
        let decoded = Decoded {
            value,
            validator: None,
        };
        assert!(thin.decoded().set(Box::new(decoded)).is_ok());
        let clones: Vec<Thin> = (0..8).map(|_| thin.clone()).collect();
        assert!(clones.iter().all(|c| c.ptr_eq(&thin)));
        let threads: Vec<_> = clones
            .into_iter()
            .map(|c| std::thread::spawn(move || c.value().len()))
            .collect();
        for thread in threads {
            assert_eq!(thread.join().expect("joins"), 1);
        }
        assert!(weak.upgrade().is_some(), "one handle is left");
        drop(thin);
        assert!(
            weak.upgrade().is_none(),
            "the cache went with the allocation"
        );
    }
}
