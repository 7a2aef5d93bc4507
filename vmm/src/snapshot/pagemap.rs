//! `/proc/self/pagemap`: which pages of this process's memory are mapped (present or swapped).

use std::fs::File;
use std::os::unix::fs::FileExt;

use super::format::PAGE_SIZE;

const PAGE: usize = PAGE_SIZE as usize;

/// `/proc/self/pagemap` of this process.
pub(super) struct PageMap(File);

/// pagemap entry bits: the page is in RAM / in swap.
const PAGEMAP_PRESENT: u64 = 1 << 63;
const PAGEMAP_SWAPPED: u64 = 1 << 62;

impl PageMap {
    pub(super) fn open() -> Option<Self> {
        File::open("/proc/self/pagemap").ok().map(Self)
    }

    /// For the `pages` pages from host address `addr` (page aligned), pushes to `out` whether
    /// each is mapped (present or swapped). A page of anonymous private memory that is not was
    /// never touched and reads as zeros; a page of a private file mapping that is not was never
    /// touched since the mapping was made.
    pub(super) fn touched(
        &self,
        addr: usize,
        pages: usize,
        out: &mut Vec<bool>,
    ) -> std::io::Result<()> {
        let mut entries = vec![0u8; pages * 8];
        self.0
            .read_exact_at(&mut entries, (addr / PAGE) as u64 * 8)?;
        out.extend(entries.chunks_exact(8).map(|e| {
            let entry = u64::from_le_bytes(e.try_into().unwrap_or([0xff; 8]));
            entry & (PAGEMAP_PRESENT | PAGEMAP_SWAPPED) != 0
        }));
        Ok(())
    }
}
