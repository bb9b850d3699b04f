//! Request bodies sent with `Content-Encoding: zstd`, which Ollama decodes on its `/v1` POSTs
//! (`server/cloud_proxy.go`, `middleware/openai.go`: frames of at most an 8 MB window, at most
//! 20 MB decoded). The gate decodes them the same way to read the model and to add
//! `include_usage`; a body that decodes past the cap is refused (413) before it takes more
//! memory than the cap, a zstd bomb included.

use crate::endpoints::accepts_zstd;
use crate::refusal::{Refusal, RefusalReason};
use std::io::Read;

use ruzstd::decoding::{FrameDecoder, StreamingDecoder};

/// What Ollama decodes at most (`maxDecompressedBodySize`).
pub const MAX_DECODED_BYTES: usize = 20 << 20;

/// The largest window a frame may ask for (Ollama's `WithDecoderMaxMemory(8<<20)`).
pub const MAX_WINDOW_BYTES: u64 = 8 << 20;

const FRAME_MAGIC: u32 = 0xFD2F_B528;

/// Why a body was not decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// More than the cap once decoded.
    TooLarge,
    /// Not zstd frames Ollama would decode (bad data, a window over 8 MB, a dictionary).
    Invalid,
}

/// How Ollama reads a request body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyEncoding {
    /// As it came.
    AsIs,
    /// Decoded from zstd first.
    Zstd,
    /// Sent with more than one `Content-Encoding` where Ollama decodes zstd: refused rather
    /// than guess which one Go's `GetHeader` takes.
    Ambiguous,
}

/// How Ollama reads a body sent to `path` with these `Content-Encoding` values: decoded where
/// it accepts zstd and the one value is exactly `zstd` (`c.GetHeader("Content-Encoding") ==
/// "zstd"`), else as it came.
pub fn body_encoding(path: &str, content_encodings: &[&[u8]]) -> BodyEncoding {
    match content_encodings {
        _ if !accepts_zstd(path) => BodyEncoding::AsIs,
        [] => BodyEncoding::AsIs,
        [value] if *value == b"zstd" => BodyEncoding::Zstd,
        [_] => BodyEncoding::AsIs,
        _ => BodyEncoding::Ambiguous,
    }
}

/// Why a body cannot be read as Ollama reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotDecoded {
    /// More than one `Content-Encoding` where Ollama decodes zstd.
    Ambiguous,
    /// More than [`MAX_DECODED_BYTES`] once decoded.
    TooLarge,
    /// Not zstd frames Ollama would decode.
    Invalid,
}

impl NotDecoded {
    /// The gate's answer: as Ollama would refuse the body (400, or 413 past the cap).
    pub fn refusal(self) -> Refusal {
        match self {
            NotDecoded::Ambiguous => Refusal::bad_request("at most one Content-Encoding"),
            NotDecoded::TooLarge => Refusal::too_large(
                format!("a zstd body may be at most {} MB decoded", MAX_DECODED_BYTES >> 20),
                RefusalReason::TooLarge,
            ),
            NotDecoded::Invalid => Refusal::bad_request("the zstd body cannot be decoded"),
        }
    }
}

/// A body sent to `path` with these `Content-Encoding` values, as Ollama reads it: decoded
/// (`Some`) where it decodes zstd, `None` where it takes the bytes as they came.
pub fn as_ollama_reads(path: &str, content_encodings: &[&[u8]], body: &[u8]) -> Result<Option<Vec<u8>>, NotDecoded> {
    match body_encoding(path, content_encodings) {
        BodyEncoding::AsIs => Ok(None),
        BodyEncoding::Ambiguous => Err(NotDecoded::Ambiguous),
        BodyEncoding::Zstd => match decode_zstd(body, MAX_DECODED_BYTES) {
            Ok(decoded) => Ok(Some(decoded)),
            Err(DecodeError::TooLarge) => Err(NotDecoded::TooLarge),
            Err(DecodeError::Invalid) => Err(NotDecoded::Invalid),
        },
    }
}

/// Frames a body may hold. Go takes any number; past this many the gate refuses the body
/// rather than spend the worker's time on a flood of tiny frames.
pub const MAX_FRAMES: usize = 1024;

/// Decodes every frame of `body` (skippable frames skipped), at most `max_decoded` bytes.
pub fn decode_zstd(body: &[u8], max_decoded: usize) -> Result<Vec<u8>, DecodeError> {
    let mut input = body;
    let mut out = Vec::new();
    // One decoder for every frame: its tables and window are made once.
    let mut frame_decoder = FrameDecoder::new();
    for _ in 0..MAX_FRAMES {
        if input.is_empty() {
            return Ok(out);
        }
        let magic = u32::from_le_bytes(input.get(..4).ok_or(DecodeError::Invalid)?.try_into().expect("4 bytes"));
        if magic & 0xFFFF_FFF0 == 0x184D_2A50 {
            let length = u32::from_le_bytes(input.get(4..8).ok_or(DecodeError::Invalid)?.try_into().expect("4 bytes"));
            input = input.get(8 + length as usize..).ok_or(DecodeError::Invalid)?;
            continue;
        }
        if magic != FRAME_MAGIC || window_size(&input[4..]).is_none_or(|window| window > MAX_WINDOW_BYTES) {
            return Err(DecodeError::Invalid);
        }
        let mut decoder =
            StreamingDecoder::new_with_decoder(&mut input, &mut frame_decoder).map_err(|_| DecodeError::Invalid)?;
        let room = (max_decoded - out.len()) as u64;
        // One byte more than the room: reading it means the cap is passed.
        (&mut decoder).take(room + 1).read_to_end(&mut out).map_err(|_| DecodeError::Invalid)?;
        if out.len() > max_decoded {
            return Err(DecodeError::TooLarge);
        }
    }
    if input.is_empty() {
        Ok(out)
    } else {
        Err(DecodeError::Invalid)
    }
}

/// The window a frame header (after the magic) asks for; `None` if it is cut short.
fn window_size(header: &[u8]) -> Option<u64> {
    let descriptor = *header.first()?;
    let single_segment = descriptor & 0x20 != 0;
    if !single_segment {
        let window = *header.get(1)?;
        let log = 10 + u32::from(window >> 3);
        let base = 1u64 << log;
        return Some(base + (base / 8) * u64::from(window & 7));
    }
    // A single segment: the window is the content size, after the dictionary id.
    let dictionary_bytes = [0, 1, 2, 4][usize::from(descriptor & 3)];
    let size_bytes = [1, 2, 4, 8][usize::from(descriptor >> 6)];
    let field = header.get(1 + dictionary_bytes..1 + dictionary_bytes + size_bytes)?;
    let mut value = [0u8; 8];
    value[..size_bytes].copy_from_slice(field);
    let size = u64::from_le_bytes(value);
    Some(if size_bytes == 2 { size + 256 } else { size })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame of raw blocks (1 MB window), and RLE blocks of `repeat` bytes after them.
    fn frame(data: &[u8], rle: &[(u8, usize)]) -> Vec<u8> {
        let mut out = FRAME_MAGIC.to_le_bytes().to_vec();
        out.extend_from_slice(&[0x00, 10 << 3]);
        let mut blocks: Vec<(u32, Vec<u8>, usize)> = data.chunks(128 << 10).map(|c| (0, c.to_vec(), c.len())).collect();
        for &(byte, count) in rle {
            for start in (0..count).step_by(128 << 10) {
                blocks.push((1, vec![byte], (count - start).min(128 << 10)));
            }
        }
        if blocks.is_empty() {
            blocks.push((0, Vec::new(), 0));
        }
        let last = blocks.len() - 1;
        for (index, (kind, content, size)) in blocks.into_iter().enumerate() {
            let header = u32::from(index == last) | (kind << 1) | ((size as u32) << 3);
            out.extend_from_slice(&header.to_le_bytes()[..3]);
            out.extend_from_slice(&content);
        }
        out
    }

    #[test]
    fn frames_decode_as_ollama_decodes_them() {
        let json = br#"{"model":"gemma3","messages":[]}"#;
        assert_eq!(decode_zstd(&frame(json, &[]), MAX_DECODED_BYTES), Ok(json.to_vec()));
        // Two frames, a skippable one between.
        let mut two = frame(&json[..10], &[]);
        two.extend_from_slice(&0x184D_2A53u32.to_le_bytes());
        two.extend_from_slice(&3u32.to_le_bytes());
        two.extend_from_slice(b"abc");
        two.extend_from_slice(&frame(&json[10..], &[(b' ', 5)]));
        let mut expected = json.to_vec();
        expected.extend_from_slice(b"     ");
        assert_eq!(decode_zstd(&two, MAX_DECODED_BYTES), Ok(expected));
        assert_eq!(decode_zstd(b"", MAX_DECODED_BYTES), Ok(Vec::new()));
    }

    #[test]
    fn a_flood_of_frames_is_refused() {
        let one = frame(b"", &[]);
        assert_eq!(decode_zstd(&one.repeat(MAX_FRAMES), MAX_DECODED_BYTES), Ok(Vec::new()));
        assert_eq!(decode_zstd(&one.repeat(MAX_FRAMES + 1), MAX_DECODED_BYTES), Err(DecodeError::Invalid));
        let mut skippable = 0x184D_2A50u32.to_le_bytes().to_vec();
        skippable.extend_from_slice(&0u32.to_le_bytes());
        assert_eq!(decode_zstd(&skippable.repeat(100_000), MAX_DECODED_BYTES), Err(DecodeError::Invalid));
    }

    #[test]
    fn a_bomb_stops_at_the_cap() {
        let bomb = frame(b"{", &[(b' ', 64 << 20)]);
        assert!(bomb.len() < 3000);
        assert_eq!(decode_zstd(&bomb, MAX_DECODED_BYTES), Err(DecodeError::TooLarge));
        let fits = frame(b"{}", &[(b' ', 1000)]);
        assert_eq!(decode_zstd(&fits, 1002).map(|d| d.len()), Ok(1002));
        assert_eq!(decode_zstd(&fits, 1001), Err(DecodeError::TooLarge));
    }

    #[test]
    fn what_ollama_refuses_is_invalid() {
        let mut big_window = frame(b"{}", &[]);
        big_window[5] = 14 << 3; // a 16 MB window
        assert_eq!(decode_zstd(&big_window, MAX_DECODED_BYTES), Err(DecodeError::Invalid));
        let good = frame(b"{}", &[]);
        for bad in
            [&b"{\"model\":\"x\"}"[..], &good[..good.len() - 1], &[good.as_slice(), b"x"].concat(), b"\x28\xb5\x2f"]
        {
            assert_eq!(decode_zstd(bad, MAX_DECODED_BYTES), Err(DecodeError::Invalid), "{bad:?}");
        }
        let chat = "/v1/chat/completions";
        assert_eq!(body_encoding(chat, &[b"zstd"]), BodyEncoding::Zstd);
        for other in [&b"ZSTD"[..], b"gzip", b"zstd, gzip", b" zstd", b"identity"] {
            assert_eq!(body_encoding(chat, &[other]), BodyEncoding::AsIs, "{other:?}");
        }
        assert_eq!(body_encoding(chat, &[]), BodyEncoding::AsIs);
        assert_eq!(body_encoding(chat, &[b"zstd", b"zstd"]), BodyEncoding::Ambiguous);
        assert_eq!(body_encoding("/api/chat", &[b"zstd"]), BodyEncoding::AsIs, "Ollama decodes only on /v1");
        assert_eq!(body_encoding("/api/chat", &[b"zstd", b"gzip"]), BodyEncoding::AsIs);
    }

    #[test]
    fn window_sizes() {
        assert_eq!(window_size(&[0x00, 0x00]), Some(1024));
        assert_eq!(window_size(&[0x00, (13 << 3) | 4]), Some((8 << 20) + (4 << 20)));
        assert_eq!(window_size(&[0x20, 200]), Some(200));
        assert_eq!(window_size(&[0x60, 0x00, 0x01]), Some(512));
        assert_eq!(window_size(&[0x00]), None);
    }

    #[test]
    fn a_body_is_read_as_ollama_reads_it_or_refused_as_it_refuses() {
        let chat = "/v1/chat/completions";
        let body = frame(br#"{"model":"m"}"#, &[]);
        assert_eq!(as_ollama_reads(chat, &[b"zstd"], &body), Ok(Some(br#"{"model":"m"}"#.to_vec())));
        assert_eq!(as_ollama_reads("/api/chat", &[b"zstd"], &body), Ok(None));
        assert_eq!(as_ollama_reads(chat, &[b"gzip"], &body), Ok(None));
        assert_eq!(as_ollama_reads(chat, &[b"zstd", b"zstd"], &body), Err(NotDecoded::Ambiguous));
        assert_eq!(as_ollama_reads(chat, &[b"zstd"], b"not zstd"), Err(NotDecoded::Invalid));
        let bomb = frame(b"", &[(b'a', MAX_DECODED_BYTES + 1)]);
        assert_eq!(as_ollama_reads(chat, &[b"zstd"], &bomb), Err(NotDecoded::TooLarge));
        assert_eq!(NotDecoded::TooLarge.refusal().status, 413);
        assert_eq!(NotDecoded::TooLarge.refusal().message, "a zstd body may be at most 20 MB decoded");
        assert_eq!(NotDecoded::Ambiguous.refusal().status, 400);
        assert_eq!(NotDecoded::Invalid.refusal().status, 400);
    }
}
