//! cowpack savefiles (docs/cow.md, "Tools"): a cowfile without its holes.
//!
//! Plain savefile: the header (`sizeof(struct cowhead)` bytes, PACKED set)
//! at 0, the bitmap at 1024, then only the blocks whose bit is set,
//! contiguous, in bitmap order, from `doffset`. The gaps are holes.
//! Gzip savefile: the same pieces in the same order as one gzip stream, with
//! no gaps (cowpack's seeks were no-ops on gzip files), compressed like
//! zlib's `gzdopen(fd, "wb9")`: level 9, mtime 0, OS byte 3 (Unix).
//!
//! Both directions go through [`SaveSink`] / [`SaveSource`], which take a
//! plain-file offset and ignore it for gzip streams, so the layout is written
//! once. Unpacking rebuilds the sparse cowfile byte for byte.

use super::bitmap::Bitmap;
use super::cowfile::{lock, open_existing, read_bitmap, read_header, read_zero_filled};
use super::error::{CowError, FormatError};
use super::header::{Abi, Header, FLAG_PACKED, F_COWUSED, HEAD_BLOCK, MAPUNIT};
use flate2::read::MultiGzDecoder;
use flate2::{Compression, GzBuilder};
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

/// Units per I/O when copying runs of blocks.
const COPY_UNITS: u64 = 256;
/// Cap on the cowfile [`unpack_bytes`] builds in memory (fuzzing, tests).
pub const MAX_IN_MEMORY: u64 = 64 << 20;
/// gzip's OS byte for Unix, as zlib writes it.
const GZIP_OS_UNIX: u8 = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaveFormat {
    Plain,
    Gzip,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PackReport {
    pub blocks: u64,
}

/// Where the pieces of a savefile or cowfile go.
pub trait SaveSink {
    fn put(&mut self, offset: u64, data: &[u8]) -> io::Result<()>;
}

/// Where the pieces of a savefile come from.
pub trait SaveSource {
    /// Fills `buf` from `offset`; a short file is `UnexpectedEof`.
    fn get(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
}

struct PlainFile<'a>(&'a File);

impl SaveSink for PlainFile<'_> {
    fn put(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.0.write_all_at(data, offset)
    }
}

impl SaveSource for PlainFile<'_> {
    fn get(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }
}

/// A stream: offsets only ever grow and are otherwise ignored.
struct Stream<T>(T);

impl<W: Write> SaveSink for Stream<W> {
    fn put(&mut self, _offset: u64, data: &[u8]) -> io::Result<()> {
        self.0.write_all(data)
    }
}

impl<R: Read> SaveSource for Stream<R> {
    fn get(&mut self, _offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.0.read_exact(buf)
    }
}

/// A plain savefile in memory.
struct Slice<'a>(&'a [u8]);

impl SaveSource for Slice<'_> {
    fn get(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let data = usize::try_from(offset)
            .ok()
            .and_then(|start| self.0.get(start..)?.get(..buf.len()))
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(data);
        Ok(())
    }
}

/// An in-memory sparse file with a size cap.
struct MemFile(Vec<u8>);

impl SaveSink for MemFile {
    fn put(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let end = offset.checked_add(data.len() as u64).filter(|&e| e <= MAX_IN_MEMORY).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::FileTooLarge,
                format!("in-memory cowfile over {MAX_IN_MEMORY} bytes"),
            )
        })?;
        if self.0.len() < end as usize {
            self.0.resize(end as usize, 0);
        }
        self.0[offset as usize..end as usize].copy_from_slice(data);
        Ok(())
    }
}

fn create_output(path: &Path) -> Result<File, CowError> {
    // cowpack 3.1 did not truncate: a longer old file kept its tail.
    std::fs::OpenOptions::new()
        .write(true)
        .read(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| CowError::io(path, "cannot create", None, e))
}

/// Header checks shared by both directions: layout, not dirty; `packed`
/// says what the PACKED flag must be.
fn check_header(header: &Header, path: &Path, packed: bool) -> Result<(), CowError> {
    header.check_layout().map_err(|p| CowError::format(path, p))?;
    if header.is_dirty() {
        return Err(CowError::format(path, FormatError::Dirty));
    }
    match (header.is_packed(), packed) {
        (true, false) => Err(CowError::format(path, FormatError::Packed)),
        (false, true) => Err(CowError::format(path, FormatError::NotPacked)),
        _ => Ok(()),
    }
}

fn check_bitmap(bytes: Vec<u8>, header: &Header, path: &Path) -> Result<Bitmap, CowError> {
    let map = Bitmap::from_disk(bytes, header.rdoblocks).map_err(|p| CowError::format(path, p))?;
    map.check_count(header.cowused, header.abi.field_offset(F_COWUSED))
        .map_err(|p| CowError::format(path, p))?;
    Ok(map)
}

/// `cowpack -p [-z]`: cowfile → savefile.
pub fn pack(cow_path: &Path, save_path: &Path, format: SaveFormat) -> Result<PackReport, CowError> {
    let cow = open_existing(cow_path, false)?;
    lock(&cow, cow_path, false)?;
    let header = read_header(&cow, cow_path)?;
    check_header(&header, cow_path, false)?;
    let map = check_bitmap(read_bitmap(&cow, cow_path, &header)?, &header, cow_path)?;
    let out = create_output(save_path)?;
    let werr = |e| CowError::io(save_path, "write", None, e);
    let report = match format {
        SaveFormat::Plain => write_savefile(&header, &map, &cow, cow_path, &mut PlainFile(&out), save_path)?,
        SaveFormat::Gzip => {
            let gz = GzBuilder::new()
                .mtime(0)
                .operating_system(GZIP_OS_UNIX)
                .write(BufWriter::new(&out), Compression::best());
            let mut sink = Stream(gz);
            let report = write_savefile(&header, &map, &cow, cow_path, &mut sink, save_path)?;
            let buffered: BufWriter<&File> = sink.0.finish().map_err(werr)?;
            buffered.into_inner().map_err(|e| werr(e.into_error()))?;
            report
        }
    };
    out.sync_all().map_err(|e| CowError::io(save_path, "fsync", None, e))?;
    Ok(report)
}

fn write_savefile(
    header: &Header,
    map: &Bitmap,
    cow: &File,
    cow_path: &Path,
    sink: &mut dyn SaveSink,
    save_path: &Path,
) -> Result<PackReport, CowError> {
    let werr = |at| move |e| CowError::io(save_path, "write", Some(at), e);
    let mut packed = *header;
    packed.flags |= FLAG_PACKED;
    sink.put(0, &packed.encode()).map_err(werr(0))?;
    sink.put(HEAD_BLOCK, map.bytes()).map_err(werr(HEAD_BLOCK))?;
    let mut buf = vec![0u8; (COPY_UNITS * MAPUNIT) as usize];
    for (block, n, out_block) in map.pieces(COPY_UNITS) {
        let chunk = &mut buf[..(n * MAPUNIT) as usize];
        let from = header.doffset + block * MAPUNIT;
        read_zero_filled(cow, chunk, from).map_err(|e| CowError::io(cow_path, "read data", Some(from), e))?;
        let to = header.doffset + out_block * MAPUNIT;
        sink.put(to, chunk).map_err(werr(to))?;
    }
    Ok(PackReport { blocks: map.count() })
}

/// `cowpack -u [-z]`: savefile → cowfile.
pub fn unpack(save_path: &Path, cow_path: &Path, format: SaveFormat) -> Result<PackReport, CowError> {
    let save = open_existing(save_path, false)?;
    let mut plain = PlainFile(&save);
    let mut gz = Stream(MultiGzDecoder::new(BufReader::new(&save)));
    let source: &mut dyn SaveSource = match format {
        SaveFormat::Plain => &mut plain,
        SaveFormat::Gzip => &mut gz,
    };
    let (header, map) = read_savefile_head(source, save_path)?;
    let out = create_output(cow_path)?;
    let report = write_cowfile(&header, &map, source, save_path, &mut PlainFile(&out), cow_path)?;
    out.sync_all().map_err(|e| CowError::io(cow_path, "fsync", None, e))?;
    Ok(report)
}

/// Unpacks a savefile held in memory into a cowfile image in memory
/// (capped at [`MAX_IN_MEMORY`]); for fuzzing and tests.
pub fn unpack_bytes(save: &[u8], format: SaveFormat) -> Result<Vec<u8>, CowError> {
    let name = Path::new("<savefile>");
    let mut plain = Slice(save);
    let mut gz = Stream(MultiGzDecoder::new(save));
    let source: &mut dyn SaveSource = match format {
        SaveFormat::Plain => &mut plain,
        SaveFormat::Gzip => &mut gz,
    };
    let (header, map) = read_savefile_head(source, name)?;
    let mut out = MemFile(Vec::new());
    write_cowfile(&header, &map, source, name, &mut out, Path::new("<cowfile>"))?;
    Ok(out.0)
}

fn read_savefile_head(source: &mut dyn SaveSource, path: &Path) -> Result<(Header, Bitmap), CowError> {
    let rerr = |at: u64, what: &'static str| {
        move |e: io::Error| match e.kind() {
            io::ErrorKind::UnexpectedEof => {
                CowError::format(path, FormatError::TooSmall { len: at, need: 0, what })
            }
            _ => CowError::io(path, "read", Some(at), e),
        }
    };
    let mut head = vec![0u8; 16];
    source.get(0, &mut head).map_err(rerr(0, "savefile header"))?;
    let abi = Abi::detect(&head);
    head.resize(abi.header_len(), 0);
    source.get(16, &mut head[16..]).map_err(rerr(16, "savefile header"))?;
    let header = Header::parse(&head).map_err(|p| CowError::format(path, p))?;
    check_header(&header, path, true)?;
    let mut bytes = vec![0u8; header.mapsize as usize];
    source.get(HEAD_BLOCK, &mut bytes).map_err(rerr(HEAD_BLOCK, "savefile bitmap"))?;
    let map = check_bitmap(bytes, &header, path)?;
    Ok((header, map))
}

fn write_cowfile(
    header: &Header,
    map: &Bitmap,
    source: &mut dyn SaveSource,
    save_path: &Path,
    sink: &mut dyn SaveSink,
    cow_path: &Path,
) -> Result<PackReport, CowError> {
    let werr = |at| move |e| CowError::io(cow_path, "write", Some(at), e);
    let mut cow = *header;
    cow.flags &= !FLAG_PACKED;
    sink.put(0, &cow.encode()).map_err(werr(0))?;
    sink.put(HEAD_BLOCK, map.bytes()).map_err(werr(HEAD_BLOCK))?;
    let mut buf = vec![0u8; (COPY_UNITS * MAPUNIT) as usize];
    for (block, n, in_block) in map.pieces(COPY_UNITS) {
        let chunk = &mut buf[..(n * MAPUNIT) as usize];
        let from = header.doffset + in_block * MAPUNIT;
        source.get(from, chunk).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => {
                CowError::format(save_path, FormatError::TruncatedSavefile { block, offset: from })
            }
            _ => CowError::io(save_path, "read", Some(from), e),
        })?;
        let to = header.doffset + block * MAPUNIT;
        sink.put(to, chunk).map_err(werr(to))?;
    }
    Ok(PackReport { blocks: map.count() })
}
