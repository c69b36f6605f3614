//! The spool on disk: numbered segment files of framed records, and a cursor file.
//!
//! Every record has a *position*, counted from the first record the spool ever took. A
//! segment file is named after the position of its first record, so positions survive a
//! restart. The `cursor` file holds a position below which every record was delivered;
//! segments wholly below it are deleted. Appends go to the newest segment and are plain
//! `write`s: once one returns, the record is in the kernel's page cache and survives the
//! process being killed (not a power cut: [`Journal::sync`] is called at shutdown).

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Write};
use std::path::{Path, PathBuf};

use folio_domain::ports::OutgoingRecord;
use tracing::{info, warn};

use crate::codec::{self, Frame};

const SUFFIX: &str = ".seg";
const CURSOR: &str = "cursor";

/// A wholly delivered open segment is replaced by a new file (and deleted) once it holds
/// this many bytes, or when the spool stops. Below that it stays open: a spool that keeps
/// up would otherwise create and delete a file at every cursor write.
const ROTATE_DELIVERED_AT: u64 = 1 << 20;

/// One segment file.
#[derive(Debug, Clone)]
pub(crate) struct Segment {
    pub first: u64,
    pub count: u64,
    pub bytes: u64,
    pub path: PathBuf,
}

impl Segment {
    fn end(&self) -> u64 {
        self.first + self.count
    }
}

/// The spool's files. Not thread-safe by itself: the publisher keeps it behind a lock.
pub(crate) struct Journal {
    dir: PathBuf,
    segment_bytes: u64,
    /// Oldest first; the last one is open for appends.
    segments: VecDeque<Segment>,
    file: File,
    bytes: u64,
    buf: Vec<u8>,
}

/// What [`Journal::open`] found.
pub(crate) struct Opened {
    pub journal: Journal,
    /// Every record below it was delivered before the last stop.
    pub cursor: u64,
}

impl Journal {
    /// Opens (creating) the spool in `dir`: reads the cursor, deletes delivered segments,
    /// counts the records of the others and cuts a torn tail off.
    pub fn open(dir: &Path, segment_bytes: u64) -> io::Result<Opened> {
        fs::create_dir_all(dir)?;
        let cursor = match fs::read_to_string(dir.join(CURSOR)) {
            Ok(s) => s.trim().parse::<u64>().map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {e}", dir.join(CURSOR).display()),
                )
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        let mut firsts = Vec::new();
        for entry in fs::read_dir(dir)? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if let Some(first) = name
                .strip_suffix(SUFFIX)
                .and_then(|n| n.parse::<u64>().ok())
            {
                firsts.push(first);
            }
        }
        firsts.sort_unstable();
        let mut segments = VecDeque::new();
        let mut buf = Vec::new();
        for first in firsts {
            let path = segment_path(dir, first);
            let (count, bytes) = scan(&path, &mut buf)?;
            let seg = Segment {
                first,
                count,
                bytes,
                path,
            };
            if seg.end() <= cursor {
                fs::remove_file(&seg.path)?;
            } else {
                segments.push_back(seg);
            }
        }
        let undelivered: u64 = segments.iter().map(|s| s.end() - s.first.max(cursor)).sum();
        if undelivered > 0 {
            info!(dir = %dir.display(), records = undelivered, "spool holds undelivered events from an earlier run; replaying them");
        }
        let next = segments.back().map_or(cursor, |s| s.end().max(cursor));
        let file = match segments.back() {
            Some(last) if last.end() == next && last.bytes < segment_bytes => {
                OpenOptions::new().append(true).open(&last.path)?
            }
            _ => {
                let seg = new_segment(dir, next)?;
                let file = OpenOptions::new().append(true).open(&seg.path)?;
                segments.push_back(seg);
                file
            }
        };
        let bytes = segments.iter().map(|s| s.bytes).sum();
        Ok(Opened {
            journal: Journal {
                dir: dir.to_path_buf(),
                segment_bytes,
                segments,
                file,
                bytes,
                buf,
            },
            cursor,
        })
    }

    /// The position the next record gets.
    pub fn next_pos(&self) -> u64 {
        self.segments.back().map_or(0, Segment::end)
    }

    /// Bytes on disk in undelivered (and not yet deleted) segments.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Writes a record; returns its position and its size on disk.
    pub fn append(&mut self, record: &OutgoingRecord) -> io::Result<(u64, u64)> {
        if self
            .segments
            .back()
            .is_some_and(|s| s.bytes >= self.segment_bytes)
        {
            self.rotate()?;
        }
        self.buf.clear();
        codec::encode(record, &mut self.buf);
        if let Err(e) = self.file.write_all(&self.buf) {
            // A short write leaves a torn frame; cut it off so later records stay readable.
            let good = self.segments.back().map_or(0, |s| s.bytes);
            let _ = self.file.set_len(good);
            return Err(e);
        }
        let size = self.buf.len() as u64;
        let seg = self
            .segments
            .back_mut()
            .ok_or_else(|| io::Error::other("spool has no open segment"))?;
        let pos = seg.end();
        seg.count += 1;
        seg.bytes += size;
        self.bytes += size;
        Ok((pos, size))
    }

    fn rotate(&mut self) -> io::Result<()> {
        let seg = new_segment(&self.dir, self.next_pos())?;
        self.file = OpenOptions::new().append(true).open(&seg.path)?;
        self.segments.push_back(seg);
        Ok(())
    }

    /// Deletes the segments wholly below `cursor`, once [`write_cursor`] has recorded it.
    /// The open segment goes too (a new one is begun) when it is wholly delivered and
    /// either `stopping` or at least [`ROTATE_DELIVERED_AT`] bytes long.
    pub fn release_below(&mut self, cursor: u64, stopping: bool) -> io::Result<()> {
        let open_done = self.segments.back().is_some_and(|s| {
            s.count > 0 && s.end() <= cursor && (stopping || s.bytes >= ROTATE_DELIVERED_AT)
        });
        if open_done {
            self.rotate()?;
        }
        while self.segments.len() > 1 && self.segments.front().is_some_and(|s| s.end() <= cursor) {
            if let Some(seg) = self.segments.pop_front() {
                self.bytes -= seg.bytes;
                if let Err(e) = fs::remove_file(&seg.path) {
                    warn!(path = %seg.path.display(), error = %e, "could not delete a delivered spool segment");
                }
            }
        }
        Ok(())
    }

    /// The segments holding positions at or after `pos`, as they are now.
    pub fn segments_from(&self, pos: u64) -> Vec<Segment> {
        self.segments
            .iter()
            .filter(|s| s.end() > pos && s.count > 0)
            .cloned()
            .collect()
    }

    /// Forces what was written to the disk itself.
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}{SUFFIX}"))
}

fn new_segment(dir: &Path, first: u64) -> io::Result<Segment> {
    let path = segment_path(dir, first);
    OpenOptions::new().create(true).append(true).open(&path)?;
    Ok(Segment {
        first,
        count: 0,
        bytes: 0,
        path,
    })
}

/// Records that every position below `cursor` was delivered. One writer at a time (the
/// publisher serializes them): two writers of the same temporary file could mix digits.
pub(crate) fn write_cursor(dir: &Path, cursor: u64) -> io::Result<()> {
    let tmp = dir.join("cursor.tmp");
    fs::write(&tmp, cursor.to_string())?;
    fs::rename(tmp, dir.join(CURSOR))
}

/// Counts a segment's whole records; cuts off a torn tail.
fn scan(path: &Path, buf: &mut Vec<u8>) -> io::Result<(u64, u64)> {
    let mut r = BufReader::new(File::open(path)?);
    let (mut count, mut good) = (0u64, 0u64);
    loop {
        match codec::read_frame(&mut r, false, buf)? {
            Frame::Skipped(size) | Frame::Record(_, size) => {
                count += 1;
                good += size;
            }
            Frame::End => break,
            Frame::Torn => {
                warn!(path = %path.display(), kept = count, "spool segment ends in a torn record (the process died while writing it); cutting it off");
                OpenOptions::new().write(true).open(path)?.set_len(good)?;
                break;
            }
        }
    }
    Ok((count, good))
}

/// Reads records of the journal sequentially, from any position.
pub(crate) struct Reader {
    seg: Option<(Segment, BufReader<File>)>,
    /// The position of the next record the open segment yields.
    next: u64,
    buf: Vec<u8>,
}

impl Reader {
    pub fn new() -> Self {
        Reader {
            seg: None,
            next: 0,
            buf: Vec::new(),
        }
    }

    /// The record at `pos`, or `None` when no segment holds it (the journal lost it, which
    /// only a damaged file does). `segments` is a fresh [`Journal::segments_from`].
    pub fn read(&mut self, pos: u64, segments: &[Segment]) -> io::Result<Option<OutgoingRecord>> {
        let Some(fresh) = segments.iter().find(|s| s.first <= pos && pos < s.end()) else {
            self.seg = None;
            return Ok(None);
        };
        let reuse = matches!(&self.seg, Some((s, _)) if s.first == fresh.first && self.next <= pos);
        if !reuse {
            let f = BufReader::new(File::open(&fresh.path)?);
            self.next = fresh.first;
            self.seg = Some((fresh.clone(), f));
        }
        let Some((_, f)) = self.seg.as_mut() else {
            return Ok(None);
        };
        while self.next < pos {
            match codec::read_frame(f, false, &mut self.buf)? {
                Frame::Skipped(_) | Frame::Record(..) => self.next += 1,
                Frame::End | Frame::Torn => {
                    self.seg = None;
                    return Ok(None);
                }
            }
        }
        match codec::read_frame(f, true, &mut self.buf)? {
            Frame::Record(r, _) => {
                self.next += 1;
                Ok(Some(r))
            }
            _ => {
                self.seg = None;
                Ok(None)
            }
        }
    }
}
