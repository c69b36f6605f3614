//! How one record is framed on disk: `[u32 length][u32 crc32][payload]`, little-endian.
//!
//! The payload is the topic's catalog name, the key, the value and the headers, each with
//! its length in front. The checksum lets a journal opened after a crash tell a record cut
//! short by `kill -9` (or a full disk) from a whole one, and drop only the torn tail.

use std::io::{self, Read};

use folio_domain::ports::OutgoingRecord;
use folio_domain::topics::Topic;

/// Bytes in front of every payload: its length and its checksum.
pub(crate) const FRAME_HEADER: usize = 8;

/// Appends the framed record to `out`.
pub(crate) fn encode(record: &OutgoingRecord, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_HEADER]);
    let name = record.topic.name().as_bytes();
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    put_bytes(out, &record.key);
    put_bytes(out, &record.value);
    out.extend_from_slice(&(record.headers.len() as u16).to_le_bytes());
    for (k, v) in &record.headers {
        out.extend_from_slice(&(k.len() as u16).to_le_bytes());
        out.extend_from_slice(k.as_bytes());
        put_bytes(out, v);
    }
    let payload = &out[start + FRAME_HEADER..];
    let len = payload.len() as u32;
    let crc = crc32fast::hash(payload);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

/// What reading the next frame found.
pub(crate) enum Frame {
    /// A whole record and the bytes its frame took.
    Record(OutgoingRecord, u64),
    /// A whole frame that [`skip`]-style callers did not decode.
    Skipped(u64),
    /// The clean end of the data.
    End,
    /// A frame cut short or damaged: the data is good only up to here.
    Torn,
}

/// Reads the next frame; decodes it when `decode` is set.
pub(crate) fn read_frame(r: &mut impl Read, decode: bool, buf: &mut Vec<u8>) -> io::Result<Frame> {
    let mut head = [0u8; FRAME_HEADER];
    match read_full(r, &mut head)? {
        0 => return Ok(Frame::End),
        n if n < FRAME_HEADER => return Ok(Frame::Torn),
        _ => {}
    }
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    buf.clear();
    buf.resize(len, 0);
    if read_full(r, buf)? < len || crc32fast::hash(buf) != crc {
        return Ok(Frame::Torn);
    }
    let size = (FRAME_HEADER + len) as u64;
    if !decode {
        return Ok(Frame::Skipped(size));
    }
    Ok(match decode_payload(buf) {
        Some(record) => Frame::Record(record, size),
        None => Frame::Torn,
    })
}

/// Reads until `buf` is full or the data ends; returns how much it read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn decode_payload(p: &[u8]) -> Option<OutgoingRecord> {
    let mut c = Cursor { p, at: 0 };
    let name_len = usize::from(c.take(1)?[0]);
    let topic = Topic::from_name(std::str::from_utf8(c.take(name_len)?).ok()?)?;
    let key = c.bytes32()?.to_vec();
    let value = c.bytes32()?.to_vec();
    let count = c.u16()?;
    let mut headers = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let k_len = usize::from(c.u16()?);
        let k = std::str::from_utf8(c.take(k_len)?).ok()?.to_string();
        headers.push((k, c.bytes32()?.to_vec()));
    }
    (c.at == p.len()).then_some(OutgoingRecord {
        topic,
        key,
        value,
        headers,
    })
}

struct Cursor<'a> {
    p: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.p.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }

    fn u16(&mut self) -> Option<u16> {
        let b = self.take(2)?;
        Some(u16::from_le_bytes([b[0], b[1]]))
    }

    fn bytes32(&mut self) -> Option<&'a [u8]> {
        let b = self.take(4)?;
        let n = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> OutgoingRecord {
        OutgoingRecord {
            topic: Topic::BookDownloads,
            key: b"42".to_vec(),
            value: br#"{"type":"book_downloaded"}"#.to_vec(),
            headers: vec![
                ("event_id".into(), b"0193".to_vec()),
                ("type".into(), vec![]),
            ],
        }
    }

    #[test]
    fn a_record_reads_back_as_written() {
        let mut out = Vec::new();
        encode(&record(), &mut out);
        let mut buf = Vec::new();
        match read_frame(&mut out.as_slice(), true, &mut buf).expect("read") {
            Frame::Record(r, size) => {
                assert_eq!(r, record());
                assert_eq!(size, out.len() as u64);
            }
            _ => panic!("expected a record"),
        }
    }

    #[test]
    fn every_cut_of_a_frame_reads_as_torn_and_a_flipped_bit_too() {
        let mut out = Vec::new();
        encode(&record(), &mut out);
        let mut buf = Vec::new();
        for cut in 1..out.len() {
            let frame = read_frame(&mut &out[..cut], true, &mut buf).expect("read");
            assert!(matches!(frame, Frame::Torn), "cut at {cut}");
        }
        assert!(matches!(
            read_frame(&mut &out[..0], true, &mut buf).expect("read"),
            Frame::End
        ));
        let mut flipped = out.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(matches!(
            read_frame(&mut flipped.as_slice(), true, &mut buf).expect("read"),
            Frame::Torn
        ));
    }
}
