//! Just enough of TLS to read the server name a ClientHello asks for
//! (RFC 8446 4.1.2, RFC 6066 3). The bytes come from an untrusted sandbox:
//! every length is checked, and a hello split over several records or
//! segments is reassembled.

/// Largest ClientHello the proxy waits for.
pub const MAX_HELLO: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hello {
    /// More bytes are needed.
    Incomplete,
    /// The whole ClientHello was read; its SNI host name, if any.
    Complete { sni: Option<String> },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SniError {
    #[error("not a TLS handshake")]
    NotTls,
    #[error("the first handshake message is not a ClientHello")]
    NotClientHello,
    #[error("malformed ClientHello: {0}")]
    Malformed(&'static str),
    #[error("ClientHello larger than {MAX_HELLO} bytes")]
    TooLarge,
}

const HANDSHAKE: u8 = 22;
const CLIENT_HELLO: u8 = 1;
const EXT_SERVER_NAME: u16 = 0;
const HOST_NAME: u8 = 0;

/// Parse what has arrived of a connection so far.
pub fn parse_client_hello(buf: &[u8]) -> Result<Hello, SniError> {
    // The handshake message, reassembled from complete records.
    let mut hs = Vec::new();
    let mut pos = 0;
    loop {
        if let Some(hello) = complete_message(&hs)? {
            return parse_hello_body(hello).map(|sni| Hello::Complete { sni });
        }
        let Some(header) = buf.get(pos..pos + 5) else {
            // Junk is refused early, not after 16 KiB.
            if buf.get(pos).is_some_and(|&b| b != HANDSHAKE) {
                return Err(SniError::NotTls);
            }
            return incomplete(buf);
        };
        if header[0] != HANDSHAKE || header[1] != 3 {
            return Err(SniError::NotTls);
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 || len > 16384 + 256 {
            return Err(SniError::Malformed("record length"));
        }
        let Some(body) = buf.get(pos + 5..pos + 5 + len) else {
            return incomplete(buf);
        };
        hs.extend_from_slice(body);
        pos += 5 + len;
    }
}

fn incomplete(buf: &[u8]) -> Result<Hello, SniError> {
    if buf.len() >= MAX_HELLO {
        Err(SniError::TooLarge)
    } else {
        Ok(Hello::Incomplete)
    }
}

/// The ClientHello body once the handshake bytes hold all of it.
fn complete_message(hs: &[u8]) -> Result<Option<&[u8]>, SniError> {
    let Some(h) = hs.get(..4) else {
        return Ok(None);
    };
    if h[0] != CLIENT_HELLO {
        return Err(SniError::NotClientHello);
    }
    let len = usize::from(h[1]) << 16 | usize::from(h[2]) << 8 | usize::from(h[3]);
    if len > MAX_HELLO {
        return Err(SniError::TooLarge);
    }
    Ok(hs.get(4..4 + len))
}

/// A cursor over untrusted bytes: every read is bounds-checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], SniError> {
        if self.0.len() < n {
            return Err(SniError::Malformed(what));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, SniError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, SniError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    /// A vector with a 1- or 2-byte length prefix.
    fn vec8(&mut self, what: &'static str) -> Result<&'a [u8], SniError> {
        let n = self.u8(what)?;
        self.take(n.into(), what)
    }
    fn vec16(&mut self, what: &'static str) -> Result<&'a [u8], SniError> {
        let n = self.u16(what)?;
        self.take(n.into(), what)
    }
}

fn parse_hello_body(body: &[u8]) -> Result<Option<String>, SniError> {
    let mut r = Reader(body);
    r.take(2 + 32, "version and random")?;
    r.vec8("session id")?;
    r.vec16("cipher suites")?;
    r.vec8("compression methods")?;
    if r.0.is_empty() {
        // No extensions at all (old clients): no SNI.
        return Ok(None);
    }
    let mut exts = Reader(r.vec16("extensions")?);
    let mut sni = None;
    while !exts.0.is_empty() {
        let typ = exts.u16("extension type")?;
        let data = exts.vec16("extension")?;
        if typ != EXT_SERVER_NAME {
            continue;
        }
        if sni.is_some() {
            return Err(SniError::Malformed("two server_name extensions"));
        }
        let mut list = Reader(Reader(data).vec16("server name list")?);
        while !list.0.is_empty() {
            let kind = list.u8("server name type")?;
            let name = list.vec16("server name")?;
            if kind == HOST_NAME && sni.is_none() {
                let name = std::str::from_utf8(name)
                    .ok()
                    .filter(|n| !n.is_empty() && n.is_ascii())
                    .ok_or(SniError::Malformed("server name"))?;
                sni = Some(name.to_ascii_lowercase());
            }
        }
    }
    Ok(sni)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello record with `exts` as its extensions.
    fn hello(exts: &[u8]) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend_from_slice(&[7; 32]);
        body.extend_from_slice(&[0]); // session id
        body.extend_from_slice(&[0, 2, 0x13, 0x01]); // one suite
        body.extend_from_slice(&[1, 0]); // null compression
        body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
        body.extend_from_slice(exts);
        let mut hs = vec![CLIENT_HELLO, 0];
        hs.extend_from_slice(&(body.len() as u16).to_be_bytes());
        hs.extend_from_slice(&body);
        record(&hs)
    }

    fn record(payload: &[u8]) -> Vec<u8> {
        let mut r = vec![HANDSHAKE, 3, 1];
        r.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        r.extend_from_slice(payload);
        r
    }

    fn sni_ext(name: &[u8]) -> Vec<u8> {
        let mut entry = vec![HOST_NAME];
        entry.extend_from_slice(&(name.len() as u16).to_be_bytes());
        entry.extend_from_slice(name);
        let mut list = (entry.len() as u16).to_be_bytes().to_vec();
        list.extend_from_slice(&entry);
        let mut ext = vec![0, 0];
        ext.extend_from_slice(&(list.len() as u16).to_be_bytes());
        ext.extend_from_slice(&list);
        ext
    }

    fn done(sni: Option<&str>) -> Result<Hello, SniError> {
        Ok(Hello::Complete {
            sni: sni.map(String::from),
        })
    }

    #[test]
    fn finds_the_name_among_other_extensions() {
        let mut exts = vec![0, 23, 0, 0]; // extended master secret, empty
        exts.extend(sni_ext(b"Allowed.TEST"));
        exts.extend_from_slice(&[0, 16, 0, 2, 0, 0]); // some ALPN bytes
        assert_eq!(
            parse_client_hello(&hello(&exts)),
            done(Some("allowed.test"))
        );
        assert_eq!(parse_client_hello(&hello(&[0, 23, 0, 0])), done(None));
    }

    #[test]
    fn every_prefix_is_incomplete_never_an_error() {
        let full = hello(&sni_ext(b"a.test"));
        for n in 0..full.len() {
            assert_eq!(parse_client_hello(&full[..n]), Ok(Hello::Incomplete), "{n}");
        }
        assert_eq!(parse_client_hello(&full), done(Some("a.test")));
    }

    #[test]
    fn a_hello_split_over_records_is_reassembled() {
        let full = hello(&sni_ext(b"split.test"));
        let hs = &full[5..];
        let mut split = record(&hs[..10]);
        split.extend(record(&hs[10..]));
        assert_eq!(parse_client_hello(&split), done(Some("split.test")));
    }

    #[test]
    fn malformed_input_is_refused() {
        assert_eq!(
            parse_client_hello(b"GET / HTTP/1.1\r\n"),
            Err(SniError::NotTls)
        );
        assert_eq!(
            parse_client_hello(&[0x16, 2, 0, 0, 1, 0]),
            Err(SniError::NotTls)
        );
        assert_eq!(
            parse_client_hello(&record(&[2, 0, 0, 0])),
            Err(SniError::NotClientHello)
        );
        // An SNI length pointing past its extension.
        let mut ext = sni_ext(b"x.test");
        ext[8] = 200;
        assert!(matches!(
            parse_client_hello(&hello(&ext)),
            Err(SniError::Malformed(_))
        ));
        // Extensions length past the body.
        let mut h = hello(&sni_ext(b"x.test"));
        let at = 5 + 4 + 2 + 32 + 1 + 4 + 2;
        h[at] = 0xff;
        assert!(matches!(
            parse_client_hello(&h),
            Err(SniError::Malformed(_))
        ));
        assert!(matches!(
            parse_client_hello(&hello(&sni_ext(b""))),
            Err(SniError::Malformed(_))
        ));
        assert_eq!(
            parse_client_hello(&[0x16, 3, 1, 0, 0]),
            Err(SniError::Malformed("record length"))
        );
    }

    #[test]
    fn a_hello_announcing_more_than_the_cap_is_refused() {
        let r = record(&[CLIENT_HELLO, 0x01, 0, 0]);
        assert_eq!(parse_client_hello(&r), Err(SniError::TooLarge));
        // Filling the buffer without completing stops too.
        let mut big = Vec::new();
        while big.len() < MAX_HELLO {
            big.extend(record(&[CLIENT_HELLO, 0, 0x3f, 0xff]));
            big.truncate(big.len().min(MAX_HELLO));
        }
        assert!(parse_client_hello(&big).is_err());
    }
}
