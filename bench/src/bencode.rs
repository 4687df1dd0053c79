//! A small bencode encoder and decoder: the encoding of rtpengine's ng
//! control protocol. Integers, byte strings, lists and dictionaries (keys
//! sorted on encode, as the format requires).

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};

/// A bencoded value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `i<n>e`
    Int(i64),
    /// `<len>:<bytes>`
    Bytes(Vec<u8>),
    /// `l...e`
    List(Vec<Value>),
    /// `d...e`, keys in byte order.
    Dict(BTreeMap<Vec<u8>, Value>),
}

impl Value {
    /// A byte string from text.
    pub fn str(s: &str) -> Self {
        Value::Bytes(s.as_bytes().to_vec())
    }

    /// A dictionary from text keys.
    pub fn dict<'a>(entries: impl IntoIterator<Item = (&'a str, Value)>) -> Self {
        Value::Dict(
            entries
                .into_iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v))
                .collect(),
        )
    }

    /// The value under `key`, if this is a dictionary that has it.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(d) => d.get(key.as_bytes()),
            _ => None,
        }
    }

    /// The byte string as UTF-8 text, if it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Bytes(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// Appends the encoding to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Value::Int(n) => out.extend_from_slice(format!("i{n}e").as_bytes()),
            Value::Bytes(b) => {
                out.extend_from_slice(format!("{}:", b.len()).as_bytes());
                out.extend_from_slice(b);
            }
            Value::List(items) => {
                out.push(b'l');
                for item in items {
                    item.encode_into(out);
                }
                out.push(b'e');
            }
            Value::Dict(entries) => {
                out.push(b'd');
                for (k, v) in entries {
                    Value::Bytes(k.clone()).encode_into(out);
                    v.encode_into(out);
                }
                out.push(b'e');
            }
        }
    }

    /// The encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// Decodes exactly one value that fills `input`.
    pub fn decode(input: &[u8]) -> Result<Value> {
        let (value, rest) = decode_one(input, 0)?;
        if !rest.is_empty() {
            bail!("{} bytes after the bencoded value", rest.len());
        }
        Ok(value)
    }
}

/// Nesting deeper than this is refused rather than recursed into.
const MAX_DEPTH: usize = 32;

fn decode_one(input: &[u8], depth: usize) -> Result<(Value, &[u8])> {
    if depth > MAX_DEPTH {
        bail!("bencode nested deeper than {MAX_DEPTH}");
    }
    match input.first() {
        None => bail!("bencode input ends early"),
        Some(b'i') => {
            let end = input
                .iter()
                .position(|&b| b == b'e')
                .context("unterminated bencode integer")?;
            let text = std::str::from_utf8(&input[1..end]).context("bencode integer")?;
            let canonical = text == "0"
                || (!text.starts_with('0') && !text.starts_with("-0") && !text.is_empty());
            if !canonical {
                bail!("non-canonical bencode integer {text:?}");
            }
            Ok((
                Value::Int(text.parse().context("bencode integer")?),
                &input[end + 1..],
            ))
        }
        Some(b'l') => {
            let mut rest = &input[1..];
            let mut items = Vec::new();
            loop {
                if rest.first() == Some(&b'e') {
                    return Ok((Value::List(items), &rest[1..]));
                }
                let (item, r) = decode_one(rest, depth + 1)?;
                items.push(item);
                rest = r;
            }
        }
        Some(b'd') => {
            let mut rest = &input[1..];
            let mut entries = BTreeMap::new();
            loop {
                if rest.first() == Some(&b'e') {
                    return Ok((Value::Dict(entries), &rest[1..]));
                }
                let (key, r) = decode_one(rest, depth + 1)?;
                let Value::Bytes(key) = key else {
                    bail!("bencode dictionary key is not a string");
                };
                let (value, r) = decode_one(r, depth + 1)?;
                entries.insert(key, value);
                rest = r;
            }
        }
        Some(b'0'..=b'9') => {
            let colon = input
                .iter()
                .position(|&b| b == b':')
                .context("bencode string without ':'")?;
            let len: usize = std::str::from_utf8(&input[..colon])
                .ok()
                .and_then(|s| s.parse().ok())
                .context("bencode string length")?;
            let start = colon + 1;
            let bytes = input
                .get(start..start + len)
                .context("bencode string past the end")?;
            Ok((Value::Bytes(bytes.to_vec()), &input[start + len..]))
        }
        Some(other) => bail!("unexpected byte {other:#04x} in bencode"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_with_sorted_keys() {
        let v = Value::dict([
            ("command", Value::str("ping")),
            ("a", Value::List(vec![Value::Int(-3), Value::str("")])),
        ]);
        assert_eq!(v.encode(), b"d1:ali-3e0:e7:command4:pinge".to_vec());
    }

    #[test]
    fn decodes_what_it_encodes() {
        let v = Value::dict([
            ("result", Value::str("ok")),
            ("sdp", Value::str("v=0\r\nm=audio 30000 RTP/AVP 0\r\n")),
            ("n", Value::Int(1234)),
            (
                "nested",
                Value::List(vec![Value::dict([("x", Value::Int(0))])]),
            ),
        ]);
        assert_eq!(Value::decode(&v.encode()).unwrap(), v);
    }

    #[test]
    fn refuses_malformed_input() {
        for bad in [
            &b"i01e"[..],
            b"i-0e",
            b"ie",
            b"5:abc",
            b"d1:ae",
            b"di1ei2ee",
            b"l",
            b"x",
            b"4:spamextra",
        ] {
            assert!(
                Value::decode(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn refuses_deep_nesting() {
        let deep = [vec![b'l'; 100], vec![b'e'; 100]].concat();
        assert!(Value::decode(&deep).is_err());
    }
}
