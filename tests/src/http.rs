//! A small blocking HTTP/1.1 client whose connections are made inside a
//! network namespace.
//!
//! The appliance's API and each browser's WebDriver endpoint listen inside
//! their own namespaces, out of reach of the test's own. A socket belongs to
//! the namespace of the thread that created it, so each request connects
//! from a thread that entered the namespace ([`Netns::run`]) and then talks
//! over that socket from anywhere. One request per connection
//! (`Connection: close`), which is all tests need.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::Netns;

/// Largest response accepted (a WebDriver screenshot is the biggest thing
/// a test reads).
const MAX_RESPONSE: usize = 32 << 20;

/// A response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Header fields, names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Response {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.body)
            .with_context(|| format!("HTTP {} body is not JSON: {}", self.status, self.text()))
    }
}

/// A request to send.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// Method.
    pub method: &'a str,
    /// Path and query.
    pub path: &'a str,
    /// Extra header fields.
    pub headers: Vec<(&'a str, String)>,
    /// Body (sent with Content-Length, also when empty for POST/PUT).
    pub body: &'a [u8],
    /// Bound on connect, and on each read and write.
    pub timeout: Duration,
}

impl<'a> Request<'a> {
    /// A request with no extra headers and no body, 10 s timeout.
    pub fn new(method: &'a str, path: &'a str) -> Self {
        Self {
            method,
            path,
            headers: Vec::new(),
            body: &[],
            timeout: Duration::from_secs(10),
        }
    }

    /// Adds `Authorization: Bearer TOKEN`.
    pub fn bearer(mut self, token: &str) -> Self {
        self.headers
            .push(("Authorization", format!("Bearer {token}")));
        self
    }

    /// Sets the body and its content type.
    pub fn body(mut self, content_type: &str, body: &'a [u8]) -> Self {
        self.headers.push(("Content-Type", content_type.to_owned()));
        self.body = body;
        self
    }

    /// Sets the timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sends it to `addr`, connecting from inside `ns` (or from the calling
    /// thread's namespace when `None`).
    pub fn send(&self, ns: Option<&Netns>, addr: SocketAddr) -> Result<Response> {
        let timeout = self.timeout;
        let connect = move || TcpStream::connect_timeout(&addr, timeout);
        let mut stream = match ns {
            Some(ns) => ns.run(connect),
            None => connect(),
        }
        .with_context(|| format!("connecting to {addr}"))?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: */*\r\n",
            self.method, self.path
        );
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if !self.body.is_empty() || matches!(self.method, "POST" | "PUT" | "PATCH") {
            head.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes())?;
        stream.write_all(self.body)?;
        let raw = read_response(&mut stream)
            .with_context(|| format!("reading the answer to {} {}", self.method, self.path))?;
        parse_response(&raw)
            .with_context(|| format!("answer to {} {} {addr}", self.method, self.path))
    }
}

/// Reads one response: up to the end of its body as its header delimits it
/// (some servers keep the connection open despite `Connection: close`), or
/// to the end of the stream when the header does not say.
fn read_response(stream: &mut impl Read) -> Result<Vec<u8>> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        if let Some(end) = complete_length(&raw)? {
            raw.truncate(end);
            return Ok(raw);
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(raw);
        }
        raw.extend_from_slice(&buf[..n]);
        if raw.len() > MAX_RESPONSE {
            bail!("answer is over {MAX_RESPONSE} bytes");
        }
    }
}

/// The length of the whole response if `raw` holds all of it.
fn complete_length(raw: &[u8]) -> Result<Option<usize>> {
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    let body = end + 4;
    for line in head.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        match (name.trim(), value.trim()) {
            ("content-length", v) => {
                let len: usize = v.parse().context("bad Content-Length")?;
                return Ok((raw.len() >= body + len).then_some(body + len));
            }
            ("transfer-encoding", "chunked") => {
                return Ok(raw[body..]
                    .windows(5)
                    .position(|w| w == b"0\r\n\r\n")
                    .filter(|&p| p == 0 || raw[body + p - 1] == b'\n')
                    .map(|p| body + p + 5));
            }
            _ => {}
        }
    }
    Ok(None)
}

/// Parses a whole HTTP/1.1 response read until the server closed.
pub fn parse_response(raw: &[u8]) -> Result<Response> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of header")?;
    let head = std::str::from_utf8(&raw[..end]).context("header is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().context("no status line")?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        bail!("not an HTTP/1.x status line: {status_line:?}");
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .with_context(|| format!("bad header line {line:?}"))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let rest = &raw[end + 4..];
    let mut response = Response {
        status,
        headers,
        body: Vec::new(),
    };
    response.body = if response
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        dechunk(rest)?
    } else if let Some(len) = response.header("content-length") {
        let len: usize = len.parse().context("bad Content-Length")?;
        rest.get(..len)
            .with_context(|| format!("body shorter than Content-Length {len}"))?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok(response)
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("chunk size line not terminated")?;
        let size_text = std::str::from_utf8(&data[..eol])?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .with_context(|| format!("bad chunk size {size_text:?}"))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = data.get(..size).context("chunk cut short")?;
        out.extend_from_slice(chunk);
        data = data.get(size + 2..).context("chunk not terminated")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_length_and_chunked_bodies() {
        let r = parse_response(
            b"HTTP/1.1 201 Created\r\nLocation: /v1/legs/3\r\nContent-Length: 2\r\n\r\nokEXTRA",
        )
        .unwrap();
        assert_eq!(r.status, 201);
        assert_eq!(r.header("location"), Some("/v1/legs/3"));
        assert_eq!(r.body, b"ok");
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwiki\r\n5;x=y\r\npedia\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.text(), "wikipedia");
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort").is_err());
        assert!(parse_response(b"SSH-2.0 hello\r\n\r\n").is_err());
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").is_err()
        );
    }

    #[test]
    fn a_response_ends_where_its_header_says_not_at_eof() {
        let partial = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab";
        assert_eq!(complete_length(partial).unwrap(), None);
        let whole = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nabcdNEXT";
        assert_eq!(complete_length(whole).unwrap(), Some(whole.len() - 4));
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n";
        assert_eq!(complete_length(chunked).unwrap(), Some(chunked.len()));
        assert_eq!(
            complete_length(&chunked[..chunked.len() - 2]).unwrap(),
            None
        );
        // A server that keeps the connection open still yields the response.
        let mut stream = std::io::Cursor::new(whole.to_vec());
        assert_eq!(
            read_response(&mut stream).unwrap(),
            whole[..whole.len() - 4].to_vec()
        );
    }
}
