//! The flash image on the chip: the `storage` data partition, found in the partition
//! table (`partitions.csv`), as the core's [`image::Flash`] over esp-storage.

use esp_bootloader_esp_idf::partitions::{self, PARTITION_TABLE_MAX_LEN, RawPartitionType};
use esp_storage::FlashStorage;
use firmware_core::image::{self, BLOCK_SIZE, FlashError};

/// The partition's name in `partitions.csv`.
pub const PARTITION_LABEL: &str = "storage";

/// The `storage` partition.
pub struct Partition<'f> {
    flash: &'f mut FlashStorage<'static>,
    offset: u32,
    capacity: usize,
}

/// Why the partition could not be found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionError {
    /// No valid partition table at 0x8000.
    Table,
    /// The table has no data partition named [`PARTITION_LABEL`].
    Missing,
}

impl<'f> Partition<'f> {
    /// Look the partition up in the partition table.
    pub fn find(flash: &'f mut FlashStorage<'static>) -> Result<Self, PartitionError> {
        let mut table = [0u8; PARTITION_TABLE_MAX_LEN];
        let entry = partitions::read_partition_table(flash, &mut table)
            .map_err(|_| PartitionError::Table)?
            .iter()
            .find(|p| {
                p.raw_type() == RawPartitionType::Data as u8 && p.label_as_str() == PARTITION_LABEL
            })
            .ok_or(PartitionError::Missing)?;
        let len = entry.len() as usize;
        Ok(Self {
            flash,
            offset: entry.offset(),
            // littlefs works in whole blocks; a partition tail smaller than one is unused.
            capacity: len - len % BLOCK_SIZE,
        })
    }

    /// Flash address of the partition.
    pub fn offset(&self) -> u32 {
        self.offset
    }

    fn address(&self, offset: usize) -> Result<u32, FlashError> {
        u32::try_from(offset)
            .ok()
            .and_then(|o| self.offset.checked_add(o))
            .ok_or(FlashError { offset })
    }
}

impl image::Flash for Partition<'_> {
    fn capacity(&self) -> usize {
        self.capacity
    }

    fn read(&mut self, offset: usize, buf: &mut [u8]) -> Result<(), FlashError> {
        let at = self.address(offset)?;
        self.flash.read(at, buf).map_err(|_| FlashError { offset })
    }

    fn write(&mut self, offset: usize, data: &[u8]) -> Result<(), FlashError> {
        let at = self.address(offset)?;
        // NOR semantics (no read-modify-write erase): littlefs erased the block first.
        self.flash
            .write_nor(at, data)
            .map_err(|_| FlashError { offset })
    }

    fn erase(&mut self, offset: usize, len: usize) -> Result<(), FlashError> {
        let from = self.address(offset)?;
        let to = self.address(offset.saturating_add(len))?;
        self.flash
            .erase(from, to)
            .map_err(|_| FlashError { offset })
    }
}
