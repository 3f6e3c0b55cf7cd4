//! Where the WebSocket frames (RFC 6455 §5.2) of a tunnelled stream begin
//! and end, without buffering or unmasking anything: enough to put a close
//! frame between two frames when the session ends. Control frames may come
//! between the fragments of a message (§5.4), so a frame boundary is always
//! a place where one may be sent; a close frame is never compressed, so
//! this holds with any extension the two ends agreed on.

/// The close code for "policy violation" (§7.4.1): the session ended.
pub const POLICY_VIOLATION: u16 = 1008;
/// The close code for "going away": the gateway gives the connection up.
pub const GOING_AWAY: u16 = 1001;

const OPCODE_CLOSE: u8 = 0x8;
/// The longest frame header: 2 bytes, 8 of extended length, 4 of mask.
const MAX_HEADER: usize = 14;

/// Follows the frames of one direction of a WebSocket.
#[derive(Debug, Default)]
pub struct Frames {
    /// The header being read: its bytes so far (only the first
    /// `header_len` count).
    header: [u8; MAX_HEADER],
    header_len: u8,
    /// Payload bytes still to come of the current frame.
    payload_left: u64,
    /// The current frame is a close frame.
    closing: bool,
    /// A whole close frame went through.
    closed: bool,
}

impl Frames {
    /// Notes bytes that went through, in order.
    pub fn advance(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let take = usize::try_from(self.payload_left)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                self.payload_left -= take as u64;
                bytes = &bytes[take..];
                if self.payload_left == 0 {
                    self.frame_done();
                }
                continue;
            }
            let have = usize::from(self.header_len);
            self.header[have] = bytes[0];
            self.header_len += 1;
            bytes = &bytes[1..];
            if let Some(payload) = self.complete_header() {
                self.header_len = 0;
                self.closing = self.header[0] & 0x0f == OPCODE_CLOSE;
                self.payload_left = payload;
                if payload == 0 {
                    self.frame_done();
                }
            }
        }
    }

    /// Whether the bytes so far end exactly at the end of a frame.
    pub fn at_boundary(&self) -> bool {
        self.header_len == 0 && self.payload_left == 0
    }

    /// Whether a whole close frame went through.
    pub fn saw_close(&self) -> bool {
        self.closed
    }

    fn frame_done(&mut self) {
        if self.closing {
            self.closed = true;
        }
        self.closing = false;
    }

    /// The payload length once the header being read is whole.
    fn complete_header(&self) -> Option<u64> {
        let have = usize::from(self.header_len);
        if have < 2 {
            return None;
        }
        let masked = self.header[1] & 0x80 != 0;
        let short = self.header[1] & 0x7f;
        let extended = match short {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let need = 2 + extended + if masked { 4 } else { 0 };
        if have < need {
            return None;
        }
        Some(match short {
            126 => u64::from(u16::from_be_bytes([self.header[2], self.header[3]])),
            127 => {
                let mut len = [0u8; 8];
                len.copy_from_slice(&self.header[2..10]);
                u64::from_be_bytes(len)
            }
            n => u64::from(n),
        })
    }
}

/// A close frame with `code` and `reason` (at most 123 bytes), masked with
/// `mask` when it goes to the server (clients must mask, servers must not).
pub fn close_frame(code: u16, reason: &str, mask: Option<[u8; 4]>) -> Vec<u8> {
    let reason = &reason.as_bytes()[..reason.len().min(123)];
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(reason);
    let mut frame = Vec::with_capacity(6 + payload.len());
    frame.push(0x80 | OPCODE_CLOSE);
    let len = payload.len() as u8;
    match mask {
        None => {
            frame.push(len);
            frame.extend_from_slice(&payload);
        }
        Some(key) => {
            frame.push(0x80 | len);
            frame.extend_from_slice(&key);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
    }
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame as an endpoint would write it.
    fn frame(opcode: u8, fin: bool, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut out = vec![opcode | if fin { 0x80 } else { 0 }];
        let m = if mask.is_some() { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => out.push(m | n as u8),
            n if n <= 0xffff => {
                out.push(m | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(m | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        match mask {
            None => out.extend_from_slice(payload),
            Some(key) => {
                out.extend_from_slice(&key);
                out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
            }
        }
        out
    }

    #[test]
    fn boundaries_are_found_whatever_the_chunking() {
        let mut stream = Vec::new();
        let mut ends = vec![0];
        for (payload_len, mask) in [
            (0, None),
            (5, None),
            (125, Some([1, 2, 3, 4])),
            (126, None),
            (300, Some([9, 9, 9, 9])),
            (70_000, None),
            (3, Some([0, 0, 0, 0])),
        ] {
            let payload: Vec<u8> = (0..payload_len).map(|i| (i % 251) as u8).collect();
            stream.extend(frame(0x2, true, &payload, mask));
            ends.push(stream.len());
        }
        for chunk in [1, 2, 3, 7, 13, 64, 4096, stream.len()] {
            let mut frames = Frames::default();
            let mut at = 0;
            for piece in stream.chunks(chunk) {
                frames.advance(piece);
                at += piece.len();
                assert_eq!(
                    frames.at_boundary(),
                    ends.contains(&at),
                    "chunks of {chunk}, after {at} bytes"
                );
            }
            assert!(!frames.saw_close());
        }
    }

    #[test]
    fn a_close_frame_is_seen_only_when_whole() {
        let mut frames = Frames::default();
        frames.advance(&frame(0x1, false, b"frag", None));
        // A ping between fragments, then the last fragment.
        frames.advance(&frame(0x9, true, b"", None));
        frames.advance(&frame(0x0, true, b"ment", None));
        let close = close_frame(1000, "bye", Some([7, 7, 7, 7]));
        frames.advance(&close[..close.len() - 1]);
        assert!(!frames.saw_close() && !frames.at_boundary());
        frames.advance(&close[close.len() - 1..]);
        assert!(frames.saw_close() && frames.at_boundary());
    }

    #[test]
    fn close_frames_read_back() {
        let frame = close_frame(POLICY_VIOLATION, "signed out", None);
        assert_eq!(frame[0], 0x88);
        assert_eq!(usize::from(frame[1]), 2 + "signed out".len());
        assert_eq!(&frame[2..4], &1008u16.to_be_bytes());
        assert_eq!(&frame[4..], b"signed out");

        let key = [0x12, 0x34, 0x56, 0x78];
        let masked = close_frame(GOING_AWAY, "x", Some(key));
        assert_eq!(masked[1], 0x80 | 3);
        assert_eq!(&masked[2..6], &key);
        let unmasked: Vec<u8> = masked[6..]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ key[i % 4])
            .collect();
        assert_eq!(unmasked, [0x03, 0xe9, b'x']);
        // Reasons are cut to fit a control frame's 125 bytes.
        assert_eq!(close_frame(1000, &"a".repeat(500), None).len(), 2 + 125);
    }
}
