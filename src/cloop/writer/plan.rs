//! Choosing and running a [`Plan`]: open the input, refuse to overwrite it,
//! open the output, stream the blocks and put header and index in front.

use std::fs::File;
use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use super::encode::Settings;
use super::format::{self, Format, Index};
use super::input::{BlockReader, InputEnd};
use super::output::{FileId, Opened, OutFile, Staged};
use super::pipeline::{self, Block};
use super::{BlockDone, Error, Input, Observer, Request, Start, Strategy, Summary, MAX_BLOCK_SIZE};
use crate::cloop::codec::Codec;
use crate::cloop::reader::MAX_BLOCKS;

/// How header and index get in front of the data (module docs of
/// [`super`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    Direct,
    Reuse,
    Memory,
    /// A named spool file, or an unlinked one in `$TMPDIR`.
    Spool(Option<PathBuf>),
    Split(PathBuf),
}

impl Plan {
    fn choose(request: &Request, seekable: bool, size_known: bool) -> Plan {
        if let Some(header) = &request.header_file {
            return Plan::Split(header.clone());
        }
        match (&request.strategy, seekable, size_known) {
            (Strategy::Memory, _, _) => Plan::Memory,
            (Strategy::SpoolFile(path), _, _) => Plan::Spool(Some(path.clone())),
            (Strategy::Auto | Strategy::Reuse, true, true) => Plan::Direct,
            (Strategy::Auto | Strategy::Reuse, true, false) => Plan::Reuse,
            (Strategy::Auto | Strategy::Reuse, false, _) => Plan::Spool(None),
        }
    }
}

struct Source {
    reader: Box<dyn Read + Send>,
    name: String,
    size: Option<u64>,
    /// Set for regular files and block devices, the inputs an output could clobber.
    id: Option<FileId>,
}

impl Source {
    fn open(input: Input) -> Result<Source, Error> {
        match input {
            Input::Path(path) => {
                let name = path.display().to_string();
                let file = File::open(&path).map_err(|source| Error::Open {
                    what: "input",
                    path: name.clone(),
                    source,
                })?;
                Source::from_file(file, name)
            }
            Input::Stdin => {
                let name = "standard input".to_string();
                let fd = rustix::io::dup(rustix::stdio::stdin()).map_err(|e| Error::Open {
                    what: "input",
                    path: name.clone(),
                    source: e.into(),
                })?;
                Source::from_file(File::from(fd), name)
            }
            Input::Reader { name, reader, size } => Ok(Source { reader, name, size, id: None }),
        }
    }

    fn from_file(mut file: File, name: String) -> Result<Source, Error> {
        let open_err = |source| Error::Open { what: "input", path: name.clone(), source };
        let meta = file.metadata().map_err(open_err)?;
        let t = meta.file_type();
        if t.is_dir() {
            return Err(open_err(std::io::Error::from(ErrorKind::IsADirectory)));
        }
        let (size, id) = if t.is_file() || t.is_block_device() {
            // Seeking gives block devices their size; stdin may not be at 0.
            let here = file.stream_position().map_err(open_err)?;
            let end = file.seek(SeekFrom::End(0)).map_err(open_err)?;
            file.seek(SeekFrom::Start(here)).map_err(open_err)?;
            (Some(end.saturating_sub(here)), FileId::of_fd(&file))
        } else {
            (None, None)
        };
        Ok(Source { reader: Box::new(file), name, size, id })
    }
}

/// Refuses outputs that are the input file or each other.
fn check_files(input: Option<FileId>, input_name: &str, request: &Request) -> Result<(), Error> {
    let mut outputs: Vec<(&'static str, String, Option<FileId>)> = Vec::new();
    match &request.output {
        Some(p) => outputs.push(("image", p.display().to_string(), FileId::of_path(p))),
        None => outputs.push(("image", "standard output".into(), FileId::of_fd(rustix::stdio::stdout()))),
    }
    if let Some(p) = &request.header_file {
        outputs.push(("header file", p.display().to_string(), FileId::of_path(p)));
    }
    if let Strategy::SpoolFile(p) = &request.strategy {
        outputs.push(("temporary data", p.display().to_string(), FileId::of_path(p)));
    }
    for (i, (what, path, id)) in outputs.iter().enumerate() {
        if id.is_some() && *id == input {
            return Err(Error::SameFile { what, path: path.clone(), input: input_name.to_string() });
        }
        for (_, other, other_id) in &outputs[..i] {
            if id.is_some() && id == other_id {
                return Err(Error::SameOutput { first: other.clone(), second: path.clone() });
            }
        }
    }
    Ok(())
}

fn validate(options: &super::Options) -> Result<(), Error> {
    let bs = options.block_size;
    if bs == 0 || bs % 512 != 0 || bs > MAX_BLOCK_SIZE {
        return Err(Error::InvalidBlockSize { block_size: bs.into(), max: MAX_BLOCK_SIZE.into() });
    }
    if options.codec == Codec::Lzo {
        return Err(Error::CodecUnwritable { codec: options.codec });
    }
    Ok(())
}

fn check_block_count(blocks: u64, block_size: u32) -> Result<(), Error> {
    if blocks > MAX_BLOCKS {
        return Err(Error::TooManyBlocks { blocks, max: MAX_BLOCKS, block_size });
    }
    Ok(())
}

pub(super) fn run(mut request: Request, observer: &mut dyn Observer) -> Result<Summary, Error> {
    let options = request.options;
    validate(&options)?;
    let source = Source::open(std::mem::replace(&mut request.input, Input::Stdin))?;
    check_files(source.id, &source.name, &request)?;
    let bs = options.block_size;
    let expected = request.expected_size.or(source.size);
    let expected_blocks = expected.map(|e| e.div_ceil(bs.into()));
    if let Some(n) = expected_blocks {
        check_block_count(n, bs)?;
    }
    let mut opened = Opened::open(request.output.as_deref(), "output")?;
    let plan = Plan::choose(&request, opened.seekable(), expected.is_some());
    let format = Format::for_codec(options.codec);
    let threads = options.threads.max(1);
    let start = Start { format, plan, block_size: bs, threads, expected_bytes: expected, expected_blocks };
    observer.start(&start);
    let mut job = Job {
        reader: BlockReader::new(source.reader, source.name, bs as usize, expected),
        settings: Settings { format, codec: options.codec, options: options.encode },
        block_size: bs,
        threads,
        in_flight: options.in_flight.unwrap_or(2 * threads + 2),
        index: Index::new(),
        raw_blocks: 0,
        observer,
    };
    let (end, image_bytes) = job.execute(&start.plan, opened.out(), expected_blocks)?;
    opened.finish()?;
    Ok(Summary {
        format,
        block_size: bs,
        blocks: job.index.num_blocks(),
        input_bytes: end.bytes,
        image_bytes,
        raw_blocks: job.raw_blocks,
        excess_input: end.excess,
    })
}

fn write_file(path: &Path, what: &'static str, bytes: &[u8]) -> Result<(), Error> {
    let (staged, file) = Staged::create(path, what)?;
    let mut out = OutFile::new(file, staged.temp_path().display().to_string());
    out.write(bytes)?;
    out.flush()?;
    staged.commit()
}

/// Bytes moved per step when shifting data up in place.
const SHIFT_CHUNK: u64 = 1 << 20;

struct Job<'o, R> {
    reader: BlockReader<R>,
    settings: Settings,
    block_size: u32,
    threads: usize,
    in_flight: usize,
    index: Index,
    raw_blocks: u64,
    observer: &'o mut dyn Observer,
}

impl<R: Read + Send> Job<'_, R> {
    /// Compresses everything into `out` as `plan` says; returns how the
    /// input ended and the image size.
    fn execute(
        &mut self,
        plan: &Plan,
        out: &mut OutFile,
        blocks: Option<u64>,
    ) -> Result<(InputEnd, u64), Error> {
        match plan {
            Plan::Direct => self.direct(out, blocks.unwrap_or(0)),
            Plan::Reuse => self.reuse(out),
            Plan::Memory => self.memory(out),
            Plan::Spool(path) => self.spool(out, path.as_deref()),
            Plan::Split(header) => {
                let end = self.compress(|data| out.write(data))?;
                let head = self.head()?;
                self.observer.step("writing header and index");
                write_file(header, "header file", &head)?;
                Ok((end, head.len() as u64 + self.index.data_len()))
            }
        }
    }

    /// Runs the pipeline, handing every block's bytes to `put`.
    fn compress(&mut self, mut put: impl FnMut(&[u8]) -> Result<(), Error>) -> Result<InputEnd, Error> {
        let Job { reader, settings, block_size, threads, in_flight, index, raw_blocks, observer } = self;
        let bs = *block_size;
        let mut input_done = 0u64;
        pipeline::run(reader, *settings, *threads, *in_flight, |b: Block<'_>| {
            check_block_count(index.num_blocks() + 1, bs)?;
            observer.uncompressed(b.input).map_err(Error::Observer)?;
            put(b.data)?;
            index.push(b.codec, b.data.len())?;
            *raw_blocks += u64::from(b.codec == Codec::Stored);
            input_done += b.input_len as u64;
            observer.block(&BlockDone {
                index: b.index,
                codec: b.codec,
                compressed_len: b.data.len(),
                input_len: b.input_len,
                input_done,
                output_done: index.data_len(),
            });
            Ok(())
        })
    }

    /// Header and index for the blocks so far, with the data right after.
    fn head(&self) -> Result<Vec<u8>, Error> {
        let base = format::data_start(self.index.num_blocks()).expect("the block count is capped");
        self.index.check_base(base)?;
        Ok(self.index.header_and_index(self.settings.format, self.block_size))
    }

    /// Size known, seekable output: reserve the index, fill it in last.
    fn direct(&mut self, out: &mut OutFile, n: u64) -> Result<(InputEnd, u64), Error> {
        let base = format::data_start(n).expect("the block count is capped");
        out.write(&format::header(self.settings.format, self.block_size, n as u32))?;
        write_zeros(out, base - format::HEADER_LEN)?;
        let end = self.compress(|data| out.write(data))?;
        let got = self.index.num_blocks();
        if got != n {
            return Err(Error::BlockCount { path: out.name().to_string(), expected: n, got });
        }
        self.index.check_base(base)?;
        self.observer.step("writing index");
        let mut at = out.writer_at(format::HEADER_LEN)?;
        self.index.write_to(base, &mut at).map_err(|e| at.error(e))?;
        Ok((end, base + self.index.data_len()))
    }

    /// Size unknown, seekable output: data from offset 0, then moved up.
    fn reuse(&mut self, out: &mut OutFile) -> Result<(InputEnd, u64), Error> {
        let end = self.compress(|data| out.write(data))?;
        let head = self.head()?;
        self.observer.step("shifting data to make room for the index");
        out.flush()?;
        shift_up(out, self.index.data_len(), head.len() as u64)?;
        out.write_at(&head, 0)?;
        Ok((end, head.len() as u64 + self.index.data_len()))
    }

    fn memory(&mut self, out: &mut OutFile) -> Result<(InputEnd, u64), Error> {
        let mut data = Vec::new();
        let end = self.compress(|d| {
            data.extend_from_slice(d);
            Ok(())
        })?;
        let head = self.head()?;
        self.observer.step("writing index and data");
        out.write(&head)?;
        out.write(&data)?;
        Ok((end, (head.len() + data.len()) as u64))
    }

    fn spool(&mut self, out: &mut OutFile, path: Option<&Path>) -> Result<(InputEnd, u64), Error> {
        let (guard, file, name) = match path {
            Some(p) => {
                let (guard, file) = Staged::scratch(p, "temporary data file")?;
                (Some(guard), file, p.display().to_string())
            }
            None => anonymous_spool()?,
        };
        let mut spool = OutFile::new(file, name);
        let end = self.compress(|d| spool.write(d))?;
        spool.flush()?;
        let head = self.head()?;
        self.observer.step("writing index and data");
        out.write(&head)?;
        out.copy_from(&spool, self.index.data_len())?;
        drop(guard);
        Ok((end, head.len() as u64 + self.index.data_len()))
    }
}

fn write_zeros(out: &mut OutFile, mut len: u64) -> Result<(), Error> {
    let zeros = [0u8; 8192];
    while len > 0 {
        let n = len.min(zeros.len() as u64) as usize;
        out.write(&zeros[..n])?;
        len -= n as u64;
    }
    Ok(())
}

/// Moves `[0, len)` to `[by, by + len)`, last chunk first so no chunk is
/// overwritten before it is read.
fn shift_up(out: &mut OutFile, len: u64, by: u64) -> Result<(), Error> {
    let mut buf = vec![0u8; SHIFT_CHUNK.min(len) as usize];
    let mut end = len;
    while end > 0 {
        let start = end.saturating_sub(SHIFT_CHUNK);
        let chunk = &mut buf[..(end - start) as usize];
        out.read_at(chunk, start)?;
        out.write_at(chunk, start + by)?;
        end = start;
    }
    Ok(())
}

/// A spool file in `$TMPDIR` (default /tmp), unlinked at once: its space
/// is freed however the process ends.
fn anonymous_spool() -> Result<(Option<Staged>, File, String), Error> {
    let dir = std::env::var_os("TMPDIR").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
    let path = dir.join(format!(".cloopbox-spool.{}", std::process::id()));
    let name = path.display().to_string();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|source| Error::Open { what: "temporary data file", path: name.clone(), source })?;
    let _ = std::fs::remove_file(&path);
    Ok((None, file, name))
}
